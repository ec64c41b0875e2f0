"""The ``[transcription]`` section: an unknown engine, a missing model or a broken rule is a
ConfigError naming its key path under ``transcription.``, through ``parse_config`` and through
``acd check-config``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import ConfigError, parse_config

QUEUES = '[[queues]]\nname = "sales"\n'


def parse(text: str) -> object:
    return parse_config(QUEUES + text, "acd.toml")


@pytest.mark.parametrize(
    ("text", "key_path", "fragment"),
    [
        (
            '[transcription]\nengine = "vosk"\n',
            "transcription.engine",
            "expected one of 'pocketsphinx'",
        ),
        (
            '[transcription]\nmodel = "/nonexistent/model"\n',
            "transcription.model",
            "model directory",
        ),
        ('[transcription]\nmodle = ""\n', "transcription.modle", "unknown key"),
        ("[transcription]\nworkers = 0\n", "transcription.workers", "expected 1 to"),
        ("[transcription]\nmax_attempts = 0\n", "transcription.max_attempts", ">= 1"),
        ("[transcription]\nretry_backoff_s = -1\n", "transcription.retry_backoff_s", "> 0"),
        ("[transcription]\nkeyword_threshold = 0\n", "transcription.keyword_threshold", "> 0"),
        ('[transcription]\nqueues = ["nope"]\n', "transcription.queues[0]", "'nope'"),
        ("[transcription]\ncard_min_digits = 0\n", "transcription.card_min_digits", ">= 1"),
        ("[transcription]\ncard_window_s = 0\n", "transcription.card_window_s", "> 0"),
        (
            '[[transcription.rules]]\nname = "r"\ntype = "mandatory"\nphrases = ["x"]\n',
            "transcription.rules[0].type",
            "expected one of",
        ),
        (
            '[[transcription.rules]]\nname = "r"\ntype = "required"\n',
            "transcription.rules[0].phrases",
            "at least one phrase",
        ),
        (
            '[[transcription.rules]]\nname = "r"\ntype = "required"\nphrases = ["x"]\nqueues = ["nope"]\n',
            "transcription.rules[0].queues[0]",
            "no queue",
        ),
        (
            '[[transcription.rules]]\nname = "r"\ntype = "talk_ratio"\nmin_ratio = 0.9\nmax_ratio = 0.5\n',
            "transcription.rules[0].max_ratio",
            "min_ratio <= max_ratio",
        ),
        (
            '[[transcription.rules]]\nname = "r"\ntype = "forbidden"\nphrases = ["x"]\n'
            '[[transcription.rules]]\nname = "r"\ntype = "forbidden"\nphrases = ["y"]\n',
            "transcription.rules[1].name",
            "defined twice",
        ),
        (
            '[[transcription.rules]]\ntype = "required"\n',
            "transcription.rules[0].name",
            "required key",
        ),
    ],
)
def test_mistakes_name_file_and_key_path(text: str, key_path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert (info.value.file, info.value.key_path) == ("acd.toml", key_path)
    assert fragment in info.value.problem


def test_rules_and_bundled_model_are_valid(tmp_path: Path) -> None:
    cfg = parse(
        '[transcription]\nenabled = true\nmodel = ""\nqueues = ["sales"]\n'
        '[[transcription.rules]]\nname = "risk disclosure"\ntype = "required"\nqueues = ["sales"]\n'
        'phrases = ["this product carries investment risk", "you may lose money"]\nwithin_s = 30\n'
    )
    tc = cfg.transcription  # type: ignore[attr-defined]
    assert (tc.enabled, tc.engine, tc.workers, tc.queues) == (True, "pocketsphinx", 1, ("sales",))
    (rule,) = tc.rules
    assert (rule.name, rule.channel, rule.within_s) == ("risk disclosure", "agent", 30.0)
    model = tmp_path / "model"
    model.mkdir()
    assert parse(f'[transcription]\nmodel = "{model}"\n').transcription.model == str(model)  # type: ignore[attr-defined]


def test_check_config_names_the_model_key(tmp_path: Path) -> None:
    bad = tmp_path / "acd.toml"
    bad.write_text(QUEUES + '[transcription]\nenabled = true\nmodel = "/no/such/model"\n')
    result = subprocess.run(
        [sys.executable, "-m", "engine.cli", "check-config", str(bad)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"{bad}: transcription.model: expected the engine's model directory" in result.stderr
    assert "Traceback" not in result.stderr
