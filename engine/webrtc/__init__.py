"""WebRTC: the browser agent's softphone leg (signalling gateway and its media worker).

Where each piece lives:

* ``gateway``: the signalling side, always in the daemon: the WebSocket, auth, the session
  registry, the call layer's hooks, metrics, and the media worker pool.
* ``session``: `Session`, one logged-in agent's softphone (its page's messages, its media), and
  `WorkerMedia`, the proxy of a leg in a worker; it reaches the gateway through `SessionHooks`.
* ``leg``: `MediaLeg`, one softphone's media (aiortc peer connection, DTMF, the loopback RTP
  port), the `MediaEvents` it reports through, and the ICE host-candidate override.
* ``g711``: the call side's audio format, G.711 passed through as it is (`G711Frames`) and the
  hooks on aiortc's receive side (`G711Tap`, `G711Receiver`).
* ``track``: audio towards the browser: `ToBrowserTrack`, `LeanSender` and the one 20 ms clock
  per process that paces it.
* ``opus``: Opus with the browser, coded on the event loop by PyAV.
* ``protocol``: the messages between the gateway and a worker process, shared by both.
* ``worker``: the worker process (``python -m engine.webrtc.worker``) that runs many legs.
"""
