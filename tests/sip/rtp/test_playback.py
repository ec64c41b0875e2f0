"""Prompts from WAV files, cached encoded frames, playlists with music-on-hold loop and barge-in."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from sip.media.prompts import PromptCache, load_prompt
from sip.rtp.g711 import ALAW_SILENCE, ULAW_SILENCE, decode_pcmu, encode_pcmu
from sip.rtp.playback import (
    Playlist,
    Prompt,
    PromptFormatError,
    prompt_from_samples,
)


def write_wav(path: Path, samples: np.ndarray, rate: int = 8000, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


def test_wav_loaded_encoded_and_last_frame_padded(tmp_path: Path) -> None:
    samples = (np.arange(400) * 37 % 20000 - 10000).astype(np.int16)  # 2.5 frames
    prompt = load_prompt(write_wav(tmp_path / "p.wav", samples))
    assert prompt.samples == 400
    assert prompt.duration_s == 0.05
    pcmu = prompt.frames["PCMU"]
    assert len(pcmu) == 3
    assert all(len(f) == 160 for f in pcmu)
    assert b"".join(pcmu)[:400] == encode_pcmu(samples.tobytes())
    assert pcmu[2][80:] == bytes([ULAW_SILENCE]) * 80  # 400 - 320 = 80 real samples, rest silence
    assert prompt.frames["PCMA"][2][80:] == bytes([ALAW_SILENCE]) * 80


def test_wrong_formats_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PromptFormatError, match="16000 Hz"):
        load_prompt(write_wav(tmp_path / "a.wav", np.zeros(10), rate=16000))
    with pytest.raises(PromptFormatError, match="mono"):
        load_prompt(write_wav(tmp_path / "b.wav", np.zeros(10), channels=2))
    (tmp_path / "c.wav").write_bytes(b"not a wav at all")
    with pytest.raises(PromptFormatError):
        load_prompt(tmp_path / "c.wav")


def test_cache_reads_each_file_once(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "hello.wav", np.ones(160))
    cache = PromptCache(("PCMU",))
    first = cache.get(path)
    path.unlink()  # a second read would fail: the cache must not touch the disk again
    assert cache.get(tmp_path / "." / "hello.wav") is first
    assert len(cache) == 1


def frames_of(name: str, count: int, value: int) -> Prompt:
    return prompt_from_samples(name, np.full(160 * count, value, dtype=np.int16), ["PCMU"])


def first_sample(frame: bytes) -> int:
    return int(np.frombuffer(decode_pcmu(frame[:1]), "<i2")[0])


def test_playlist_prompts_then_looping_music() -> None:
    hello = frames_of("hello", 2, 1000)
    queue = frames_of("queue", 1, 2000)
    moh = frames_of("moh", 3, -3000)
    pl = Playlist("PCMU", [hello, queue], [moh])
    levels = [first_sample(pl.next_frame() or b"") for _ in range(2 + 1 + 3 * 2 + 1)]
    # u-law reproduces these levels within quantisation: compare by sign/size class
    assert [round(x, -3) for x in levels] == [1000, 1000, 2000] + [-3000] * 7
    assert pl.in_loop
    pl.stop()
    assert pl.next_frame() is None


def test_playlist_without_loop_finishes() -> None:
    pl = Playlist("PCMU", [frames_of("a", 2, 500)])
    assert pl.next_frame() is not None
    assert pl.next_frame() is not None
    assert pl.next_frame() is None
    assert pl.stopped


def test_barge_in_skips_prompts_to_music() -> None:
    pl = Playlist(
        "PCMU", [frames_of("menu", 50, 1000)], [frames_of("moh", 1, -3000)], barge_in=True
    )
    pl.next_frame()
    assert pl.on_dtmf() is True
    assert round(first_sample(pl.next_frame() or b""), -3) == -3000
    assert pl.on_dtmf() is False  # music is not interrupted by digits

    no_barge = Playlist("PCMU", [frames_of("legal", 5, 1000)])
    assert no_barge.on_dtmf() is False
    assert round(first_sample(no_barge.next_frame() or b""), -3) == 1000

    only_prompt = Playlist("PCMU", [frames_of("x", 5, 1000)], barge_in=True)
    assert only_prompt.on_dtmf() is True
    assert only_prompt.next_frame() is None
