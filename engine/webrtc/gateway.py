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
a small FIFO in `ToBrowserTrack`, which keeps the media time: one 20 ms frame per tick from its
first, silence when no RTP is flowing (no call, hold, loss). With G.711 towards the browser (the
usual case) the frames are the call's payload bytes (PCMA <-> PCMU by a byte table): nothing is
decoded or encoded (engine/webrtc/g711.py). With Opus the FIFO holds PCM (the G.711 tables) and
each frame is encoded on the event loop, 8 kHz narrowband Opus by PyAV's libopus
(engine/webrtc/opus.py). Either way `LeanSender` sends the frames through aiortc's DTLS
transport instead of aiortc's per-packet sender loop, all the legs of a process paced by one
20 ms clock (engine/webrtc/track.py). Where aiortc's sender internals are not the ones we know,
aiortc's sender pulls the frames itself (`ToBrowserTrack.recv`, paced on the loop clock) and
encodes the Opus ones in its own thread pool. Audio from the browser: G.711 packets are relayed
to the call as they came, right after SRTP, with their own sequence and timing mapped onto the
session's stream; Opus frames are taken from aiortc's jitter buffer before its decoder thread,
decoded on the event loop by PyAV (libopus at 48 kHz, resampled to 8 kHz) and encoded to PCMU
(where aiortc's receiver internals are not the ones we know, its decoder thread decodes and the
leg resamples and encodes). Either way it leaves in 160-sample packets through an
`OutboundStream` (own SSRC; a marker and a timestamp jump when a new call is connected). Keypad
digits become RFC 4733 packets on that same stream (voice is held back while an event is on the
wire, so the far end's detector sees a clean event).

Codecs with the browser: the gateway's transceiver prefers PCMU, then PCMA, then Opus; the page asks
for PCMU first too. With a G.711 caller that spares Opus coding altogether (a G.711 leg neither
decodes nor encodes); a browser that offers only Opus still works.

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
call-second, all of it in aiortc, PyAV and the G.711 work, none in the signalling. So the signalling
(this module: WebSocket, auth, registry, the call layer's hooks, metrics; and each `Session`,
engine/webrtc/session.py) always stays in the daemon, and a session's media
(engine.webrtc.leg.MediaLeg) runs either in this process (N = 0) or, through a `WorkerMedia` proxy
with the same API, in one of N worker processes (the one with the fewest sessions). The worker's RTP
socket is the session's ``rtp_address``, so the bridge talks to the worker directly. `WorkerPool`
starts the workers with the gateway, restarts one that dies (its sessions close with 1011 "media
worker died"; counted in ``acd_webrtc_worker_restarts_total``; ``/readyz`` names it until its
replacement is up) and stops them at shutdown, after the sessions. The call layer cannot tell the
two modes apart.

ICE host candidates: aioice has no per-connection interface list and always skips 127.0.0.1, so the
media side (in whichever process it runs) replaces ``aioice.ice.get_host_addresses`` (process-wide) with one that returns
``[webrtc] host_addresses``. ICE and DTLS ports are ephemeral (aioice has no port range).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator

import msgspec
import structlog
from aiohttp import WSMsgType, web
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, Metric

from engine.config import Config, LoginMode, WebRtcConfig
from engine.runtime.workers import WorkerPool, worker_args
from engine.webrtc.leg import MediaEvents, MediaLeg, set_host_addresses
from engine.webrtc.protocol import FromWorker, LegStats
from engine.webrtc.session import (
    WORKER_DIED,
    CloseCode,
    MediaBackend,
    MediaGone,
    MediaReadyHook,
    MessageHook,
    Session,
    WorkerMedia,
)
from engine.webrtc.track import stop_media_clock

__all__ = ["RTC_PATH", "WebRtcGateway"]

log = structlog.stdlib.get_logger("acd.webrtc")

RTC_PATH = "/api/v1/agent/rtc"

WS_AUTH_TIMEOUT_S = 5.0
#: An SDP offer with gathered candidates is a few KiB; nothing the page sends is larger.
MAX_MESSAGE_BYTES = 64 * 1024

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
        self.on_media_ready: MediaReadyHook | None = None
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
        await stop_media_clock()  # the legs' clock in this process (workers = 0)
        if self._workers is not None:
            await self._workers.close()

    def new_media(self, agent_id: str, cfg: WebRtcConfig, events: MediaEvents) -> MediaBackend:
        """A session's media: in this process, or in the worker with the fewest sessions."""
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
