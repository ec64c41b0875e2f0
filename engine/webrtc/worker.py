"""The media half of a browser softphone (`MediaLeg`), and the worker process that runs many of them.

How this works: engine/webrtc/gateway.py keeps the signalling (WebSocket, auth, the session registry, the
call layer's hooks, metrics); everything that costs CPU per call-second lives in a `MediaLeg`: the
aiortc ``RTCPeerConnection``, the to-browser track, resampling and G.711 work, RFC 4733 sending and
the session's loopback plain RTP socket. A leg reports back through three callbacks
(`MediaEvents`): the peer connection's state, a message for the page, and "this leg failed".

With ``[webrtc] workers = 0`` the gateway runs `MediaLeg` in the daemon's own process and loop.
With N > 0 it starts N of these processes (``python -m engine.webrtc.worker FD ...``) and each
session's `MediaLeg` runs in one of them, the same class, driven over a control stream: an
AF_UNIX socketpair made by the daemon, frames of a 4-byte big-endian length and a msgpack message
(the `ToWorker` / `FromWorker` unions below). The leg's RTP socket is the session's
``rtp_address``: the call's bridge in the daemon exchanges RTP with the worker directly, so moving a
leg out of the daemon adds no hop to the audio path.

G.711 passthrough: with PCMU or PCMA towards the browser (the gateway prefers them) a leg neither
decodes nor encodes, and skips aiortc's per-packet Python, which is most of what is left once
nothing is transcoded. `_LeanSender` stamps the call's bytes with a header made once by aiortc's
serializer and sends them through aiortc's DTLS transport (SRTP, ICE); `_G711Receiver` takes the
browser's 20 ms packets right after SRTP and relays them to the call with their own sequence and
timing (as the SIP bridge relays). Both keep aiortc's RTCP counters and statistics fed, so its
sender and receiver reports stay true; DTLS, ICE (consent freshness) and RTCP stay aiortc's. What
the lean paths do not take (the first packet of a stream, odd sizes, padding) goes aiortc's way,
with `_G711Tap` taking G.711 frames off before its decoder thread; `G711Frames` re-cuts those into
20 ms and rewrites the law with a byte table when the two sides differ. The aiortc internals this
relies on are pinned (pyproject.toml) and checked by tests/engine/test_webrtc_g711.py; if they are
missing at run time a leg logs a warning and takes aiortc's normal path.

One clock per process: every leg's frame towards the browser is sent from one 20 ms timer
(`_MediaClock`), not one timer per leg (a timer, a sleeping task and its wake-up per leg per
frame: 10-25 % of a PCMU leg's CPU in bench_webrtc.py). Legs are on it only while a call is
connected.

Opus with the browser: the same lean sender and tap, with PyAV's libopus on the event loop
(`_OpusEncoder`: the call's 8 kHz PCM straight into narrowband Opus; `_OpusDecoder`: the
browser's Opus to 48 kHz, resampled to 8 kHz, out as PCMU). aiortc's own path decodes on a thread
per leg and encodes in a thread pool at 48 kHz stereo; handing every 20 ms frame to those threads
and back (and the GIL switches it forces) cost more than the codec work itself.

Lifetime: the worker ignores SIGINT and SIGTERM (a Ctrl-C or a service manager's SIGTERM goes to
the whole process group; the daemon must drain its calls first, then it stops its workers), and it
exits when its control stream closes, whether the daemon closed it or died: no orphans.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import os
import queue
import re
import secrets
import struct
import sys
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Protocol, cast

import aioice.ice
import aiortc
import av
import msgspec
import numpy as np
import structlog
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.clock import current_ntp_time
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket

from engine.config import WebRtcConfig
from engine.runtime.workers import (
    ChannelClosed,
    Ready,
    control_stream,
    encode_frame,
    read_frame,
    worker_main,
)
from sip.rtp.dtmf import dtmf_packets
from sip.rtp.g711 import (
    ALAW_DECODE,
    ALAW_SILENCE,
    ALAW_TO_ULAW,
    ULAW_DECODE,
    ULAW_ENCODE,
    ULAW_SILENCE,
    ULAW_TO_ALAW,
)
from sip.rtp.packet import RtpError, parse_rtp, payload_offset, read_header
from sip.rtp.stream import OutboundStream

log = structlog.stdlib.get_logger("acd.webrtc")

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
#: Codec preference towards the browser: G.711 first (no Opus encode), Opus when the browser insists.
CODEC_PREFERENCE = ("audio/PCMU", "audio/PCMA", "audio/opus")

#: How often a worker reports its legs' packet counters (metrics lag the truth by at most this).
STATS_INTERVAL_S = 1.0
#: A control message is an SDP (a few KiB) at most; a larger length prefix means a broken stream.


class MediaStats(msgspec.Struct):
    """A leg's counters since it opened (plain ints: no metrics library on the per-packet path)."""

    to_browser: int = 0  # 20 ms packets from the call played to the page
    from_browser: int = 0  # 20 ms packets from the page sent as RTP
    dropped: int = 0  # RTP dropped: wrong source, malformed, or too late for the browser
    dtmf_digits: int = 0


class MediaEvents(Protocol):
    """What a leg tells its session (engine.webrtc.gateway.Session), in whichever process it runs."""

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


# -- G.711 passed through as it is ------------------------------------------------------------------

#: Payload rewriting between the two laws, one `bytes.translate` per packet (no PCM in between).
_ULAW_TO_ALAW = ULAW_TO_ALAW.tobytes()
_ALAW_TO_ULAW = ALAW_TO_ULAW.tobytes()
#: payload type of what comes in -> payload type wanted -> translation table (None: as it is)
_TRANSLATE: dict[int, dict[int, bytes | None]] = {
    PT_PCMU: {PT_PCMU: None, PT_PCMA: _ULAW_TO_ALAW},
    PT_PCMA: {PT_PCMU: _ALAW_TO_ULAW, PT_PCMA: None},
}
_G711_SILENCE = {PT_PCMU: bytes((ULAW_SILENCE,)), PT_PCMA: bytes((ALAW_SILENCE,))}
#: RTP header of a relayed PCMU packet before `OutboundStream.rewrite` stamps it.
_PCMU_HEADER = bytes((0x80, PT_PCMU)) + bytes(10)


class G711Frames:
    """G.711 payloads in one law (``payload_type``), re-cut into 20 ms frames.

    The G.711 passthrough of both directions: `push` takes any payload of either law (a packet
    of any ptime), `pop` hands out 160-byte frames. Nothing is decoded: a law change is a byte
    table, and with the same law on both sides the bytes are the very bytes that came in. At most
    ``max_frames`` frames are kept; beyond that the oldest audio goes (counted in
    ``dropped_samples``), so latency cannot creep up over a long call.
    """

    __slots__ = ("_buf", "_max_bytes", "dropped_samples", "payload_type", "silence")

    def __init__(self, payload_type: int, max_frames: int = MAX_BUFFERED_FRAMES) -> None:
        if payload_type not in _G711_SILENCE:
            raise ValueError(f"payload type {payload_type} is not G.711 (0 PCMU, 8 PCMA)")
        self.payload_type = payload_type
        #: A frame of silence in this law (for the gaps: no call, hold, loss).
        self.silence = _G711_SILENCE[payload_type] * FRAME_SAMPLES
        self._buf = bytearray()
        self._max_bytes = max_frames * FRAME_SAMPLES
        self.dropped_samples = 0

    def push(self, payload_type: int, payload: bytes) -> bool:
        """Queue a payload; False (and nothing queued) for a payload type that is not G.711."""
        laws = _TRANSLATE.get(payload_type)
        if laws is None:
            return False
        table = laws[self.payload_type]
        self._buf += payload if table is None else payload.translate(table)
        excess = len(self._buf) - self._max_bytes
        if excess > 0:
            del self._buf[:excess]
            self.dropped_samples += excess
        return True

    def pop(self) -> bytes | None:
        """The next 20 ms frame, or None while less than that is queued."""
        if len(self._buf) < FRAME_SAMPLES:
            return None
        frame = bytes(self._buf[:FRAME_SAMPLES])
        del self._buf[:FRAME_SAMPLES]
        return frame

    def clear(self) -> None:
        self._buf.clear()


class _G711Tap(queue.Queue[Any]):
    """aiortc's hand-off from a receiver to its decoder thread, with G.711 frames taken out.

    ``RTCRtpReceiver`` (aiortc 1.16) puts every encoded frame the jitter buffer releases, as a
    ``(codec, JitterFrame)`` tuple, on a ``queue.Queue`` read by its decoder thread, and ``None``
    to stop that thread. Put in the receiver's place before it starts, this queue hands G.711
    frames to ``sink`` right there, on the event loop, instead: no thread hop, no PyAV decode, no
    ``AudioFrame``, no re-encode. Everything else (Opus, the stop) goes the normal way. RTCP,
    statistics and the jitter buffer are untouched: they run before the hand-off. The internals
    this relies on are checked by tests/engine/test_webrtc_g711.py.
    """

    def __init__(self, sink: Callable[[bytes, int], None]) -> None:
        super().__init__()
        self._sink = sink
        #: Set once Opus is negotiated: Opus frames go here too, to be decoded on the loop.
        self.opus_sink: Callable[[bytes], None] | None = None

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is not None:
            codec, frame = item
            mime = codec.mimeType.lower()
            payload_type = _G711_PAYLOAD_TYPES.get(mime)
            if payload_type is not None:
                self._sink(frame.data, payload_type)
                return
            if mime == "audio/opus" and self.opus_sink is not None:
                self.opus_sink(frame.data)
                return
        super().put(item, block, timeout)


_G711_PAYLOAD_TYPES = {"audio/pcmu": PT_PCMU, "audio/pcma": PT_PCMA}
#: The receiver's decoder hand-off (name-mangled private of ``aiortc.RTCRtpReceiver``).
_DECODER_QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"


def install_g711_tap(receiver: Any, sink: Callable[[bytes, int], None]) -> bool:
    """Divert ``receiver``'s G.711 frames to ``sink`` (see `_G711Tap`); False if aiortc's
    internals are not the ones we know (the leg then decodes and re-encodes, as before)."""
    current = getattr(receiver, _DECODER_QUEUE_ATTR, None)
    if type(current) is not queue.Queue or not current.empty():
        return False
    setattr(receiver, _DECODER_QUEUE_ATTR, _G711Tap(sink))
    return True


# -- audio towards the browser -----------------------------------------------------------------------


class ToBrowserTrack(MediaStreamTrack):
    """What the page hears while a call is connected: its audio, or silence when RTP pauses.

    Between calls `recv` blocks, so aiortc sends nothing (ICE consent and RTCP keep the connection
    alive): an idle softphone costs no encoding. On resume the RTP time jumps by the idle spell.

    With G.711 towards the browser (`use_g711`) the FIFO holds the call's payload bytes, and
    either `_LeanSender` sends them (`detach`: aiortc's sender then waits in `recv` until the
    track stops) or `recv` returns them as an ``av.Packet``, which aiortc's sender packs as it is
    (its path for pre-encoded media). Either way no decode here, no encode in aiortc's thread
    pool. Otherwise (Opus) `recv` returns PCM frames for aiortc to encode.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._fifo = bytearray()  # s16le samples, at most MAX_BUFFERED_FRAMES frames
        self._g711: G711Frames | None = None
        self._start: float | None = None
        self._pts = 0
        self._active = asyncio.Event()
        self._resumed = False
        self._dropped_pcm = 0
        self._detached = False
        self._stopped = asyncio.Event()

    @property
    def dropped_samples(self) -> int:
        return self._dropped_pcm + (0 if self._g711 is None else self._g711.dropped_samples)

    def use_g711(self, payload_type: int) -> None:
        """The browser negotiated this G.711 law: pass payloads through (before any audio)."""
        self._g711 = G711Frames(payload_type)

    def activate(self) -> None:
        self._active.set()

    def deactivate(self) -> None:
        self._active.clear()
        self._resumed = True  # the next frame starts a talkspurt, after the idle spell
        self.clear()

    def detach(self) -> None:
        """`_LeanSender` takes the frames: aiortc's sender gets none (before it starts)."""
        self._detached = True

    def stop(self) -> None:
        super().stop()
        self._active.set()  # wake a recv waiting for a call, which then sees the track ended
        self._stopped.set()

    def feed_rtp(self, payload_type: int, payload: bytes) -> bool:
        """Queue the payload of an RTP packet from the call; False if it is not G.711 audio."""
        if self._g711 is not None:
            return self._g711.push(payload_type, payload)
        if payload_type == PT_PCMU:
            table = ULAW_DECODE
        elif payload_type == PT_PCMA:
            table = ALAW_DECODE
        else:
            return False
        self.feed(table[np.frombuffer(payload, dtype=np.uint8)].tobytes())
        return True

    def feed(self, pcm: bytes) -> None:
        self._fifo += pcm
        excess = len(self._fifo) - MAX_BUFFERED_FRAMES * FRAME_SAMPLES * 2
        if excess > 0:
            del self._fifo[:excess]
            self._dropped_pcm += excess // 2

    def clear(self) -> None:
        self._fifo.clear()
        if self._g711 is not None:
            self._g711.clear()

    async def tick(self) -> bool:
        """Wait for the next 20 ms frame time (and for a call while there is none); advances the
        media time (``pts``). True for the first frame after a pause (a new talkspurt).
        MediaStreamError once the track has stopped."""
        resumed = self._start is None
        if not self._active.is_set():
            await self._active.wait()
            self._resumed = resumed = True
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._advance(now):
            assert self._start is not None
            wait = self._start + self._pts / SAMPLE_RATE - now
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -MAX_CATCH_UP_S:
                # the loop stalled: restart the clock here instead of bursting the backlog
                self._start = loop.time() - self._pts / SAMPLE_RATE
        self._resumed = False
        return resumed

    def step(self, now: float) -> bool | None:
        """`tick` for a caller that keeps the time itself (`_MediaClock`, every 20 ms): advances
        the media time to this frame, due ``now``. True for the first frame after a pause (a new
        talkspurt), None while no call is connected (no frame: nothing is sent)."""
        if not self._active.is_set():
            self._resumed = True
            return None
        resumed = self._start is None or self._resumed
        self._advance(now)
        self._resumed = False
        return resumed

    def _advance(self, now: float) -> bool:
        """Media time to the next frame; True when it follows the running clock (the frame is due
        one interval after the last), False when the clock (re)starts at ``now``."""
        if self._start is None:
            self._start = now
            return False
        if self._resumed:
            self._follow_wall_clock(now)
            return False
        self._pts += FRAME_SAMPLES
        return True

    def _follow_wall_clock(self, now: float) -> None:
        """After an idle spell RTP time follows the wall clock: the next frame is due ``now``."""
        assert self._start is not None
        idle = int((now - self._start) * SAMPLE_RATE) // FRAME_SAMPLES * FRAME_SAMPLES
        self._pts = max(self._pts + FRAME_SAMPLES, idle)
        self._start = now - self._pts / SAMPLE_RATE

    @property
    def pts(self) -> int:
        """Media time of the current frame, in samples from the track's first frame."""
        return self._pts

    def next_g711(self) -> bytes:
        """The current frame's G.711 payload (silence when none is queued); after `tick`."""
        assert self._g711 is not None, "next_g711 without use_g711"
        return self._g711.pop() or self._g711.silence

    def next_pcm(self) -> bytes:
        """The current frame's 160 samples of s16 PCM (silence when none is queued); after
        `step`, without G.711 (Opus towards the browser)."""
        if len(self._fifo) < FRAME_SAMPLES * 2:
            return _SILENCE
        pcm = bytes(self._fifo[: FRAME_SAMPLES * 2])
        del self._fifo[: FRAME_SAMPLES * 2]
        return pcm

    async def recv(self) -> av.AudioFrame | av.Packet[Any]:
        if self._detached:
            await self._stopped.wait()
            raise MediaStreamError
        await self.tick()
        if self._g711 is not None:
            packet = av.Packet(self.next_g711())
            packet.pts = self._pts
            packet.time_base = _TIME_BASE
            return packet
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


#: Opus's RTP clock is 48 kHz whatever the audio's bandwidth (RFC 7587 4.1).
OPUS_RATE = 48000
#: Towards the browser the audio is the call's, 8 kHz G.711: narrowband Opus carries all of it,
#: and libopus takes 8 kHz mono as it is (no resampler; aiortc's encoder works at 48 kHz stereo).
OPUS_BITRATE = 24000


class _OpusEncoder:
    """8 kHz mono PCM -> 20 ms Opus packets, with PyAV's libopus, on the event loop."""

    def __init__(self) -> None:
        codec: Any = av.CodecContext.create("libopus", "w")
        codec.sample_rate = SAMPLE_RATE
        codec.format = "s16"
        codec.layout = "mono"
        codec.bit_rate = OPUS_BITRATE
        codec.time_base = _TIME_BASE
        # complexity 5 of 10: a fifth less CPU per frame than the default, and the source is
        # already 8 kHz G.711, which narrowband Opus at this rate carries without audible loss
        codec.options = {"application": "voip", "compression_level": "5"}
        self._codec = codec
        self._pts = 0

    def encode(self, pcm: bytes) -> bytes | None:
        """One 20 ms frame in; its packet, or None while libopus still fills its look-ahead."""
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(pcm)
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = _TIME_BASE
        frame.pts = self._pts
        self._pts += FRAME_SAMPLES
        packets = self._codec.encode(frame)
        return bytes(packets[0]) if packets else None


class _OpusDecoder:
    """Opus packets from the browser -> 8 kHz mono s16 PCM, with PyAV, on the event loop.

    libopus decodes at 48 kHz here whatever is asked; FFmpeg's resampler takes it to 8 kHz (with
    its anti-aliasing filter, as aiortc's path did after aiortc's own decoder thread).
    """

    def __init__(self) -> None:
        codec: Any = av.CodecContext.create("libopus", "r")
        codec.format = "s16"
        codec.layout = "mono"
        self._codec = codec
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)

    def decode(self, payload: bytes) -> list[Any]:
        """The PCM of one packet, as int16 arrays (empty while the resampler fills)."""
        out = []
        for frame in self._codec.decode(av.Packet(payload)):
            for resampled in self._resampler.resample(frame):
                out.append(resampled.to_ndarray().reshape(-1))
        return out


#: What `_LeanSender` needs of aiortc 1.16 beyond its public API (tests/engine/test_webrtc_g711.py):
#: the counters its sender's RTCP loop reports in sender reports (name-mangled privates) ...
_SR_NTP = "_RTCRtpSender__ntp_timestamp"
_SR_RTP = "_RTCRtpSender__rtp_timestamp"
_SR_PACKETS = "_RTCRtpSender__packet_count"
_SR_OCTETS = "_RTCRtpSender__octet_count"
_SENDER_ATTRS = ("_ssrc", _SR_NTP, _SR_RTP, _SR_PACKETS, _SR_OCTETS)
#: ... and the DTLS transport's SRTP-protect-and-send and its negotiated header extension ids.
_DTLS_ATTRS = ("_send_rtp", "_rtp_header_extensions_map")
_SEQ_TS = struct.Struct("!HI")


def g711_sender_supported(sender: Any) -> bool:
    """Whether aiortc's internals are those `_LeanSender` was written against."""
    transport = getattr(sender, "transport", None)
    return all(hasattr(sender, a) for a in _SENDER_ATTRS) and all(
        hasattr(transport, a) for a in _DTLS_ATTRS
    )


class _LeanSender:
    """G.711 towards the browser without aiortc's per-packet sender loop.

    aiortc's ``RTCRtpSender`` turns every 20 ms frame into an ``RtpPacket`` object (two NTP clock
    reads, header extensions built per packet, the frame handed to its encoder), which is most
    of what a PCMU leg costs once nothing is transcoded. For G.711 the packet is a fixed header
    and the call's bytes, so this stamps a header made once by aiortc's own serializer (same
    SSRC, the negotiated MID extension) with sequence number and timestamp, and sends it through
    aiortc's DTLS transport (SRTP protect, ICE). It keeps the sender's packet and octet counts
    and last NTP/RTP time up to date, so aiortc's RTCP sender reports stay true; ICE consent,
    DTLS and RTCP stay aiortc's. The process's `_MediaClock` paces the frames (`send`), detached
    from aiortc's sender, which waits for the track to stop.
    """

    def __init__(
        self,
        track: ToBrowserTrack,
        sender: RTCRtpSender,
        payload_type: int,
        mid: str | None,
        failed: Callable[[Exception], None],
        opus: _OpusEncoder | None = None,
    ) -> None:
        self._track = track
        #: None: G.711, the call's bytes as they are; else the PCM is encoded here, on the loop.
        self._opus = opus
        self._rtp_per_sample = 1 if opus is None else OPUS_RATE // SAMPLE_RATE
        self._sender: Any = sender
        self._dtls: Any = sender.transport
        template = RtpPacket(payload_type=payload_type, ssrc=self._sender._ssrc)
        template.extensions.mid = mid
        self._header = bytearray(template.serialize(self._dtls._rtp_header_extensions_map))
        self._payload_type = payload_type & 0x7F
        # a fresh random start, as aiortc's own sender loop would pick (it sends nothing here)
        self._sequence = secrets.randbits(15)  # lower half: no early wrap (see aiortc)
        self._timestamp_origin = secrets.randbits(32)
        #: Called (once, by the clock, which then forgets this sender) for an unexpected error.
        self.failed = failed

    def start(self) -> None:
        """On the clock (idempotent); between calls a leg is off it, so idle legs cost nothing."""
        _MediaClock.of_running_loop().add(self)

    def stop(self) -> None:
        _MediaClock.of_running_loop().discard(self)

    async def send(self, now: float, ntp: int) -> None:
        """The frame due ``now`` (``ntp``: the same instant as aiortc's RTCP wants it), if any."""
        track, header, sender = self._track, self._header, self._sender
        talkspurt = track.step(now)
        if talkspurt is None:
            return  # no call connected: nothing to send
        if self._opus is None:
            payload = track.next_g711()
        else:
            encoded = self._opus.encode(track.next_pcm())
            if encoded is None:
                return  # the encoder holds the first frame back (its look-ahead)
            payload = encoded
        timestamp = (self._timestamp_origin + track.pts * self._rtp_per_sample) & 0xFFFFFFFF
        header[1] = self._payload_type | (0x80 if talkspurt else 0)
        _SEQ_TS.pack_into(header, 2, self._sequence, timestamp)
        try:
            await self._dtls._send_rtp(bytes(header) + payload)
        except ConnectionError:
            return  # DTLS not (or no longer) connected: the connection state tells why
        self._sequence = (self._sequence + 1) & 0xFFFF
        setattr(sender, _SR_NTP, ntp)
        setattr(sender, _SR_RTP, timestamp)
        setattr(sender, _SR_PACKETS, getattr(sender, _SR_PACKETS) + 1)
        setattr(sender, _SR_OCTETS, getattr(sender, _SR_OCTETS) + len(payload))


class _MediaClock:
    """One 20 ms timer for every `_LeanSender` of an event loop (a process, in a worker).

    A timer per leg meant a timer handle, a sleep future and a task step per leg every 20 ms
    for one packet; measured (bench_webrtc.py, back to back), dropping them saved 10-25 % of a
    PCMU leg's CPU. Here one timer sends the frame due of every leg in turn (each through its own SRTP context:
    nothing is shared but the time). The media time of a leg still starts at its own first frame
    and jumps by the idle spell after a pause (`ToBrowserTrack.step`). The clock runs while it
    has senders (legs with a call connected) and stops when the last one leaves.
    """

    _by_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _MediaClock]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self) -> None:
        self._senders: dict[_LeanSender, None] = {}  # insertion-ordered set
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def of_running_loop(cls) -> _MediaClock:
        loop = asyncio.get_running_loop()
        clock = cls._by_loop.get(loop)
        if clock is None:
            clock = cls._by_loop[loop] = cls()
        return clock

    def add(self, sender: _LeanSender) -> None:
        self._senders[sender] = None
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def discard(self, sender: _LeanSender) -> None:
        self._senders.pop(sender, None)
        if not self._senders and self._task is not None:
            self._task.cancel()  # owned here: nothing awaits the clock but its senders
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start, ticks = loop.time(), 0
        while True:
            now = loop.time()
            ntp = current_ntp_time()  # once a tick, not once a packet: it reads the clock twice
            for sender in list(self._senders):
                try:
                    await sender.send(now, ntp)
                except Exception as exc:  # that leg's bug: it ends that leg, not the clock
                    self._senders.pop(sender, None)
                    sender.failed(exc)
            ticks += 1
            wait = start + ticks * FRAME_S - loop.time()
            if wait < -MAX_CATCH_UP_S:
                # the loop stalled: restart the clock here instead of bursting the backlog
                start, ticks, wait = loop.time(), 0, 0.0
            await asyncio.sleep(max(wait, 0.0))


#: What `_G711Receiver` needs of aiortc 1.16 (tests/engine/test_webrtc_g711.py): the DTLS
#: transport's per-packet RTP handler, and the receiver's RTCP receiver-report statistics.
_RECEIVER_STREAMS = "_RTCRtpReceiver__remote_streams"


def g711_receiver_supported(receiver: Any) -> bool:
    """Whether aiortc's internals are those `_G711Receiver` was written against."""
    transport = getattr(receiver, "transport", None)
    streams = getattr(receiver, _RECEIVER_STREAMS, None)
    return isinstance(streams, dict) and callable(getattr(transport, "_handle_rtp_data", None))


class _Seen:
    """The two fields of a packet aiortc's ``StreamStatistics.add`` reads."""

    __slots__ = ("sequence_number", "timestamp")

    def __init__(self, sequence_number: int, timestamp: int) -> None:
        self.sequence_number = sequence_number
        self.timestamp = timestamp


#: A browser packet the lean path takes: RTP version 2, no padding, no CSRC.
_LEAN_FIRST_BYTE_MASK = 0xEF  # version, padding, CSRC count (the extension bit may be set)


class _G711Receiver:
    """G.711 from the browser without aiortc's per-packet receive path.

    Once a browser stream is known (its first packet went the normal way, which made aiortc's
    statistics for it), each 20 ms G.711 packet is handled right after SRTP: its receiver-report
    statistics are fed (loss, jitter, highest sequence: RTCP stays true) and it goes to
    ``sink(packet, payload offset, payload type, sequence, timestamp, ssrc)``, which relays it
    with the browser's own sequence and timestamps mapped onto the leg's stream, so loss and
    reordering reach the far end as they happened (as a SIP bridge relays). Anything else (other
    payload types, other sizes, padding, a new SSRC) goes aiortc's way: parse, jitter buffer,
    `_G711Tap` or its decoder.
    """

    def __init__(
        self, receiver: Any, sink: Callable[[bytes, int, int, int, int, int], None]
    ) -> None:
        dtls = receiver.transport
        self._normal = dtls._handle_rtp_data
        self._streams: dict[int, Any] = getattr(receiver, _RECEIVER_STREAMS)
        self._sink = sink
        dtls._handle_rtp_data = self._handle  # the transport looks it up per packet

    async def _handle(self, data: bytes, arrival_time_ms: int) -> None:
        payload_type = data[1] & 0x7F if len(data) > 1 else -1
        if payload_type in _TRANSLATE and data[0] & _LEAN_FIRST_BYTE_MASK == 0x80:
            offset = payload_offset(data)
            if offset > 0 and len(data) - offset == FRAME_SAMPLES:
                sequence, timestamp, ssrc = read_header(data)
                statistics = self._streams.get(ssrc)
                if statistics is not None:
                    statistics.add(_Seen(sequence, timestamp))
                    self._sink(data, offset, payload_type, sequence, timestamp, ssrc)
                    return
        await self._normal(data, arrival_time_ms)


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

    The API the session uses, identical for the worker's proxy (engine.webrtc.gateway.WorkerMedia):
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
        # `_G711Tap`); other codecs (Opus) are decoded by aiortc and re-encoded in _from_browser.
        self._from_g711 = G711Frames(PT_PCMU)
        self._g711_failed = False
        self._lean_sender: _LeanSender | None = None
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
        self.stats = MediaStats()
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
        payload_type = _G711_PAYLOAD_TYPES.get(f"audio/{codec.lower()}")
        if payload_type is not None:
            self._track.use_g711(payload_type)
            receiver = self._transceiver.receiver
            if g711_receiver_supported(receiver):
                _G711Receiver(receiver, self._relay_from_browser)
            sender = self._transceiver.sender
            if g711_sender_supported(sender):
                # aiortc's sender loop waits for a frame only once ICE and DTLS are up, long
                # after this: it never gets one, `_LeanSender` sends instead
                self._track.detach()
                self._lean_sender = _LeanSender(
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
        tap = getattr(self._transceiver.receiver, _DECODER_QUEUE_ATTR, None)
        if isinstance(tap, _G711Tap):
            self._opus_decoder = _OpusDecoder()
            tap.opus_sink = self._opus_from_browser
        sender = self._transceiver.sender
        payload_type = _first_payload_type(answer)
        if payload_type is not None and g711_sender_supported(sender):
            self._track.detach()
            self._lean_sender = _LeanSender(
                self._track,
                sender,
                payload_type,
                self._transceiver.mid,
                self._sender_failed,
                opus=_OpusEncoder(),
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
        """`_LeanSender` raised (our bug): end this session, as `_guard` does for a task."""
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
        """A 20 ms G.711 packet from the browser (`_G711Receiver`), relayed to the call as PCMU.

        Called by aiortc's receive path: an exception here would end the leg's DTLS transport,
        so it ends this session the orderly way instead.
        """
        if self._closed or self._g711_failed or self._peer is None or self._dtmf_active:
            return  # no call; or a key press on the wire stands in for this audio (RFC 4733)
        try:
            payload = data[offset:]
            if payload_type == PT_PCMA:
                payload = payload.translate(_ALAW_TO_ULAW)
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

        Called by aiortc's receive path (`_G711Tap`): an exception here would end the leg's DTLS
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
        """An Opus frame from the browser's jitter buffer (`_G711Tap`): decoded here, out as
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


# -- control channel: daemon <-> worker ------------------------------------------------------------
# Every message names its session by ``sid``, a number the daemon gives (unique per daemon run).


class Open(msgspec.Struct, tag=True, array_like=True):
    sid: int
    agent_id: str
    cfg: WebRtcConfig


class Offer(msgspec.Struct, tag=True, array_like=True):
    sid: int
    sdp: str


class ConnectRtp(msgspec.Struct, tag=True, array_like=True):
    sid: int
    host: str
    port: int


class DisconnectRtp(msgspec.Struct, tag=True, array_like=True):
    sid: int


class Dtmf(msgspec.Struct, tag=True, array_like=True):
    sid: int
    digits: str


class Close(msgspec.Struct, tag=True, array_like=True):
    sid: int


ToWorker = Open | Offer | ConnectRtp | DisconnectRtp | Dtmf | Close


class Opened(msgspec.Struct, tag=True, array_like=True):
    sid: int
    host: str
    port: int


class OpenFailed(msgspec.Struct, tag=True, array_like=True):
    sid: int
    reason: str


class Answered(msgspec.Struct, tag=True, array_like=True):
    sid: int
    sdp: str
    codec: str


class OfferRefused(msgspec.Struct, tag=True, array_like=True):
    sid: int
    reason: str


class StateChanged(msgspec.Struct, tag=True, array_like=True):
    sid: int
    state: str


class PageError(msgspec.Struct, tag=True, array_like=True):
    sid: int
    reason: str


class Failed(msgspec.Struct, tag=True, array_like=True):
    sid: int
    reason: str
    bug: bool


class Stats(msgspec.Struct, tag=True, array_like=True):
    sid: int
    stats: MediaStats


class Closed(msgspec.Struct, tag=True, array_like=True):
    sid: int
    stats: MediaStats


FromWorker = (
    Ready | Opened | OpenFailed | Answered | OfferRefused | StateChanged | PageError | Failed
) | (Stats | Closed)

# -- the worker process ----------------------------------------------------------------------------


class _LegEvents:
    """A leg's events, sent to the daemon's session over the control stream."""

    def __init__(self, sid: int, send: Callable[[msgspec.Struct], None]) -> None:
        self._sid = sid
        self._send = send

    def media_state(self, state: str) -> None:
        self._send(StateChanged(self._sid, state))

    def media_error(self, reason: str) -> None:
        self._send(PageError(self._sid, reason))

    def media_failed(self, reason: str, *, bug: bool) -> None:
        self._send(Failed(self._sid, reason, bug))


class _Worker:
    """The legs of one worker process and the control stream that drives them."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._legs: dict[int, MediaLeg] = {}
        self._reported: dict[int, MediaStats] = {}
        self._requests: set[asyncio.Task[None]] = set()

    def send(self, message: msgspec.Struct) -> None:
        if not self._writer.is_closing():
            self._writer.write(encode_frame(message))

    async def serve(self, reader: asyncio.StreamReader) -> None:
        self.send(Ready(os.getpid()))
        decoder = msgspec.msgpack.Decoder(ToWorker)
        reporter = asyncio.ensure_future(self._report_stats())
        try:
            while True:
                try:
                    message = await read_frame(reader, decoder)
                except ChannelClosed as exc:
                    log.info("webrtc_worker_channel_closed", reason=str(exc))
                    return
                self._dispatch(message)
        finally:
            reporter.cancel()
            for task in self._requests:
                task.cancel()
            await asyncio.gather(
                reporter,
                *self._requests,
                *(leg.close() for leg in self._legs.values()),
                return_exceptions=True,
            )

    def _dispatch(self, message: Any) -> None:
        if isinstance(message, Open):
            new = MediaLeg(message.agent_id, message.cfg, _LegEvents(message.sid, self.send))
            self._legs[message.sid] = new
            self._request(self._open(message.sid, new), message.sid)
            return
        leg = self._legs.get(message.sid)
        if leg is None:  # closed meanwhile: the daemon no longer waits for this one
            return
        if isinstance(message, Offer):
            self._request(self._answer(message.sid, leg, message.sdp), message.sid)
        elif isinstance(message, ConnectRtp):
            leg.connect_rtp(message.host, message.port)
        elif isinstance(message, DisconnectRtp):
            leg.disconnect_rtp()
        elif isinstance(message, Dtmf):
            leg.dtmf(message.digits)
        elif isinstance(message, Close):
            del self._legs[message.sid]
            self._reported.pop(message.sid, None)
            self._request(self._close(message.sid, leg), message.sid)

    def _request(self, work: Awaitable[None], sid: int) -> None:
        async def run() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # our bug: it ends that session, never the worker
                log.exception("webrtc_worker_error", sid=sid)
                self.send(Failed(sid, f"internal error in worker: {type(exc).__name__}", True))

        task = asyncio.ensure_future(run())
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _open(self, sid: int, leg: MediaLeg) -> None:
        try:
            await leg.open()
        except OSError as exc:
            self.send(OpenFailed(sid, str(exc)))
            return
        if sid in self._legs:
            self.send(Opened(sid, *leg.rtp_address))

    async def _answer(self, sid: int, leg: MediaLeg, sdp: str) -> None:
        try:
            answer, codec = await leg.answer(sdp)
        except OfferError as exc:
            self.send(OfferRefused(sid, str(exc)))
            return
        self.send(Answered(sid, answer, codec))

    async def _close(self, sid: int, leg: MediaLeg) -> None:
        await leg.close()
        self.send(Closed(sid, leg.stats))

    async def _report_stats(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            for sid, leg in self._legs.items():
                if self._reported.get(sid) != leg.stats:
                    snapshot = msgspec.structs.replace(leg.stats)
                    self._reported[sid] = snapshot
                    self.send(Stats(sid, snapshot))


async def _serve(fd: int) -> None:
    async with control_stream(fd) as (reader, writer):
        await _Worker(writer).serve(reader)


def main(argv: list[str]) -> int:
    """``python -m engine.webrtc.worker FD LOG_LEVEL LOG_FORMAT EVENT_LOOP`` (the daemon runs it)."""

    async def serve(fds: list[int]) -> None:
        await _serve(fds[0])

    # aiortc and aioice log every packet and ICE check at debug level
    return worker_main(
        argv,
        module="engine.webrtc.worker",
        n_fds=1,
        serve=serve,
        context_key="webrtc_worker",
        quiet_loggers=("aiortc", "aioice"),
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
