"""In-band (Goertzel) DTMF detection on tones synthesised here, with noise, and rejections."""

from __future__ import annotations

import numpy as np
import pytest

from sip.rtp.inband import InbandDtmfDetector, classify_block

RATE = 8000
ROWS = {"1": 697, "5": 770, "9": 852, "#": 941, "0": 941, "A": 697}
COLS = {"1": 1209, "5": 1336, "9": 1477, "#": 1477, "0": 1336, "A": 1633}


def tone(freqs: list[float], seconds: float, amp: float = 6000.0, phase: float = 0.3) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return sum(amp * np.sin(2 * np.pi * f * t + phase * i) for i, f in enumerate(freqs))  # type: ignore[return-value]


def to_pcm(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -32768, 32767).astype(np.int16)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(RATE * seconds))


@pytest.mark.parametrize("digit", sorted(ROWS))
def test_each_digit_detected_once_with_noise(digit: str) -> None:
    rng = np.random.default_rng(4733)
    signal = np.concatenate([silence(0.1), tone([ROWS[digit], COLS[digit]], 0.12), silence(0.1)])
    noisy = signal + rng.normal(0, 300, len(signal))  # about 20 dB SNR
    det = InbandDtmfDetector()
    digits: list[str] = []
    for i in range(0, len(noisy), 160):  # 20 ms frames as they come off RTP
        digits += det.feed(to_pcm(noisy[i : i + 160]))
    assert digits == [digit]


def test_two_presses_of_the_same_digit_with_a_gap() -> None:
    signal = np.concatenate(
        [tone([697, 1209], 0.1), silence(0.06), tone([697, 1209], 0.1), silence(0.05)]
    )
    assert InbandDtmfDetector().feed(to_pcm(signal)) == ["1", "1"]


def test_twist_limits() -> None:
    # column 3 dB above row: reverse twist within 4 dB -> accepted
    ok = tone([770], 0.03, amp=4000) + tone([1336], 0.03, amp=4000 * 10 ** (3 / 20))
    assert classify_block(ok[:205]) == "5"
    # column 12 dB below the row: normal twist beyond 8 dB -> rejected
    bad = tone([770], 0.03, amp=8000) + tone([1336], 0.03, amp=8000 * 10 ** (-12 / 20))
    assert classify_block(bad[:205]) is None


def test_rejects_single_tone_noise_silence_and_speech_like_signal() -> None:
    rng = np.random.default_rng(1)
    assert classify_block(tone([770], 0.03)[:205]) is None  # dial-tone like: no column tone
    assert classify_block(silence(0.03)[:205]) is None
    assert classify_block(rng.normal(0, 3000, 205)) is None  # white noise
    # speech-like: a 150 Hz glottal pulse train with harmonics through the DTMF band
    t = np.arange(4000) / RATE
    harmonics = sum((3000 / k) * np.sin(2 * np.pi * 150 * k * t + k) for k in range(1, 25))
    assert InbandDtmfDetector().feed(to_pcm(harmonics)) == []  # type: ignore[arg-type]
    # too quiet: -50 dBFS
    quiet = tone([697, 1209], 0.03, amp=32768 * 10 ** (-50 / 20))
    assert classify_block(quiet[:205]) is None


def test_two_adjacent_rows_at_once_are_rejected() -> None:
    both_rows = tone([697, 770, 1209], 0.03, amp=5000)
    assert classify_block(both_rows[:205]) is None
