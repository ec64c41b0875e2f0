"""The media half of a browser softphone: `MediaLeg`, in the daemon or in a worker process.

How this works: engine/webrtc/gateway.py and session.py keep the signalling (WebSocket, auth, the
session registry, the call layer's hooks, metrics); everything that costs CPU per call-second lives
in a `MediaLeg`: the aiortc ``RTCPeerConnection``, the to-browser track (engine/webrtc/track.py),
resampling and G.711 work (engine/webrtc/g711.py), Opus (engine/webrtc/opus.py), RFC 4733 sending
and the session's loopback plain RTP socket. A leg reports back through three callbacks
(`MediaEvents`): the peer connection's state, a message for the page, and "this leg failed".

With ``[webrtc] workers = 0`` the gateway runs `MediaLeg` in the daemon's own process and loop.
With N > 0 the same class runs in worker processes (engine/webrtc/worker.py), driven over a
control stream (engine/webrtc/protocol.py). The leg's RTP socket is the session's
``rtp_address``: the call's bridge in the daemon exchanges RTP with the worker directly, so
moving a leg out of the daemon adds no hop to the audio path.

The answer to the page's offer sets each direction's path: with G.711, the call's bytes as they
are (`LeanSender` towards the browser; `G711Receiver`, or `G711Tap` after aiortc's jitter
buffer, from it); with Opus, PyAV's libopus on the loop through the same sender and tap; where
aiortc's internals are not the ones we know, aiortc's own path (its decoder thread, then
`_from_browser` here re-encodes to PCMU).

ICE host candidates: aioice has no per-connection interface list and always skips 127.0.0.1, so
`set_host_addresses` replaces ``aioice.ice.get_host_addresses`` (process-wide) with one that
returns ``[webrtc] host_addresses``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import Awaitable
from typing import Any, Protocol, cast

import aioice.ice
import aiortc
import av
import numpy as np
import structlog
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from engine.config import WebRtcConfig
from engine.webrtc.g711 import (
    ALAW_TO_ULAW_BYTES,
    DECODER_QUEUE_ATTR,
    FRAME_SAMPLES,
    G711_PAYLOAD_TYPES,
    PT_PCMA,
    PT_PCMU,
    SAMPLE_RATE,
    G711Frames,
    G711Receiver,
    G711Tap,
    g711_receiver_supported,
    install_g711_tap,
)
from engine.webrtc.opus import OpusDecoder, OpusEncoder
from engine.webrtc.protocol import LegStats
from engine.webrtc.track import LeanSender, ToBrowserTrack, g711_sender_supported
from sip.rtp.dtmf import dtmf_packets
from sip.rtp.g711 import ULAW_ENCODE
from sip.rtp.packet import RtpError, parse_rtp
from sip.rtp.stream import OutboundStream

log = structlog.stdlib.get_logger("acd.webrtc")

PT_TELEPHONE_EVENT = 101
#: A key press: 100 ms of event, then a gap, the usual figures of SIP phones (and of the
#: RFC 4733 examples); the receiver's own minimums are around 40 ms.
DTMF_DURATION_MS = 100
DTMF_GAP_MS = 60
MAX_PENDING_DIGITS = 32
#: Codec preference towards the browser: G.711 first (no Opus encode), Opus when the browser insists.
CODEC_PREFERENCE = ("audio/PCMU", "audio/PCMA", "audio/opus")
#: RTP header of a relayed PCMU packet before `OutboundStream.rewrite` stamps it.
_PCMU_HEADER = bytes((0x80, PT_PCMU)) + bytes(10)


class MediaEvents(Protocol):
    """What a leg tells its session (engine.webrtc.session.Session), in whichever process it runs."""

    def media_state(self, state: str) -> None:
        """The peer connection's state changed (aiortc ``connectionState``)."""

    def media_error(self, reason: str) -> None:
        """Tell the page something went wrong; the session stays."""

    def media_failed(self, reason: str, *, bug: bool) -> None:
        """The leg cannot go on: end the session (1011). ``bug``: an unexpected exception."""


class OfferError(Exception):
    """The page's SDP offer cannot be answered (the session closes with 4400)."""


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


class _RtpSocket(asyncio.DatagramProtocol):
    """The leg's loopback plain RTP port."""

    def __init__(self, leg: MediaLeg) -> None:
        self._leg = leg
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # the selector loop's datagram transport is not a DatagramTransport subclass
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._leg._rtp_received(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a peer that went away: the call layer ends the call.
        log.debug("webrtc_rtp_error", agent_id=self._leg.agent_id, reason=str(exc))


# -- one softphone's media ---------------------------------------------------------------------------


class MediaLeg:
    """One agent's media: aiortc peer connection, audio both ways, DTMF, loopback RTP port.

    The API the session uses, identical for the worker's proxy (engine.webrtc.session.WorkerMedia):
    `open`, `answer`, `connect_rtp`, `disconnect_rtp`, `dtmf`, `close`, and the read-only
    `rtp_address`, `connection_state`, `stats`, `worker_pid`.
    """

    #: In-process: no worker.
    worker_pid: int | None = None

    def __init__(self, agent_id: str, cfg: WebRtcConfig, events: MediaEvents) -> None:
        self.agent_id = agent_id
        self._cfg = cfg
        self._events = events
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
        # G.711 from the browser goes out as it came in, without the decoder thread (see
        # `G711Tap`); other codecs (Opus) are decoded by aiortc and re-encoded in _from_browser.
        self._from_g711 = G711Frames(PT_PCMU)
        self._g711_failed = False
        self._lean_sender: LeanSender | None = None
        self._opus_pending = np.empty(0, dtype=np.int16)
        if not install_g711_tap(self._transceiver.receiver, self._g711_from_browser):
            log.warning(
                "webrtc_g711_passthrough_unavailable",
                aiortc=aiortc.__version__,
                reason="aiortc's receiver internals changed: G.711 is decoded and re-encoded",
            )
        self._digits: asyncio.Queue[str] = asyncio.Queue(MAX_PENDING_DIGITS)
        self._dtmf_active = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.stats = LegStats()
        self._pc.on("connectionstatechange", self._state_changed)
        self._pc.on("track", self._track_received)

    @property
    def rtp_address(self) -> tuple[str, int]:
        """(host, port) of the plain RTP socket: where the bridge sends the call's audio."""
        transport = None if self._rtp is None else self._rtp.transport
        assert transport is not None, "rtp_address before open()"
        host, port = transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    @property
    def connection_state(self) -> str:
        return str(self._pc.connectionState)

    async def open(self) -> None:
        """Bind the RTP port (OSError if it cannot) and start the DTMF sender."""
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _RtpSocket(self), local_addr=("127.0.0.1", 0)
        )
        if self._closed:  # closed while binding
            transport.close()
            return
        self._rtp = protocol
        self._spawn(self._dtmf_sender(), "dtmf")

    async def answer(self, offer_sdp: str) -> tuple[str, str]:
        """Answer the page's offer: (answer SDP with candidates gathered, negotiated codec)."""
        # The ICE agent gathers on the configured addresses when the local description is set.
        set_host_addresses(self._cfg.host_addresses)
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            await self._pc.setLocalDescription(await self._pc.createAnswer())
        except Exception as exc:
            # aiortc reports a bad offer with whatever its parser raised (ValueError, KeyError,
            # OperationError, ...): all of them mean "this SDP cannot be answered".
            raise OfferError(f"bad offer: {type(exc).__name__}: {exc}"[:120]) from exc
        answer = self._pc.localDescription.sdp
        codec = _first_codec(answer)
        payload_type = G711_PAYLOAD_TYPES.get(f"audio/{codec.lower()}")
        if payload_type is not None:
            self._track.use_g711(payload_type)
            receiver = self._transceiver.receiver
            if g711_receiver_supported(receiver):
                G711Receiver(receiver, self._relay_from_browser)
            sender = self._transceiver.sender
            if g711_sender_supported(sender):
                # aiortc's sender loop waits for a frame only once ICE and DTLS are up, long
                # after this: it never gets one, `LeanSender` sends instead
                self._track.detach()
                self._lean_sender = LeanSender(
                    self._track, sender, payload_type, self._transceiver.mid, self._sender_failed
                )
                if self._peer is not None:  # a call connected while this answer was made
                    self._lean_sender.start()
            else:
                log.warning(
                    "webrtc_g711_sender_unavailable",
                    aiortc=aiortc.__version__,
                    reason="aiortc's sender internals changed: G.711 goes through its sender",
                )
        elif codec.lower() == "opus":
            self._lean_opus(answer)
        return answer, codec

    def _lean_opus(self, answer: str) -> None:
        """Opus with the browser: decoded and encoded here, on the loop, by PyAV (no decoder
        thread, no encoder thread pool: the hand-offs to those threads cost more than the codec
        work). What the internals do not allow stays aiortc's (decode and encode in its threads)."""
        tap = getattr(self._transceiver.receiver, DECODER_QUEUE_ATTR, None)
        if isinstance(tap, G711Tap):
            self._opus_decoder = OpusDecoder()
            tap.opus_sink = self._opus_from_browser
        sender = self._transceiver.sender
        payload_type = _first_payload_type(answer)
        if payload_type is not None and g711_sender_supported(sender):
            self._track.detach()
            self._lean_sender = LeanSender(
                self._track,
                sender,
                payload_type,
                self._transceiver.mid,
                self._sender_failed,
                opus=OpusEncoder(),
            )
            if self._peer is not None:
                self._lean_sender.start()

    def connect_rtp(self, host: str, port: int) -> None:
        self._peer = (host, port)
        self._track.clear()
        self._from_g711.clear()
        self._track.activate()
        self._stream.begin_source(asyncio.get_running_loop().time())
        if self._lean_sender is not None:
            self._lean_sender.start()  # on the clock while a call is connected, not between

    def disconnect_rtp(self) -> None:
        self._peer = None
        if self._lean_sender is not None:
            self._lean_sender.stop()
        self._track.deactivate()

    def dtmf(self, digits: str) -> None:
        """Queue validated keypad digits (0-9 * # A-D) for RFC 4733 sending."""
        for digit in digits:
            try:
                self._digits.put_nowait(digit)
            except asyncio.QueueFull:
                self._events.media_error("too many digits pending")
                return

    async def close(self) -> None:
        """Stop the media and free the RTP port and peer connection; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._peer = None
        for task in self._tasks:
            task.cancel()
        if self._lean_sender is not None:
            self._lean_sender.stop()
        self._track.stop()  # ends aiortc's sender loop
        with contextlib.suppress(Exception):  # closing a half-built aiortc connection
            await self._pc.close()
        if self._rtp is not None and self._rtp.transport is not None:
            self._rtp.transport.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- internals -------------------------------------------------------------------------------

    def _spawn(self, work: Awaitable[None], where: str) -> None:
        task = asyncio.ensure_future(self._guard(work, where))
        self._tasks.add(task)  # owned here: close() cancels and awaits every one
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, work: Awaitable[None], where: str) -> None:
        """Run one of the leg's tasks; an unexpected error ends this session, not the process."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("webrtc_session_error", agent_id=self.agent_id, where=where)
            self._events.media_failed(f"internal error in {where}: {type(exc).__name__}", bug=True)

    def _sender_failed(self, exc: Exception) -> None:
        """`LeanSender` raised (our bug): end this session, as `_guard` does for a task."""
        log.error("webrtc_session_error", agent_id=self.agent_id, where="to_browser", exc_info=exc)
        self._events.media_failed(f"internal error in to_browser: {type(exc).__name__}", bug=True)

    def _state_changed(self) -> None:
        if not self._closed:
            self._events.media_state(str(self._pc.connectionState))

    def _track_received(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and not self._closed:
            self._spawn(self._from_browser(track), "from_browser")

    def _rtp_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr != self._peer:
            self.stats.dropped += 1
            return
        try:
            packet = parse_rtp(data)
        except RtpError:
            self.stats.dropped += 1
            return
        # telephone-events from the caller mean nothing to the agent's ear; CN is silence
        if self._track.feed_rtp(packet.payload_type, packet.payload):
            self.stats.to_browser += 1

    def _send_rtp(self, packet: bytes | bytearray) -> None:
        peer = self._peer
        if peer is not None and self._rtp is not None and self._rtp.transport is not None:
            self._rtp.transport.sendto(packet, peer)

    def _relay_from_browser(
        self, data: bytes, offset: int, payload_type: int, sequence: int, timestamp: int, ssrc: int
    ) -> None:
        """A 20 ms G.711 packet from the browser (`G711Receiver`), relayed to the call as PCMU.

        Called by aiortc's receive path: an exception here would end the leg's DTLS transport,
        so it ends this session the orderly way instead.
        """
        if self._closed or self._g711_failed or self._peer is None or self._dtmf_active:
            return  # no call; or a key press on the wire stands in for this audio (RFC 4733)
        try:
            payload = data[offset:]
            if payload_type == PT_PCMA:
                payload = payload.translate(ALAW_TO_ULAW_BYTES)
            packet = bytearray(_PCMU_HEADER)
            packet += payload
            self._stream.rewrite(
                packet, sequence, timestamp, ssrc, asyncio.get_running_loop().time()
            )
            self._send_rtp(packet)
            self.stats.from_browser += 1
        except Exception as exc:
            log.exception("webrtc_session_error", agent_id=self.agent_id, where="from_browser")
            self._g711_failed = True  # once: the session is ending
            self._events.media_failed(
                f"internal error in from_browser: {type(exc).__name__}", bug=True
            )

    def _g711_from_browser(self, payload: bytes, payload_type: int) -> None:
        """A G.711 frame from the browser's jitter buffer, out as 20 ms PCMU packets as it is.

        Called by aiortc's receive path (`G711Tap`): an exception here would end the leg's DTLS
        transport, so it ends this session the orderly way instead.
        """
        if self._closed or self._g711_failed:
            return
        try:
            if self._peer is None:
                self._from_g711.clear()
                return
            frames = self._from_g711
            frames.push(payload_type, payload)
            now = asyncio.get_running_loop().time()
            while (chunk := frames.pop()) is not None:
                if self._dtmf_active:
                    continue  # the event stands in for this audio (RFC 4733 2.5.1.1)
                self._send_rtp(self._stream.send(PT_PCMU, chunk, now))
                self.stats.from_browser += 1
        except Exception as exc:
            log.exception("webrtc_session_error", agent_id=self.agent_id, where="from_browser")
            self._g711_failed = True  # once: the session is ending
            self._events.media_failed(
                f"internal error in from_browser: {type(exc).__name__}", bug=True
            )

    def _opus_from_browser(self, payload: bytes) -> None:
        """An Opus frame from the browser's jitter buffer (`G711Tap`): decoded here, out as
        20 ms PCMU packets. Called by aiortc's receive path: an exception here would end the
        leg's DTLS transport, so it ends this session the orderly way instead."""
        if self._closed or self._g711_failed:
            return
        try:
            pcm = self._opus_decoder.decode(payload)
            if self._peer is None:
                self._opus_pending = self._opus_pending[:0]
                return
            pending = np.concatenate((self._opus_pending, *pcm))
            now = asyncio.get_running_loop().time()
            sent = 0
            while len(pending) - sent >= FRAME_SAMPLES:
                chunk = pending[sent : sent + FRAME_SAMPLES]
                sent += FRAME_SAMPLES
                if self._dtmf_active:
                    continue  # the event stands in for this audio (RFC 4733 2.5.1.1)
                payload = ULAW_ENCODE[chunk.view(np.uint16)].tobytes()
                self._send_rtp(self._stream.send(PT_PCMU, payload, now))
                self.stats.from_browser += 1
            self._opus_pending = pending[sent:]
        except Exception as exc:
            log.exception("webrtc_session_error", agent_id=self.agent_id, where="from_browser")
            self._g711_failed = True  # once: the session is ending
            self._events.media_failed(
                f"internal error in from_browser: {type(exc).__name__}", bug=True
            )

    async def _from_browser(self, track: MediaStreamTrack) -> None:
        """The browser's microphone, as aiortc decodes it, out as 20 ms PCMU packets."""
        loop = asyncio.get_running_loop()
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        pending = np.empty(0, dtype=np.int16)
        stats = self.stats
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
                stats.from_browser += 1

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
                # relayed voice resumes as a new source: after the event, with a marker
                self._stream.begin_source(loop.time())
            self.stats.dtmf_digits += 1
            await asyncio.sleep(DTMF_GAP_MS / 1000)


def _first_payload_type(sdp: str) -> int | None:
    """The first payload type of the audio m-line (what both sides send)."""
    m_line = re.search(r"^m=audio \S+ \S+ (\d+)", sdp, re.M)
    return None if m_line is None else int(m_line.group(1))


def _first_codec(sdp: str) -> str:
    """The codec name of the first payload type of the audio m-line (what both sides send)."""
    m_line = re.search(r"^m=audio \S+ \S+ (\d+)", sdp, re.M)
    if m_line is None:
        return ""
    rtpmap = re.search(rf"^a=rtpmap:{m_line.group(1)} ([^/\s]+)", sdp, re.M)
    return rtpmap.group(1) if rtpmap else ""
