"""On-demand recording through the API, against the real daemon with real phones.

A SIPp caller (built-in ``uac``, no audio) dials ``support``, a queue with ``record = "on_demand"``;
agent 1001 is a baresip phone (digest registration, auto-answer, 880 Hz microphone). Nothing is
recorded at bridge time. Agent 1002's token may not start a recording of 1001's call (403); 1001's
own token may (200), once (409 after that). The file must cover exactly the time from the request
to the hang-up: its length matches CDR ``ended_at`` minus the request time within 0.1 s, and the
agent's tone is there from its first samples (not a silent prefix for the time before). A second
call to ``sales`` (``record = "never"``, agent 1002 a SIPp UAS) is refused with 409. Every attempt
is in the audit table.
"""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.error
import urllib.request
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.configs import front_door
from tests.e2e.conftest import DaemonFactory, DaemonProcess, wait_until
from tests.e2e.peers import Baresip, dominant_hz, free_port_block, sipp, stop

pytestmark = pytest.mark.e2e

ADMIN = "admin-token-on-demand-0123"
TOKEN_1001 = "agent-1001-token-abcdef"
TOKEN_1002 = "agent-1002-token-uvwxyz"
SCENARIOS = Path(__file__).parent / "sipp" / "scenarios"


def config(rtp_base: int, agent_1002_port: int, media_workers: int = 0) -> str:
    return (
        front_door(
            ADMIN,
            numbers=("support", "sales"),
            rtp_base=rtp_base,
            flush_s=0.5,
            media_workers=media_workers,
        )
        + f"""
[[queues]]
name = "support"
requirements = {{ support = 1 }}
wrap_up_s = 1.0
record = "on_demand"

[[queues]]
name = "sales"
requirements = {{ sales = 1 }}
wrap_up_s = 1.0
record = "never"

[[agents]]
id = "1001"
password = "alice-secret-1001"
api_token = "{TOKEN_1001}"
skills = {{ support = 8 }}
queues = {{ support = 0 }}

[[agents]]
id = "1002"
login = "static"
contact = "sip:1002@127.0.0.1:{agent_1002_port}"
api_token = "{TOKEN_1002}"
skills = {{ sales = 8 }}
queues = {{ sales = 0 }}
"""
    )


def request(
    daemon: DaemonProcess, method: str, path: str, token: str, body: object = None
) -> tuple[int, str]:
    req = urllib.request.Request(
        daemon.base_url + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
    )
    req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def get(daemon: DaemonProcess, path: str) -> object:
    status, text = request(daemon, "GET", path, ADMIN)
    assert status == 200, text
    return json.loads(text)


def bridged_call(daemon: DaemonProcess, queue: str) -> dict[str, object] | None:
    calls = get(daemon, "/api/v1/calls")
    assert isinstance(calls, list)
    return next((c for c in calls if c["queue"] == queue and c["phase"] == "bridged"), None)


def db_rows(daemon: DaemonProcess, sql: str) -> list[sqlite3.Row]:
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        db.row_factory = sqlite3.Row
        return db.execute(sql).fetchall()


@pytest.mark.parametrize("media_workers", [0, 1], ids=["in_daemon", "media_worker"])
def test_record_on_demand_from_the_request_to_the_hang_up(
    start_daemon: DaemonFactory, tmp_path: Path, media_workers: int
) -> None:
    """With a media worker the recording asked for mid-call is started and written there."""
    agent_1002 = sipp(tmp_path, ["-sf", str(SCENARIOS / "agent_answer.xml")], None, "-m", "1")
    daemon = start_daemon(config(free_port_block(100), agent_1002.sip_port, media_workers))  # type: ignore[attr-defined]
    sip = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")
    agent = Baresip(
        tmp_path / "agent",
        f"<sip:1001@{sip}>;auth_pass=alice-secret-1001;regint=60;answermode=auto;audio_codecs=PCMU",
        880,
    )
    callers = []
    try:
        agent.wait_for("200 OK")
        status, text = request(daemon, "PUT", "/api/v1/agents/1002/state", ADMIN,
                               {"state": "logged_in"})  # fmt: skip
        assert status == 200, text

        # -- sales records "never": the policy forbids it, whoever asks --------------------------
        callers.append(sipp(tmp_path, ["-sn", "uac"], sip, "-s", "sales", "-m", "1", "-d", "3000"))
        wait_until(lambda: bridged_call(daemon, "sales"), 15, "the sales call bridged")
        sales = bridged_call(daemon, "sales")
        assert sales is not None
        status, text = request(daemon, "PUT", f"/api/v1/calls/{sales['id']}/recording", ADMIN,
                               {"record": True})  # fmt: skip
        assert status == 409, text
        detail = json.loads(text)["detail"]
        assert 'record = "never"' in detail, detail
        assert "forbids" in detail, detail

        # -- support records on demand -----------------------------------------------------------
        wait_until(lambda: get(daemon, "/api/v1/agents/1001")["state"] == "available",  # type: ignore[index]
                   10, "agent 1001 available")  # fmt: skip
        callers.append(
            sipp(tmp_path, ["-sn", "uac"], sip, "-s", "support", "-m", "1", "-d", "6000")
        )
        wait_until(lambda: bridged_call(daemon, "support"), 15, "the support call bridged")
        live = bridged_call(daemon, "support")
        assert live is not None
        assert (live["agent_id"], live["recording_id"]) == ("1001", None)
        path = f"/api/v1/calls/{live['id']}/recording"
        time.sleep(1.0)  # bridged, not recorded: no file, no index row
        assert not list((daemon.workdir / "var" / "recordings").rglob("*.wav"))
        assert db_rows(daemon, "SELECT id FROM recordings") == []

        status, text = request(daemon, "PUT", path, TOKEN_1002, {"record": True})
        assert status == 403, text  # another agent's call
        status, text = request(daemon, "PUT", path, TOKEN_1001, {"paused": True})
        assert status == 409, text  # nothing to pause yet

        requested_at = time.time()
        status, text = request(daemon, "PUT", path, TOKEN_1001, {"record": True})
        assert status == 200, text
        started = json.loads(text)
        assert started["on_demand"] is True
        assert started["recording_id"]
        status, text = request(daemon, "PUT", path, ADMIN, {"record": True})
        assert status == 409, text
        assert "already being recorded" in json.loads(text)["detail"]
        calls_now = get(daemon, "/api/v1/calls")
        assert isinstance(calls_now, list)
        assert [c["recording_id"] for c in calls_now if c["id"] == live["id"]] == [
            started["recording_id"]
        ]
        for caller in callers:  # SIPp hangs up after its -d pause
            assert caller.wait(timeout=20) == 0, Path(caller.log_path).read_text()[-2000:]  # type: ignore[attr-defined]
    finally:
        for caller in callers:
            stop(caller)
        stop(agent_1002)
        agent.stop()

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the CDR writer and the index row catch up
        rec_rows = db_rows(daemon, "SELECT * FROM recordings")
        cdr = db_rows(
            daemon, "SELECT * FROM calls WHERE queue = 'support' AND ended_at IS NOT NULL"
        )
        if cdr and rec_rows and rec_rows[0]["duration_s"] is not None:
            break
        time.sleep(0.1)
    (row,) = rec_rows
    (call,) = cdr
    assert row["id"] == started["recording_id"] == call["recording_id"]
    assert (row["call_id"], row["queue"], row["agent_id"]) == (live["id"], "support", "1001")
    assert (row["on_demand"], row["started_by"]) == (1, "agent:1001")
    with wave.open(row["path"]) as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 8000)
        stereo = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    length_s = len(stereo) / 8000
    assert abs(length_s - (call["ended_at"] - requested_at)) < 0.1, (length_s, call["ended_at"])
    assert abs(row["duration_s"] - length_s) < 0.01
    # Position 0 is the request: the agent's tone is there from the start, not after a silent
    # stretch as long as the call's unrecorded part.
    head = stereo[400:2400, 1].astype(float)
    assert np.sqrt(np.mean(head**2)) > 1000
    assert abs(dominant_hz(stereo[-8000:-2000, 1]) - 880) < 10  # agent on the right
    assert np.sqrt(np.mean(stereo[:, 0].astype(float) ** 2)) < 50  # SIPp caller sends no audio

    audits = [
        (a["actor"], a["action"], a["outcome"], a["object_id"])
        for a in db_rows(daemon, "SELECT * FROM audit_log WHERE action LIKE 'recording_%' ORDER BY id")
    ]  # fmt: skip
    assert audits == [
        ("ops", "recording_start", "refused", sales["id"]),
        ("agent:1002", "recording_start", "denied", live["id"]),
        ("agent:1001", "recording_pause", "refused", live["id"]),
        ("agent:1001", "recording_start", "done", live["id"]),
        ("ops", "recording_start", "refused", live["id"]),
    ]
    if media_workers:  # both bridges were carried by the worker, none taken back
        _, body, _ = daemon.get("/metrics")
        assert 'acd_media_handoffs_total{outcome="carried"} 2.0' in body.decode()
        assert 'outcome="taken_back"' not in body.decode()
    assert daemon.stop() == 0
