"""Crash safety for real: a child process records in real time and is SIGKILLed mid-call.

The file it leaves must play (sox and the stdlib wave reader agree on it), hold the tone that was
fed, and miss at most about one second at the end (flush interval 0.2 s + reorder window 0.2 s).
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from recordings_testkit import RATE_HZ, dominant_hz, read_wav

from recordings import Keyring, decrypt_file, recover_file, repair

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

CHILD = r"""
import sys, time
from pathlib import Path
from recordings import Keyring, RecordingWriter, WriterConfig
from recordings_testkit import DECODERS, tone, ulaw_encode

path, encrypt = Path(sys.argv[1]), sys.argv[2] == "1"
keyring = Keyring.from_env() if encrypt else None
w = RecordingWriter(DECODERS, WriterConfig(flush_interval_s=0.2), keyring=keyring)
w.start()
rec = w.start_recording("crash", path, encrypt=encrypt)
seconds = 30
left = ulaw_encode(tone(440, 8000 * seconds))
right = tone(1000, 8000 * seconds)
t0 = time.monotonic()
for i, pos in enumerate(range(0, 8000 * seconds, 160)):
    delay = t0 + i * 0.02 - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    rec.feed(0, pos, left[pos : pos + 160], "PCMU")
    rec.feed(1, pos, right[2 * pos : 2 * pos + 320], "L16")
    print(pos + 160, flush=True)
"""

KILL_AFTER_SAMPLES = int(1.6 * RATE_HZ)


def _record_and_kill(path: Path, env: dict[str, str], encrypt: bool) -> int:
    fed = 0
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), "1" if encrypt else "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                fed = int(line)
                if fed >= KILL_AFTER_SAMPLES:
                    break
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    return fed


def _sox_seconds(path: Path) -> float:
    out = subprocess.run(
        ["sox", str(path), "-n", "stat"], capture_output=True, text=True, check=True
    ).stderr
    m = re.search(r"Length \(seconds\):\s+([0-9.]+)", out)
    assert m, out
    info = subprocess.run(
        ["sox", "--i", "-D", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert abs(float(info) - float(m.group(1))) < 1e-3
    return float(m.group(1))


def _check_audio(path: Path, fed_samples: int) -> None:
    seconds = _sox_seconds(path)
    fed_s = fed_samples / RATE_HZ
    assert 0.0 <= fed_s - seconds <= 1.0, (fed_s, seconds)
    ch, rate, data = read_wav(path)
    assert (ch, rate) == (2, RATE_HZ)
    assert abs(len(data) / RATE_HZ - seconds) < 1e-3
    assert abs(dominant_hz(data[:, 0]) - 440) < 5
    assert abs(dominant_hz(data[:, 1]) - 1000) < 5
    # Content, not just length: the last written second is the tone, not silence or garbage.
    tail = data[-4000:, 1].astype(np.float64)
    assert np.sqrt(np.mean(tail**2)) > 4000


def test_sigkill_leaves_playable_wav(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}"}
    path = tmp_path / "killed.wav"
    fed = _record_and_kill(path, env, encrypt=False)
    _check_audio(path, fed)
    before = path.read_bytes()
    res = repair(path)
    assert res.ok
    # Sizes are patched after every flush, so the header already matched the file.
    assert res.data_bytes == len(before) - 44
    assert res.duration_s == (len(before) - 44) / 32000


def test_sigkill_encrypted_decrypts_complete_chunks(tmp_path: Path) -> None:
    keyring = Keyring({"k1": os.urandom(32)}, "k1")
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}",
        "ACD_RECORDING_KEYS": "k1=" + base64.b64encode(keyring.keys["k1"]).decode(),
    }
    path = tmp_path / "killed.wav.enc"
    fed = _record_and_kill(path, env, encrypt=True)
    rec = recover_file(path)
    assert rec.ok
    assert rec.problem  # ends before its final chunk
    out = tmp_path / "plain.wav"
    result = decrypt_file(path, out, keyring)
    assert result.truncated  # no final chunk: reported, not rejected
    assert result.chunks >= 2
    _check_audio(out, fed)
