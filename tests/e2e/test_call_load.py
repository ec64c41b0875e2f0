"""Load through the whole ACD: SIPp `uac` as the trunk, SIPp `uas` answering for 30 static agents.

Bounded for CI (20 calls/s for 10 s); benchmarks/bench_acd.py runs the issue's 100 calls/s for 30 s.
Every call must succeed at SIPp, have exactly one CDR row, and no agent may ever be on two calls at
once (its answer-to-end intervals never overlap).
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

from tests.e2e import configs
from tests.e2e.conftest import DaemonFactory, DaemonProcess
from tests.e2e.peers import free_port_block, sipp, stop

pytestmark = pytest.mark.e2e

ADMIN = "admin-token-0123456789"
AGENTS = 30
CALLS = 200


def front_door(steps: str = '{ type = "answer" }, { type = "enqueue", queue = "support" }') -> str:
    """Admin token, a loopback trunk, and the number `support` routed to a flow of ``steps``."""
    return configs.front_door(ADMIN, steps=steps, trunk="callers")


def set_state(daemon: DaemonProcess, agent_id: str, state: str) -> str:
    """PUT the agent's state through the API as the admin; the state the daemon reports back."""
    request = urllib.request.Request(
        f"{daemon.base_url}/api/v1/agents/{agent_id}/state",
        data=json.dumps({"state": state}).encode(),
        method="PUT",
    )
    request.add_header("Authorization", f"Bearer {ADMIN}")
    with urllib.request.urlopen(request, timeout=5) as resp:
        return str(json.loads(resp.read())["state"])


def login(daemon: DaemonProcess, agent_id: str) -> None:
    assert set_state(daemon, agent_id, "logged_in") == "available"


def config(
    uas_port: int, rtp_base: int, agents_n: int = AGENTS, ring_timeout_s: float = 5.0
) -> str:
    agents = "".join(
        f'[[agents]]\nid = "a{i}"\nlogin = "static"\ncontact = "sip:a{i}@127.0.0.1:{uas_port}"\n'
        "skills = { support = 5 }\nqueues = { support = 0 }\n\n"
        for i in range(agents_n)
    )
    return (
        front_door()
        + f"""
[media]
rtp_port_min = {rtp_base}
rtp_port_max = {rtp_base + 998}

[[queues]]
name = "support"
requirements = {{ support = 1 }}
ring_timeout_s = {ring_timeout_s}
wrap_up_s = 0.0
record = "never"

{agents}"""
    )


def test_sipp_load_through_queue_to_sipp_agents(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    uas = sipp(tmp_path, ["-sn", "uas"], None)
    try:
        time.sleep(0.5)
        assert uas.poll() is None, uas.log_path.read_text()  # type: ignore[attr-defined]
        daemon = start_daemon(config(uas.sip_port, free_port_block(1000)))  # type: ignore[attr-defined]
        for i in range(AGENTS):
            login(daemon, f"a{i}")
        ready = daemon.wait_for_log("ready")
        target = str(ready["sip"]).removeprefix("udp:")
        started = time.monotonic()
        uac = sipp(tmp_path, ["-sn", "uac"], target, "-s", "support", "-r", "20", "-m", str(CALLS),
                   "-l", "60", "-d", "1000")  # fmt: skip
        code = uac.wait(timeout=120)
        elapsed = time.monotonic() - started
        uac_log = uac.log_path.read_text(errors="replace")  # type: ignore[attr-defined]
        assert code == 0, uac_log[-3000:]
    finally:
        stop(uas)
    time.sleep(1.5)  # CDR writer flush
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        rows = db.execute(
            "SELECT sip_call_id, disposition, agent_id, agent_answered_at, ended_at FROM calls"
        ).fetchall()
    assert len(rows) == CALLS
    assert len({r[0] for r in rows}) == CALLS  # one CDR per call
    answered = [r for r in rows if r[1] == "answered"]
    assert len(answered) >= CALLS * 0.9, {r[1] for r in rows}
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for _, _, agent, start, end in answered:
        spans[agent].append((start, end))
    for agent, intervals in spans.items():
        intervals.sort()
        for (_, end), (start, _) in itertools.pairwise(intervals):
            assert start >= end, f"agent {agent} was double-booked"
    _, exposition, _ = daemon.get("/metrics")
    assert "acd_calls_active 0.0" in exposition.decode()
    print(f"{CALLS} calls in {elapsed:.1f} s, {len(answered)} answered by {len(spans)} agents")


def test_five_percent_sip_loss_on_both_ends_every_call_completes(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """SIPp ``-lost 5`` on the trunk side and on the agents' side: each drops 5 % of the SIP
    messages it sends and receives, so our retransmissions (RFC 3261 17, T1 = 500 ms) and the
    peers' must repair every transaction: all 200 calls complete, each with one answered row.
    Each caller holds 5 s after our answer. One agent's INVITE and its answer both crossing
    (0.95**4) fails about one try in ten, so a caller whose agent leg needs three tries waits
    1.5 s; the 1.5 s ring timeout moves the offer on to another agent (CANCEL, and a late 200 for
    it answered with ACK + BYE, all on lossy paths), giving each caller some seven tries before
    its 5 s are up. 80 agents keep the ~60 concurrent calls from waiting for a free one."""
    calls, agents = 200, 80
    uas = sipp(tmp_path, ["-sn", "uas"], None, "-lost", "5")
    try:
        time.sleep(0.5)
        assert uas.poll() is None, uas.log_path.read_text()  # type: ignore[attr-defined]
        daemon = start_daemon(config(uas.sip_port, free_port_block(1000), agents, 1.5))  # type: ignore[attr-defined]
        for i in range(agents):
            login(daemon, f"a{i}")
        target = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")
        uac = sipp(tmp_path, ["-sn", "uac"], target, "-s", "support", "-r", "12", "-m", str(calls),
                   "-l", "100", "-d", "5000", "-lost", "5")  # fmt: skip
        code = uac.wait(timeout=180)
        assert code == 0, uac.log_path.read_text(errors="replace")[-3000:]  # type: ignore[attr-defined]
    finally:
        stop(uas)

    def finished() -> list[tuple[str, str]]:
        with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
            return db.execute(
                "SELECT sip_call_id, disposition FROM calls WHERE ended_at IS NOT NULL"
            ).fetchall()

    deadline = time.monotonic() + 30
    while len(finished()) < calls and time.monotonic() < deadline:
        time.sleep(0.2)
    rows = finished()
    assert len({r[0] for r in rows}) == calls
    assert {r[1] for r in rows} == {"answered"}, _timelines(
        daemon, [r[0] for r in rows if r[1] != "answered"]
    )
    _, exposition, _ = daemon.get("/metrics")
    assert "acd_calls_active 0.0" in exposition.decode()


def _timelines(daemon: DaemonProcess, sip_call_ids: list[str]) -> str:
    """Each call's CDR times and queue events, relative to its arrival: what a failure shows."""
    out = []
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        for sip_call_id in sip_call_ids:
            call_id, arrived, *times = db.execute(
                "SELECT id, arrived_at, flow_answered_at, enqueued_at, first_offer_at,"
                " agent_answered_at, ended_at, hangup_side, hangup_reason FROM calls"
                " WHERE sip_call_id = ?", (sip_call_id,),
            ).fetchone()  # fmt: skip
            events = db.execute(
                "SELECT at - ?, event, agent_id, data FROM queue_events WHERE call_id = ?"
                " ORDER BY at", (arrived, call_id),
            ).fetchall()  # fmt: skip
            rel = [round(t - arrived, 3) if isinstance(t, float) else t for t in times]
            out.append(f"{sip_call_id}: {rel} {events}")
    return "\n".join(out)


def test_static_agent_behind_a_pbx_that_challenges(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    pbx = sipp(tmp_path, ["-sf", str(Path(__file__).parent / "sipp" / "pbx_extension_407.xml")], None,
               "-m", "1", "-trace_msg")  # fmt: skip
    time.sleep(0.5)
    daemon = start_daemon(
        front_door()
        + f"""
[[trunks]]
name = "pbx"
allow = ["192.0.2.1"]
outbound_username = "trunkuser"
outbound_password = "trunksecret"

[[queues]]
name = "support"

[[agents]]
id = "2001"
login = "static"
contact = "sip:ext2001@127.0.0.1:{pbx.sip_port}"
trunk = "pbx"
queues = {{ support = 0 }}
"""
    )  # type: ignore[attr-defined]
    login(daemon, "2001")
    target = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")
    caller = sipp(tmp_path, ["-sn", "uac"], target, "-s", "support", "-m", "1", "-d", "2000")
    try:
        assert caller.wait(timeout=30) == 0
        assert pbx.wait(timeout=30) == 0, pbx.log_path.read_text()[-2000:]  # type: ignore[attr-defined]
    finally:
        stop(pbx)
    time.sleep(1.5)
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        (row,) = db.execute("SELECT agent_id, disposition FROM calls").fetchall()
    assert row == ("2001", "answered")
    # The credentials we answered the 407 with, checked with the RFC 2617 digest formula.
    import hashlib
    import re

    trace = next(tmp_path.glob("pbx_extension_407_*_messages.log")).read_text()
    header = re.search(r"Proxy-Authorization: Digest (.*)", trace)
    assert header is not None
    fields = dict(re.findall(r'(\w+)="?([^",]+)"?', header.group(1)))
    nonce = re.search(r'Proxy-Authenticate: Digest .*nonce="([^"]+)"', trace)
    assert nonce is not None
    assert fields["username"] == "trunkuser"
    assert fields["nonce"] == nonce.group(1)

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5("trunkuser:pbx.example:trunksecret")
    ha2 = md5(f"INVITE:{fields['uri']}")
    assert fields["response"] == md5(f"{ha1}:{fields['nonce']}:{ha2}")


def test_max_wait_overflows_to_another_queue(start_daemon: DaemonFactory, tmp_path: Path) -> None:
    uas = sipp(tmp_path, ["-sn", "uas"], None)
    time.sleep(0.5)
    daemon = start_daemon(
        front_door()
        + f"""
[[flows]]
name = "to-backup"
steps = [{{ type = "enqueue", queue = "backup" }}]

[[queues]]
name = "support"
max_wait_s = 1.0
overflow = "to-backup"

[[queues]]
name = "backup"

[[agents]]
id = "b1"
login = "static"
contact = "sip:b1@127.0.0.1:{uas.sip_port}"
queues = {{ backup = 0 }}
"""
    )  # type: ignore[attr-defined]
    login(daemon, "b1")
    target = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")
    caller = sipp(tmp_path, ["-sn", "uac"], target, "-s", "support", "-m", "1", "-d", "4000")
    try:
        assert caller.wait(timeout=30) == 0
    finally:
        stop(uas)
    time.sleep(1.5)
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        (row,) = db.execute("SELECT queue, agent_id, disposition FROM calls").fetchall()
        events = db.execute("SELECT queue, event FROM queue_events ORDER BY id").fetchall()
    assert row == ("backup", "b1", "answered")
    assert events == [
        ("support", "enter"),
        ("support", "overflow"),
        ("backup", "enter"),
        ("backup", "offer"),
        ("backup", "answer"),
        ("backup", "complete"),
    ]


def empty_queue_config(uas_port: int, rule: str) -> str:
    """`support` (member s1, never reachable: its contact is a closed port) overflows to `backup`,
    whose agent b1 is a SIPp uas at ``uas_port``; ``rule`` is join_empty/leave_empty."""
    return (
        front_door()
        + f"""
[[flows]]
name = "to-backup"
steps = [{{ type = "enqueue", queue = "backup" }}]

[[queues]]
name = "support"
{rule}
overflow = "to-backup"

[[queues]]
name = "backup"

[[agents]]
id = "s1"
login = "static"
contact = "sip:s1@127.0.0.1:9"
queues = {{ support = 0 }}

[[agents]]
id = "b1"
login = "static"
contact = "sip:b1@127.0.0.1:{uas_port}"
queues = {{ backup = 0 }}
"""
    )


def queue_events(daemon: DaemonProcess) -> list[tuple[str, str, str]]:
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        rows = db.execute("SELECT queue, event, data FROM queue_events ORDER BY id").fetchall()
    return [(q, e, (json.loads(d or "null") or {}).get("reason") or "") for q, e, d in rows]


def waiting(daemon: DaemonProcess, queue: str) -> int:
    request = urllib.request.Request(f"{daemon.base_url}/api/v1/queues")
    request.add_header("Authorization", f"Bearer {ADMIN}")
    with urllib.request.urlopen(request, timeout=5) as resp:
        queues = json.loads(resp.read())
    return int(next(q for q in queues if q["name"] == queue)["waiting"])


def test_join_empty_false_sends_the_caller_to_overflow(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    uas = sipp(tmp_path, ["-sn", "uas"], None)
    time.sleep(0.5)
    daemon = start_daemon(empty_queue_config(uas.sip_port, "join_empty = false"))  # type: ignore[attr-defined]
    login(daemon, "b1")  # s1 stays logged out: support is empty
    target = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")
    caller = sipp(tmp_path, ["-sn", "uac"], target, "-s", "support", "-m", "1", "-d", "1000")
    try:
        assert caller.wait(timeout=30) == 0
    finally:
        stop(uas)
    time.sleep(1.5)
    # Never entered support (Asterisk logs JOINEMPTY without ENTERQUEUE), answered in backup.
    assert queue_events(daemon) == [
        ("support", "overflow", "join_empty"),
        ("backup", "enter", ""),
        ("backup", "offer", ""),
        ("backup", "answer", ""),
        ("backup", "complete", ""),
    ]
    exported = subprocess.run(
        [sys.executable, "-m", "engine.cli", "export", "queue-log", "--config", str(daemon.config_path)],
        cwd=daemon.workdir, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert "|support|NONE|JOINEMPTY|" in exported.stdout


def test_leave_empty_moves_waiting_callers_when_the_last_agent_logs_out(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    uas = sipp(tmp_path, ["-sn", "uas"], None)
    time.sleep(0.5)
    daemon = start_daemon(empty_queue_config(uas.sip_port, "leave_empty = true"))  # type: ignore[attr-defined]
    login(daemon, "b1")
    login(daemon, "s1")
    assert set_state(daemon, "s1", "not_ready") == "not_ready"  # logged in, takes no calls
    target = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")
    caller = sipp(tmp_path, ["-sn", "uac"], target, "-s", "support", "-m", "1", "-d", "1000")
    try:
        deadline = time.monotonic() + 10
        while waiting(daemon, "support") != 1:
            assert time.monotonic() < deadline, "the caller never queued in support"
            time.sleep(0.1)
        time.sleep(0.5)
        assert caller.poll() is None  # still waiting: the queue is not empty
        assert waiting(daemon, "support") == 1
        assert set_state(daemon, "s1", "logged_out") == "logged_out"
        assert caller.wait(timeout=30) == 0
    finally:
        stop(uas)
    time.sleep(1.5)
    assert queue_events(daemon) == [
        ("support", "enter", ""),
        ("support", "overflow", "empty"),
        ("backup", "enter", ""),
        ("backup", "offer", ""),
        ("backup", "answer", ""),
        ("backup", "complete", ""),
    ]


def test_sipp_uac_pcap_dtmf_is_recognised_once(start_daemon: DaemonFactory, tmp_path: Path) -> None:
    # SIPp's built-in uac_pcap: 8 s of G.711 A-law speech, then an RFC 2833 "1", then BYE.
    (tmp_path / "pcap").symlink_to("/usr/share/sip-tester")
    collect = '{ type = "collect", var = "account", max_digits = 1, timeout_s = 12.0 }'
    steps = f'{{ type = "answer" }}, {collect}, {{ type = "enqueue", queue = "support" }}'
    daemon = start_daemon(front_door(steps) + '[[queues]]\nname = "support"\n')
    target = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")
    caller = sipp(tmp_path, ["-sn", "uac_pcap"], target, "-s", "support", "-m", "1")
    assert caller.wait(timeout=40) == 0, caller.log_path.read_text()[-2000:]  # type: ignore[attr-defined]
    time.sleep(1.5)
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        (flow_data,) = db.execute("SELECT flow_data FROM calls").fetchone()
    assert json.loads(flow_data)["account"] == "1"
    _, exposition, _ = daemon.get("/metrics")
    assert 'acd_dtmf_digits_total{method="rfc4733"} 1.0' in exposition.decode()
