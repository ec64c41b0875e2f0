"""Test speech: espeak-ng sentences as 8 kHz 16-bit samples (the telephone band of a recording).

Voice ``en-us+f2`` at 150 words per minute: of espeak-ng's voices it is the one PocketSphinx's
bundled model hears best (measured while writing these tests; ``en-us`` at its default is about
twice the word error rate), and a synthetic voice is what CI can make without a microphone.
sox runs with ``-R`` (repeatable): its resampling to 8 kHz dithers with a random seed otherwise,
and PocketSphinx's words differ from run to run on that noise alone (a CI run heard "i can't my
account" for "to check my account").
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

VOICE = "en-us+f2"


def espeak_8k(text: str, tmp: Path, name: str = "s") -> np.ndarray:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.fail("espeak-ng and sox are needed (scripts/test installs them)")
    raw, out = tmp / f"{name}.raw.wav", tmp / f"{name}.8k.wav"
    subprocess.run(
        ["espeak-ng", "-v", VOICE, "-s", "150", "-w", str(raw), text], check=True, timeout=30
    )
    subprocess.run(
        ["sox", "-R", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(out)],
        check=True,
        timeout=30,
    )
    with wave.open(str(out)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)


def stereo_wav(path: Path, caller: np.ndarray, agent: np.ndarray, rate: int = 8000) -> bytes:
    n = max(len(caller), len(agent))
    pcm = np.zeros((n, 2), dtype="<i2")
    pcm[: len(caller), 0] = caller
    pcm[: len(agent), 1] = agent
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path.read_bytes()


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: (substitutions + deletions + insertions) / reference words (Levenshtein)."""
    ref, hyp = reference.lower().split(), hypothesis.lower().split()
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hyp)] / len(ref)
