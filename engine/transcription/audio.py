"""A finished recording read into memory, split into its two channels, paused spans cut out.

How this works: ``read_recording`` gets the playable bytes through ``recordings.open_recording_stream``
(an encrypted file is decrypted in memory, chunk by chunk; nothing decrypted touches the disk) and
decodes the WAV (caller left, agent right; 8 kHz 16-bit). FLAC and Opus recordings are decoded
from the same in-memory bytes with PyAV. ``speech_segments`` gives the sample ranges between the
recording's paused spans (PCI: the index row lists them as sample positions): those spans are
silence in the file and are never handed to a recogniser at all, not merely expected to
transcribe as nothing.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import recordings as rec
from engine.transcription.asr import Samples

# Pieces shorter than this (a pause ending right before the hang-up) carry no words worth a decode.
MIN_SEGMENT_S = 0.3


@dataclass(frozen=True, slots=True)
class StereoAudio:
    sample_rate: int
    caller: Samples  # left
    agent: Samples  # right

    @property
    def duration_s(self) -> float:
        return len(self.caller) / self.sample_rate if self.sample_rate else 0.0


def read_recording(path: str, codec: str, keyring: rec.Keyring | None) -> StereoAudio:
    """The recording's two channels (blocking: run it in a worker). Raises ``OSError``,
    ``recordings.RecordingCryptoError`` (or ``KeyringError``) and ``ValueError`` (not audio)."""
    _size, pieces = rec.open_recording_stream(path, keyring)
    data = b"".join(pieces)
    if codec == "wav":
        return _from_wav(data)
    return _from_av(data)


def _from_wav(data: bytes) -> StereoAudio:
    try:
        with wave.open(io.BytesIO(data)) as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a WAV recording: {exc}") from exc
    if width != 2 or channels not in (1, 2):
        raise ValueError(f"expected 16-bit mono or stereo, found {channels} x {8 * width} bits")
    pcm = np.frombuffer(frames[: len(frames) - len(frames) % (2 * channels)], dtype="<i2")
    if channels == 1:
        return StereoAudio(rate, pcm.astype(np.int16), np.zeros_like(pcm, dtype=np.int16))
    return StereoAudio(rate, pcm[0::2].astype(np.int16), pcm[1::2].astype(np.int16))


def _from_av(data: bytes) -> StereoAudio:
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            resampler = av.AudioResampler(format="s16", layout="stereo", rate=8000)
            parts: list[Any] = []
            for frame in container.decode(audio=0):
                parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    except av.error.FFmpegError as exc:
        raise ValueError(f"cannot decode the recording: {exc}") from exc
    pcm = np.concatenate(parts) if parts else np.zeros(0, np.int16)
    return StereoAudio(8000, pcm[0::2].astype(np.int16), pcm[1::2].astype(np.int16))


def speech_segments(
    n_samples: int, paused_spans: Sequence[Sequence[int]], sample_rate: int
) -> list[tuple[int, int]]:
    """[start, end) sample ranges outside every paused span, in order, each long enough to decode."""
    spans = sorted((max(0, int(a)), min(n_samples, int(b))) for a, b in paused_spans)
    segments: list[tuple[int, int]] = []
    position = 0
    for start, end in spans:
        if start > position:
            segments.append((position, start))
        position = max(position, end)
    if position < n_samples:
        segments.append((position, n_samples))
    shortest = int(MIN_SEGMENT_S * sample_rate)
    return [(a, b) for a, b in segments if b - a >= shortest]
