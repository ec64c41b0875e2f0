"""Audio towards the browser: the track the page hears, the lean sender, and one clock per process.

How this works: RTP from the call goes into the leg's `ToBrowserTrack` (G.711 payloads as they
are, or PCM when Opus is negotiated), which keeps the media time: one 20 ms frame per tick from
its first, silence when nothing is queued, a jump by the idle spell after a pause. Between calls
it produces nothing, so an idle softphone costs no encoding.

Who sends the frames: where aiortc's internals allow, `LeanSender`, not aiortc's per-packet
sender loop. It stamps each frame (the call's G.711 bytes, or Opus encoded on the loop by
engine/webrtc/opus.py) with a header made once by aiortc's serializer and sends it through
aiortc's DTLS transport (SRTP, ICE), keeping aiortc's RTCP sender-report counters true; DTLS,
ICE (consent freshness) and RTCP stay aiortc's. The internals it relies on are pinned
(pyproject.toml) and checked by tests/engine/test_webrtc_g711.py. Otherwise aiortc's sender
pulls the frames itself with `ToBrowserTrack.recv`, which paces itself on the loop clock.

One clock per process: every lean sender's frame is sent from one 20 ms timer (`_MediaClock`),
not one timer per leg (a timer, a sleeping task and its wake-up per leg per frame: 10-25 % of a
PCMU leg's CPU in bench_webrtc.py). Legs are on it only while a call is connected. Its task is
owned by the clock, which cancels it when the last leg leaves; the owner of a process's legs
awaits it at shutdown (`stop_media_clock`).
"""

from __future__ import annotations

import asyncio
import secrets
import struct
import weakref
from collections.abc import Callable
from typing import Any, ClassVar

import av
import numpy as np
from aiortc import RTCRtpSender
from aiortc.clock import current_ntp_time
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket

from engine.webrtc.g711 import (
    FRAME_SAMPLES,
    MAX_BUFFERED_FRAMES,
    PT_PCMA,
    PT_PCMU,
    SAMPLE_RATE,
    TIME_BASE,
    G711Frames,
)
from engine.webrtc.opus import OPUS_RATE, OpusEncoder
from sip.rtp.g711 import ALAW_DECODE, ULAW_DECODE

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
_SILENCE = bytes(FRAME_SAMPLES * 2)

#: When the loop was blocked for longer than this, the to-browser clock restarts instead of
#: bursting the backlog (a burst only fills the browser's jitter buffer with stale audio).
MAX_CATCH_UP_S = 0.1


class ToBrowserTrack(MediaStreamTrack):
    """What the page hears while a call is connected: its audio, or silence when RTP pauses.

    Between calls `recv` blocks, so aiortc sends nothing (ICE consent and RTCP keep the connection
    alive): an idle softphone costs no encoding. On resume the RTP time jumps by the idle spell.

    With G.711 towards the browser (`use_g711`) the FIFO holds the call's payload bytes, and
    either `LeanSender` sends them (`detach`: aiortc's sender then waits in `recv` until the
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
        """`LeanSender` takes the frames: aiortc's sender gets none (before it starts)."""
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
            packet.time_base = TIME_BASE
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
        frame.time_base = TIME_BASE
        return frame


#: What `LeanSender` needs of aiortc 1.16 beyond its public API (tests/engine/test_webrtc_g711.py):
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
    """Whether aiortc's internals are those `LeanSender` was written against."""
    transport = getattr(sender, "transport", None)
    return all(hasattr(sender, a) for a in _SENDER_ATTRS) and all(
        hasattr(transport, a) for a in _DTLS_ATTRS
    )


class LeanSender:
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
        opus: OpusEncoder | None = None,
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


async def stop_media_clock() -> None:
    """Stop this event loop's media clock and wait for its task, if it has one: for whoever owns
    the loop's legs (the gateway with ``[webrtc] workers = 0``, else each worker), at its
    shutdown, after closing them (a closed leg is off the clock already)."""
    clock = _MediaClock._by_loop.get(asyncio.get_running_loop())
    if clock is not None:
        await clock.close()


class _MediaClock:
    """One 20 ms timer for every `LeanSender` of an event loop (a process, in a worker).

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
        self._senders: dict[LeanSender, None] = {}  # insertion-ordered set
        self._task: asyncio.Task[None] | None = None
        #: Runs cancelled when the last sender left that have not ended yet: `close` awaits them.
        self._stopping: set[asyncio.Task[None]] = set()

    @classmethod
    def of_running_loop(cls) -> _MediaClock:
        loop = asyncio.get_running_loop()
        clock = cls._by_loop.get(loop)
        if clock is None:
            clock = cls._by_loop[loop] = cls()
        return clock

    def add(self, sender: LeanSender) -> None:
        self._senders[sender] = None
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def discard(self, sender: LeanSender) -> None:
        self._senders.pop(sender, None)
        if not self._senders:
            self._stop()

    def _stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def close(self) -> None:
        """Stop the clock and wait until its task has ended; senders still on it get no more
        frames. The clock starts again if a sender is added later."""
        self._senders.clear()
        self._stop()
        await asyncio.gather(*self._stopping, return_exceptions=True)

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
