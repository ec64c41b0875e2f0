"""The transcription settings (engine.transcription.settings): an unknown engine, a missing model
or a broken rule is a ConfigError naming its key path under ``transcription.``."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from engine.config import ConfigError
from engine.transcription.settings import parse_settings

QUEUES = ("sales",)


def parse(text: str) -> object:
    return parse_settings(tomllib.loads(text).get("transcription", {}), QUEUES, "acd.toml")


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
    settings = parse(
        '[transcription]\nmodel = ""\n'
        '[[transcription.rules]]\nname = "risk disclosure"\ntype = "required"\nqueues = ["sales"]\n'
        'phrases = ["this product carries investment risk", "you may lose money"]\nwithin_s = 30\n'
    )
    assert settings.engine == "pocketsphinx"  # type: ignore[attr-defined]
    (rule,) = settings.rules  # type: ignore[attr-defined]
    assert (rule.name, rule.channel, rule.within_s) == ("risk disclosure", "agent", 30.0)
    model = tmp_path / "model"
    model.mkdir()
    assert parse(f'[transcription]\nmodel = "{model}"\n').model == str(model)  # type: ignore[attr-defined]
