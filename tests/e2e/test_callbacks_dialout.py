"""Agent-first callbacks (``queues[].callback.mode = "agent_first"``) against the real daemon.

One daemon for the module: queue ``support`` offers the callback with every announcement (0.5 s)
and dials through trunk ``carrier``, whose outbound proxy is a SIPp UAS playing the customer;
one static agent (a SIPp UAS that answers and waits for our BYE), logged out until the caller
has asked for the callback. A SIPp caller (5550101) presses 1 by RFC 4733 and is hung up. Then
the agent logs in: its phone rings for the callback, it answers, hears the whisper, and the
daemon INVITEs 5550101 at the proxy, which answers 486 Busy the first time: the agent is hung
up (no wrap-up), and after ``retry_s`` the task is offered again in its old place; the agent's
phone rings again, and this time the customer answers, talks 2 s (a 440 Hz tone, the agent
880 Hz) and hangs up; the recording's left channel must hold 440 Hz, its right 880 Hz. SIPp's exit
status says each peer saw exactly what its scenario expects. The CDR must hold the original call
(``callback_requested``) and one row per attempt linked to it; the task must be completed
``connected`` after two attempts, and ``acd_callbacks_total`` say requested, retry, connected.
Queue ``sales`` (a customer who never answers, two attempts) ends its callback ``failed`` with
the agent never in wrap-up; queue ``billing`` (two agents, the first one's phone busy) hands the
offer to the next agent as for a call; queue ``vip`` has a baresip phone as its agent, which
must hear the whisper (a 660 Hz prompt from ``[media] prompts_dir``) before the customer. Each queue has agents and a trunk of its own, so the
tests do not depend on each other's order.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import time
import wave
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.configs import front_door
from tests.e2e.conftest import DaemonProcess, running_daemon, wait_until
from tests.e2e.peers import Baresip, dominant_hz, free_port_block, sipp, stop, write_tone
from tests.e2e.test_call_scenarios import SCENARIOS, sip_target, sipp_output
from tests.e2e.test_callbacks import call, metric, rows

pytestmark = pytest.mark.e2e

ADMIN = "admin-token-0123456789"
Proc = subprocess.Popen[bytes]
CUSTOMER_HZ, AGENT_HZ, WHISPER_HZ = 440, 880, 660

QUEUE = """
[runtime]
drain_timeout_s = 2.0

[[trunks]]
name = "carrier"
allow = ["192.0.2.1"]
outbound_proxy = "127.0.0.1:{customer_port}"

[[queues]]
name = "support"
wrap_up_s = 5.0
record = "always"
ring_timeout_s = 5.0
announce_every_s = 0.5
announce_wait = false
callback = {{ prompt = "digit-1", confirm_prompt = "digit-2", mode = "agent_first", trunk = "carrier", whisper_prompt = "digit-3", attempts = 3, retry_s = 1.5, ring_timeout_s = 5.0 }}

[[agents]]
id = "cb2"
login = "static"
contact = "sip:cb2@127.0.0.1:{agent_port}"
queues = {{ support = 0 }}

[[trunks]]
name = "carrier2"
allow = ["192.0.2.2"]
outbound_proxy = "127.0.0.1:{customer2_port}"

[[queues]]
name = "sales"
wrap_up_s = 5.0
record = "never"
announce_every_s = 0.5
announce_wait = false
callback = {{ prompt = "digit-1", confirm_prompt = "", mode = "agent_first", trunk = "carrier2", whisper_prompt = "", attempts = 2, retry_s = 0.2, ring_timeout_s = 1.0 }}

[[agents]]
id = "cb3"
login = "static"
contact = "sip:cb3@127.0.0.1:{agent2_port}"
queues = {{ sales = 0 }}

[[trunks]]
name = "carrier3"
allow = ["192.0.2.3"]
outbound_proxy = "127.0.0.1:{customer3_port}"

[[queues]]
name = "billing"
wrap_up_s = 0.0
record = "never"
ring_timeout_s = 5.0
announce_every_s = 0.5
announce_wait = false
callback = {{ prompt = "digit-1", confirm_prompt = "", mode = "agent_first", trunk = "carrier3", whisper_prompt = "digit-3", attempts = 1 }}

[[agents]]
id = "cb5"
login = "static"
contact = "sip:cb5@127.0.0.1:{agent5_port}"
queues = {{ billing = 0 }}

[[agents]]
id = "cb6"
login = "static"
contact = "sip:cb6@127.0.0.1:{agent6_port}"
queues = {{ billing = 0 }}

[[trunks]]
name = "carrier4"
allow = ["192.0.2.4"]
outbound_proxy = "127.0.0.1:{customer4_port}"

[[queues]]
name = "vip"
wrap_up_s = 0.0
record = "never"
ring_timeout_s = 5.0
announce_every_s = 0.5
announce_wait = false
callback = {{ prompt = "digit-1", confirm_prompt = "", mode = "agent_first", trunk = "carrier4", whisper_prompt = "whisper-660" }}

[[agents]]
id = "cb7"
password = "cb7-secret-0123"
queues = {{ vip = 0 }}

[[trunks]]
name = "carrier5"
allow = ["192.0.2.5"]
outbound_proxy = "127.0.0.1:{customer5_port}"

[[queues]]
name = "sched"
wrap_up_s = 0.0
record = "never"
ring_timeout_s = 5.0
announce_every_s = 0.5
announce_wait = false
callback = {{ mode = "agent_first", trunk = "carrier5", whisper_prompt = "", attempts = 1 }}

[[queues]]
name = "plain"

[[trunks]]
name = "carrier6"
allow = ["192.0.2.6"]
outbound_proxy = "127.0.0.1:{customer6_port}"

[[queues]]
name = "cfirst"
wrap_up_s = 5.0
record = "always"
ring_timeout_s = 3.0
announce_every_s = 0.5
announce_wait = false
callback = {{ mode = "customer_first", trunk = "carrier6", whisper_prompt = "digit-3", attempts = 2, retry_s = 1.0, ring_timeout_s = 3.0 }}

[[trunks]]
name = "carrier7"
allow = ["192.0.2.7"]
outbound_proxy = "127.0.0.1:{customer7_port}"

[[queues]]
name = "cgone"
wrap_up_s = 5.0
record = "never"
ring_timeout_s = 8.0
announce_every_s = 0.5
announce_wait = false
callback = {{ mode = "customer_first", trunk = "carrier7", whisper_prompt = "", attempts = 1 }}

[[agents]]
id = "cb10"
login = "static"
contact = "sip:cb10@127.0.0.1:{agent10_port}"
queues = {{ cgone = 0 }}

[[agents]]
id = "cb9"
login = "static"
contact = "sip:cb9@127.0.0.1:{agent9_port}"
queues = {{ cfirst = 0 }}

[[agents]]
id = "cb8"
login = "static"
contact = "sip:cb8@127.0.0.1:{agent8_port}"
queues = {{ sched = 0 }}
"""


# SIP ports of the peers: each queue's agents and the customer behind its trunk's proxy.
PORTS = ("agent_port", "customer_port", "agent2_port", "customer2_port", "customer3_port",
         "agent5_port", "agent6_port", "customer4_port", "agent8_port",
         "customer5_port", "agent9_port", "customer6_port", "agent10_port",
         "customer7_port")  # fmt: skip


class Running:
    def __init__(self, daemon: DaemonProcess, ports: dict[str, int]) -> None:
        self.daemon = daemon
        self.agent_port, self.customer_port = ports["agent_port"], ports["customer_port"]
        self.agent2_port, self.customer2_port = ports["agent2_port"], ports["customer2_port"]
        self.ports = ports


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """``acd run`` on the module's config, stopped by PID at the end (and checked to exit 0)."""
    workdir = tmp_path_factory.mktemp("callbacks_dialout")
    ports = {name: free_port_block(4) for name in PORTS}
    prompts = workdir / "prompts"  # the vip queue's whisper: 0.6 s of 660 Hz
    prompts.mkdir()
    write_tone(prompts / "whisper-660.wav", WHISPER_HZ, 0.6)
    rtp_base = free_port_block(100)
    media = (
        f"[media]\nrtp_port_min = {rtp_base}\nrtp_port_max = {rtp_base + 98}\n"
        f'prompts_dir = "{prompts}"\n'
    )
    config = (
        front_door(
            ADMIN, numbers=("support", "sales", "billing", "vip", "sched", "plain", "cfirst")
        )
        + media
        + QUEUE.format(**ports)
    )
    with running_daemon(workdir, config) as daemon:
        yield Running(daemon, ports)


def uas(workdir: Path, scenario: str, port: int, calls: int) -> Proc:
    """A SIPp UAS running ``scenario`` for ``calls`` calls on ``port``, its messages traced."""
    args = ["/usr/bin/sipp", "-sf", str(SCENARIOS / f"{scenario}.xml"), "-i", "127.0.0.1",
            "-p", str(port), "-mp", str(port + 2), "-cp", str(port + 1), "-m", str(calls),
            "-nostdin", "-trace_err", "-trace_msg",
            "-error_file", str(workdir / f"{scenario}-{port}-errors.log")]  # fmt: skip
    log_path = workdir / f"{scenario}-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc


def invites(workdir: Path, scenario: str, proc: Proc) -> list[str]:
    """The Request-URIs of the INVITEs ``proc`` received."""
    path = workdir / f"{scenario}_{proc.pid}_messages.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return [line.split()[1] for line in text.splitlines() if line.startswith("INVITE sip:")]


def tone_wavs(workdir: Path) -> None:
    """customer.wav and agent.wav: two seconds of one tone each, u-law, what SIPp streams."""
    for name, hz in (("customer", CUSTOMER_HZ), ("agent", AGENT_HZ)):
        subprocess.run(
            ["sox", "-n", "-r", "8000", "-c", "1", "-e", "u-law", "-b", "8", f"{name}.wav",
             "synth", "2", "sine", str(hz), "vol", "0.5"],
            check=True, cwd=workdir, timeout=30,
        )  # fmt: skip


def original_call(daemon: DaemonProcess, queue: str) -> sqlite3.Row:
    """The finished CDR row of the call that asked ``queue`` for a callback."""
    query = "SELECT * FROM calls WHERE queue = ? AND flow != 'callback' AND ended_at IS NOT NULL"
    wait_until(lambda: bool(rows(daemon, query, queue)), 10, f"the {queue} caller's CDR row")
    (row,) = rows(daemon, query, queue)
    return row


def test_agent_first_callback_retries_a_busy_customer_then_bridges(
    running: Running, tmp_path: Path
) -> None:
    daemon = running.daemon
    (tmp_path / "pcap").symlink_to("/usr/share/sip-tester")  # SIPp's RFC 2833 digit captures
    procs: list[Proc] = []
    try:
        first = sipp(tmp_path, ["-sf", str(SCENARIOS / "caller_callback_key.xml")],
                     sip_target(daemon), "-s", "support", "-m", "1")  # fmt: skip
        procs.append(first)
        assert first.wait(timeout=20) == 0, sipp_output(first)  # our BYE after the confirmation
        original = original_call(daemon, "support")
        assert original["disposition"] == "callback_requested"
        task_id = json.loads(original["flow_data"])["callback_task"]

        tone_wavs(tmp_path)
        agent = uas(tmp_path, "agent_answer_tone", running.agent_port, 2)  # rung twice, talks
        busy = uas(tmp_path, "agent_busy", running.customer_port, 1)  # the customer, busy
        procs += [agent, busy]
        status, _ = call(daemon, "PUT", "/api/v1/agents/cb2/state", body={"state": "logged_in"})
        assert status == 200
        assert busy.wait(timeout=20) == 0, sipp_output(busy)
        assert invites(tmp_path, "agent_busy", busy) == [
            f"sip:5550101@127.0.0.1:{running.customer_port}"
        ]
        # The agent is let go without wrap-up and the task waits retry_s, scheduled.
        wait_until(
            lambda: call(daemon, "GET", f"/api/v1/tasks/{task_id}")[1]["state"] == "scheduled",
            10, "the callback scheduled for a retry",
        )  # fmt: skip
        status, cb2 = call(daemon, "GET", "/api/v1/agents/cb2")
        assert cb2["state"] == "available", cb2
        # This time the customer answers, talks for 2 s and hangs up.
        answering = uas(tmp_path, "customer_answer_tone_hangs_up", running.customer_port, 1)
        procs.append(answering)
        assert answering.wait(timeout=20) == 0, sipp_output(answering)
        assert agent.wait(timeout=20) == 0, sipp_output(agent)  # our BYE after each attempt

        query = (
            "SELECT * FROM calls WHERE flow = 'callback' AND queue = 'support'"
            " AND ended_at IS NOT NULL ORDER BY arrived_at"
        )
        wait_until(lambda: len(rows(daemon, query)) == 2, 10, "the two attempts' CDR rows")
        tried, connected = rows(daemon, query)
        assert tried["disposition"] == "callback_busy"
        assert (connected["disposition"], connected["agent_id"]) == ("answered", "cb2")
        assert (connected["hangup_side"], connected["hangup_reason"]) == ("callee", "callback bye")
        assert connected["talk_s"] > 1.5
        for n, row in enumerate((tried, connected), start=1):
            link = json.loads(row["flow_data"])
            assert link["callback_of"] == original["id"]
            assert (link["callback_task"], link["attempt"]) == (task_id, n)
            assert (row["caller"], row["trunk"], row["queue"]) == ("5550101", "carrier", "support")
        # Recorded per the queue's policy: the customer on the left, the agent on the right.
        finished = "SELECT * FROM recordings WHERE id = ? AND duration_s IS NOT NULL"
        wait_until(lambda: bool(rows(daemon, finished, connected["recording_id"])), 10,
                   "the callback's recording finished")  # fmt: skip
        (rec,) = rows(daemon, finished, connected["recording_id"])
        with wave.open(rec["path"]) as w:
            stereo = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
        assert len(stereo) > 8000  # 2 s of talk, less the first packets
        assert abs(dominant_hz(stereo[-8000:-2000, 0]) - CUSTOMER_HZ) < 10
        assert abs(dominant_hz(stereo[-8000:-2000, 1]) - AGENT_HZ) < 10

        wait_until(
            lambda: call(daemon, "GET", f"/api/v1/tasks/{task_id}")[1]["state"] == "completed",
            10, "the callback task completed",
        )  # fmt: skip
        _, task = call(daemon, "GET", f"/api/v1/tasks/{task_id}")
        assert task["disposition"] == "connected"
        assert task["data"]["attempts"] == 2
        assert task["data"]["calls"] == [tried["id"], connected["id"]]
        assert task["enqueued_at"] == pytest.approx(original["enqueued_at"], abs=0.01)
        events = [e["event"] for e in task["history"]]
        assert events.count("retry") == 1, events
        assert events[-1] == "completed", events
        # Wrap-up after the connected call, none after the busy attempt.
        _, cb2 = call(daemon, "GET", "/api/v1/agents/cb2")
        assert cb2["state"] == "wrap_up", cb2
        assert metric(daemon, "acd_callbacks_total", queue="support", outcome="requested") == 1
        assert metric(daemon, "acd_callbacks_total", queue="support", outcome="retry") == 1
        assert metric(daemon, "acd_callbacks_total", queue="support", outcome="connected") == 1
        assert metric(daemon, "acd_callbacks_total", queue="support", outcome="failed") == 0
    finally:
        for proc in procs:
            stop(proc)
        with contextlib.suppress(Exception):
            call(daemon, "PUT", "/api/v1/agents/cb2/state", body={"state": "logged_out"})


def test_agent_first_callback_fails_after_its_attempts_without_wrap_up(
    running: Running, tmp_path: Path
) -> None:
    """Queue ``sales``: two attempts, the customer's phone rings out (1 s) both times; the agent
    is CANCELled from nothing, hung up after each attempt and never in wrap-up; the task ends
    ``failed``."""
    daemon = running.daemon
    (tmp_path / "pcap").symlink_to("/usr/share/sip-tester")
    procs: list[Proc] = []
    try:
        first = sipp(tmp_path, ["-sf", str(SCENARIOS / "caller_callback_key.xml")],
                     sip_target(daemon), "-s", "sales", "-m", "1")  # fmt: skip
        procs.append(first)
        assert first.wait(timeout=20) == 0, sipp_output(first)
        query = (
            "SELECT * FROM calls WHERE queue = 'sales' AND ended_at IS NOT NULL ORDER BY arrived_at"
        )
        wait_until(lambda: bool(rows(daemon, query)), 10, "the sales caller's CDR row")
        original = rows(daemon, query)[0]
        assert original["disposition"] == "callback_requested"
        task_id = json.loads(original["flow_data"])["callback_task"]

        agent = uas(tmp_path, "agent_answer", running.agent2_port, 2)
        customer = uas(tmp_path, "agent_no_answer", running.customer2_port, 2)  # rings out twice
        procs += [agent, customer]
        status, _ = call(daemon, "PUT", "/api/v1/agents/cb3/state", body={"state": "logged_in"})
        assert status == 200
        wait_until(  # the attempt is a live call while the agent and the customer ring
            lambda: [c["phase"] for c in call(daemon, "GET", "/api/v1/calls")[1]] == ["callback"],
            10, "the callback's call live in phase callback",
        )  # fmt: skip
        assert customer.wait(timeout=20) == 0, sipp_output(customer)  # CANCELled both times
        assert agent.wait(timeout=20) == 0, sipp_output(agent)
        wait_until(
            lambda: call(daemon, "GET", f"/api/v1/tasks/{task_id}")[1]["state"] == "completed",
            10, "the callback task ended",
        )  # fmt: skip
        _, task = call(daemon, "GET", f"/api/v1/tasks/{task_id}")
        assert task["disposition"] == "failed"
        assert (task["data"]["attempts"], task["data"]["last_outcome"]) == (2, "no_answer")
        events = [e["event"] for e in task["history"]]
        assert events.count("retry") == 1, events
        assert events[-1] == "failed", events
        wait_until(
            lambda: len(rows(daemon, query)) == 3, 10, "the two attempts' rows (written in batches)"
        )
        attempts = [r for r in rows(daemon, query) if r["flow"] == "callback"]
        assert [r["disposition"] for r in attempts] == ["callback_no_answer"] * 2
        assert [json.loads(r["flow_data"])["attempt"] for r in attempts] == [1, 2]
        assert task["data"]["calls"] == [r["id"] for r in attempts]
        _, cb3 = call(daemon, "GET", "/api/v1/agents/cb3")
        assert cb3["state"] == "available", cb3  # no wrap-up burnt on a no-answer
        assert metric(daemon, "acd_callbacks_total", queue="sales", outcome="retry") == 1
        assert metric(daemon, "acd_callbacks_total", queue="sales", outcome="failed") == 1
        assert metric(daemon, "acd_callbacks_total", queue="sales", outcome="connected") == 0
    finally:
        for proc in procs:
            stop(proc)
        with contextlib.suppress(Exception):
            call(daemon, "PUT", "/api/v1/agents/cb3/state", body={"state": "logged_out"})


def test_a_busy_agent_phone_passes_the_callback_to_the_next_agent(
    running: Running, tmp_path: Path
) -> None:
    """Queue ``billing``: cb5's phone answers the callback's INVITE 486 (the offer goes to the
    next agent, as for a call); cb6 answers, the customer is bridged, and cb6 hangs up after 1 s."""
    daemon = running.daemon
    (tmp_path / "pcap").symlink_to("/usr/share/sip-tester")
    procs: list[Proc] = []
    try:
        first = sipp(tmp_path, ["-sf", str(SCENARIOS / "caller_callback_key.xml")],
                     sip_target(daemon), "-s", "billing", "-m", "1")  # fmt: skip
        procs.append(first)
        assert first.wait(timeout=20) == 0, sipp_output(first)
        original = original_call(daemon, "billing")
        query = "SELECT * FROM calls WHERE queue = 'billing' AND ended_at IS NOT NULL ORDER BY arrived_at"
        task_id = json.loads(original["flow_data"])["callback_task"]

        busy = uas(tmp_path, "agent_busy", running.ports["agent5_port"], 1)
        procs.append(busy)
        status, _ = call(daemon, "PUT", "/api/v1/agents/cb5/state", body={"state": "logged_in"})
        assert status == 200
        assert busy.wait(timeout=20) == 0, sipp_output(busy)  # rung, answered 486
        customer = uas(tmp_path, "agent_answer", running.ports["customer3_port"], 1)  # awaits BYE
        agent = uas(tmp_path, "agent_hangs_up", running.ports["agent6_port"], 1)  # 1 s, BYE
        procs += [customer, agent]
        status, _ = call(daemon, "PUT", "/api/v1/agents/cb6/state", body={"state": "logged_in"})
        assert status == 200
        assert agent.wait(timeout=20) == 0, sipp_output(agent)
        assert customer.wait(timeout=20) == 0, sipp_output(customer)  # our BYE after the agent's
        wait_until(
            lambda: call(daemon, "GET", f"/api/v1/tasks/{task_id}")[1]["state"] == "completed",
            10, "the callback task completed",
        )  # fmt: skip
        _, task = call(daemon, "GET", f"/api/v1/tasks/{task_id}")
        assert (task["disposition"], task["agent_id"]) == ("connected", "cb6")
        assert task["data"]["attempts"] == 1  # cb5's busy phone spent no attempt
        rejected = [e for e in task["history"] if e["event"] == "rejected"]
        assert [e["agent_id"] for e in rejected] == ["cb5"]
        wait_until(lambda: len(rows(daemon, query)) == 3, 10, "the callback's CDR rows")
        by_disposition = {r["disposition"]: r for r in rows(daemon, query)[1:]}
        assert set(by_disposition) == {"callback_agent_busy", "answered"}
        connected = by_disposition["answered"]
        assert (connected["agent_id"], connected["hangup_side"]) == ("cb6", "agent")
        assert json.loads(connected["flow_data"])["callback_of"] == original["id"]
        assert metric(daemon, "acd_callbacks_total", queue="billing", outcome="connected") == 1
    finally:
        for proc in procs:
            stop(proc)
        for agent_id in ("cb5", "cb6"):
            with contextlib.suppress(Exception):
                call(
                    daemon, "PUT", f"/api/v1/agents/{agent_id}/state", body={"state": "logged_out"}
                )


def test_a_baresip_agent_hears_the_whisper_then_the_customer(
    running: Running, tmp_path: Path
) -> None:
    """Queue ``vip``: a real SIP phone (baresip, registering, auto-answer) is the agent. What it
    hears is the whisper (660 Hz, the queue's whisper_prompt) first, then the customer's 440 Hz."""
    daemon = running.daemon
    (tmp_path / "pcap").symlink_to("/usr/share/sip-tester")
    tone_wavs(tmp_path)
    procs: list[Proc] = []
    agent: Baresip | None = None
    try:
        first = sipp(tmp_path, ["-sf", str(SCENARIOS / "caller_callback_key.xml")],
                     sip_target(daemon), "-s", "vip", "-m", "1")  # fmt: skip
        procs.append(first)
        assert first.wait(timeout=20) == 0, sipp_output(first)
        task_id = json.loads(original_call(daemon, "vip")["flow_data"])["callback_task"]
        customer = uas(
            tmp_path, "customer_answer_tone_hangs_up", running.ports["customer4_port"], 1
        )
        procs.append(customer)
        sip = sip_target(daemon)
        agent = Baresip(
            tmp_path / "agent",
            f"<sip:cb7@{sip}>;auth_pass=cb7-secret-0123;regint=60;answermode=auto;audio_codecs=PCMU",
            AGENT_HZ,
        )  # fmt: skip
        assert customer.wait(timeout=20) == 0, sipp_output(customer)  # answered, talked, BYE
        wait_until(
            lambda: call(daemon, "GET", f"/api/v1/tasks/{task_id}")[1]["state"] == "completed",
            10, "the callback task completed",
        )  # fmt: skip
        agent.wait_for("Call established")
        agent.stop()  # finishes the recording of what it heard
        heard = agent.heard()
        # The dominant tone of each loud 100 ms of what the agent heard, in order.
        tones = [
            round(dominant_hz(seg))
            for seg in np.array_split(heard, max(1, len(heard) // 800))
            if np.sqrt(np.mean(seg.astype(float) ** 2)) > 500
        ]
        whisper = [i for i, hz in enumerate(tones) if abs(hz - WHISPER_HZ) < 15]
        customer_tone = [i for i, hz in enumerate(tones) if abs(hz - CUSTOMER_HZ) < 15]
        assert len(whisper) >= 3, tones  # 0.6 s of whisper
        assert len(customer_tone) >= 10, tones  # 2 s of the customer
        assert max(whisper) < min(customer_tone), tones  # the whisper before the customer
    finally:
        for proc in procs:
            stop(proc)
        if agent is not None:
            agent.stop()


def test_a_scheduled_callback_through_the_api_waits_for_its_time(
    running: Running, tmp_path: Path
) -> None:
    """Queue ``sched``: ``POST /api/v1/callbacks`` with ``at`` 2 s ahead makes a task that is
    ``scheduled`` (the agent, logged in, is not rung) until then, and then dials as agent_first:
    cb8 answers and hangs up after 1 s, the customer (5550199) is bridged meanwhile. Bad
    requests are refused 422 naming the field, and nothing is made of them."""
    daemon = running.daemon
    procs: list[Proc] = []
    try:
        for body, field in (
            ({"queue": "nope", "number": "5550199"}, "queue"),
            ({"queue": "plain", "number": "5550199"}, "queue"),  # no callback config
            ({"queue": "sched", "number": "555 0199@x"}, "number"),
            ({"queue": "sched", "number": "5550199", "at": "2020-01-01T00:00:00Z"}, "at"),
            ({"queue": "sched", "number": "5550199", "at": "tomorrow"}, "at"),
        ):
            status, text = call(daemon, "POST", "/api/v1/callbacks", body=body)
            assert status == 422, (body, status, text)
            assert f"{field}:" in text or f"$.{field}`" in text, (body, text)
        _, live = call(daemon, "GET", "/api/v1/tasks?queue=sched")
        assert not live, live  # nothing was made of them

        customer = uas(tmp_path, "agent_answer", running.ports["customer5_port"], 1)  # our BYE
        agent = uas(tmp_path, "agent_hangs_up", running.ports["agent8_port"], 1)  # 1 s, BYE
        procs += [customer, agent]
        status, _ = call(daemon, "PUT", "/api/v1/agents/cb8/state", body={"state": "logged_in"})
        assert status == 200
        at = time.time() + 2.0
        at_iso = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
        status, made = call(
            daemon, "POST", "/api/v1/callbacks",
            body={"queue": "sched", "number": "5550199", "at": at_iso, "priority": 3,
                  "data": {"crm": "case-17"}},
        )  # fmt: skip
        assert status == 201, made
        task_id = made["id"]
        assert made["state"] == "scheduled"
        _, task = call(daemon, "GET", f"/api/v1/tasks/{task_id}")
        assert (task["state"], task["channel"], task["priority"]) == ("scheduled", "callback", 3)
        assert task["enqueued_at"] == pytest.approx(at, abs=0.01)  # its place counts from `at`

        assert agent.wait(timeout=20) == 0, sipp_output(agent)
        assert customer.wait(timeout=20) == 0, sipp_output(customer)
        wait_until(
            lambda: call(daemon, "GET", f"/api/v1/tasks/{task_id}")[1]["state"] == "completed",
            10, "the scheduled callback completed",
        )  # fmt: skip
        _, task = call(daemon, "GET", f"/api/v1/tasks/{task_id}")
        assert (task["disposition"], task["agent_id"]) == ("connected", "cb8")
        assert task["data"]["data"] == {"crm": "case-17"}
        offered = [e for e in task["history"] if e["event"] == "offered"]
        assert offered, task["history"]
        # Not before its time: created 2 s ahead of it, offered at it. The daemon's timer runs
        # on the loop's monotonic clock, the history's stamps are wall-clock: a CI run saw the
        # offer 1 ms before `at`, hence the 50 ms of slack (far below the 2 s it waited).
        assert all(e["at"] >= at - 0.05 for e in offered), task["history"]

        query = (
            "SELECT * FROM calls WHERE queue = 'sched' AND flow = 'callback'"
            " AND ended_at IS NOT NULL"
        )
        wait_until(lambda: bool(rows(daemon, query)), 10, "the callback's CDR row")
        (row,) = rows(daemon, query)
        assert (row["disposition"], row["agent_id"], row["caller"]) == (
            "answered", "cb8", "5550199",
        )  # fmt: skip
        assert row["arrived_at"] >= at  # not dialled before its time
        link = json.loads(row["flow_data"])
        assert link["callback_task"] == task_id
        assert "callback_of" not in link
        assert task["data"]["calls"] == [row["id"]]
        audited = rows(
            daemon, "SELECT outcome FROM audit_log WHERE action = 'callback.create' ORDER BY id"
        )
        # the undecodable `at` is refused before any check (as for tasks), the rest audited
        assert [r["outcome"] for r in audited] == ["refused"] * 4 + ["allowed"]
        assert metric(daemon, "acd_callbacks_total", queue="sched", outcome="connected") == 1
        _, doc = call(daemon, "GET", "/api/v1/openapi.json")
        op = doc["paths"]["/api/v1/callbacks"]["post"]
        assert {"201", "422"} <= set(op["responses"])
        assert {"queue", "number", "at"} <= set(
            doc["components"]["schemas"]["NewCallback"]["properties"]
        )
    finally:
        for proc in procs:
            stop(proc)
        with contextlib.suppress(Exception):
            call(daemon, "PUT", "/api/v1/agents/cb8/state", body={"state": "logged_out"})


def test_customer_first_dials_the_customer_then_rings_the_reserved_agent(
    running: Running, tmp_path: Path
) -> None:
    """Queue ``cfirst`` (customer_first): a callback made through the API reserves cb9 and dials
    the customer first. The customer is busy: cb9's phone is never rung and cb9 is free at once
    (no wrap-up); after retry_s the customer answers (440 Hz), hears the prompt, then cb9 is
    rung, answers (880 Hz) and is bridged; the customer hangs up. cb9's phone sees one INVITE
    in all; the recording holds the customer left and the agent right."""
    daemon = running.daemon
    tone_wavs(tmp_path)
    procs: list[Proc] = []
    try:
        busy = uas(tmp_path, "agent_busy", running.ports["customer6_port"], 1)
        agent = uas(tmp_path, "agent_answer_tone", running.ports["agent9_port"], 1)
        procs += [busy, agent]
        status, _ = call(daemon, "PUT", "/api/v1/agents/cb9/state", body={"state": "logged_in"})
        assert status == 200
        status, made = call(
            daemon, "POST", "/api/v1/callbacks", body={"queue": "cfirst", "number": "5550166"}
        )
        assert status == 201, made
        task_id = made["id"]
        assert busy.wait(timeout=20) == 0, sipp_output(busy)
        wait_until(
            lambda: call(daemon, "GET", f"/api/v1/tasks/{task_id}")[1]["state"] == "scheduled",
            10, "the callback scheduled for a retry",
        )  # fmt: skip
        _, cb9 = call(daemon, "GET", "/api/v1/agents/cb9")
        assert cb9["state"] == "available", cb9  # reserved only: no wrap-up
        assert invites(tmp_path, "agent_answer_tone", agent) == []  # not rung for a busy customer

        answering = uas(
            tmp_path, "customer_answer_tone_hangs_up", running.ports["customer6_port"], 1
        )
        procs.append(answering)
        assert answering.wait(timeout=20) == 0, sipp_output(answering)
        assert agent.wait(timeout=20) == 0, sipp_output(agent)  # our BYE after the customer's
        assert len(invites(tmp_path, "agent_answer_tone", agent)) == 1
        wait_until(
            lambda: call(daemon, "GET", f"/api/v1/tasks/{task_id}")[1]["state"] == "completed",
            10, "the callback task completed",
        )  # fmt: skip
        _, task = call(daemon, "GET", f"/api/v1/tasks/{task_id}")
        assert (task["disposition"], task["agent_id"]) == ("connected", "cb9")
        assert task["data"]["attempts"] == 2

        query = (
            "SELECT * FROM calls WHERE queue = 'cfirst' AND flow = 'callback'"
            " AND ended_at IS NOT NULL ORDER BY arrived_at"
        )
        wait_until(lambda: len(rows(daemon, query)) == 2, 10, "the two attempts' CDR rows")
        tried, connected = rows(daemon, query)
        assert (tried["disposition"], tried["agent_id"]) == ("callback_busy", None)
        assert (connected["disposition"], connected["agent_id"]) == ("answered", "cb9")
        assert connected["hangup_side"] == "callee"
        assert task["data"]["calls"] == [tried["id"], connected["id"]]
        for n, row in enumerate((tried, connected), start=1):
            link = json.loads(row["flow_data"])
            assert (link["callback_task"], link["attempt"]) == (task_id, n)
        finished = "SELECT * FROM recordings WHERE id = ? AND duration_s IS NOT NULL"
        wait_until(lambda: bool(rows(daemon, finished, connected["recording_id"])), 10,
                   "the callback's recording finished")  # fmt: skip
        (rec,) = rows(daemon, finished, connected["recording_id"])
        with wave.open(rec["path"]) as w:
            stereo = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
        assert len(stereo) > 4000, len(stereo)
        assert abs(dominant_hz(stereo[-4000:-800, 0]) - CUSTOMER_HZ) < 10
        assert abs(dominant_hz(stereo[-4000:-800, 1]) - AGENT_HZ) < 10
        _, cb9 = call(daemon, "GET", "/api/v1/agents/cb9")
        assert cb9["state"] == "wrap_up", cb9
        assert metric(daemon, "acd_callbacks_total", queue="cfirst", outcome="retry") == 1
        assert metric(daemon, "acd_callbacks_total", queue="cfirst", outcome="connected") == 1
    finally:
        for proc in procs:
            stop(proc)
        with contextlib.suppress(Exception):
            call(daemon, "PUT", "/api/v1/agents/cb9/state", body={"state": "logged_out"})


def test_customer_first_customer_hanging_up_before_the_agent_ends_the_attempt(
    running: Running, tmp_path: Path
) -> None:
    """Queue ``cgone`` (customer_first, one attempt): the customer answers and hangs up after 2 s
    while cb10's phone still rings (8 s): the agent's INVITE is CANCELled, cb10 is free without
    wrap-up, the attempt's row says ``callback_customer_gone`` and the task ends ``failed``."""
    daemon = running.daemon
    tone_wavs(tmp_path)
    procs: list[Proc] = []
    try:
        customer = uas(
            tmp_path, "customer_answer_tone_hangs_up", running.ports["customer7_port"], 1
        )
        agent = uas(tmp_path, "agent_no_answer", running.ports["agent10_port"], 1)
        procs += [customer, agent]
        status, _ = call(daemon, "PUT", "/api/v1/agents/cb10/state", body={"state": "logged_in"})
        assert status == 200
        status, made = call(
            daemon, "POST", "/api/v1/callbacks", body={"queue": "cgone", "number": "5550177"}
        )
        assert status == 201, made
        task_id = made["id"]
        assert customer.wait(timeout=20) == 0, sipp_output(customer)
        assert agent.wait(timeout=20) == 0, sipp_output(agent)  # rung, then CANCELled
        wait_until(
            lambda: call(daemon, "GET", f"/api/v1/tasks/{task_id}")[1]["state"] == "completed",
            10, "the callback task ended",
        )  # fmt: skip
        _, task = call(daemon, "GET", f"/api/v1/tasks/{task_id}")
        assert task["disposition"] == "failed"
        assert (task["data"]["attempts"], task["data"]["last_outcome"]) == (1, "customer_gone")
        query = (
            "SELECT * FROM calls WHERE queue = 'cgone' AND flow = 'callback'"
            " AND ended_at IS NOT NULL"
        )
        wait_until(lambda: bool(rows(daemon, query)), 10, "the attempt's CDR row")
        (row,) = rows(daemon, query)
        assert (row["disposition"], row["agent_id"]) == ("callback_customer_gone", None)
        assert task["data"]["calls"] == [row["id"]]
        _, cb10 = call(daemon, "GET", "/api/v1/agents/cb10")
        assert cb10["state"] == "available", cb10
        assert metric(daemon, "acd_callbacks_total", queue="cgone", outcome="failed") == 1
    finally:
        for proc in procs:
            stop(proc)
        with contextlib.suppress(Exception):
            call(daemon, "PUT", "/api/v1/agents/cb10/state", body={"state": "logged_out"})
