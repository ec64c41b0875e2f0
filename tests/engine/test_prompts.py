"""The shipped prompts: format the media path needs, real audio content, and the phrases built from them."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from engine.calls.announcements import (
    SHIPPED_PROMPTS,
    expected_wait_prompts,
    number_prompts,
    position_prompts,
)
from engine.config import CallbackConfig, CsatConfig, MenuStep, PlayStep, load_config

REPO = Path(__file__).resolve().parents[2]
ALL_WAVS = sorted(SHIPPED_PROMPTS.glob("*.wav"))


def read_pcm(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000), path.name
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64), 8000


@pytest.mark.parametrize("path", ALL_WAVS, ids=lambda p: p.name)
def test_prompt_is_8k_mono_16bit_with_audible_content(path: Path) -> None:
    pcm, rate = read_pcm(path)
    duration_s = len(pcm) / rate
    assert 0.15 < duration_s < 15, duration_s
    rms = np.sqrt(np.mean(pcm**2))
    assert rms > 300, f"{path.name} is (nearly) silent: RMS {rms:.0f}"
    assert np.max(np.abs(pcm)) < 32767, "clipped"


def test_music_on_hold_is_the_generated_chords() -> None:
    pcm, rate = read_pcm(SHIPPED_PROMPTS / "moh.wav")
    first_chord = pcm[int(0.5 * rate) : int(2.5 * rate)]  # C major: C4 E4 G4
    spectrum = np.abs(np.fft.rfft(first_chord * np.hanning(len(first_chord))))
    freqs = np.fft.rfftfreq(len(first_chord), 1 / rate)
    top3 = sorted(freqs[np.argsort(spectrum)[-3:]])
    assert top3 == pytest.approx([261.63, 329.63, 392.0], abs=2.0)


def test_every_prompt_the_default_config_names_is_shipped() -> None:
    cfg = load_config(REPO / "config" / "acd.toml")
    names: set[str] = {q.music_on_hold for q in cfg.queues}
    for queue in cfg.queues:
        if queue.csat is not None:
            names |= {queue.csat.prompt, queue.csat.second_prompt, queue.csat.thanks_prompt} - {""}
    names |= {CsatConfig().prompt, CsatConfig().thanks_prompt, "csat-effort"}  # the defaults
    names |= {CallbackConfig().prompt, CallbackConfig().confirm_prompt}
    for flow in cfg.flows:
        for step in flow.steps:
            if isinstance(step, PlayStep | MenuStep):
                names.add(step.prompt)
    shipped = {p.stem for p in ALL_WAVS}
    assert names <= shipped, names - shipped


@pytest.mark.parametrize(
    ("n", "spoken"),
    [
        (0, ["digit-0"]),
        (7, ["digit-7"]),
        (20, ["digit-20"]),
        (21, ["digit-20", "digit-1"]),
        (40, ["digit-40"]),
        (99, ["digit-90", "digit-9"]),
        (100, ["digit-1", "hundred"]),
        (115, ["digit-1", "hundred", "digit-15"]),
        (342, ["digit-3", "hundred", "digit-40", "digit-2"]),
    ],
)
def test_numbers_are_spoken_like_asterisk(n: int, spoken: list[str]) -> None:
    assert number_prompts(n) == spoken


def test_every_number_uses_shipped_prompts_only() -> None:
    shipped = {p.stem for p in ALL_WAVS}
    for n in range(1000):
        assert set(number_prompts(n)) <= shipped, n
    with pytest.raises(ValueError, match=r"0\.\.999"):
        number_prompts(1000)


def test_position_and_wait_phrases() -> None:
    assert position_prompts(3) == ["position", "digit-3", "in-queue"]
    assert expected_wait_prompts(12) == ["expected-wait", "less-than", "digit-1", "minute"]
    assert expected_wait_prompts(60) == ["expected-wait", "digit-1", "minute"]
    assert expected_wait_prompts(61) == ["expected-wait", "digit-2", "minutes"]
    assert expected_wait_prompts(25 * 60) == ["expected-wait", "digit-20", "digit-5", "minutes"]
