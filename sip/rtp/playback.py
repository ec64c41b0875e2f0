"""Prompts and music on hold: WAV files encoded once into 20 ms frames, played by playlists.

How this works: `prompt_from_samples` pads 8 kHz samples to whole 20 ms frames and encodes them
into 160-byte frames for each codec asked for (reading the WAV files is `sip.media.prompts`', the
I/O side). A `Playlist` is the pure state of one leg's playback: prompts in order, then an optional
loop (music on hold) that repeats until stopped; the shared media clock pulls one frame per 20 ms
with `next_frame()`. ``barge_in=True`` makes a DTMF digit stop the prompts (`on_dtmf`), which then
continue with the loop part, if any.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from sip.rtp.g711 import encode_samples

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
#: Only G.711 playback is supported from WAV; Opus legs go through aiortc.
SUPPORTED_CODECS = ("PCMU", "PCMA")


class PromptFormatError(ValueError):
    """A prompt file is not an 8 kHz mono 16-bit PCM WAV (or not a WAV at all)."""


@dataclass(frozen=True, slots=True)
class Prompt:
    """A decoded-once prompt: per codec, a tuple of 20 ms encoded frames."""

    name: str
    frames: dict[str, tuple[bytes, ...]] = field(hash=False)
    samples: int

    @property
    def duration_s(self) -> float:
        return self.samples / SAMPLE_RATE


def prompt_from_samples(
    name: str, samples: np.ndarray[tuple[int], np.dtype[np.int16]], codecs: Iterable[str]
) -> Prompt:
    count = len(samples)
    padded = np.zeros(-(-count // FRAME_SAMPLES) * FRAME_SAMPLES, dtype=np.int16)
    padded[:count] = samples
    frames: dict[str, tuple[bytes, ...]] = {}
    for codec in codecs:
        if codec not in SUPPORTED_CODECS:
            raise PromptFormatError(f"cannot encode prompts as {codec}")
        encoded = encode_samples(padded, codec)
        frames[codec] = tuple(
            encoded[i : i + FRAME_SAMPLES] for i in range(0, len(encoded), FRAME_SAMPLES)
        )
    return Prompt(name, frames, count)


class Playlist:
    """Prompts in order, then an optional looping part (music on hold)."""

    __slots__ = ("_codec", "_frame", "_index", "_items", "_loop", "barge_in", "stopped")

    def __init__(
        self,
        codec: str,
        prompts: Sequence[Prompt] = (),
        loop: Sequence[Prompt] = (),
        *,
        barge_in: bool = False,
    ) -> None:
        if codec not in SUPPORTED_CODECS:
            raise PromptFormatError(f"cannot play prompts as {codec}")
        self._codec = codec
        self._items = [p.frames[codec] for p in prompts]
        self._loop = [p.frames[codec] for p in loop if p.frames[codec]]
        self._index = 0
        self._frame = 0
        self.barge_in = barge_in
        self.stopped = False

    @property
    def codec(self) -> str:
        return self._codec

    @property
    def in_loop(self) -> bool:
        return self._index >= len(self._items)

    def on_dtmf(self) -> bool:
        """A digit arrived: skip the remaining prompts if barge-in is on. True if it did."""
        if not self.barge_in or self.in_loop:
            return False
        self._index = len(self._items)
        self._frame = 0
        if not self._loop:
            self.stopped = True
        return True

    def stop(self) -> None:
        self.stopped = True

    def next_frame(self) -> bytes | None:
        """The next 20 ms frame, or None when finished (or stopped)."""
        if self.stopped:
            return None
        while self._index < len(self._items):
            frames = self._items[self._index]
            if self._frame < len(frames):
                self._frame += 1
                return frames[self._frame - 1]
            self._index += 1
            self._frame = 0
        if not self._loop:
            self.stopped = True
            return None
        loop_index = self._index - len(self._items)
        frames = self._loop[loop_index]
        frame = frames[self._frame]
        self._frame += 1
        if self._frame >= len(frames):
            self._frame = 0
            self._index = len(self._items) + (loop_index + 1) % len(self._loop)
        return frame
