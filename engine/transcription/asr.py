"""Speech recognition engines behind one small interface, and telephone audio made ready for them.

How this works: a ``Transcriber`` turns mono 16-bit samples (8 or 16 kHz) into ``Word``s with
start/end times and a confidence, and spots key phrases (``spot``: "was this said, and when").
``make_transcriber(engine, model)`` builds one by name; PocketSphinx 5 is built in, and a site adds
another (Vosk, whisper.cpp, a remote service) as an entry point in the ``acd.transcribers`` group:
a callable ``(model: str) -> Transcriber``. Engines run in the transcription worker processes
(``engine.transcription.worker``), never on the event loop: a decode costs about a fifth of the
audio's duration in CPU (``benchmarks/bench_transcription.py``).

PocketSphinx's bundled en-us model is wideband (16 kHz features): it refuses ``samprate=8000``, so
8 kHz telephone audio is upsampled to 16 kHz first. The resampler is FFmpeg's libswresample through
PyAV (``av``, already a dependency through aiortc and the FLAC/Opus recordings): a maintained
windowed-sinc filter, rather than an upsampler of our own; scipy is not a dependency.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]

# The built-in engine names; others come from entry points (config checks both).
BUILTIN_ENGINES = ("pocketsphinx",)
ENTRY_POINT_GROUP = "acd.transcribers"
# PocketSphinx computes 100 feature frames per second (10 ms shift): frame n starts at n / 100 s.
_FRAMES_PER_S = 100.0


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised word; times are seconds from the start of the samples given."""

    text: str
    start_s: float
    end_s: float
    confidence: float  # 0..1, the engine's posterior where it has one


@dataclass(frozen=True, slots=True)
class KeyPhrase:
    """A phrase to spot; ``threshold`` is the engine's detection threshold (PocketSphinx: a
    probability like 1e-20, smaller spots more and falsely more)."""

    text: str
    threshold: float = 1e-20


@dataclass(frozen=True, slots=True)
class Hit:
    phrase: str
    start_s: float
    end_s: float
    confidence: float


class ModelError(Exception):
    """The engine's model cannot be loaded (missing files, wrong layout). Not raised for audio
    the engine cannot make sense of: that is an empty result."""


class Transcriber(Protocol):
    name: str

    def transcribe(self, samples: Samples, sample_rate: int) -> list[Word]: ...

    def spot(self, samples: Samples, sample_rate: int, phrases: Sequence[KeyPhrase]) -> list[Hit]:
        """Key phrases found in the samples; phrases the engine cannot spot (words it does not
        know) are left out, see ``unknown_words``."""
        ...

    def unknown_words(self, phrase: str) -> list[str]: ...


def upsample_8k_to_16k(samples: Samples) -> Samples:
    """8 kHz -> 16 kHz by libswresample (PyAV): twice the samples, the same signal, no delay."""
    import av

    if samples.size == 0:
        return samples.copy()
    resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(samples, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = 8000
    out = [
        f.to_ndarray().reshape(-1) for f in (*resampler.resample(frame), *resampler.resample(None))
    ]
    return np.concatenate(out).astype(np.int16, copy=False)


def to_16k(samples: Samples, sample_rate: int) -> Samples:
    if sample_rate == 16000:
        return samples
    if sample_rate == 8000:
        return upsample_8k_to_16k(samples)
    raise ValueError(f"expected 8000 or 16000 Hz samples, got {sample_rate}")


def pocketsphinx_model_files(model: str) -> dict[str, str]:
    """Decoder paths for a model directory laid out as PocketSphinx ships its own
    (``<dir>/<name>/`` acoustic model with ``mdef``, ``<dir>/*.lm.bin``, ``<dir>/*.dict``);
    empty: the model inside the ``pocketsphinx`` wheel. Raises ``ModelError``."""
    if not model:
        return {}
    root = Path(model)
    if not root.is_dir():
        raise ModelError(f"{model}: not a directory")
    hmm = [p for p in root.iterdir() if (p / "mdef").is_file()]
    lms = sorted(root.glob("*.lm.bin")) or sorted(root.glob("*.lm"))
    dicts = sorted(root.glob("*.dict"))
    if len(hmm) != 1 or not lms or not dicts:
        raise ModelError(
            f"{model}: expected one acoustic model directory (with mdef), a *.lm.bin and a *.dict"
        )
    return {"hmm": str(hmm[0]), "lm": str(lms[0]), "dict": str(dicts[0])}


class PocketSphinxTranscriber:
    """PocketSphinx 5: free transcription with its n-gram model, key phrases with its KWS search."""

    name = "pocketsphinx"

    def __init__(self, model: str = "") -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError as exc:  # pragma: no cover - a dependency of acd
            raise ModelError(f"pocketsphinx is not installed: {exc}") from exc
        files = pocketsphinx_model_files(model)
        try:
            self._decoder: Any = Decoder(samprate=16000, loglevel="FATAL", **files)
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"{model or 'bundled model'}: {exc}") from exc
        self._lm_search: str = self._decoder.current_search()
        self._kws_key: tuple[KeyPhrase, ...] | None = None

    def unknown_words(self, phrase: str) -> list[str]:
        return [w for w in phrase.lower().split() if self._decoder.lookup_word(w) is None]

    def _decode(self, samples: Samples, sample_rate: int) -> list[Any]:
        audio = to_16k(samples, sample_rate)
        self._decoder.start_utt()
        self._decoder.process_raw(audio.tobytes(), no_search=False, full_utt=True)
        self._decoder.end_utt()
        return list(self._decoder.seg() or [])

    def transcribe(self, samples: Samples, sample_rate: int) -> list[Word]:
        if _silent(samples):
            return []
        self._decoder.activate_search(self._lm_search)
        words: list[Word] = []
        for seg in self._decode(samples, sample_rate):
            text = _strip_alternative(seg.word)
            if text.startswith(("<", "[")) or not text:  # <s>, </s>, <sil>, [NOISE]
                continue
            words.append(
                Word(
                    text,
                    seg.start_frame / _FRAMES_PER_S,
                    (seg.end_frame + 1) / _FRAMES_PER_S,
                    round(float(seg.prob), 4),
                )
            )
        return words

    def spot(self, samples: Samples, sample_rate: int, phrases: Sequence[KeyPhrase]) -> list[Hit]:
        if _silent(samples):
            return []
        usable = tuple(p for p in phrases if p.text.strip() and not self.unknown_words(p.text))
        if not usable:
            return []
        if usable != self._kws_key:
            # add_kws reads a file: the phrases are config text, never audio or transcript.
            fd, name = tempfile.mkstemp(suffix=".kws", text=True)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    for p in usable:
                        f.write(f"{' '.join(p.text.lower().split())} /{p.threshold:g}/\n")
                self._decoder.add_kws("_kws", name)
            finally:
                os.unlink(name)
            self._kws_key = usable
        self._decoder.activate_search("_kws")
        try:
            segs = self._decode(samples, sample_rate)
        finally:
            self._decoder.activate_search(self._lm_search)
        return [
            Hit(
                " ".join(seg.word.split()),
                seg.start_frame / _FRAMES_PER_S,
                (seg.end_frame + 1) / _FRAMES_PER_S,
                round(float(seg.prob), 4),
            )
            for seg in segs
        ]


# RMS below this (of 32767) is digital silence or line noise: the bundled model answers pure zeros
# with a word ("i'm"), so such audio is not decoded at all.
_SILENCE_RMS = 30.0


def _silent(samples: Samples) -> bool:
    return (
        samples.size == 0 or float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) < _SILENCE_RMS
    )


def _strip_alternative(word: str) -> str:
    """``really(2)`` -> ``really``: PocketSphinx names pronunciation variants this way."""
    base, paren, _rest = word.partition("(")
    return base if paren else word


def engine_names() -> list[str]:
    """Built-in engines and those installed as ``acd.transcribers`` entry points."""
    return [*BUILTIN_ENGINES, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))]


def make_transcriber(engine: str, model: str) -> Transcriber:
    """The engine by name; raises ``ModelError`` (model unusable) or ``KeyError`` (no such engine)."""
    if engine == "pocketsphinx":
        return PocketSphinxTranscriber(model)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == engine:
            factory = ep.load()
            transcriber: Transcriber = factory(model)
            return transcriber
    raise KeyError(engine)
