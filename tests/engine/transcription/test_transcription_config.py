"""[transcription] through `acd check-config`: an unknown engine or a missing model names its key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import parse_config

QUEUE = '[[queues]]\nname = "sales"\n'


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "acd.toml"
    path.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "check-config", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[transcription]\nengine = "vosk"\n',
            "transcription.engine: expected one of 'pocketsphinx'",
        ),
        (
            '[transcription]\nmodel = "/nonexistent/model"\n',
            "transcription.model: expected the engine's model directory",
        ),
        ('[transcription]\nmodle = ""\n', "transcription.modle: unknown key"),
        (
            QUEUE + '[[transcription.rules]]\nname = "r"\ntype = "mandatory"\nphrases = ["x"]\n',
            "transcription.rules[0].type",
        ),
        (
            QUEUE + '[[transcription.rules]]\nname = "r"\ntype = "required"\n',
            "transcription.rules[0].phrases: expected at least one phrase",
        ),
        (
            QUEUE
            + '[[transcription.rules]]\nname = "r"\ntype = "required"\nphrases = ["x"]\nqueues = ["nope"]\n',
            "transcription.rules[0].queues[0]",
        ),
        (
            QUEUE
            + '[[transcription.rules]]\nname = "r"\ntype = "talk_ratio"\nmin_ratio = 0.9\nmax_ratio = 0.5\n',
            "transcription.rules[0].max_ratio",
        ),
    ],
)
def test_check_config_names_the_key(tmp_path: Path, text: str, expected: str) -> None:
    result = check(tmp_path, text)
    assert result.returncode == 2, result.stdout
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_rules_and_bundled_model_are_valid(tmp_path: Path) -> None:
    text = QUEUE + (
        '[transcription]\nmodel = ""\n'
        '[[transcription.rules]]\nname = "risk disclosure"\ntype = "required"\nqueues = ["sales"]\n'
        'phrases = ["this product carries investment risk", "you may lose money"]\nwithin_s = 30\n'
    )
    assert check(tmp_path, text).returncode == 0
    cfg = parse_config(text, "t.toml")
    assert cfg.transcription.engine == "pocketsphinx"
    assert cfg.transcription.rules[0].name == "risk disclosure"
    assert cfg.transcription.rules[0].channel == "agent"
    model = tmp_path / "model"
    model.mkdir()
    assert check(tmp_path, f'[transcription]\nmodel = "{model}"\n').returncode == 0
