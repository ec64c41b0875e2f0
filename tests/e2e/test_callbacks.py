"""Callbacks that keep the caller's place (``queues[].callback``) against the real daemon and peers.

One daemon for the module: queue ``support`` announces every 0.5 s (nothing but the callback
offer, the short shipped ``digit-1``; the confirmation ``digit-2``) and has one static agent,
logged out until the test logs it in. A SIPp caller (5550101) presses 1 by RFC 4733 (SIPp's
``dtmf_2833_1.pcap``) after the first offer and must be hung up by the daemon; a second SIPp
caller (5550102) arrives later, presses nothing and waits. SIPp's exit status says each peer saw
exactly what its scenario expects; the second caller's position, announced after the first
caller's key, counts the callback ahead of it. The SQLite CDR row of the first call must end
``callback_requested`` naming the task; the task (``/api/v1/tasks``) must be a ``callback`` in
the caller's place (its effective enqueue time the call's) and link back to the call. When the
agent logs in it must be offered the callback, not the later caller, whose offer (the agent's
SIPp UAS rung) comes only once the callback is done.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.configs import front_door
from tests.e2e.conftest import DaemonProcess, running_daemon, wait_until
from tests.e2e.peers import free_port_block, sipp, stop
from tests.e2e.test_call_scenarios import SCENARIOS, sip_target, sipp_output

pytestmark = pytest.mark.e2e

ADMIN = "admin-token-0123456789"
AGENT_TOKEN = "agent-cb1-token-0123456"
Proc = subprocess.Popen[bytes]

QUEUE = """
[runtime]
drain_timeout_s = 2.0

[[queues]]
name = "support"
wrap_up_s = 0.0
record = "never"
ring_timeout_s = 5.0
offer_timeout_s = 30.0
announce_every_s = 0.5
announce_wait = false
callback = {{ prompt = "digit-1", confirm_prompt = "digit-2" }}

[[agents]]
id = "cb1"
login = "static"
contact = "sip:cb1@127.0.0.1:{agent_port}"
queues = {{ support = 0 }}
api_token = "{agent_token}"
"""


class Running:
    def __init__(self, daemon: DaemonProcess, agent_port: int) -> None:
        self.daemon = daemon
        self.agent_port = agent_port


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """``acd run`` on the module's config, stopped by PID at the end (and checked to exit 0)."""
    workdir = tmp_path_factory.mktemp("callbacks")
    agent_port = free_port_block(4)
    config = front_door(ADMIN, rtp_base=free_port_block(100)) + QUEUE.format(
        agent_port=agent_port, agent_token=AGENT_TOKEN
    )
    with running_daemon(workdir, config) as daemon:
        yield Running(daemon, agent_port)


def call(
    daemon: DaemonProcess, method: str, path: str, token: str = ADMIN, body: object = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(daemon.base_url + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def rows(daemon: DaemonProcess, sql: str, *args: object) -> list[sqlite3.Row]:
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        db.row_factory = sqlite3.Row
        return db.execute(sql, args).fetchall()


def finished_call(daemon: DaemonProcess, caller: str) -> sqlite3.Row:
    query = "SELECT * FROM calls WHERE caller = ? AND ended_at IS NOT NULL"
    wait_until(lambda: bool(rows(daemon, query, caller)), 10, f"the CDR row of {caller}")
    return rows(daemon, query, caller)[0]


def metric(daemon: DaemonProcess, name: str, **labels: str) -> float:
    _, body, _ = daemon.get("/metrics")
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def announcements(
    daemon: DaemonProcess, call_id: str, after_end_of: str | None = None
) -> list[list[str]]:
    """What the periodic announcements to ``call_id`` said (from the daemon's log), all or
    those after the call ``after_end_of`` ended."""
    lines = daemon.log_lines()
    if after_end_of is not None:
        ends = [
            i
            for i, line in enumerate(lines)
            if line.get("event") == "call_ended" and line.get("call_id") == after_end_of
        ]
        lines = lines[ends[0] + 1 :] if ends else []
    return [
        list(line["prompts"])  # type: ignore[call-overload]
        for line in lines
        if line.get("event") == "queue_announcement" and line.get("call_id") == call_id
    ]


def caller(running: Running, workdir: Path, scenario: str) -> Proc:
    return sipp(workdir, ["-sf", str(SCENARIOS / f"{scenario}.xml")], sip_target(running.daemon),
                "-s", "support", "-m", "1", "-trace_msg")  # fmt: skip


def agent_phone(workdir: Path, port: int) -> Proc:
    """agent_hangs_up.xml (answers, talks 1 s, hangs up) for one call on the agent's port."""
    args = ["/usr/bin/sipp", "-sf", str(SCENARIOS / "agent_hangs_up.xml"), "-i", "127.0.0.1",
            "-p", str(port), "-mp", str(port + 2), "-cp", str(port + 1), "-m", "1",
            "-nostdin", "-trace_err", "-trace_msg",
            "-error_file", str(workdir / f"agent-{port}-errors.log")]  # fmt: skip
    log_path = workdir / f"agent-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc


def agent_was_rung(workdir: Path, proc: Proc) -> bool:
    path = workdir / f"agent_hangs_up_{proc.pid}_messages.log"
    return path.exists() and "INVITE sip:" in path.read_text(errors="replace")


def test_the_key_leaves_a_callback_task_that_keeps_the_callers_place(
    running: Running, tmp_path: Path
) -> None:
    daemon = running.daemon
    (tmp_path / "pcap").symlink_to("/usr/share/sip-tester")  # SIPp's RFC 2833 digit captures
    status, agent = call(daemon, "GET", "/api/v1/agents/cb1")
    assert (status, agent["state"]) == (200, "logged_out"), agent
    procs: list[Proc] = []
    try:
        first = caller(running, tmp_path, "caller_callback_key")
        procs.append(first)
        wait_until(
            lambda: len(call(daemon, "GET", "/api/v1/calls")[1]) == 1, 10, "the first caller queued"
        )
        second = caller(running, tmp_path, "caller_awaits_bye")
        procs.append(second)
        assert first.wait(timeout=20) == 0, sipp_output(first)  # our BYE after the confirmation

        row = finished_call(daemon, "5550101")
        assert row["disposition"] == "callback_requested"
        assert (row["hangup_side"], row["hangup_reason"]) == ("system", "callback requested")
        task_id = json.loads(row["flow_data"])["callback_task"]
        status, task = call(daemon, "GET", f"/api/v1/tasks/{task_id}")
        assert status == 200, task
        assert (task["channel"], task["queue"], task["state"]) == ("callback", "support", "waiting")
        assert task["data"]["call_id"] == row["id"]
        assert task["data"]["number"] == task["customer"]["number"] == "5550101"
        assert task["external_id"] == f"callback:{row['id']}"
        # Its place is the call's: the effective enqueue time is when the call joined the queue,
        # over a second before the task was made (the key came 1.5 s after the answer).
        assert task["enqueued_at"] == pytest.approx(row["enqueued_at"], abs=0.01)
        assert task["arrived_at"] - task["enqueued_at"] > 1.0
        events = rows(daemon, "SELECT event, data FROM queue_events WHERE call_id = ? ORDER BY id",
                      row["id"])  # fmt: skip
        assert [e["event"] for e in events] == ["enter", "callback"]
        data = json.loads(events[1]["data"])
        assert (data["target"], data["reason"], data["position"]) == (task_id, "1", 1)
        assert metric(daemon, "acd_callbacks_total", queue="support", outcome="requested") == 1
        said = announcements(daemon, row["id"])
        assert said, "no announcement to the first caller"  # its position, then the offer
        assert said[0] == ["position", "digit-1", "in-queue", "digit-1"]

        # The later caller, once the first call has ended, still hears that it is second: the
        # callback holds the first place.
        later_id = call(daemon, "GET", "/api/v1/calls")[1][0]["id"]
        wait_until(
            lambda: bool(announcements(daemon, later_id, after_end_of=row["id"])), 10,
            "an announcement to the second caller after the first call ended",
        )  # fmt: skip
        said = announcements(daemon, later_id, after_end_of=row["id"])
        assert said[0] == ["position", "digit-2", "in-queue", "digit-1"], said

        # The later caller is still waiting, behind the callback: the agent is offered the
        # callback (an event-stream offer) and its phone is not rung for the caller meanwhile.
        phone = agent_phone(tmp_path, running.agent_port)
        procs.append(phone)
        status, _ = call(daemon, "PUT", "/api/v1/agents/cb1/state", body={"state": "logged_in"})
        assert status == 200

        def offered() -> bool:
            return "cb1" in call(daemon, "GET", f"/api/v1/tasks/{task_id}")[1]["offered_to"]

        wait_until(offered, 10, "the callback offered to cb1")
        time.sleep(0.5)  # a wrong order would ring the agent's phone within milliseconds
        assert not agent_was_rung(tmp_path, phone)
        assert second.poll() is None, sipp_output(second)
        status, body = call(daemon, "POST", f"/api/v1/tasks/{task_id}/accept", AGENT_TOKEN)
        assert status == 200, body
        completing_at = time.time()  # the voice capacity is free again only after this
        status, body = call(daemon, "POST", f"/api/v1/tasks/{task_id}/complete", AGENT_TOKEN,
                            {"disposition": "called_back"})  # fmt: skip
        assert status == 200, body
        assert phone.wait(timeout=20) == 0, sipp_output(phone)  # rung for the second caller now
        assert second.wait(timeout=20) == 0, sipp_output(second)
        later = finished_call(daemon, "5550102")
        assert (later["disposition"], later["agent_id"]) == ("answered", "cb1")
        assert later["enqueued_at"] > row["enqueued_at"]
        assert later["first_offer_at"] > completing_at  # offered only after the callback
    finally:
        for proc in procs:
            stop(proc)
        with contextlib.suppress(Exception):
            call(daemon, "PUT", "/api/v1/agents/cb1/state", body={"state": "logged_out"})
