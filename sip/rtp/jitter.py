"""A jitter buffer for the decoding path (recording, mixing, transcoding); the relay path has none.

How this works: `push` stores packets by extended sequence number; `pop` is called once per frame
period by the consumer's clock and returns, in sequence order, either the next frame
(`FrameReleased`) or an explicit `GapReported` when that sequence number never arrived (loss) or the
buffer ran dry (underrun), so the consumer can insert exactly one frame of silence or concealment.
Playout starts once `depth` frames are buffered, and starts again (re-buffering) after an underrun.
A packet for a sequence number already played out is late: it is dropped and counted.

Depth is fixed, or adaptive: the buffer keeps the RFC 3550 A.8 interarrival jitter of what it
receives and, whenever it (re)starts playout, uses ``ceil(JITTER_DEPTH_FACTOR * jitter / frame) + 1``
frames, clamped to [min_depth, max_depth]: enough to absorb a few standard deviations of jitter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SEQ_MOD = 1 << 16
#: Depth in jitter units for the adaptive mode (3 covers nearly all of a roughly normal jitter).
JITTER_DEPTH_FACTOR = 3.0
#: A packet this far ahead of playout means the sender jumped: flush and start again.
MAX_AHEAD_FRAMES = 500


@dataclass(frozen=True, slots=True)
class FrameReleased:
    sequence: int
    timestamp: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class GapReported:
    sequence: int  # the missing sequence number (loss) or the next expected one (underrun)
    samples: int
    reason: str  # "loss" | "underrun"


class JitterBuffer:
    __slots__ = (
        "_buffer",
        "_depth",
        "_last_transit",
        "_next",
        "_playing",
        "_ref",
        "adaptive",
        "clock_rate",
        "frame_samples",
        "jitter_samples",
        "late_packets",
        "max_depth",
        "min_depth",
    )

    def __init__(
        self,
        depth: int = 3,
        *,
        adaptive: bool = False,
        min_depth: int = 1,
        max_depth: int = 15,
        frame_samples: int = 160,
        clock_rate: int = 8000,
    ) -> None:
        if not 1 <= min_depth <= depth <= max_depth:
            raise ValueError("need 1 <= min_depth <= depth <= max_depth")
        self._buffer: dict[int, tuple[int, bytes]] = {}
        self._depth = depth
        self._next: int | None = None  # extended sequence number to play next
        self._ref: int | None = None  # unwrapping reference before playout starts
        self._playing = False
        self._last_transit: float | None = None
        self.adaptive = adaptive
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.frame_samples = frame_samples
        self.clock_rate = clock_rate
        self.jitter_samples = 0.0
        self.late_packets = 0

    @property
    def depth(self) -> int:
        return self._depth

    def __len__(self) -> int:
        return len(self._buffer)

    def _extend(self, seq: int) -> int:
        ref = self._next if self._next is not None else self._ref
        if ref is None:
            return seq
        # the extended number closest to the reference
        delta = (seq - ref) % SEQ_MOD
        if delta >= SEQ_MOD // 2:
            delta -= SEQ_MOD
        return ref + delta

    def push(self, sequence: int, timestamp: int, payload: bytes, now: float) -> None:
        transit = now * self.clock_rate - timestamp
        if self._last_transit is not None:
            d = abs(transit - self._last_transit)
            if d < 2**31:  # ignore timestamp jumps
                self.jitter_samples += (d - self.jitter_samples) / 16.0
        self._last_transit = transit
        ext = self._extend(sequence)
        if self._next is not None and ext < self._next:
            self.late_packets += 1
            return
        ref = self._next if self._next is not None else self._ref
        if ref is not None and ext - ref > MAX_AHEAD_FRAMES:
            # the sender jumped (restart): forget the old numbering
            self._buffer.clear()
            self._playing = False
            self._next = None
            ext = sequence
        if self._ref is None or (self._next is None and not self._buffer):
            self._ref = ext
        self._buffer[ext] = (timestamp, payload)

    def _target_depth(self) -> int:
        if not self.adaptive:
            return self._depth
        frames = math.ceil(JITTER_DEPTH_FACTOR * self.jitter_samples / self.frame_samples) + 1
        return max(self.min_depth, min(self.max_depth, frames))

    def pop(self) -> FrameReleased | GapReported | None:
        """One frame period elapsed: None while (re)buffering, else a frame or a gap."""
        if not self._playing:
            self._depth = self._target_depth()
            if len(self._buffer) < self._depth:
                return None
            self._playing = True
            self._next = min(self._buffer)
        seq = self._next
        assert seq is not None
        item = self._buffer.pop(seq, None)
        if item is not None:
            self._next = seq + 1
            return FrameReleased(seq % SEQ_MOD, item[0], item[1])
        if not self._buffer:
            # ran dry: report one frame of silence and wait for `depth` frames again
            self._playing = False
            return GapReported(seq % SEQ_MOD, self.frame_samples, "underrun")
        self._next = seq + 1
        return GapReported(seq % SEQ_MOD, self.frame_samples, "loss")
