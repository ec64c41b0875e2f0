"""Crash and drain under load, through the real daemon with SIPp on both ends (issue 16).

- SIGKILL with 100 live, bridged, recorded calls (SIPp callers and SIPp agents streaming two
  tones), then a restart on the same directory: every call that had ended before the kill has
  its CDR row and a complete recording; every call cut off has a CDR row that says so, and a
  recording that plays up to within a second of the kill with both voices in it; no agent is
  left reserved, and the restarted daemon takes a new call.
- SIGTERM with live calls: new INVITEs get 503, the live calls finish (SIPp hangs them up), the
  daemon exits 0 before its drain timeout, and every call has its row.
"""

from __future__ import annotations

import datetime
import json
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
import wave
from pathlib import Path

import numpy as np
import pytest

from engine.storage.cdr import INTERRUPTED_REASON
from tests.e2e import configs
from tests.e2e.conftest import DaemonFactory, DaemonProcess, wait_until
from tests.e2e.peers import dominant_hz, free_port_block, sipp, stop

pytestmark = pytest.mark.e2e

ADMIN = "admin-token-0123456789"
SCENARIOS = Path(__file__).parent / "sipp" / "scenarios"
CALLER_HZ, AGENT_HZ = 440, 880


def tone_wavs(workdir: Path) -> None:
    """caller.wav and agent.wav: two seconds of one tone each, u-law, what SIPp streams."""
    for name, hz in (("caller", CALLER_HZ), ("agent", AGENT_HZ)):
        subprocess.run(
            ["sox", "-n", "-r", "8000", "-c", "1", "-e", "u-law", "-b", "8", f"{name}.wav",
             "synth", "2", "sine", str(hz), "vol", "0.5"],
            check=True, cwd=workdir, timeout=30,
        )  # fmt: skip


def config(agents: int, uas_port: int, *, drain_s: float = 30.0) -> str:
    rtp = free_port_block(1000)
    lines = "".join(
        f'[[agents]]\nid = "a{i}"\nlogin = "static"\ncontact = "sip:a{i}@127.0.0.1:{uas_port}"\n'
        "skills = { support = 5 }\nqueues = { support = 0 }\n\n"
        for i in range(agents)
    )
    return (
        configs.front_door(ADMIN, trunk="callers", flush_s=0.25)
        + f"""
[runtime]
node = "crashtest"
drain_timeout_s = {drain_s}

[media]
rtp_port_min = {rtp}
rtp_port_max = {rtp + 998}

[[queues]]
name = "support"
requirements = {{ support = 1 }}
ring_timeout_s = 5.0
wrap_up_s = 0.0
record = "always"

{lines}"""
    )


def api(daemon: DaemonProcess, method: str, path: str, body: object = None) -> object:
    request = urllib.request.Request(
        daemon.base_url + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
    )
    request.add_header("Authorization", f"Bearer {ADMIN}")
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.loads(resp.read())


def log_in(daemon: DaemonProcess, agents: int) -> None:
    for i in range(agents):
        state = api(daemon, "PUT", f"/api/v1/agents/a{i}/state", {"state": "logged_in"})
        assert state["state"] == "available"  # type: ignore[index]


def db_rows(daemon: DaemonProcess, query: str) -> list[sqlite3.Row]:
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        db.row_factory = sqlite3.Row
        return db.execute(query).fetchall()


def callers(
    tmp_path: Path, target: str, calls: int, rate: int, hold_ms: int
) -> subprocess.Popen[bytes]:
    return sipp(tmp_path, ["-sf", str(SCENARIOS / "caller_tone.xml")], target, "-s", "support",
                "-r", str(rate), "-m", str(calls), "-l", str(calls), "-d", str(hold_ms))  # fmt: skip


def voices(path: str) -> tuple[float, float, float]:
    """(seconds, left's tone, right's tone) of a stereo recording, over its last half second."""
    with wave.open(path) as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 8000)
        stereo = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    tail = stereo[-4000:]
    return len(stereo) / 8000, dominant_hz(tail[:, 0]), dominant_hz(tail[:, 1])


def restart(daemon: DaemonProcess) -> DaemonProcess:
    """The same config and directory, a new process (what systemd's Restart= does)."""
    log_path = daemon.workdir / "acd-restart.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", "--config", str(daemon.config_path)],
            cwd=daemon.workdir, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return DaemonProcess(proc, daemon.http_port, daemon.workdir, daemon.config_path, log_path)


LIVE = 100
ENDED = 10


def test_sigkill_with_100_recorded_calls_then_restart(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    tone_wavs(tmp_path)
    agents = LIVE + 2
    uas = sipp(tmp_path, ["-sf", str(SCENARIOS / "agent_answer_tone.xml")], None)
    live = restarted = None
    try:
        daemon = start_daemon(config(agents, uas.sip_port))  # type: ignore[attr-defined]
        log_in(daemon, agents)
        target = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")

        # Calls that end before the kill: one second of talk each.
        done = callers(tmp_path, target, ENDED, 10, 1000)
        assert done.wait(timeout=60) == 0, done.log_path.read_text()[-3000:]  # type: ignore[attr-defined]
        wait_until(
            lambda: len(db_rows(daemon, "SELECT id FROM recordings WHERE duration_s IS NOT NULL"))
            == ENDED,
            10, "the finished calls' recordings",
        )  # fmt: skip

        # 100 calls that are live, bridged and recorded when the daemon is killed.
        live = callers(tmp_path, target, LIVE, 50, 120_000)
        wait_until(
            lambda: len(db_rows(daemon, "SELECT id FROM calls WHERE ended_at IS NULL "
                                        "AND agent_id IS NOT NULL AND recording_id IS NOT NULL"))
            == LIVE,
            60, "100 live bridged calls with their rows",
        )  # fmt: skip
        time.sleep(2.0)  # two seconds of talk on the last of them (recordings flush every 0.5 s)
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(timeout=10)
        killed_at = time.time()
        stop(live)

        restarted = restart(daemon)
        restarted.wait_ready()
        (closed,) = [
            line
            for line in restarted.log_lines()
            if line.get("event") == "interrupted_calls_closed"
        ]
        assert closed["calls"] == LIVE

        cdr = db_rows(daemon, "SELECT * FROM calls")
        recs = {r["id"]: r for r in db_rows(daemon, "SELECT * FROM recordings")}
        assert len(cdr) == ENDED + LIVE
        finished = [r for r in cdr if r["disposition"] == "answered"]
        cut_off = [r for r in cdr if r["disposition"] == "failed"]
        assert (len(finished), len(cut_off)) == (ENDED, LIVE)
        for row in finished:  # complete rows, complete recordings with both voices
            rec = recs[row["recording_id"]]
            assert (rec["recovered"], rec["error"]) == (0, None)
            seconds, left, right = voices(rec["path"])
            assert abs(seconds - row["talk_s"]) < 0.5
            assert abs(left - CALLER_HZ) < 10
            assert abs(right - AGENT_HZ) < 10
        bridged_at = {
            str(line["call_id"]): datetime.datetime.fromisoformat(
                str(line["timestamp"])
            ).timestamp()
            for line in daemon.log_lines()
            if line.get("event") == "call_bridged"
        }
        short: dict[str, tuple[float, float]] = {}
        for row in cut_off:  # the row says what happened; the audio is there up to the kill
            assert (row["hangup_side"], row["hangup_reason"]) == ("system", INTERRUPTED_REASON)
            assert row["node"] == "crashtest"
            assert row["agent_id"] is not None
            assert row["ended_at"] >= killed_at - 1.0
            rec = recs[row["recording_id"]]
            assert (rec["recovered"], rec["error"]) == (1, "recovered after a crash")
            seconds, left, right = voices(rec["path"])
            # The file's time line starts when the bridge does (the "call_bridged" line).
            short[row["id"]] = (round(killed_at - bridged_at[row["id"]], 2), seconds)
            assert seconds == pytest.approx(rec["duration_s"], abs=0.05)
            assert abs(left - CALLER_HZ) < 10
            assert abs(right - AGENT_HZ) < 10

        # Each recording holds the audio up to within a second of the kill (flushed every 0.25 s).
        late = {k: v for k, v in short.items() if v[1] < v[0] - 1.0}
        assert not late, sorted(late.values())

        # No agent is left reserved or busy by the calls the kill cut off.
        states = {a["id"]: a["state"] for a in api(restarted, "GET", "/api/v1/agents")}  # type: ignore[union-attr, index]
        assert len(states) == agents
        assert not {"reserved", "busy", "wrap_up"} & set(states.values()), states
        # And the restarted daemon takes a new call.
        log_in(restarted, 1)
        after = callers(tmp_path, target, 1, 1, 500)
        assert after.wait(timeout=30) == 0, after.log_path.read_text()[-3000:]  # type: ignore[attr-defined]
        wait_until(
            lambda: len(db_rows(daemon, "SELECT id FROM calls WHERE disposition = 'answered'"))
            == ENDED + 1,
            10, "the new call's row",
        )  # fmt: skip
    finally:
        if live is not None:
            stop(live)
        stop(uas)
        if restarted is not None:
            assert restarted.stop() == 0


def test_sigterm_with_live_calls_refuses_new_ones_and_lets_them_finish(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    tone_wavs(tmp_path)
    calls = 20
    uas = sipp(tmp_path, ["-sf", str(SCENARIOS / "agent_answer_tone.xml")], None)
    try:
        daemon = start_daemon(config(calls, uas.sip_port, drain_s=20.0))  # type: ignore[attr-defined]
        log_in(daemon, calls)
        target = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")
        live = callers(tmp_path, target, calls, 40, 4000)
        wait_until(
            lambda: len(db_rows(daemon, "SELECT id FROM calls WHERE ended_at IS NULL "
                                        "AND agent_id IS NOT NULL")) == calls,
            30, "the live bridged calls",
        )  # fmt: skip
        daemon.signal(signal.SIGTERM)
        began = time.monotonic()
        refused = sipp(tmp_path, ["-sf", str(SCENARIOS / "caller_expect_503.xml")], target,
                       "-s", "support", "-m", "3", "-r", "10")  # fmt: skip
        assert refused.wait(timeout=20) == 0, refused.log_path.read_text()[-3000:]  # type: ignore[attr-defined]
        assert live.wait(timeout=30) == 0, live.log_path.read_text()[-3000:]  # type: ignore[attr-defined]
        assert daemon.proc.wait(timeout=25) == 0
        assert time.monotonic() - began < 20.0  # the live calls ended: no need to wait it out
    finally:
        stop(uas)
    rows = db_rows(daemon, "SELECT * FROM calls")
    answered = [r for r in rows if r["disposition"] == "answered"]
    rejected = [r for r in rows if r["disposition"] == "rejected"]
    assert len(answered) == calls
    assert all(r["hangup_side"] == "caller" and r["talk_s"] > 3.0 for r in answered)
    assert len(rejected) == 3
    assert {r["hangup_reason"] for r in rejected} == {"503 Shutting down"}
    assert not [r for r in rows if r["ended_at"] is None]
