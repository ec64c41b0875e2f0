"""G.711 passed through as it is: the call side's audio format, 20 ms frames in either law, and
the hooks on aiortc's receive side.

How this works: the call side of every leg is plain RTP/AVP G.711, 8 kHz, 20 ms packets (the
constants below; the other modules of the leg work in them too). With PCMU or PCMA towards the
browser as well (the gateway prefers them) a leg neither decodes nor encodes: `G711Frames`
re-cuts payloads into 20 ms frames and rewrites the law with a byte table when the two sides
differ.

From the browser, two hooks skip aiortc's per-packet Python, which is most of what is left once
nothing is transcoded: `G711Receiver` takes the browser's 20 ms packets right after SRTP and
hands them to the leg, which relays them to the call with their own sequence and timing (as the
SIP bridge relays); it keeps aiortc's receiver statistics fed, so RTCP receiver reports stay
true. What it does not take (the first packet of a stream, odd sizes, padding) goes aiortc's
way, with `G711Tap` taking G.711 frames (and, once negotiated, Opus ones) off before its
decoder thread. The way towards the browser, `LeanSender`, is in engine/webrtc/track.py.

The aiortc internals this relies on are pinned (pyproject.toml) and checked by
tests/engine/test_webrtc_g711.py; if they are missing at run time a leg logs a warning and takes
aiortc's normal path.
"""

from __future__ import annotations

import fractions
import queue
from collections.abc import Callable
from typing import Any

from sip.rtp.g711 import ALAW_SILENCE, ALAW_TO_ULAW, ULAW_SILENCE, ULAW_TO_ALAW
from sip.rtp.packet import payload_offset, read_header

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at 8 kHz: the ptime of every G.711 peer and of aiortc's audio
PT_PCMU = 0
PT_PCMA = 8
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)

#: Audio buffered towards the browser at most (frames). Network jitter on loopback is well below
#: this; beyond it the oldest audio is dropped so latency cannot creep up over a long call.
MAX_BUFFERED_FRAMES = 6

# -- G.711 passed through as it is ------------------------------------------------------------------

#: Payload rewriting between the two laws, one `bytes.translate` per packet (no PCM in between).
ULAW_TO_ALAW_BYTES = ULAW_TO_ALAW.tobytes()
ALAW_TO_ULAW_BYTES = ALAW_TO_ULAW.tobytes()
#: payload type of what comes in -> payload type wanted -> translation table (None: as it is)
_TRANSLATE: dict[int, dict[int, bytes | None]] = {
    PT_PCMU: {PT_PCMU: None, PT_PCMA: ULAW_TO_ALAW_BYTES},
    PT_PCMA: {PT_PCMU: ALAW_TO_ULAW_BYTES, PT_PCMA: None},
}
_G711_SILENCE = {PT_PCMU: bytes((ULAW_SILENCE,)), PT_PCMA: bytes((ALAW_SILENCE,))}


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


class G711Tap(queue.Queue[Any]):
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
            payload_type = G711_PAYLOAD_TYPES.get(mime)
            if payload_type is not None:
                self._sink(frame.data, payload_type)
                return
            if mime == "audio/opus" and self.opus_sink is not None:
                self.opus_sink(frame.data)
                return
        super().put(item, block, timeout)


G711_PAYLOAD_TYPES = {"audio/pcmu": PT_PCMU, "audio/pcma": PT_PCMA}
#: The receiver's decoder hand-off (name-mangled private of ``aiortc.RTCRtpReceiver``).
DECODER_QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"


def install_g711_tap(receiver: Any, sink: Callable[[bytes, int], None]) -> bool:
    """Divert ``receiver``'s G.711 frames to ``sink`` (see `G711Tap`); False if aiortc's
    internals are not the ones we know (the leg then decodes and re-encodes, as before)."""
    current = getattr(receiver, DECODER_QUEUE_ATTR, None)
    if type(current) is not queue.Queue or not current.empty():
        return False
    setattr(receiver, DECODER_QUEUE_ATTR, G711Tap(sink))
    return True


#: What `G711Receiver` needs of aiortc 1.16 (tests/engine/test_webrtc_g711.py): the DTLS
#: transport's per-packet RTP handler, and the receiver's RTCP receiver-report statistics.
_RECEIVER_STREAMS = "_RTCRtpReceiver__remote_streams"


def g711_receiver_supported(receiver: Any) -> bool:
    """Whether aiortc's internals are those `G711Receiver` was written against."""
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


class G711Receiver:
    """G.711 from the browser without aiortc's per-packet receive path.

    Once a browser stream is known (its first packet went the normal way, which made aiortc's
    statistics for it), each 20 ms G.711 packet is handled right after SRTP: its receiver-report
    statistics are fed (loss, jitter, highest sequence: RTCP stays true) and it goes to
    ``sink(packet, payload offset, payload type, sequence, timestamp, ssrc)``, which relays it
    with the browser's own sequence and timestamps mapped onto the leg's stream, so loss and
    reordering reach the far end as they happened (as a SIP bridge relays). Anything else (other
    payload types, other sizes, padding, a new SSRC) goes aiortc's way: parse, jitter buffer,
    `G711Tap` or its decoder.
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
