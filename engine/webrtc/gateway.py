"""Media gateway for browser agents: one aiortc peer connection per logged-in agent, plain RTP inside.

How this works (in the spirit of rtpengine in front of Kamailio): the call layer bridges RTP between
a caller leg and an agent leg, both plain RTP/AVP G.711. A browser agent must look like any other
agent leg, so each softphone `Session` owns

* one aiortc ``RTCPeerConnection`` to the page, kept for the whole login (a "persistent
  connection", as Amazon Connect and Genesys softphones keep one): calls connect and end without
  renegotiation, ICE and DTLS are paid once per login, not per call;
* one loopback plain RTP port (UDP on 127.0.0.1, ephemeral): `Session.rtp_address`. The call
  layer tells the session where the call's bridge is with `Session.connect_rtp` and forgets it with
  `Session.disconnect_rtp`. That side speaks PCMU (payload type 0; PCMA, type 8, is decoded too),
  20 ms packets, and RFC 4733 telephone-events with payload type 101, one SSRC for the session.

Between calls no audio flows either way: the page detaches its microphone from the sender
(``replaceTrack``, no renegotiation) and `ToBrowserTrack` produces nothing, so an idle logged-in
agent costs neither Opus/G.711 work nor bandwidth, and its microphone is not streamed to the server.

Audio to the browser: RTP from the connected peer (other sources are dropped and counted) goes into
a small FIFO; `ToBrowserTrack.recv` paces itself on the loop clock (one 20 ms frame per tick from a
fixed start, as aiortc's own ``AudioStreamTrack`` does) and hands aiortc the next frame, or silence
when no RTP is flowing (no call, hold, loss). With G.711 towards the browser (the usual case) the
frame is the call's payload bytes (PCMA <-> PCMU by a byte table), sent without aiortc's
per-packet sender loop: nothing is decoded or encoded (engine/webrtc/g711.py, track.py). With
Opus the FIFO holds PCM (G.711 tables) and aiortc encodes. Audio from the browser: G.711 packets
are relayed to the call as they came, right after SRTP, with their own sequence and timing
mapped onto the session's stream; Opus is decoded by aiortc, resampled to 8 kHz and encoded
to PCMU. Either way it leaves in 160-sample packets through an `OutboundStream`
(own SSRC; a marker and a timestamp jump when a new call is connected). Keypad digits become
RFC 4733 packets on that same stream (voice is held back while an event is on the wire, so the
far end's detector sees a clean event).

Codecs with the browser: the gateway's transceiver prefers PCMU, then PCMA, then Opus; the page asks
for PCMU first too. With a G.711 caller that spares the Opus encode (the expensive half of an aiortc
leg); a browser that offers only Opus still works.

Signalling: a WebSocket at `RTC_PATH`. Browsers cannot set headers on a WebSocket, so (as the event
stream does) the first message authenticates; only agents whose config says ``login = "webrtc"`` may
open it, one session per agent (a second login replaces the first). No trickle ICE: both sides send
their SDP with candidates gathered. Messages, all JSON objects with a ``type``:

page -> gateway
    ``{"type": "auth", "token": "..."}``                first message, within 5 s
    ``{"type": "offer", "sdp": "..."}``                 once, after "hello"; answered with "answer"
    ``{"type": "dtmf", "digits": "12#"}``               keypad: RFC 4733 on the RTP side (0-9 * # A-D)
    ``{"type": "bye"}``                                 the page is going away (closes with 1000)
    ``{"type": "ping"}``                                answered with ``{"type": "pong"}``
    anything else (``answer``, ``reject``, ``hangup``, ``hold``, ...) goes to the gateway's
    ``on_message(session, message)`` hook (the call layer); without a hook the page gets an "error".

gateway -> page
    ``{"type": "hello", "agent_id": ..., "media_active": false, "ice_servers": [...]}``
                                                                    authenticated; make your offer
    ``{"type": "media", "active": true|false}``  a call's audio is connected (attach the microphone
                                                 to the sender) or not (detach it: nothing flows)
    ``{"type": "answer", "sdp": "...", "codec": "PCMU"}``
    ``{"type": "connection", "state": "connecting|connected|failed|..."}``
    ``{"type": "error", "reason": "..."}``                          the session stays open
    ``{"type": "pong"}``
    anything the call layer pushes with `Session.send_event` (e.g. ``{"type": "incoming", ...}``)

Close codes: 4401 unauthorized, 4403 not a webrtc agent, 4409 replaced by a newer login of the same
agent, 4400 protocol error (bad JSON, bad SDP, a second offer), 4429 too many sessions, 4503 WebRTC
disabled, 4504 media connection failed (ICE/DTLS), 4008 too slow to read its messages, 1011 internal
error (also "media worker died"), 1001 daemon shutting down, 1000 normal (after "bye"). An error in
one session closes that session with its reason; it never reaches the daemon.

Worker processes (``[webrtc] workers = N``, issue #8): a leg costs tens of ms of CPU per
call-second, all of it in aiortc, PyAV and the G.711 work, none in the signalling. So the session
(`Session`: WebSocket, auth, registry, the call layer's hooks, metrics) always stays here, and its
media (engine.webrtc.leg.MediaLeg) runs either in this process (N = 0) or, through a
`WorkerMedia` proxy with the same API, in one of N worker processes (the one with the fewest
sessions). The worker's RTP socket is the session's ``rtp_address``, so the bridge talks to the
worker directly. `WorkerPool` starts the workers with the gateway, restarts one that dies (its
sessions close with 1011 "media worker died"; counted in ``acd_webrtc_worker_restarts_total``;
``/readyz`` names it until its replacement is up) and stops them at shutdown, after the sessions.
The call layer cannot tell the two modes apart.

ICE host candidates: aioice has no per-connection interface list and always skips 127.0.0.1, so the
media side (in whichever process it runs) replaces ``aioice.ice.get_host_addresses`` (process-wide) with one that returns
``[webrtc] host_addresses``. ICE and DTLS ports are ephemeral (aioice has no port range).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

import msgspec
import structlog
from aiohttp import WSMsgType, web
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, Metric

from engine.config import Config, LoginMode, WebRtcConfig
from engine.runtime.workers import WorkerPool, WorkerProcess, settle, worker_args
from engine.webrtc.leg import MediaEvents, MediaLeg, OfferError, set_host_addresses
from engine.webrtc.protocol import (
    Answered,
    Close,
    Closed,
    ConnectRtp,
    DisconnectRtp,
    Dtmf,
    FromWorker,
    LegFailed,
    LegStats,
    LegStatsReported,
    OfferRefused,
    Open,
    Opened,
    OpenFailed,
    PageError,
    StateChanged,
)
from engine.webrtc.protocol import Offer as OfferMessage

__all__ = [
    "RTC_PATH",
    "WORKER_DIED",
    "CloseCode",
    "MediaBackend",
    "MediaGone",
    "Session",
    "WebRtcGateway",
    "WorkerMedia",
]

log = structlog.stdlib.get_logger("acd.webrtc")

RTC_PATH = "/api/v1/agent/rtc"

_DIGIT_RE = re.compile(r"^[0-9*#A-Da-d]{1,32}$")

WS_AUTH_TIMEOUT_S = 5.0
#: An SDP offer with gathered candidates is a few KiB; nothing the page sends is larger.
MAX_MESSAGE_BYTES = 64 * 1024
#: Messages queued towards a page that does not read them; beyond this the session is closed.
MAX_OUTBOX = 256
#: How long a replaced or shut-down session may take to release its resources.
CLOSE_TIMEOUT_S = 5.0

#: The close reason of the sessions of a worker that died.
WORKER_DIED = "media worker died"


class CloseCode:
    NORMAL = 1000
    GOING_AWAY = 1001
    INTERNAL_ERROR = 1011
    TOO_SLOW = 4008
    PROTOCOL = 4400
    UNAUTHORIZED = 4401
    NOT_WEBRTC_AGENT = 4403
    REPLACED = 4409
    TOO_MANY = 4429
    DISABLED = 4503
    MEDIA_FAILED = 4504


# WebSocket close code -> bounded metric label.
_CLOSE_REASON_LABEL = {
    CloseCode.NORMAL: "bye",
    CloseCode.GOING_AWAY: "shutdown",
    CloseCode.INTERNAL_ERROR: "error",
    CloseCode.TOO_SLOW: "too_slow",
    CloseCode.PROTOCOL: "protocol",
    CloseCode.REPLACED: "replaced",
    CloseCode.MEDIA_FAILED: "media_failed",
}

#: token -> agent id (None when the token is unknown or not an agent's).
Authenticator = Callable[[str], str | None]
MessageHook = Callable[["Session", dict[str, Any]], None]
ClosedHook = Callable[["Session", str], None]


class WebRtcMetrics:
    def __init__(self, registry: CollectorRegistry, media_totals: Callable[[], LegStats]) -> None:
        self.sessions = Gauge(
            "acd_webrtc_sessions",
            "Browser softphone sessions (peer connections) open now.",
            registry=registry,
        )
        self.closed = Counter(
            "acd_webrtc_sessions_closed_total",
            "Softphone sessions ended, by reason.",
            ["reason"],
            registry=registry,
        )
        self.refused = Counter(
            "acd_webrtc_sessions_refused_total",
            "Softphone WebSocket logins refused, by reason.",
            ["reason"],
            registry=registry,
        )
        self.workers = Gauge(
            "acd_webrtc_workers",
            "Media worker processes running ([webrtc] workers; 0: legs run in the daemon).",
            registry=registry,
        )
        self.worker_restarts = Counter(
            "acd_webrtc_worker_restarts_total",
            "Media worker processes that died (their sessions closed) and were restarted.",
            registry=registry,
        )
        registry.register(_MediaCounters(media_totals))


class _MediaCounters:
    """The legs' packet counters, read at scrape time.

    The media path counts in plain ints (in a worker process a Prometheus counter could not be
    reached at all); this sums the live sessions' counts (a worker's as of its last report, at
    most `engine.webrtc.protocol.LEG_STATS_INTERVAL_S` old) and those of the sessions already
    closed.
    """

    def __init__(self, totals: Callable[[], LegStats]) -> None:
        self._totals = totals

    def collect(self) -> Iterator[Metric]:
        totals = self._totals()
        packets = CounterMetricFamily(
            "acd_webrtc_packets",
            "20 ms audio packets through the WebRTC gateway, by direction "
            "(to_browser: RTP from the call played to the page; from_browser: sent as RTP).",
            labels=["direction"],
        )
        packets.add_metric(["to_browser"], totals.to_browser)
        packets.add_metric(["from_browser"], totals.from_browser)
        yield packets
        yield CounterMetricFamily(
            "acd_webrtc_rtp_dropped",
            "RTP packets the gateway dropped (wrong source, no call connected, or malformed).",
            value=totals.dropped,
        )
        yield CounterMetricFamily(
            "acd_webrtc_dtmf_digits",
            "Keypad digits sent as RFC 4733 events.",
            value=totals.dtmf_digits,
        )


def _add_stats(total: LegStats, more: LegStats) -> None:
    total.to_browser += more.to_browser
    total.from_browser += more.from_browser
    total.dropped += more.dropped
    total.dtmf_digits += more.dtmf_digits


class _ProtocolError(Exception):
    """The page sent something the signalling cannot accept; closes the session with 4400."""


class MediaGone(Exception):
    """The session's media worker is gone: it died, or none came up in time. The session ends
    with 1011 and this reason. Never raised when the media runs in the daemon (workers = 0)."""


# -- the media side of a session, in this process or in a worker -----------------------------------


class MediaBackend(Protocol):
    """What a `Session` drives: `MediaLeg` itself (in-process) or a `WorkerMedia` proxy."""

    stats: LegStats

    @property
    def worker_pid(self) -> int | None: ...
    @property
    def rtp_address(self) -> tuple[str, int]: ...
    @property
    def connection_state(self) -> str: ...
    async def open(self) -> None: ...
    async def answer(self, offer_sdp: str) -> tuple[str, str]: ...
    def connect_rtp(self, host: str, port: int) -> None: ...
    def disconnect_rtp(self) -> None: ...
    def dtmf(self, digits: str) -> None: ...
    async def close(self) -> None: ...


class WorkerMedia:
    """A session's `MediaLeg` in a worker process: the same API, as control messages."""

    def __init__(
        self, pool: WorkerPool, agent_id: str, cfg: WebRtcConfig, events: MediaEvents
    ) -> None:
        self._pool = pool
        self._agent_id = agent_id
        self._cfg = cfg
        self._events = events
        self._worker: WorkerProcess | None = None
        self.sid = 0
        self._address: tuple[str, int] | None = None
        self._state = "new"
        self.stats = LegStats()
        loop = asyncio.get_running_loop()
        self._opened: asyncio.Future[tuple[str, int]] = loop.create_future()
        self._answered: asyncio.Future[tuple[str, str]] = loop.create_future()
        self._closed: asyncio.Future[None] = loop.create_future()
        self._closing = False

    @property
    def worker_pid(self) -> int | None:
        return None if self._worker is None else self._worker.pid

    @property
    def rtp_address(self) -> tuple[str, int]:
        assert self._address is not None, "rtp_address before open()"
        return self._address

    @property
    def connection_state(self) -> str:
        return self._state

    async def open(self) -> None:
        self._worker, self.sid = await self._pool.assign(self)
        self._send(Open(self.sid, self._agent_id, self._cfg))
        self._address = await self._opened

    async def answer(self, offer_sdp: str) -> tuple[str, str]:
        self._send(OfferMessage(self.sid, offer_sdp))
        return await self._answered

    def connect_rtp(self, host: str, port: int) -> None:
        self._send(ConnectRtp(self.sid, host, port))

    def disconnect_rtp(self) -> None:
        self._send(DisconnectRtp(self.sid))

    def dtmf(self, digits: str) -> None:
        self._send(Dtmf(self.sid, digits))

    async def close(self) -> None:
        if not self._closing:
            self._closing = True
            if self._worker is None or not self._worker.alive:
                settle(self._closed)
            else:
                self._send(Close(self.sid))
        with contextlib.suppress(TimeoutError, MediaGone):
            await asyncio.wait_for(asyncio.shield(self._closed), CLOSE_TIMEOUT_S)
        if self._worker is not None:
            self._worker.clients.pop(self.sid, None)

    def _send(self, message: msgspec.Struct) -> None:
        if self._worker is not None:
            self._worker.send(message)

    def received(self, message: Any) -> None:
        """A message from the worker about this session."""
        if isinstance(message, StateChanged):
            self._state = message.state
            self._events.media_state(message.state)
        elif isinstance(message, LegStatsReported):
            self.stats = message.stats
        elif isinstance(message, Opened):
            settle(self._opened, (message.host, message.port))
        elif isinstance(message, OpenFailed):
            settle(self._opened, exc=OSError(message.reason))
        elif isinstance(message, Answered):
            settle(self._answered, (message.sdp, message.codec))
        elif isinstance(message, OfferRefused):
            settle(self._answered, exc=OfferError(message.reason))
        elif isinstance(message, PageError):
            self._events.media_error(message.reason)
        elif isinstance(message, LegFailed):
            self._events.media_failed(message.reason, bug=message.bug)
        elif isinstance(message, Closed):
            self.stats = message.stats
            settle(self._closed)

    def worker_died(self) -> None:
        self.detach(WORKER_DIED)
        self._events.media_failed(WORKER_DIED, bug=False)

    def detach(self, reason: str = "shutting down") -> None:
        """The worker is gone or going: whatever still waits for it gets MediaGone."""
        self._state = "closed"
        for future in (self._opened, self._answered, self._closed):
            settle(future, exc=MediaGone(reason))


# -- one agent's softphone ---------------------------------------------------------------------------


class Session:
    """One logged-in browser agent: the signalling socket, and its media (here or in a worker)."""

    def __init__(
        self, gateway: WebRtcGateway, agent_id: str, ws: web.WebSocketResponse, cfg: WebRtcConfig
    ) -> None:
        self.agent_id = agent_id
        self._gateway = gateway
        self._ws = ws
        self._cfg = cfg
        self._outbox: asyncio.Queue[str] = asyncio.Queue(MAX_OUTBOX)
        self._offered = False
        self._rtp_connected = False
        self._reader: asyncio.Task[None] | None = None
        self._close: tuple[int, str] | None = None
        self._done = asyncio.Event()
        self.codec = ""
        self._media = gateway._new_media(agent_id, cfg, self)

    # -- API for the call layer ----------------------------------------------------------------

    @property
    def rtp_address(self) -> tuple[str, int]:
        """(host, port) of this session's plain RTP socket: where the bridge sends the call's audio."""
        return self._media.rtp_address

    @property
    def connection_state(self) -> str:
        return self._media.connection_state

    @property
    def worker_pid(self) -> int | None:
        """The PID of the worker process running this session's media; None: this process."""
        return self._media.worker_pid

    @property
    def stats(self) -> LegStats:
        return self._media.stats

    @property
    def packets_to_browser(self) -> int:
        return self._media.stats.to_browser

    @property
    def packets_from_browser(self) -> int:
        return self._media.stats.from_browser

    def connect_rtp(self, host: str, port: int) -> None:
        """Start exchanging RTP with the call's bridge at (host, port); the page sends its mic."""
        self._rtp_connected = True
        self._media.connect_rtp(host, port)
        self.send_event({"type": "media", "active": True})

    def disconnect_rtp(self) -> None:
        """Stop exchanging RTP (the call ended); the page stops sending its microphone.

        For hold, keep the RTP connected and let the bridge stop sending: the page then hears
        silence and its microphone keeps flowing (muted by the bridge, not by the page).
        """
        self._rtp_connected = False
        self._media.disconnect_rtp()
        self.send_event({"type": "media", "active": False})

    def send_event(self, message: dict[str, Any]) -> bool:
        """Queue a JSON message for the page; False if the session is closing.

        A page that does not read its messages (MAX_OUTBOX queued) gets its session closed.
        """
        if self._close is not None:
            return False
        try:
            self._outbox.put_nowait(msgspec.json.encode(message).decode())
        except asyncio.QueueFull:
            self._end(CloseCode.TOO_SLOW, "too slow: reconnect")
            return False
        return True

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "closed") -> None:
        """End the session (the page sees ``code``/``reason``) and wait until it has let go."""
        self._end(code, reason)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done.wait(), CLOSE_TIMEOUT_S)

    # -- what the media side reports (engine.webrtc.leg.MediaEvents) -----------------------------

    def media_state(self, state: str) -> None:
        self.send_event({"type": "connection", "state": state})
        if state == "connected" and self._gateway.on_media_ready is not None:
            self._gateway.on_media_ready(self)
        if state == "failed":
            self._end(CloseCode.MEDIA_FAILED, "media connection failed (ICE/DTLS)")

    def media_error(self, reason: str) -> None:
        self.send_event({"type": "error", "reason": reason})

    def media_failed(self, reason: str, *, bug: bool) -> None:
        if bug:
            self._gateway.count_unexpected()
        self._end(CloseCode.INTERNAL_ERROR, reason)

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the media side: the RTP port (OSError), in a worker (MediaGone) when configured."""
        await self._media.open()

    def _end(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
        if self._reader is not None:
            self._reader.cancel()

    async def run(self) -> tuple[int, str]:
        """Serve the page until it leaves or the session is ended; the close code and reason."""
        async with asyncio.TaskGroup() as tasks:
            writer = tasks.create_task(self._guard(self._writer(), "writer"))
            self._reader = tasks.create_task(self._guard(self._read_loop(), "reader"))
            if self._close is not None:  # ended (replaced, shutdown) while it was opening
                self._reader.cancel()
            self.send_event(
                {
                    "type": "hello",
                    "agent_id": self.agent_id,
                    "media_active": self._rtp_connected,
                    "ice_servers": [
                        {
                            "urls": list(s.urls),
                            **({"username": s.username} if s.username else {}),
                            **({"credential": s.credential} if s.credential else {}),
                        }
                        for s in self._cfg.ice_servers
                    ],
                }
            )
            await asyncio.wait([self._reader])
            self._end(CloseCode.NORMAL, "page closed")  # no-op if a reason is already set
            writer.cancel()
        assert self._close is not None
        return self._close

    async def release(self) -> None:
        """Free the media (RTP port, peer connection); idempotent, safe after a failed open."""
        self._rtp_connected = False
        await self._media.close()
        self._done.set()

    async def _guard(self, work: Awaitable[None], where: str) -> None:
        """Run one of the session's tasks; an unexpected error ends this session, not the daemon."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except _ProtocolError as exc:
            self._end(CloseCode.PROTOCOL, str(exc))
        except Exception as exc:
            log.exception("webrtc_session_error", agent_id=self.agent_id, where=where)
            self._gateway.count_unexpected()
            self._end(CloseCode.INTERNAL_ERROR, f"internal error in {where}: {type(exc).__name__}")

    # -- signalling ------------------------------------------------------------------------------

    async def _writer(self) -> None:
        while True:
            text = await self._outbox.get()
            try:
                await self._ws.send_str(text)
            except ConnectionResetError:  # the page went away between two messages
                self._end(CloseCode.NORMAL, "page closed")
                return

    async def _read_loop(self) -> None:
        async for msg in self._ws:
            if msg.type is not WSMsgType.TEXT:
                raise _ProtocolError("expected JSON text messages")
            try:
                message = msgspec.json.decode(msg.data)
            except msgspec.DecodeError:
                raise _ProtocolError("a message is not JSON") from None
            if not isinstance(message, dict) or not isinstance(message.get("type"), str):
                raise _ProtocolError('expected a JSON object with a "type"')
            kind = message["type"]
            if kind == "offer":
                await self._on_offer(message)
            elif kind == "dtmf":
                self._on_dtmf(message)
            elif kind == "bye":
                self._end(CloseCode.NORMAL, "bye")
                return
            elif kind == "ping":
                self.send_event({"type": "pong"})
            elif self._gateway.on_message is not None:
                self._gateway.on_message(self, message)
            else:
                self.send_event({"type": "error", "reason": f"{kind!r} is not handled here"})

    async def _on_offer(self, message: dict[str, Any]) -> None:
        sdp = message.get("sdp")
        if not isinstance(sdp, str) or not sdp:
            raise _ProtocolError('an offer needs "sdp" (a string)')
        if self._offered:
            raise _ProtocolError("one offer per session: reconnect to negotiate again")
        self._offered = True
        try:
            answer, self.codec = await self._media.answer(sdp)
        except OfferError as exc:
            raise _ProtocolError(str(exc)) from exc
        except MediaGone:
            return  # the worker died: the session is ending with that reason already
        log.info("webrtc_negotiated", agent_id=self.agent_id, codec=self.codec)
        self.send_event({"type": "answer", "sdp": answer, "codec": self.codec})

    def _on_dtmf(self, message: dict[str, Any]) -> None:
        digits = message.get("digits")
        if not isinstance(digits, str) or not _DIGIT_RE.match(digits):
            self.send_event({"type": "error", "reason": "dtmf digits must be 1-32 of 0-9 * # A-D"})
            return
        self._media.dtmf(digits.upper())


# -- the gateway -------------------------------------------------------------------------------------


class WebRtcGateway:
    """All softphone sessions of the daemon, by agent id; mounts the signalling WebSocket.

    `start` starts the media workers when ``[webrtc] workers`` > 0 (without it, or with 0, the
    media runs in this process); `close` ends every session, then stops the workers.
    """

    def __init__(
        self,
        get_config: Callable[[], Config],
        authenticate: Authenticator,
        registry: CollectorRegistry,
        *,
        on_unexpected: Callable[[], None] | None = None,
    ) -> None:
        self._get_config = get_config
        self._authenticate = authenticate
        self._sessions: dict[str, Session] = {}
        # Sessions whose packet counts are not yet in `_closed_stats` (a replaced session stays
        # here until its media has let go, so the exported counters never step back).
        self._live: set[Session] = set()
        self._closed_stats = LegStats()
        self.metrics = WebRtcMetrics(registry, self._media_totals)
        self._closing = False
        self._on_unexpected = on_unexpected
        self._workers: WorkerPool | None = None
        #: Set by the call layer: messages from a page the gateway does not handle itself.
        self.on_message: MessageHook | None = None
        #: Set by the call layer: a session ended (reason given), e.g. to hang up its call.
        self.on_session_closed: ClosedHook | None = None
        #: Set by the call layer: the session's media (ICE + DTLS) is up: the agent can take calls.
        self.on_media_ready: Callable[[Session], None] | None = None
        # aiortc and aioice log every packet and ICE check at debug level: at the daemon's debug
        # level that would drown its own lines.
        for name in ("aiortc", "aioice"):
            logging.getLogger(name).setLevel(logging.INFO)
        # Also before the first session: peers created in this process gather on these addresses.
        set_host_addresses(get_config().webrtc.host_addresses)

    def session(self, agent_id: str) -> Session | None:
        return self._sessions.get(agent_id)

    @property
    def sessions(self) -> dict[str, Session]:
        return dict(self._sessions)

    @property
    def worker_pids(self) -> list[int]:
        """PIDs of the media workers running now (empty: the media runs in this process)."""
        return [] if self._workers is None else self._workers.pids

    def workers_not_ready(self) -> str | None:
        """For /readyz: why a media worker is not serving (down, restarting, failing to start);
        None when all are up or the media runs in this process."""
        return None if self._workers is None else self._workers.not_ready()

    def count_unexpected(self) -> None:
        if self._on_unexpected is not None:
            self._on_unexpected()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(RTC_PATH, self.handle)

    async def start(self) -> None:
        """Start the media workers ([webrtc] workers > 0; read once: a change needs a restart)."""
        config = self._get_config()
        if config.webrtc.workers == 0 or self._workers is not None or self._closing:
            return
        self._workers = WorkerPool(
            "webrtc",
            "engine.webrtc.worker",
            config.webrtc.workers,
            msgspec.msgpack.Decoder(FromWorker),
            args=worker_args(config),
            workers_gauge=self.metrics.workers,
            restarts=self.metrics.worker_restarts,
            gone=MediaGone,
            on_unexpected=self.count_unexpected,
        )
        await self._workers.start()

    async def close(self) -> None:
        """Daemon shutdown: end every session (1001), wait for them to let go, stop the workers."""
        self._closing = True
        # `_live`, not `_sessions`: a session whose page just left is out of the registry but may
        # still be letting go of its media, which needs its worker until it has.
        await asyncio.gather(
            *(s.close(CloseCode.GOING_AWAY, "server shutting down") for s in list(self._live))
        )
        if self._workers is not None:
            await self._workers.close()

    def _new_media(self, agent_id: str, cfg: WebRtcConfig, events: MediaEvents) -> MediaBackend:
        if self._workers is None:
            return MediaLeg(agent_id, cfg, events)
        return WorkerMedia(self._workers, agent_id, cfg, events)

    def _media_totals(self) -> LegStats:
        totals = msgspec.structs.replace(self._closed_stats)
        for session in self._live:
            _add_stats(totals, session.stats)
        return totals

    async def _refuse(self, ws: web.WebSocketResponse, code: int, reason: str, label: str) -> None:
        self.metrics.refused.labels(reason=label).inc()
        await ws.close(code=code, message=reason.encode())

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        token = await _read_auth(ws)
        agent_id = None if token is None else self._authenticate(token)
        config = self._get_config()
        if agent_id is None:
            await self._refuse(ws, CloseCode.UNAUTHORIZED, "unauthorized", "unauthorized")
            return ws
        agent = next((a for a in config.agents if a.id == agent_id), None)
        if agent is None or agent.login is not LoginMode.WEBRTC:
            await self._refuse(
                ws,
                CloseCode.NOT_WEBRTC_AGENT,
                'not a webrtc agent (its config needs login = "webrtc")',
                "not_webrtc",
            )
            return ws
        if not config.webrtc.enabled or self._closing:
            reason = "shutting down" if self._closing else "webrtc is disabled ([webrtc] enabled)"
            await self._refuse(ws, CloseCode.DISABLED, reason, "disabled")
            return ws
        old = self._sessions.get(agent_id)
        if old is not None:
            await old.close(CloseCode.REPLACED, "replaced by a newer login of this agent")
        if len(self._sessions) >= config.webrtc.max_sessions:
            await self._refuse(ws, CloseCode.TOO_MANY, "too many softphone sessions", "too_many")
            return ws
        session = Session(self, agent_id, ws, config.webrtc)
        code, reason = CloseCode.INTERNAL_ERROR, "internal error"
        self._sessions[agent_id] = session
        self._live.add(session)
        self.metrics.sessions.inc()
        try:
            await session.open()
            log.info(
                "webrtc_session_opened",
                agent_id=agent_id,
                rtp=list(session.rtp_address),
                worker=session.worker_pid,
            )
            code, reason = await session.run()
        except OSError as exc:
            code, reason = CloseCode.INTERNAL_ERROR, f"cannot open the RTP port: {exc}"
        except MediaGone as exc:
            code, reason = CloseCode.INTERNAL_ERROR, str(exc)
        except Exception:  # our bug: it ends this agent's softphone, never the daemon
            log.exception("webrtc_session_error", agent_id=agent_id, where="handler")
            self.count_unexpected()
        finally:
            if self._sessions.get(agent_id) is session:
                del self._sessions[agent_id]
            self.metrics.sessions.dec()
            await session.release()
            _add_stats(self._closed_stats, session.stats)
            self._live.discard(session)
            label = _CLOSE_REASON_LABEL.get(code, "other")
            if code == CloseCode.NORMAL and reason != "bye":
                label = "page_closed"
            elif reason == WORKER_DIED:
                label = "worker_died"
            self.metrics.closed.labels(reason=label).inc()
            log.info(
                "webrtc_session_closed",
                agent_id=agent_id,
                code=code,
                reason=reason,
                codec=session.codec,
                worker=session.worker_pid,
                packets_to_browser=session.packets_to_browser,
                packets_from_browser=session.packets_from_browser,
            )
            if not ws.closed:
                await ws.close(code=code, message=reason.encode()[:120])
            if self.on_session_closed is not None:
                self.on_session_closed(session, reason)
        return ws


async def _read_auth(ws: web.WebSocketResponse) -> str | None:
    try:
        first = await ws.receive(timeout=WS_AUTH_TIMEOUT_S)
    except TimeoutError:
        return None
    if first.type is not WSMsgType.TEXT:
        return None
    try:
        message = msgspec.json.decode(first.data)
    except msgspec.DecodeError:
        return None
    if not isinstance(message, dict) or message.get("type") != "auth":
        return None
    token = message.get("token")
    return token if isinstance(token, str) and token else None
