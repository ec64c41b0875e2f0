"""One call through the whole ACD with real phones: trunk -> flow -> queue -> agent -> bridge -> CDR.

baresip plays the caller (440 Hz microphone) dialling `support` over the loopback trunk; another
baresip is agent 1001, registered with digest auth and auto-answering (880 Hz microphone). Each must
hear the other's tone, the recording must hold 440 Hz on the left and 880 Hz on the right, and the
CDR, queue events, agent events and metrics must tell the same story.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import urllib.request
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.configs import front_door
from tests.e2e.conftest import DaemonFactory, DaemonProcess, wait_until
from tests.e2e.peers import Baresip, dominant_hz, free_port_block

pytestmark = pytest.mark.e2e

ADMIN = "admin-token-0123456789"


def config(rtp_base: int, media_workers: int = 0) -> str:
    steps = (
        '{ type = "answer" }, { type = "play", prompt = "digit-1" }, '
        '{ type = "enqueue", queue = "support" }'
    )
    return (
        front_door(ADMIN, steps=steps, rtp_base=rtp_base, flush_s=0.5, media_workers=media_workers)
        + """
[[queues]]
name = "support"
requirements = { support = 1 }
ring_timeout_s = 10.0
wrap_up_s = 1.0

[[agents]]
id = "1001"
password = "alice-secret-1001"
skills = { support = 8 }
queues = { support = 0 }
"""
    )


def api(daemon: DaemonProcess, path: str) -> object:
    request = urllib.request.Request(daemon.base_url + path)
    request.add_header("Authorization", f"Bearer {ADMIN}")
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.loads(resp.read())


def put(daemon: DaemonProcess, path: str, body: object) -> int:
    request = urllib.request.Request(
        daemon.base_url + path, data=json.dumps(body).encode(), method="PUT"
    )
    request.add_header("Authorization", f"Bearer {ADMIN}")
    with urllib.request.urlopen(request, timeout=5) as resp:
        return int(resp.status)


def agent_state(daemon: DaemonProcess) -> str:
    return str(api(daemon, "/api/v1/agents/1001")["state"])  # type: ignore[index]


@contextlib.contextmanager
def answered_call(daemon: DaemonProcess, tmp_path: Path) -> Iterator[tuple[Baresip, Baresip]]:
    """Agent 1001 (baresip, 880 Hz) registers; a caller (baresip, 440 Hz) dials ``support``;
    yields (agent, caller) once the agent is on the call. Both phones are stopped on the way
    out, which makes baresip finish the recordings of what it heard."""
    sip = f"127.0.0.1:{_sip_port(daemon)}"
    agent = Baresip(
        tmp_path / "agent",
        f"<sip:1001@{sip}>;auth_pass=alice-secret-1001;regint=60;answermode=auto;audio_codecs=PCMU",
        880,
    )
    caller: Baresip | None = None
    try:
        agent.wait_for("200 OK")  # registered with digest auth
        wait_until(lambda: agent_state(daemon) == "available", 10, "agent 1001 available")
        caller = Baresip(
            tmp_path / "caller", f"<sip:5551234@{sip}>;regint=0;audio_codecs=PCMU", 440,
            dial=f"sip:support@{sip}",
        )  # fmt: skip
        wait_until(lambda: agent_state(daemon) == "busy", 20, "agent 1001 on the call")
        yield agent, caller
    finally:
        for phone in (caller, agent):
            if phone is not None:
                phone.stop()


@pytest.mark.parametrize("media_workers", [0, 1], ids=["in_daemon", "media_worker"])
def test_call_reaches_agent_with_audio_both_ways(
    start_daemon: DaemonFactory, tmp_path: Path, media_workers: int
) -> None:
    """With ``[media] workers = 1`` the bridged call's relay, PCI pause and recording run in a
    media worker process: the same audio, recording and index row must come out."""
    daemon = start_daemon(config(free_port_block(100), media_workers))
    with answered_call(daemon, tmp_path) as (agent, caller):
        (live,) = api(daemon, "/api/v1/calls")  # type: ignore[misc]
        assert (live["phase"], live["agent_id"], live["recording_paused"]) == (
            "bridged",
            "1001",
            False,
        )
        time.sleep(1.5)  # bridged audio both ways
        assert put(daemon, f"/api/v1/calls/{live['id']}/recording", {"paused": True}) == 200
        time.sleep(1.0)  # PCI: card number read out here, not recorded
        assert put(daemon, f"/api/v1/calls/{live['id']}/recording", {"paused": False}) == 200
        time.sleep(1.5)
        caller.command("hangup")
        wait_until(lambda: agent_state(daemon) in ("wrap_up", "available"), 10, "call end")
    agent_heard, caller_heard = agent.heard(), caller.heard()
    # Each phone heard the other one's microphone (the last second of what it decoded).
    assert abs(dominant_hz(agent_heard[-8000:]) - 440) < 10
    assert abs(dominant_hz(caller_heard[-8000:]) - 880) < 10

    time.sleep(1.5)  # CDR writer flush
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        db.row_factory = sqlite3.Row
        (cdr,) = db.execute("SELECT * FROM calls").fetchall()
        events = [r[0] for r in db.execute("SELECT event FROM queue_events ORDER BY id")]
        rec = db.execute("SELECT * FROM recordings").fetchone()
    assert cdr["disposition"] == "answered"
    assert cdr["agent_id"] == "1001"
    assert cdr["queue"] == "support"
    assert cdr["caller"] == "5551234"
    assert cdr["hangup_side"] == "caller"
    assert cdr["talk_s"] > 2.5
    assert events == ["enter", "offer", "answer", "complete"]
    assert rec is not None
    assert cdr["recording_id"] == rec["id"]
    with wave.open(rec["path"]) as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 8000)
        stereo = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    assert abs(len(stereo) / 8000 - cdr["talk_s"]) < 0.5
    assert abs(dominant_hz(stereo[-8000:-2000, 0]) - 440) < 10  # caller on the left
    assert abs(dominant_hz(stereo[-8000:-2000, 1]) - 880) < 10  # agent on the right
    ((start, end),) = json.loads(rec["paused_spans"])
    assert 0.8 < (end - start) / 8000 < 1.3  # the paused second is marked in the index...
    paused = stereo[start + 400 : end - 400].astype(float)
    assert np.sqrt(np.mean(paused**2)) < 50  # ...and written as silence on both channels
    before = stereo[max(0, start - 4000) : start - 400, 0].astype(float)
    assert np.sqrt(np.mean(before**2)) > 1000

    _, exposition, _ = daemon.get("/metrics")
    text = exposition.decode()
    assert 'acd_calls_total{outcome="answered"} 1.0' in text
    assert "acd_calls_active 0.0" in text
    if media_workers:
        assert 'acd_media_handoffs_total{outcome="carried"} 1.0' in text
        assert "acd_media_workers 1.0" in text
        assert 'acd_media_handoffs_total{outcome="taken_back"}' not in text
        # the worker's packet counters reach the daemon's metrics
        relayed = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith('acd_rtp_packets_total{direction="in"}')
        ]
        assert relayed
        assert relayed[0] > 2 * 4 * 50


def _sip_port(daemon: DaemonProcess) -> int:
    ready = daemon.wait_for_log("ready")
    return int(str(ready["sip"]).rsplit(":", 1)[1])


IVR = """
[[api.tokens]]
name = "ops"
role = "admin"
token = "{admin}"

[[trunks]]
name = "local"
allow = ["127.0.0.0/8"]

[[routes]]
number = "ivr"
flow = "ivr"

[[flows]]
name = "ivr"
steps = [{{ type = "answer" }}, {{ type = "menu", prompt = "ivr-menu", options = {{ "1" = "support", "2" = "sales" }}, timeout_s = 8.0 }}]

[[flows]]
name = "support"
steps = [{{ type = "enqueue", queue = "support" }}]

[[flows]]
name = "sales"
steps = [{{ type = "enqueue", queue = "sales" }}]

[[queues]]
name = "support"
requirements = {{ support = 1 }}

[[queues]]
name = "sales"
requirements = {{ sales = 1 }}

[[agents]]
id = "1002"
password = "bob-secret-1002"
skills = {{ sales = 9 }}
queues = {{ sales = 0 }}

[media]
rtp_port_min = {rtp}
rtp_port_max = {rtp_max}
"""


def test_dtmf_menu_chooses_the_queue(start_daemon: DaemonFactory, tmp_path: Path) -> None:
    rtp = free_port_block(100)
    daemon = start_daemon(IVR.format(admin=ADMIN, rtp=rtp, rtp_max=rtp + 98))
    sip = f"127.0.0.1:{_sip_port(daemon)}"
    agent = Baresip(
        tmp_path / "agent",
        f"<sip:1002@{sip}>;auth_pass=bob-secret-1002;regint=60;answermode=auto;audio_codecs=PCMU",
        880,
    )
    caller: Baresip | None = None
    try:
        agent.wait_for("200 OK")
        wait_until(lambda: _state(daemon, "1002") == "available", 10, "agent 1002 available")
        caller = Baresip(
            tmp_path / "caller", f"<sip:5550002@{sip}>;regint=0;audio_codecs=PCMU", 440,
            dial=f"sip:ivr@{sip}",
        )  # fmt: skip
        caller.wait_for("Call established")
        time.sleep(1.0)  # into the menu prompt
        reply = caller.command("sndcode", "2")  # RFC 4733 telephone-event
        assert reply.get("ok") is True, reply
        wait_until(lambda: _state(daemon, "1002") == "busy", 20, "agent 1002 on the call")
        caller.command("hangup")
        wait_until(lambda: _state(daemon, "1002") in ("wrap_up", "available"), 10, "call end")
    finally:
        for phone in (caller, agent):
            if phone is not None:
                phone.stop()
    time.sleep(1.5)
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        (row,) = db.execute("SELECT queue, agent_id, disposition, flow FROM calls").fetchall()
    assert row == ("sales", "1002", "answered", "ivr")
    _, exposition, _ = daemon.get("/metrics")
    assert 'acd_dtmf_digits_total{method="rfc4733"} 1.0' in exposition.decode()


def _state(daemon: DaemonProcess, agent_id: str) -> str:
    return str(api(daemon, f"/api/v1/agents/{agent_id}")["state"])  # type: ignore[index]


def test_readme_demo_call_on_the_default_config(tmp_path: Path) -> None:
    """The README's 'try a call' on config/acd.toml as shipped (only ports and paths moved)."""
    import subprocess
    import sys

    from tests.conftest import REPO, free_port

    http_port, sip_port, rtp = free_port(), free_port(), free_port_block(100)
    text = (
        (REPO / "config" / "acd.toml")
        .read_text()
        .replace("port = 8080", f"port = {http_port}")
        .replace("port = 5060", f"port = {sip_port}")
        .replace("rtp_port_min = 20000", f"rtp_port_min = {rtp}")
        .replace("rtp_port_max = 29999", f"rtp_port_max = {rtp + 98}")
    )
    cfg = tmp_path / "acd.toml"
    cfg.write_text(text)
    log = (tmp_path / "acd.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", "--config", str(cfg)],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    sip = f"127.0.0.1:{sip_port}"
    agent = caller = None
    try:
        daemon = DaemonProcess(proc, http_port, tmp_path, cfg, tmp_path / "acd.log")
        daemon.wait_ready()
        agent = Baresip(
            tmp_path / "agent",
            f"<sip:1001@{sip}>;auth_pass=alice-1001-demo;regint=60;answermode=auto;audio_codecs=PCMU",
            880,
        )
        agent.wait_for("200 OK")
        token = "demo-supervisor-token-change-me"

        def state() -> str:
            req = urllib.request.Request(f"{daemon.base_url}/api/v1/agents/1001")
            req.add_header("Authorization", f"Bearer {token}")
            with urllib.request.urlopen(req, timeout=5) as resp:
                return str(json.loads(resp.read())["state"])

        wait_until(lambda: state() == "available", 10, "agent 1001 available")
        caller = Baresip(tmp_path / "caller", f"<sip:5550001@{sip}>;regint=0;audio_codecs=PCMU", 440,
                         dial=f"sip:support@{sip}")  # fmt: skip
        wait_until(
            lambda: state() == "busy",
            30,
            "agent 1001 answering (after the welcome prompt)",
        )
        caller.command("hangup")
        wait_until(lambda: state() in ("wrap_up", "available"), 10, "call end")
        time.sleep(1.5)
        with sqlite3.connect(tmp_path / "var" / "acd.sqlite3") as db:
            (row,) = db.execute("SELECT queue, agent_id, disposition FROM calls").fetchall()
        assert row == ("support", "1001", "answered")
    finally:
        for phone in (caller, agent):
            if phone is not None:
                phone.stop()
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_sigkill_during_a_recorded_call_then_restart_recovers_the_file(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys

    daemon = start_daemon(config(free_port_block(100)))
    with answered_call(daemon, tmp_path):
        time.sleep(3.0)  # recorded, flushed every 0.5 s
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(timeout=10)
    db_path = daemon.workdir / "var" / "acd.sqlite3"
    with sqlite3.connect(db_path) as db:
        db.row_factory = sqlite3.Row
        (row,) = db.execute("SELECT * FROM recordings").fetchall()
    assert row["duration_s"] is None  # the crash left the row incomplete
    # Restart on the same directory and config: recovery runs before the daemon is ready.
    log = (daemon.workdir / "acd-restart.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", "--config", str(daemon.config_path)],
        cwd=daemon.workdir, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    restarted = DaemonProcess(proc, daemon.http_port, daemon.workdir, daemon.config_path,
                              daemon.workdir / "acd-restart.log")  # fmt: skip
    try:
        restarted.wait_ready()
        with sqlite3.connect(db_path) as db:
            db.row_factory = sqlite3.Row
            (row,) = db.execute("SELECT * FROM recordings").fetchall()
    finally:
        assert restarted.stop() == 0
    assert row["recovered"] == 1
    assert row["error"] == "recovered after a crash"
    info = subprocess.run(
        ["sox", "--i", "-D", row["path"]], capture_output=True, text=True, check=True
    )
    duration = float(info.stdout)
    assert 1.5 < duration <= 3.5  # audio up to the last flush before the kill
    assert row["duration_s"] == pytest.approx(duration, abs=0.05)
    with wave.open(row["path"]) as w:
        stereo = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    assert abs(dominant_hz(stereo[-6000:, 0]) - 440) < 10
    assert abs(dominant_hz(stereo[-6000:, 1]) - 880) < 10


def _media_worker_pid(daemon: DaemonProcess) -> int:
    """The daemon's one media worker: a child process of the daemon this test started."""
    children = Path(f"/proc/{daemon.proc.pid}/task/{daemon.proc.pid}/children").read_text().split()
    workers = [
        int(pid)
        for pid in children
        if b"engine.media.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(workers) == 1, children
    return workers[0]


def test_a_media_worker_killed_mid_call_the_recording_goes_on_in_the_daemon(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """The worker carrying a recorded call is SIGKILLed while the agent has the recording paused
    (PCI). The call goes on in the daemon; the worker's file is repaired at once (its row complete,
    the reason given) and the rest of the call is recorded in a second file whose row `continues`
    the first: still paused until the agent resumes (nothing of the card number written), then
    both tones again. Together the two files cover the call."""
    import signal

    daemon = start_daemon(config(free_port_block(100), media_workers=1))

    def metrics() -> str:
        return daemon.get("/metrics")[1].decode()

    with answered_call(daemon, tmp_path) as (agent, caller):
        wait_until(lambda: 'acd_media_handoffs_total{outcome="carried"} 1.0' in metrics(), 5,
                   "the call carried by the worker")  # fmt: skip
        (live,) = api(daemon, "/api/v1/calls")  # type: ignore[misc]
        recording_path = f"/api/v1/calls/{live['id']}/recording"
        time.sleep(1.5)  # recorded by the worker
        assert put(daemon, recording_path, {"paused": True}) == 200
        time.sleep(0.3)
        os.kill(_media_worker_pid(daemon), signal.SIGKILL)
        wait_until(lambda: 'acd_media_handoffs_total{outcome="taken_back"} 1.0' in metrics(), 5,
                   "the call taken back by the daemon")  # fmt: skip
        time.sleep(1.0)  # still paused: the card number is read out here
        (live,) = api(daemon, "/api/v1/calls")  # type: ignore[misc]
        assert (live["phase"], live["recording_paused"]) == ("bridged", True)
        assert put(daemon, recording_path, {"paused": False}) == 200
        time.sleep(2.0)
        caller.command("hangup")
        wait_until(lambda: agent_state(daemon) in ("wrap_up", "available"), 10, "call end")
    # The call itself went on: each phone still hears the other at the end.
    assert abs(dominant_hz(agent.heard()[-8000:]) - 440) < 10
    assert abs(dominant_hz(caller.heard()[-8000:]) - 880) < 10

    time.sleep(1.5)  # CDR writer and index rows
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        db.row_factory = sqlite3.Row
        (cdr,) = db.execute("SELECT * FROM calls").fetchall()
        first, second = db.execute("SELECT * FROM recordings ORDER BY started_at").fetchall()
    assert cdr["disposition"] == "answered"
    assert cdr["recording_id"] == first["id"]
    # The worker's file: repaired now, not at the next start; the row says why it ends early.
    assert first["error"].startswith("media worker died"), first["error"]
    assert first["recovered"] == 0
    assert first["continues"] is None
    assert first["duration_s"] > 1.0
    with wave.open(first["path"]) as w:
        stereo = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    assert len(stereo) / 8000 == pytest.approx(first["duration_s"], abs=0.05)
    assert abs(dominant_hz(stereo[4000:12000, 0]) - 440) < 10
    assert abs(dominant_hz(stereo[4000:12000, 1]) - 880) < 10
    # The daemon's file: the rest of the call, paused until the agent resumed.
    assert second["continues"] == first["id"]
    assert second["error"] is None
    assert second["call_id"] == first["call_id"]
    with wave.open(second["path"]) as w:
        rest = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    ((start, end),) = json.loads(second["paused_spans"])
    assert start == 0
    assert 0.6 < end / 8000 < 2.0  # from the take-back to the resume
    assert np.sqrt(np.mean(rest[start : end - 400].astype(float) ** 2)) < 50  # nothing written
    assert abs(dominant_hz(rest[-8000:-2000, 0]) - 440) < 10
    assert abs(dominant_hz(rest[-8000:-2000, 1]) - 880) < 10
    # Nothing lost but the moments between the worker's death and the new file's start.
    covered = first["duration_s"] + second["duration_s"]
    assert cdr["talk_s"] - 1.0 < covered <= cdr["talk_s"] + 0.5
