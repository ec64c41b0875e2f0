"""Settings of the transcription pipeline and its QA rules, decoded and checked like the config.

How this works: ``parse_settings(raw, queues, file)`` decodes a ``[transcription]``-shaped table
(msgspec, unknown keys rejected) and checks it (a known engine, a model directory that exists,
rule names, types, queues and ratios), raising ``engine.config.ConfigError`` with key paths under
``transcription.``. The daemon does not read a ``[transcription]`` section yet (issue 19: no
worker pool runs the pipeline), so these settings are not part of ``engine.config.Config`` and
not documented as config keys: wiring the pipeline into the daemon adds the section to the
schema, calling this.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Final

import msgspec

from engine.config import ConfigError
from engine.config.load import reword_validation_error

BUILTIN_TRANSCRIBERS: Final = ("pocketsphinx",)
QA_RULE_TYPES: Final = ("required", "forbidden", "talk_ratio")


class _Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class QaRuleConfig(_Struct, frozen=True):
    """One QA rule over a call's transcript (engine/transcription/qa.py)."""

    name: str  # metric label and API key; may contain spaces ("risk disclosure")
    type: str  # required | forbidden | talk_ratio
    queues: tuple[str, ...] = ()  # empty: every queue
    channel: str = "agent"  # agent | caller | any (required, forbidden)
    phrases: tuple[str, ...] = ()  # any one of these wordings (required, forbidden)
    within_s: float = 0.0  # required: said within this long of the recording's start (0 = anywhere)
    min_similarity: float = 0.75  # fuzzy match 0..1 tolerating recognition errors
    min_ratio: float = 0.0  # talk_ratio: agent speech / all speech
    max_ratio: float = 1.0


class TranscriptionConfig(_Struct, frozen=True):
    """Offline speech recognition of recordings (engine/transcription/)."""

    engine: str = "pocketsphinx"  # built in, or an acd.transcribers entry point
    model: str = ""  # the engine's model directory; empty: the model bundled with the engine
    keyword_threshold: float = 1e-20  # PocketSphinx keyword-spotting threshold for rule phrases
    card_context: tuple[str, ...] = ("card", "number", "credit", "debit", "visa", "mastercard")
    card_min_digits: int = 4
    card_window_s: float = 20.0
    rules: tuple[QaRuleConfig, ...] = ()


def parse_settings(
    raw: Mapping[str, Any], queues: Collection[str], file: str
) -> TranscriptionConfig:
    """Decode and check a ``[transcription]`` table; ``queues`` are the configured queue names."""
    try:
        settings = msgspec.convert(dict(raw), TranscriptionConfig, strict=True)
    except msgspec.ValidationError as exc:
        path, problem = reword_validation_error(str(exc), dict(raw))
        raise ConfigError(file, f"transcription.{path}".rstrip("."), problem) from None
    check_settings(settings, queues, file)
    return settings


def check_settings(tc: TranscriptionConfig, queues: Collection[str], file: str) -> None:
    engines = [*BUILTIN_TRANSCRIBERS, *(ep.name for ep in entry_points(group="acd.transcribers"))]
    if tc.engine not in engines:
        raise ConfigError(
            file,
            "transcription.engine",
            f"expected one of {', '.join(map(repr, engines))}, found {tc.engine!r}",
        )
    if tc.model and not Path(tc.model).is_dir():
        raise ConfigError(
            file,
            "transcription.model",
            f"expected the engine's model directory (empty: the bundled model), found {tc.model!r}"
            " (no such directory)",
        )
    if tc.card_min_digits < 1:
        raise ConfigError(file, "transcription.card_min_digits", "expected an integer >= 1")
    _positive(file, "transcription.card_window_s", tc.card_window_s)
    seen: set[str] = set()
    for i, rule in enumerate(tc.rules):
        base = f"transcription.rules[{i}]"
        if not 1 <= len(rule.name) <= 64 or not rule.name.strip():
            raise ConfigError(file, f"{base}.name", "expected 1-64 characters")
        if rule.name in seen:
            raise ConfigError(file, f"{base}.name", f"rule {rule.name!r} is defined twice")
        seen.add(rule.name)
        if rule.type not in QA_RULE_TYPES:
            raise ConfigError(
                file, f"{base}.type", f"expected one of {QA_RULE_TYPES}, found {rule.type!r}"
            )
        if rule.channel not in ("agent", "caller", "any"):
            raise ConfigError(
                file, f"{base}.channel", f"expected agent, caller or any, found {rule.channel!r}"
            )
        for j, queue in enumerate(rule.queues):
            if queue not in queues:
                raise ConfigError(file, f"{base}.queues[{j}]", f"no queue named {queue!r}")
        if rule.type in ("required", "forbidden") and not any(p.strip() for p in rule.phrases):
            raise ConfigError(file, f"{base}.phrases", "expected at least one phrase")
        if not 0.0 < rule.min_similarity <= 1.0:
            raise ConfigError(file, f"{base}.min_similarity", "expected a number in (0, 1]")
        if rule.within_s < 0 or not math.isfinite(rule.within_s):
            raise ConfigError(file, f"{base}.within_s", "expected a number >= 0")
        if not 0.0 <= rule.min_ratio <= rule.max_ratio <= 1.0:
            raise ConfigError(
                file, f"{base}.max_ratio", "expected 0 <= min_ratio <= max_ratio <= 1"
            )


def _positive(file: str, path: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(file, path, f"expected a number > 0, found {value!r}")
