"""Shared helpers for the recordings tests: G.711 from the stdlib, tones, frequency checks.

G.711 comes from ``audioop`` (deprecated in 3.11, still present): the recordings package must not
carry its own tables, and tests need an independent reference anyway.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

RATE_HZ = 8000
FRAME_SAMPLES = 160  # 20 ms packets, the usual RTP ptime


def ulaw_decode(payload: bytes) -> bytes:
    return audioop.ulaw2lin(payload, 2)


def alaw_decode(payload: bytes) -> bytes:
    return audioop.alaw2lin(payload, 2)


def ulaw_encode(pcm: bytes) -> bytes:
    return audioop.lin2ulaw(pcm, 2)


DECODERS: dict[str, Callable[[bytes], bytes]] = {"PCMU": ulaw_decode, "PCMA": alaw_decode}


def tone(freq_hz: float, samples: int, amplitude: float = 8000.0, start: int = 0) -> bytes:
    """s16le sine, phase-continuous from sample index ``start``."""
    t = (np.arange(samples) + start) / RATE_HZ
    return (np.sin(2 * np.pi * freq_hz * t) * amplitude).astype("<i2").tobytes()


def frames(pcm: bytes, frame_samples: int = FRAME_SAMPLES) -> list[tuple[int, bytes]]:
    """Split s16le PCM into (position, frame bytes)."""
    step = frame_samples * 2
    return [(i // 2, pcm[i : i + step]) for i in range(0, len(pcm), step)]


def dominant_hz(samples: npt.NDArray[np.int16]) -> float:
    x = samples.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * RATE_HZ / len(x))


def read_wav(path: Path) -> tuple[int, int, npt.NDArray[np.int16]]:
    """(channels, rate, samples[n, channels]) via the stdlib reader, independent of our code."""
    import wave

    with wave.open(str(path), "rb") as w:
        ch, rate, n = w.getnchannels(), w.getframerate(), w.getnframes()
        data = np.frombuffer(w.readframes(n), dtype="<i2").reshape(-1, ch)
    return ch, rate, data


def wait_for(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
