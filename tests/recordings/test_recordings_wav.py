"""WAV header and repair of files left by a crash (checked with the stdlib reader and sox)."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from recordings_testkit import read_wav, tone

from recordings import repair
from recordings.wav import HEADER_BYTES, wav_header


def _stereo(samples: int) -> bytes:
    left = np.frombuffer(tone(440, samples), "<i2")
    return np.stack([left, -left], axis=1).astype("<i2").tobytes()


def test_header_is_what_the_stdlib_writes(tmp_path: Path) -> None:
    pcm = _stereo(800)
    ref = tmp_path / "ref.wav"
    with wave.open(str(ref), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm)
    assert ref.read_bytes()[:HEADER_BYTES] == wav_header(len(pcm))


def test_repair_stale_sizes(tmp_path: Path) -> None:
    # What a kill between "append data" and "patch sizes" leaves: sizes lag the data.
    p = tmp_path / "stale.wav"
    pcm = _stereo(8000)
    p.write_bytes(wav_header(3200) + pcm)
    res = repair(p)
    assert res.ok
    assert res.repaired
    assert res.header_data_bytes == 3200
    assert res.data_bytes == len(pcm)
    assert res.duration_s == 1.0
    ch, rate, data = read_wav(p)
    assert (ch, rate, len(data)) == (2, 8000, 8000)
    out = subprocess.run(["sox", "--i", "-D", str(p)], capture_output=True, text=True, check=True)
    assert float(out.stdout) == 1.0


def test_repair_torn_last_frame(tmp_path: Path) -> None:
    p = tmp_path / "torn.wav"
    pcm = _stereo(400)
    p.write_bytes(wav_header(0) + pcm + b"\x01\x02\x03")  # write cut inside one stereo frame
    res = repair(p)
    assert res.repaired
    assert res.torn_bytes == 3
    assert p.stat().st_size == HEADER_BYTES + len(pcm)
    assert read_wav(p)[2].tobytes() == pcm


def test_repair_leaves_valid_file_alone(tmp_path: Path) -> None:
    p = tmp_path / "ok.wav"
    body = wav_header(1600) + _stereo(400)
    p.write_bytes(body)
    mtime = p.stat().st_mtime_ns
    res = repair(p)
    assert res.ok
    assert not res.repaired
    assert p.read_bytes() == body
    assert p.stat().st_mtime_ns == mtime


def test_repair_incomplete_header_and_foreign_file(tmp_path: Path) -> None:
    p = tmp_path / "short.wav"
    p.write_bytes(b"RIFF\x00\x00")
    res = repair(p)
    assert res.repaired
    assert read_wav(p)[2].shape == (0, 2)
    foreign = tmp_path / "foreign.wav"
    foreign.write_bytes(b"ID3" + b"\x00" * 100)
    res = repair(foreign)
    assert not res.ok
    assert not res.repaired
    assert res.problem
    assert foreign.read_bytes() == b"ID3" + b"\x00" * 100


def test_cli_repair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from recordings import recordings_cli_main

    p = tmp_path / "stale.wav"
    p.write_bytes(wav_header(0) + _stereo(800))
    foreign = tmp_path / "foreign.wav"
    foreign.write_bytes(b"not a wav at all, just some bytes here to pass the header size")
    assert recordings_cli_main(["repair", str(p), str(foreign)]) == 1  # one file not ours
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[0]["repaired"] is True
    assert lines[0]["duration_s"] == 0.1
    assert lines[1]["ok"] is False
    assert len(read_wav(p)[2]) == 800
