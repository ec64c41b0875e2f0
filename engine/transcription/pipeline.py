"""One finished recording -> per-channel words, spotted phrases, card digits masked, QA results.

How this works: ``transcribe_recording`` is blocking and CPU-bound: it is meant to run in a worker
process (``run_job`` is the picklable entry point for a ``concurrent.futures.ProcessPoolExecutor``;
each process builds its engine once and keeps it). Each channel (caller = left, agent = right) is
decoded on its own, one speech segment at a time (the spans between PCI pauses, which are skipped,
not decoded), and word times are shifted back to the recording's time line.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import recordings as rec
from engine.config import QaRuleConfig, TranscriptionConfig
from engine.transcription import qa
from engine.transcription.asr import Hit, KeyPhrase, Samples, Transcriber, Word, make_transcriber
from engine.transcription.audio import read_recording, speech_segments
from engine.transcription.redact import mask_card_numbers


@dataclass(frozen=True, slots=True)
class Transcript:
    engine: str
    duration_s: float
    words: dict[str, list[Word]]  # caller, agent
    hits: dict[str, list[Hit]]
    skipped_spans_s: list[tuple[float, float]]  # paused (PCI) spans, never decoded
    masked_words: int
    qa: list[qa.RuleResult] = field(default_factory=list)

    def text(self, channel: str) -> str:
        return " ".join(w.text for w in self.words[channel])


def transcribe_channels(
    transcriber: Transcriber,
    caller: Samples,
    agent: Samples,
    sample_rate: int,
    paused_spans: Sequence[Sequence[int]],
    phrases: Sequence[KeyPhrase],
) -> tuple[dict[str, list[Word]], dict[str, list[Hit]]]:
    words: dict[str, list[Word]] = {}
    hits: dict[str, list[Hit]] = {}
    for channel, samples in (("caller", caller), ("agent", agent)):
        words[channel], hits[channel] = [], []
        for start, end in speech_segments(len(samples), paused_spans, sample_rate):
            piece = samples[start:end]
            offset = start / sample_rate
            words[channel] += [
                _shift(w, offset) for w in transcriber.transcribe(piece, sample_rate)
            ]
            if phrases:
                hits[channel] += [
                    _shift(h, offset) for h in transcriber.spot(piece, sample_rate, phrases)
                ]
    return words, hits


def _shift(item: Any, offset_s: float) -> Any:
    # float(): an engine may hand back numpy scalars, which the store's JSON encoder refuses
    return dataclasses.replace(
        item,
        start_s=round(float(item.start_s + offset_s), 3),
        end_s=round(float(item.end_s + offset_s), 3),
    )


def transcribe_recording(
    transcriber: Transcriber,
    path: str,
    codec: str,
    keyring: rec.Keyring | None,
    paused_spans: Sequence[Sequence[int]],
    config: TranscriptionConfig,
    queue: str,
) -> Transcript:
    audio = read_recording(path, codec, keyring)
    phrases = [KeyPhrase(p, config.keyword_threshold) for p in qa.keyphrases(config.rules, queue)]
    words, hits = transcribe_channels(
        transcriber, audio.caller, audio.agent, audio.sample_rate, paused_spans, phrases
    )
    masked = 0
    for channel in words:
        words[channel], n = mask_card_numbers(
            words[channel], config.card_context,
            min_digits=config.card_min_digits, window_s=config.card_window_s,
        )  # fmt: skip
        masked += n
    rules: Sequence[QaRuleConfig] = config.rules
    results = qa.evaluate(rules, queue, words, hits)
    rate = audio.sample_rate
    skipped = [(a / rate, b / rate) for a, b in paused_spans]
    return Transcript(transcriber.name, audio.duration_s, words, hits, skipped, masked, results)


_ENGINES: dict[tuple[str, str], Transcriber] = {}


@dataclass(frozen=True, slots=True)
class Job:
    """What a worker process needs for one recording (picklable)."""

    path: str
    codec: str
    keyring: rec.Keyring | None
    paused_spans: tuple[tuple[int, int], ...]
    config: TranscriptionConfig
    queue: str


def _engine(engine: str, model: str) -> Transcriber:
    key = (engine, model)
    if key not in _ENGINES:
        _ENGINES[key] = make_transcriber(*key)
    return _ENGINES[key]


def warm_up(engine: str, model: str) -> None:
    """Worker-process entry point: load the engine's model now (``ModelError``, ``KeyError``)."""
    _engine(engine, model)


def run_job(job: Job) -> Transcript:
    """Worker-process entry point: the engine is built once per process and reused."""
    return transcribe_recording(
        _engine(job.config.engine, job.config.model),
        job.path, job.codec, job.keyring, job.paused_spans, job.config, job.queue,
    )  # fmt: skip


def run_job_timed(job: Job) -> tuple[Transcript, float]:
    """``run_job`` and the CPU seconds this worker process spent on it (the log and the
    benchmark report it: wall time on a busy machine says little about the cost)."""
    began = time.process_time()
    transcript = run_job(job)
    return transcript, time.process_time() - began
