"""One browser agent's softphone: its signalling socket, and its media here or in a worker.

How this works: engine/webrtc/gateway.py authenticates a page, keeps the registry of sessions
and makes one `Session` per logged-in agent; the session then serves that page's messages (the
signalling protocol is in the gateway's docstring) and drives its media through `MediaBackend`:
`MediaLeg` itself (engine/webrtc/leg.py) when the media runs in the daemon, or `WorkerMedia`, a
proxy that turns the same calls into control messages (engine/webrtc/protocol.py) for the worker
process carrying the leg. The leg reports back to the session (`MediaEvents`); what the session
needs of its gateway (the media backend to use, the call layer's hooks, the count of unexpected
errors) it asks through `SessionHooks`, so this module never imports the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec
import structlog
from aiohttp import WSMsgType, web

from engine.config import WebRtcConfig
from engine.runtime.workers import WorkerPool, WorkerProcess, settle
from engine.webrtc.leg import MediaEvents, OfferError
from engine.webrtc.protocol import (
    Answered,
    Close,
    Closed,
    ConnectRtp,
    DisconnectRtp,
    Dtmf,
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
    "WORKER_DIED",
    "CloseCode",
    "MediaBackend",
    "MediaGone",
    "MediaReadyHook",
    "MessageHook",
    "Session",
    "SessionHooks",
    "WorkerMedia",
]

log = structlog.stdlib.get_logger("acd.webrtc")

_DIGIT_RE = re.compile(r"^[0-9*#A-Da-d]{1,32}$")

#: Messages queued towards a page that does not read them; beyond this the session is closed.
MAX_OUTBOX = 256
#: How long a replaced or shut-down session may take to release its resources.
CLOSE_TIMEOUT_S = 5.0

#: The close reason of the sessions of a worker that died.
WORKER_DIED = "media worker died"


class CloseCode:
    """How a session's WebSocket closes (the gateway's docstring says when each is used)."""

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


MessageHook = Callable[["Session", dict[str, Any]], None]
MediaReadyHook = Callable[["Session"], None]


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


class SessionHooks(Protocol):
    """What a `Session` asks of the gateway that made it (engine.webrtc.gateway.WebRtcGateway).

    The call layer's hooks are read at each use: it sets them after the gateway is built.
    """

    @property
    def on_message(self) -> MessageHook | None:
        """Messages from the page the session does not handle itself (None: "not handled")."""

    @property
    def on_media_ready(self) -> MediaReadyHook | None:
        """The session's media (ICE + DTLS) is up: the agent can take calls."""

    def new_media(self, agent_id: str, cfg: WebRtcConfig, events: MediaEvents) -> MediaBackend:
        """The session's media: a `MediaLeg` here, or a `WorkerMedia` proxy of one in a worker."""

    def count_unexpected(self) -> None:
        """Count an unexpected error (our bug) that ended the session."""


class Session:
    """One logged-in browser agent: the signalling socket, and its media (here or in a worker)."""

    def __init__(
        self, hooks: SessionHooks, agent_id: str, ws: web.WebSocketResponse, cfg: WebRtcConfig
    ) -> None:
        self.agent_id = agent_id
        self._hooks = hooks
        self._ws = ws
        self._cfg = cfg
        self._outbox: asyncio.Queue[str] = asyncio.Queue(MAX_OUTBOX)
        self._offered = False
        self._rtp_connected = False
        self._reader: asyncio.Task[None] | None = None
        self._close: tuple[int, str] | None = None
        self._done = asyncio.Event()
        self.codec = ""
        self._media = hooks.new_media(agent_id, cfg, self)

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
        if state == "connected" and self._hooks.on_media_ready is not None:
            self._hooks.on_media_ready(self)
        if state == "failed":
            self._end(CloseCode.MEDIA_FAILED, "media connection failed (ICE/DTLS)")

    def media_error(self, reason: str) -> None:
        self.send_event({"type": "error", "reason": reason})

    def media_failed(self, reason: str, *, bug: bool) -> None:
        if bug:
            self._hooks.count_unexpected()
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
            self._hooks.count_unexpected()
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
            elif self._hooks.on_message is not None:
                self._hooks.on_message(self, message)
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
