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

Audio to the browser: RTP from the connected peer (other sources are dropped and counted) is decoded
with the G.711 tables into a small FIFO; `ToBrowserTrack.recv` paces itself on the loop clock (one
20 ms frame per tick from a fixed start, as aiortc's own ``AudioStreamTrack`` does) and hands aiortc
the next 160 samples, or silence when no RTP is flowing (no call, hold, loss). aiortc encodes PCMU or
Opus for the browser. Audio from the browser: aiortc decodes the browser's track; the frames are
resampled to 8 kHz mono s16, cut into 160-sample chunks, encoded to PCMU and sent as RTP through
an `OutboundStream` (own SSRC, monotonic sequence and timestamp; a marker and a timestamp jump when
a new call is connected). Keypad digits become RFC 4733 packets on that same stream (voice is held
back while an event is on the wire, so the far end's detector sees a clean event).

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
error, 1001 daemon shutting down, 1000 normal (after "bye"). An error in one session closes that
session with its reason; it never reaches the daemon.

ICE host candidates: aioice has no per-connection interface list and always skips 127.0.0.1, so the
gateway replaces ``aioice.ice.get_host_addresses`` (process-wide) with one that returns
``[webrtc] host_addresses``. ICE and DTLS ports are ephemeral (aioice has no port range).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, cast

import aioice.ice
import av
import msgspec
import numpy as np
import structlog
from aiohttp import WSMsgType, web
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from prometheus_client import CollectorRegistry, Counter, Gauge

from engine.config import Config, LoginMode, WebRtcConfig
from sip.rtp.dtmf import dtmf_packets
from sip.rtp.g711 import ALAW_DECODE, ULAW_DECODE, ULAW_ENCODE
from sip.rtp.packet import RtpError, parse_rtp
from sip.rtp.stream import OutboundStream

log = structlog.stdlib.get_logger("acd.webrtc")

RTC_PATH = "/api/v1/agent/rtc"

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at 8 kHz: the ptime of every G.711 peer and of aiortc's audio
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
PT_PCMU = 0
PT_PCMA = 8
PT_TELEPHONE_EVENT = 101
_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
_SILENCE = bytes(FRAME_SAMPLES * 2)

#: Audio buffered towards the browser at most (frames). Network jitter on loopback is well below
#: this; beyond it the oldest audio is dropped so latency cannot creep up over a long call.
MAX_BUFFERED_FRAMES = 6
#: When the loop was blocked for longer than this, the to-browser clock restarts instead of
#: bursting the backlog (a burst only fills the browser's jitter buffer with stale audio).
MAX_CATCH_UP_S = 0.1
#: A key press: 100 ms of event, then a gap, the usual figures of SIP phones (and of the
#: RFC 4733 examples); the receiver's own minimums are around 40 ms.
DTMF_DURATION_MS = 100
DTMF_GAP_MS = 60
MAX_PENDING_DIGITS = 32
_DIGIT_RE = re.compile(r"^[0-9*#A-Da-d]{1,32}$")

WS_AUTH_TIMEOUT_S = 5.0
#: An SDP offer with gathered candidates is a few KiB; nothing the page sends is larger.
MAX_MESSAGE_BYTES = 64 * 1024
#: Messages queued towards a page that does not read them; beyond this the session is closed.
MAX_OUTBOX = 256
#: How long a replaced or shut-down session may take to release its resources.
CLOSE_TIMEOUT_S = 5.0
#: Codec preference towards the browser: G.711 first (no Opus encode), Opus when the browser insists.
CODEC_PREFERENCE = ("audio/PCMU", "audio/PCMA", "audio/opus")


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
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sessions = Gauge(
            "acd_webrtc_sessions",
            "Browser softphone sessions (peer connections) open now.",
            registry=registry,
        )
        self.packets = Counter(
            "acd_webrtc_packets_total",
            "20 ms audio packets through the WebRTC gateway, by direction "
            "(to_browser: RTP from the call played to the page; from_browser: sent as RTP).",
            ["direction"],
            registry=registry,
        )
        self.dropped = Counter(
            "acd_webrtc_rtp_dropped_total",
            "RTP packets the gateway dropped (wrong source, no call connected, unknown payload "
            "type, malformed, or too late for the browser).",
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
        self.dtmf_digits = Counter(
            "acd_webrtc_dtmf_digits_total",
            "Keypad digits sent as RFC 4733 events.",
            registry=registry,
        )


# -- ICE host candidates ---------------------------------------------------------------------------

_aioice_host_addresses = aioice.ice.get_host_addresses
_host_addresses: tuple[str, ...] = ()


def _configured_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if not _host_addresses:
        return list(_aioice_host_addresses(use_ipv4, use_ipv6))
    return [a for a in _host_addresses if (use_ipv6 if ":" in a else use_ipv4)]


def set_host_addresses(addresses: tuple[str, ...]) -> None:
    """Make aioice gather host candidates on ``addresses`` (empty: its own choice)."""
    global _host_addresses
    _host_addresses = addresses
    aioice.ice.get_host_addresses = _configured_host_addresses


# -- audio towards the browser -----------------------------------------------------------------------


class ToBrowserTrack(MediaStreamTrack):
    """What the page hears while a call is connected: its audio, or silence when RTP pauses.

    Between calls `recv` blocks, so aiortc sends nothing (ICE consent and RTCP keep the connection
    alive): an idle softphone costs no encoding. On resume the RTP time jumps by the idle spell.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._fifo = bytearray()  # s16le samples, at most MAX_BUFFERED_FRAMES frames
        self._start: float | None = None
        self._pts = 0
        self._active = asyncio.Event()
        self._resumed = False
        self.dropped_samples = 0

    def activate(self) -> None:
        self._active.set()

    def deactivate(self) -> None:
        self._active.clear()
        self._fifo.clear()

    def stop(self) -> None:
        super().stop()
        self._active.set()  # wake a recv waiting for a call, which then sees the track ended

    def feed(self, pcm: bytes) -> None:
        self._fifo += pcm
        excess = len(self._fifo) - MAX_BUFFERED_FRAMES * FRAME_SAMPLES * 2
        if excess > 0:
            del self._fifo[:excess]
            self.dropped_samples += excess // 2

    def clear(self) -> None:
        self._fifo.clear()

    async def recv(self) -> av.AudioFrame:
        if not self._active.is_set():
            await self._active.wait()
            self._resumed = True
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._start is None:
            self._start = now
        elif self._resumed:
            # RTP time follows the wall clock across the idle spell; this frame is due now
            idle = int((now - self._start) * SAMPLE_RATE) // FRAME_SAMPLES * FRAME_SAMPLES
            self._pts = max(self._pts + FRAME_SAMPLES, idle)
            self._start = now - self._pts / SAMPLE_RATE
        else:
            self._pts += FRAME_SAMPLES
            wait = self._start + self._pts / SAMPLE_RATE - now
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -MAX_CATCH_UP_S:
                # the loop stalled: restart the clock here instead of bursting the backlog
                self._start = loop.time() - self._pts / SAMPLE_RATE
        self._resumed = False
        if len(self._fifo) >= FRAME_SAMPLES * 2:
            pcm = bytes(self._fifo[: FRAME_SAMPLES * 2])
            del self._fifo[: FRAME_SAMPLES * 2]
        else:
            pcm = _SILENCE
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(pcm)
        frame.pts = self._pts
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = _TIME_BASE
        return frame


class _RtpSocket(asyncio.DatagramProtocol):
    """The session's loopback plain RTP port."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # the selector loop's datagram transport is not a DatagramTransport subclass
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._session._rtp_received(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a peer that went away: the call layer ends the call.
        log.debug("webrtc_rtp_error", agent_id=self._session.agent_id, reason=str(exc))


class _ProtocolError(Exception):
    """The page sent something the signalling cannot accept; closes the session with 4400."""


# -- one agent's softphone ---------------------------------------------------------------------------


class Session:
    """One logged-in browser agent: peer connection, loopback RTP port, signalling socket."""

    def __init__(
        self, gateway: WebRtcGateway, agent_id: str, ws: web.WebSocketResponse, cfg: WebRtcConfig
    ) -> None:
        self.agent_id = agent_id
        self._gateway = gateway
        self._metrics = gateway.metrics
        self._ws = ws
        self._cfg = cfg
        self._peer: tuple[str, int] | None = None
        self._rtp: _RtpSocket | None = None
        self._stream = OutboundStream(
            secrets.randbits(32), secrets.randbits(16), secrets.randbits(32)
        )
        self._track = ToBrowserTrack()
        self._pc = RTCPeerConnection(
            RTCConfiguration(
                iceServers=[
                    RTCIceServer(
                        urls=list(s.urls),
                        username=s.username or None,
                        credential=s.credential or None,
                    )
                    for s in cfg.ice_servers
                ]
            )
        )
        self._transceiver = self._pc.addTransceiver(self._track, direction="sendrecv")
        caps = RTCRtpSender.getCapabilities("audio").codecs
        self._transceiver.setCodecPreferences(
            [c for name in CODEC_PREFERENCE for c in caps if c.mimeType.lower() == name.lower()]
        )
        self._outbox: asyncio.Queue[str] = asyncio.Queue(MAX_OUTBOX)
        self._digits: asyncio.Queue[str] = asyncio.Queue(MAX_PENDING_DIGITS)
        self._dtmf_active = False
        self._offered = False
        self._tasks: asyncio.TaskGroup | None = None
        self._helpers: list[asyncio.Task[None]] = []
        self._reader: asyncio.Task[None] | None = None
        self._close: tuple[int, str] | None = None
        self._done = asyncio.Event()
        self.codec = ""
        self.packets_to_browser = 0
        self.packets_from_browser = 0

    # -- API for the call layer ----------------------------------------------------------------

    @property
    def rtp_address(self) -> tuple[str, int]:
        """(host, port) of this session's plain RTP socket: where the bridge sends the call's audio."""
        transport = None if self._rtp is None else self._rtp.transport
        assert transport is not None, "rtp_address before open()"
        host, port = transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    @property
    def connection_state(self) -> str:
        return str(self._pc.connectionState)

    def connect_rtp(self, host: str, port: int) -> None:
        """Start exchanging RTP with the call's bridge at (host, port); the page sends its mic."""
        self._peer = (host, port)
        self._track.clear()
        self._track.activate()
        self._stream.begin_source(asyncio.get_running_loop().time())
        self.send_event({"type": "media", "active": True})

    def disconnect_rtp(self) -> None:
        """Stop exchanging RTP (the call ended); the page stops sending its microphone.

        For hold, keep the RTP connected and let the bridge stop sending: the page then hears
        silence and its microphone keeps flowing (muted by the bridge, not by the page).
        """
        self._peer = None
        self._track.deactivate()
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

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: _RtpSocket(self), local_addr=("127.0.0.1", 0)
        )
        self._rtp = protocol

    def _end(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
        if self._reader is not None:
            self._reader.cancel()

    async def run(self) -> tuple[int, str]:
        """Serve the page until it leaves or the session is ended; the close code and reason."""

        @self._pc.on("connectionstatechange")
        def _state() -> None:
            state = self._pc.connectionState
            self.send_event({"type": "connection", "state": state})
            if state == "connected" and self._gateway.on_media_ready is not None:
                self._gateway.on_media_ready(self)
            if state == "failed":
                self._end(CloseCode.MEDIA_FAILED, "media connection failed (ICE/DTLS)")

        @self._pc.on("track")
        def _track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and self._tasks is not None:
                pump = self._guard(self._from_browser(track), "from_browser")
                self._helpers.append(self._tasks.create_task(pump))

        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            self._helpers += [
                tasks.create_task(self._guard(self._writer(), "writer")),
                tasks.create_task(self._guard(self._dtmf_sender(), "dtmf")),
            ]
            self._reader = tasks.create_task(self._guard(self._read_loop(), "reader"))
            if self._close is not None:  # ended (replaced, shutdown) while it was opening
                self._reader.cancel()
            self.send_event(
                {
                    "type": "hello",
                    "agent_id": self.agent_id,
                    "media_active": self._peer is not None,
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
            for task in self._helpers:
                task.cancel()
            self._track.stop()  # ends aiortc's sender loop
            await self._pc.close()
        assert self._close is not None
        return self._close

    async def release(self) -> None:
        """Free the RTP port and the peer connection; idempotent, safe after a failed open."""
        self._peer = None
        self._track.stop()
        with contextlib.suppress(Exception):  # closing a half-built aiortc connection
            await self._pc.close()
        if self._rtp is not None and self._rtp.transport is not None:
            self._rtp.transport.close()
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
        # The ICE agent gathers on the configured addresses when the local description is set.
        set_host_addresses(self._cfg.host_addresses)
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await self._pc.setLocalDescription(await self._pc.createAnswer())
        except Exception as exc:
            # aiortc reports a bad offer with whatever its parser raised (ValueError, KeyError,
            # OperationError, ...): all of them mean "this SDP cannot be answered".
            raise _ProtocolError(f"bad offer: {type(exc).__name__}: {exc}"[:120]) from exc
        answer = self._pc.localDescription.sdp
        self.codec = _first_codec(answer)
        log.info("webrtc_negotiated", agent_id=self.agent_id, codec=self.codec)
        self.send_event({"type": "answer", "sdp": answer, "codec": self.codec})

    def _on_dtmf(self, message: dict[str, Any]) -> None:
        digits = message.get("digits")
        if not isinstance(digits, str) or not _DIGIT_RE.match(digits):
            self.send_event({"type": "error", "reason": "dtmf digits must be 1-32 of 0-9 * # A-D"})
            return
        for digit in digits.upper():
            try:
                self._digits.put_nowait(digit)
            except asyncio.QueueFull:
                self.send_event({"type": "error", "reason": "too many digits pending"})
                return

    # -- media -----------------------------------------------------------------------------------

    def _rtp_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr != self._peer:
            self._metrics.dropped.inc()
            return
        try:
            packet = parse_rtp(data)
        except RtpError:
            self._metrics.dropped.inc()
            return
        if packet.payload_type == PT_PCMU:
            table = ULAW_DECODE
        elif packet.payload_type == PT_PCMA:
            table = ALAW_DECODE
        else:  # telephone-events from the caller mean nothing to the agent's ear; CN is silence
            return
        self._track.feed(table[np.frombuffer(packet.payload, dtype=np.uint8)].tobytes())
        self.packets_to_browser += 1
        self._metrics.packets.labels(direction="to_browser").inc()

    def _send_rtp(self, packet: bytes) -> None:
        peer = self._peer
        if peer is not None and self._rtp is not None and self._rtp.transport is not None:
            self._rtp.transport.sendto(packet, peer)

    async def _from_browser(self, track: MediaStreamTrack) -> None:
        """The browser's microphone, as aiortc decodes it, out as 20 ms PCMU packets."""
        loop = asyncio.get_running_loop()
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        pending = np.empty(0, dtype=np.int16)
        counter = self._metrics.packets.labels(direction="from_browser")
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return  # the browser's track ended; the connection state reports why
            if self._peer is None or not isinstance(frame, av.AudioFrame):
                pending = pending[:0]
                continue
            if (
                frame.sample_rate == SAMPLE_RATE
                and frame.format.name == "s16"
                and frame.layout.name == "mono"
                and not len(pending)
            ):
                # G.711 from the browser arrives as 8 kHz mono s16 already: no resampling
                pending = frame.to_ndarray().reshape(-1).astype(np.int16, copy=False)
            else:
                for out in resampler.resample(frame):
                    pending = np.concatenate((pending, out.to_ndarray().reshape(-1)))
            while len(pending) >= FRAME_SAMPLES:
                chunk, pending = pending[:FRAME_SAMPLES], pending[FRAME_SAMPLES:]
                if self._dtmf_active:
                    continue  # the event stands in for this audio (RFC 4733 2.5.1.1)
                payload = ULAW_ENCODE[chunk.view(np.uint16)].tobytes()
                self._send_rtp(self._stream.send(PT_PCMU, payload, loop.time()))
                self.packets_from_browser += 1
                counter.inc()

    async def _dtmf_sender(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            digit = await self._digits.get()
            if self._peer is None:
                continue  # no call: nobody to hear it
            plan = dtmf_packets(digit, DTMF_DURATION_MS)
            start = loop.time()
            timestamp = self._stream.next_timestamp(start)
            self._dtmf_active = True
            try:
                for i, planned in enumerate(plan):
                    delay = start + planned.offset_ms / 1000 - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    last = i == len(plan) - 1
                    packet = self._stream.send(
                        PT_TELEPHONE_EVENT,
                        planned.payload,
                        loop.time(),
                        # the voice that follows continues after the event's duration
                        samples=DTMF_DURATION_MS * SAMPLE_RATE // 1000 if last else 0,
                        timestamp=timestamp,
                        marker=planned.marker,
                    )
                    self._send_rtp(packet)
            finally:
                self._dtmf_active = False
            self._metrics.dtmf_digits.inc()
            await asyncio.sleep(DTMF_GAP_MS / 1000)


def _first_codec(sdp: str) -> str:
    """The codec name of the first payload type of the audio m-line (what both sides send)."""
    m_line = re.search(r"^m=audio \S+ \S+ (\d+)", sdp, re.M)
    if m_line is None:
        return ""
    rtpmap = re.search(rf"^a=rtpmap:{m_line.group(1)} ([^/\s]+)", sdp, re.M)
    return rtpmap.group(1) if rtpmap else ""


# -- the gateway -------------------------------------------------------------------------------------


class WebRtcGateway:
    """All softphone sessions of the daemon, by agent id; mounts the signalling WebSocket."""

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
        self.metrics = WebRtcMetrics(registry)
        self._sessions: dict[str, Session] = {}
        self._closing = False
        self._on_unexpected = on_unexpected
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

    def count_unexpected(self) -> None:
        if self._on_unexpected is not None:
            self._on_unexpected()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(RTC_PATH, self.handle)

    async def close(self) -> None:
        """Daemon shutdown: end every session (1001) and wait for them to let go."""
        self._closing = True
        await asyncio.gather(
            *(
                s.close(CloseCode.GOING_AWAY, "server shutting down")
                for s in self._sessions.values()
            )
        )

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
        self.metrics.sessions.inc()
        try:
            await session.open()
            log.info("webrtc_session_opened", agent_id=agent_id, rtp=list(session.rtp_address))
            code, reason = await session.run()
        except OSError as exc:
            code, reason = CloseCode.INTERNAL_ERROR, f"cannot open the RTP port: {exc}"
        except Exception:  # our bug: it ends this agent's softphone, never the daemon
            log.exception("webrtc_session_error", agent_id=agent_id, where="handler")
            self.count_unexpected()
        finally:
            if self._sessions.get(agent_id) is session:
                del self._sessions[agent_id]
            self.metrics.sessions.dec()
            await session.release()
            label = _CLOSE_REASON_LABEL.get(code, "other")
            if code == CloseCode.NORMAL and reason != "bye":
                label = "page_closed"
            self.metrics.closed.labels(reason=label).inc()
            log.info(
                "webrtc_session_closed",
                agent_id=agent_id,
                code=code,
                reason=reason,
                codec=session.codec,
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
