"""The ACD's call scenarios against the real daemon, with SIPp on both sides.

SIPp's built-in `uac` is the trunk caller dialling `support` (the flow answers at once, then
enqueues); static agents are SIPp UAS processes running the scenarios in ``sipp/scenarios/``: answer
at once, answer after a delay, ring and never answer (expects the CANCEL: 200 + 487), busy (486).
SIPp's exit status says whether each peer saw exactly the messages its scenario expects (an
unexpected BYE, CANCEL or missing ACK fails it); the daemon's SQLite CDR store, its API and
``/metrics`` must tell the same story. Every SIPp instance has its own ports and is stopped by PID.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import DaemonFactory, DaemonProcess, wait_until
from tests.e2e.peers import free_port_block, sipp, stop

pytestmark = pytest.mark.e2e

ADMIN = "admin-token-0123456789"
SCENARIOS = Path(__file__).parent / "sipp" / "scenarios"
Proc = subprocess.Popen[bytes]


def config(
    agents: dict[str, int],
    *,
    strategy: str = "longest_idle",
    ring_timeout_s: float = 2.0,
    retry_delay_s: float = 0.0,
    drain_timeout_s: float = 30.0,
    media_workers: int = 0,
) -> str:
    """Loopback trunk, `support` -> [answer, enqueue support], static agents at SIPp UAS ports."""
    rtp = free_port_block(40)
    members = "".join(
        f'[[agents]]\nid = "{agent}"\nlogin = "static"\n'
        f'contact = "sip:{agent}@127.0.0.1:{port}"\n'
        "skills = { support = 5 }\nqueues = { support = 0 }\n\n"
        for agent, port in agents.items()
    )
    return f"""
[runtime]
drain_timeout_s = {drain_timeout_s}

[media]
rtp_port_min = {rtp}
rtp_port_max = {rtp + 38}
workers = {media_workers}

[[api.tokens]]
name = "ops"
role = "admin"
token = "{ADMIN}"

[[trunks]]
name = "callers"
allow = ["127.0.0.0/8"]

[[routes]]
number = "support"
flow = "support"

[[flows]]
name = "support"
steps = [{{ type = "answer" }}, {{ type = "enqueue", queue = "support" }}]

[[queues]]
name = "support"
strategy = "{strategy}"
requirements = {{ support = 1 }}
ring_timeout_s = {ring_timeout_s}
retry_delay_s = {retry_delay_s}
wrap_up_s = 1.0
record = "never"

{members}"""


# -- peers and the daemon's outside interfaces ------------------------------------------------------


class Peers:
    """The SIPp processes of one test, each on its own ports; all stopped by PID at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def agent(self, scenario: str, *extra: str) -> Proc:
        """A SIPp UAS for one call of ``scenario`` (a file in sipp/scenarios), tracing messages."""
        return self._start(["-sf", str(SCENARIOS / f"{scenario}.xml")], None, "-m", "1",
                           "-trace_msg", *extra)  # fmt: skip

    def caller(self, daemon: DaemonProcess, hold_ms: int, number: str = "support") -> Proc:
        """SIPp's built-in uac: INVITE ``number``, 200, ACK, hold ``hold_ms``, BYE."""
        return self._start(["-sn", "uac"], sip_target(daemon), "-s", number, "-m", "1",
                           "-d", str(hold_ms))  # fmt: skip

    def scripted_caller(self, daemon: DaemonProcess, scenario: str, *extra: str) -> Proc:
        """One call to support running ``scenario`` (a file in sipp/scenarios), traced."""
        return self._start(["-sf", str(SCENARIOS / f"{scenario}.xml")], sip_target(daemon),
                           "-s", "support", "-m", "1", "-trace_msg", *extra)  # fmt: skip

    def refused_caller(self, target: str) -> Proc:
        """One INVITE to support that must get 503 (sipp/scenarios/caller_expect_503.xml)."""
        return self._start(["-sf", str(SCENARIOS / "caller_expect_503.xml")], target,
                           "-s", "support", "-m", "1", "-trace_msg")  # fmt: skip

    def _start(self, scenario: list[str], target: str | None, *extra: str) -> Proc:
        proc = sipp(self.workdir, scenario, target, *extra)
        self.procs.append(proc)
        return proc

    def messages(self, scenario: str, proc: Proc) -> str:
        """What a SIPp process sent and received (its -trace_msg file; empty until the first)."""
        path = self.workdir / f"{scenario}_{proc.pid}_messages.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        for proc in self.procs:
            stop(proc)


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Peers]:
    running = Peers(tmp_path)
    yield running
    running.stop_all()


def received(trace: str) -> list[str]:
    """Request methods and response codes SIPp received, in order, from its message trace."""
    out = []
    for block in trace.split("message received")[1:]:
        lines = [line for line in block.splitlines()[1:] if line.strip()]
        first = lines[0].split()
        out.append(first[1] if first[0] == "SIP/2.0" else first[0])
    return out


def sipp_output(proc: Proc) -> str:
    return str(proc.log_path.read_text(errors="replace"))[-3000:]  # type: ignore[attr-defined]


def finished(proc: Proc, timeout_s: float) -> int:
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"SIPp still running:\n{sipp_output(proc)}") from None


def sip_target(daemon: DaemonProcess) -> str:
    return str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")


def api(daemon: DaemonProcess, path: str, body: object = None) -> dict[str, object]:
    request = urllib.request.Request(
        daemon.base_url + path,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "PUT",
    )
    request.add_header("Authorization", f"Bearer {ADMIN}")
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def login(daemon: DaemonProcess, agent_id: str) -> None:
    view = api(daemon, f"/api/v1/agents/{agent_id}/state", {"state": "logged_in"})
    # "reserved": a caller was already waiting and the agent was offered it at once.
    assert view["state"] in ("available", "reserved"), view


def state(daemon: DaemonProcess, agent_id: str) -> str:
    return str(api(daemon, f"/api/v1/agents/{agent_id}")["state"])


def cdr(
    daemon: DaemonProcess, n_calls: int = 1
) -> tuple[list[sqlite3.Row], list[tuple[str, str | None, str | None]]]:
    """The calls rows (once ``n_calls`` are written) and (event, agent_id, reason) queue events."""
    path = daemon.workdir / "var" / "acd.sqlite3"
    deadline = time.monotonic() + 10
    while True:
        with sqlite3.connect(path) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT * FROM calls WHERE ended_at IS NOT NULL ORDER BY arrived_at"
            ).fetchall()
            events = db.execute("SELECT event, agent_id, data FROM queue_events ORDER BY id")
            trail = [
                (e["event"], e["agent_id"], (json.loads(e["data"] or "null") or {}).get("reason"))
                for e in events.fetchall()
            ]
        if len(rows) >= n_calls or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(rows) == n_calls, [dict(r) for r in rows]
    return rows, trail


def calls_active(daemon: DaemonProcess) -> float:
    _, exposition, _ = daemon.get("/metrics")
    for line in exposition.decode().splitlines():
        if line.startswith("acd_calls_active "):
            return float(line.split()[1])
    raise AssertionError("no acd_calls_active in /metrics")


# -- the scenarios ----------------------------------------------------------------------------------


def test_caller_bye_while_queued_is_abandoned(start_daemon: DaemonFactory, peers: Peers) -> None:
    daemon = start_daemon(config({"a1": 9}))  # a1 exists but nobody logs in
    call = peers.caller(daemon, 1500)
    assert finished(call, 20) == 0, sipp_output(call)
    (row,), events = cdr(daemon)
    assert (row["disposition"], row["hangup_side"], row["hangup_reason"]) == (
        "abandoned", "caller", "bye",
    )  # fmt: skip
    assert row["agent_id"] is None
    assert row["wait_s"] == pytest.approx(1.5, abs=0.5)
    assert [e[0] for e in events] == ["enter", "abandon"]
    assert calls_active(daemon) == 0
    assert daemon.stop() == 0


def test_caller_bye_while_agent_rings_cancels_the_agent(
    start_daemon: DaemonFactory, peers: Peers
) -> None:
    phone = peers.agent("agent_no_answer")
    # A ring timeout far beyond the caller's hold: the CANCEL can only come from the hang-up.
    daemon = start_daemon(config({"a1": phone.sip_port}, ring_timeout_s=20.0))  # type: ignore[attr-defined]
    login(daemon, "a1")
    started = time.monotonic()
    call = peers.caller(daemon, 1500)
    wait_until(lambda: state(daemon, "a1") == "reserved", 5, "a1 ringing")
    assert finished(call, 20) == 0, sipp_output(call)
    # INVITE, CANCEL (answered 200 + 487), ACK of the 487: exactly the scenario.
    assert finished(phone, 10) == 0, sipp_output(phone)
    assert time.monotonic() - started < 10
    assert received(peers.messages("agent_no_answer", phone)) == ["INVITE", "CANCEL", "ACK"]
    wait_until(lambda: state(daemon, "a1") == "available", 5, "a1 available again")
    (row,), events = cdr(daemon)
    assert (row["disposition"], row["hangup_side"], row["agent_id"]) == (
        "abandoned", "caller", None,
    )  # fmt: skip
    assert events == [("enter", None, None), ("offer", "a1", None), ("abandon", None, None)]
    assert calls_active(daemon) == 0


@pytest.mark.parametrize(
    ("scenario", "reason"), [("agent_no_answer", "no_answer"), ("agent_busy", "busy")]
)
def test_unanswered_agent_then_next_agent_answers(
    start_daemon: DaemonFactory, peers: Peers, scenario: str, reason: str
) -> None:
    first = peers.agent(scenario)
    second = peers.agent("agent_answer_delayed", "-d", "500")
    daemon = start_daemon(
        config({"a1": first.sip_port, "b2": second.sip_port}, ring_timeout_s=2.0)  # type: ignore[attr-defined]
    )
    login(daemon, "a1")
    call = peers.caller(daemon, 4000)
    # b2 logs in only once a1 has been offered the call, so a1 is certainly first.
    wait_until(lambda: "INVITE sip:" in peers.messages(scenario, first), 5, "a1 offered")
    login(daemon, "b2")
    wait_until(lambda: state(daemon, "b2") == "busy", 8, "b2 on the call")
    assert state(daemon, "a1") == "available"  # released at once, not left reserved
    assert finished(first, 5) == 0, sipp_output(first)
    assert finished(call, 20) == 0, sipp_output(call)
    assert finished(second, 10) == 0, sipp_output(second)
    expected = ["INVITE", "CANCEL", "ACK"] if reason == "no_answer" else ["INVITE", "ACK"]
    assert received(peers.messages(scenario, first)) == expected
    assert received(peers.messages("agent_answer_delayed", second)) == ["INVITE", "ACK", "BYE"]
    (row,), events = cdr(daemon)
    assert (row["disposition"], row["agent_id"], row["hangup_side"]) == ("answered", "b2", "caller")
    assert events == [
        ("enter", None, None),
        ("offer", "a1", None),
        ("ring_no_answer", "a1", reason),
        ("offer", "b2", None),
        ("answer", "b2", None),
        ("complete", "b2", None),
    ]
    if reason == "no_answer":
        # a1 was CANCELled by the 2 s ring timeout; b2 then rang 0.5 s before answering.
        assert row["agent_answered_at"] - row["enqueued_at"] >= 2.0 + 0.5
    assert calls_active(daemon) == 0


def test_retry_delay_holds_the_caller_before_the_next_agent_rings(
    start_daemon: DaemonFactory, peers: Peers
) -> None:
    first, second = peers.agent("agent_no_answer"), peers.agent("agent_answer")
    daemon = start_daemon(
        config(
            {"a1": first.sip_port, "b2": second.sip_port},  # type: ignore[attr-defined]
            ring_timeout_s=1.0,
            retry_delay_s=1.5,
        )
    )
    login(daemon, "a1")
    call = peers.caller(daemon, 3500)
    wait_until(lambda: "INVITE sip:" in peers.messages("agent_no_answer", first), 5, "a1 offered")
    login(daemon, "b2")  # free from here on: only the retry delay keeps it from ringing
    assert finished(call, 20) == 0, sipp_output(call)
    assert finished(second, 10) == 0, sipp_output(second)
    (row,), events = cdr(daemon)
    assert (row["disposition"], row["agent_id"]) == ("answered", "b2")
    assert [e[:2] for e in events[:4]] == [
        ("enter", None), ("offer", "a1"), ("ring_no_answer", "a1"), ("offer", "b2"),
    ]  # fmt: skip
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        at = dict(
            db.execute("SELECT event || agent_id, at FROM queue_events WHERE agent_id IS NOT NULL")
        )
    # The ring_no_answer row is stamped (wall clock) just after the router was told of the
    # no-answer on its own (loop) clock: the gap can read a fraction of a millisecond short.
    assert at["offerb2"] - at["ring_no_answera1"] >= 1.5 - 0.02
    assert at["offerb2"] - at["ring_no_answera1"] < 2.5
    assert calls_active(daemon) == 0


def test_ring_all_double_answer_bridges_exactly_one(
    start_daemon: DaemonFactory, peers: Peers
) -> None:
    phones = {"r1": peers.agent("agent_answer"), "r2": peers.agent("agent_answer")}
    daemon = start_daemon(
        config({a: p.sip_port for a, p in phones.items()}, strategy="ring_all")  # type: ignore[attr-defined]
    )
    login(daemon, "r1")
    login(daemon, "r2")
    call = peers.caller(daemon, 4000)
    wait_until(lambda: "busy" in {state(daemon, "r1"), state(daemon, "r2")}, 5, "a winner")
    winner = "r1" if state(daemon, "r1") == "busy" else "r2"
    loser = "r2" if winner == "r1" else "r1"
    # The loser answered too: its call is hung up at once, while the caller is still talking.
    assert finished(phones[loser], 3) == 0, sipp_output(phones[loser])
    assert call.poll() is None
    assert state(daemon, loser) == "available"
    assert state(daemon, winner) == "busy"
    assert finished(call, 20) == 0, sipp_output(call)
    assert finished(phones[winner], 10) == 0, sipp_output(phones[winner])
    assert received(peers.messages("agent_answer", phones[winner])) == ["INVITE", "ACK", "BYE"]
    # The loser never sent a 1xx, so it was never CANCELled: its 200 is ACKed, then hung up.
    assert received(peers.messages("agent_answer", phones[loser])) == ["INVITE", "ACK", "BYE"]
    (row,), events = cdr(daemon)
    assert (row["disposition"], row["agent_id"]) == ("answered", winner)
    assert events[0] == ("enter", None, None)
    assert sorted(events[1:3]) == [("offer", "r1", None), ("offer", "r2", None)]
    assert events[3:] == [("answer", winner, None), ("complete", winner, None)]
    assert state(daemon, winner) in ("wrap_up", "available")
    assert state(daemon, loser) == "available"
    assert calls_active(daemon) == 0


def test_sigterm_drains_the_live_call_and_refuses_new_ones(
    start_daemon: DaemonFactory, peers: Peers
) -> None:
    phone = peers.agent("agent_answer")
    daemon = start_daemon(config({"a1": phone.sip_port}, drain_timeout_s=20.0))  # type: ignore[attr-defined]
    login(daemon, "a1")
    target = sip_target(daemon)
    live = peers.caller(daemon, 5000)
    wait_until(lambda: state(daemon, "a1") == "busy", 5, "a1 on the call")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_for_log("stopping")["live_calls"] == 1
    refused = peers.refused_caller(target)
    assert finished(refused, 10) == 0, sipp_output(refused)
    assert daemon.proc.poll() is None  # still serving the live call
    assert live.poll() is None
    assert finished(live, 15) == 0, sipp_output(live)
    hung_up = time.monotonic()
    assert daemon.proc.wait(timeout=15) == 0
    # It left once the call ended, not at the 20 s drain deadline.
    assert time.monotonic() - hung_up < 5
    assert finished(phone, 5) == 0, sipp_output(phone)
    assert received(peers.messages("agent_answer", phone)) == ["INVITE", "ACK", "BYE"]
    refusal = [m for m in received(peers.messages("caller_expect_503", refused)) if m != "100"]
    assert refusal == ["503"]
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        rows = db.execute(
            "SELECT disposition, agent_id, hangup_side, hangup_reason FROM calls ORDER BY arrived_at"
        ).fetchall()
    assert rows == [
        ("answered", "a1", "caller", "bye"),
        ("rejected", None, "system", "503 Shutting down"),
    ]


def rtp_sent(daemon: DaemonProcess) -> float:
    _, body, _ = daemon.get("/metrics")
    for line in body.decode().splitlines():
        if line.startswith('acd_rtp_packets_total{direction="out"}'):
            return float(line.split()[-1])
    raise AssertionError("no acd_rtp_packets_total{direction=out} in /metrics")


@pytest.mark.parametrize("media_workers", [0, 1], ids=["in_daemon", "media_worker"])
def test_agent_hold_gives_the_caller_music_then_resumes(
    start_daemon: DaemonFactory, peers: Peers, media_workers: int
) -> None:
    """With a media worker, the music comes from the worker (it carries the caller's socket) and
    its packet counts reach /metrics every 0.25 s: the windows get that much slack."""
    phone = peers.agent("agent_hold")  # holds 1 s after answering, for 4 s; checks our SDP answers
    daemon = start_daemon(config({"a1": phone.sip_port}, media_workers=media_workers))  # type: ignore[attr-defined]
    slack = 15 if media_workers else 0
    login(daemon, "a1")
    call = peers.caller(daemon, 7000)
    wait_until(lambda: state(daemon, "a1") == "busy", 5, "a1 on the call")
    # Neither SIPp side sends RTP: while bridged, the ACD sends nothing; on hold it plays music.
    bridged = rtp_sent(daemon)
    time.sleep(0.4)  # the phone holds 1 s after its answer
    assert rtp_sent(daemon) - bridged < 5
    daemon.wait_for_log("call_hold", timeout_s=5)
    held = rtp_sent(daemon)
    time.sleep(2.0)
    assert 80 - slack <= rtp_sent(daemon) - held <= 110 + slack  # music to the caller: 50/s
    daemon.wait_for_log("call_resume", timeout_s=5)
    time.sleep(0.3)
    resumed = rtp_sent(daemon)
    time.sleep(1.0)
    assert rtp_sent(daemon) - resumed < 5  # relay again, and nobody talks
    assert finished(call, 15) == 0, sipp_output(call)
    assert finished(phone, 10) == 0, sipp_output(phone)
    seen = [m for m in received(peers.messages("agent_hold", phone)) if m != "100"]
    assert seen == ["INVITE", "ACK", "200", "200", "BYE"]
    (row,), _ = cdr(daemon)
    assert (row["disposition"], row["agent_id"], row["hangup_side"]) == ("answered", "a1", "caller")
    assert 3.5 <= row["hold_s"] <= 5.0  # the phone held the caller 4 s
    if media_workers:
        _, body, _ = daemon.get("/metrics")
        assert 'acd_media_handoffs_total{outcome="carried"} 1.0' in body.decode()


def post(daemon: DaemonProcess, path: str, body: object) -> tuple[int, str]:
    request = urllib.request.Request(
        daemon.base_url + path, data=json.dumps(body).encode(), method="POST"
    )
    request.add_header("Authorization", f"Bearer {ADMIN}")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("media_workers", [0, 1], ids=["in_daemon", "media_worker"])
def test_agent_blind_transfer_to_another_queue(
    start_daemon: DaemonFactory, peers: Peers, media_workers: int
) -> None:
    """With a media worker, the caller's leg goes to the worker, back for the queue's music,
    and to the worker again for the second agent."""
    first, second = peers.agent("agent_answer"), peers.agent("agent_answer")
    daemon = start_daemon(
        config({"a1": first.sip_port}, media_workers=media_workers)  # type: ignore[attr-defined]
        + f"""
[[queues]]
name = "sales"
wrap_up_s = 1.0
record = "never"

[[agents]]
id = "b1"
login = "static"
contact = "sip:b1@127.0.0.1:{second.sip_port}"
queues = {{ sales = 0 }}
"""  # type: ignore[attr-defined]
    )
    login(daemon, "a1")
    login(daemon, "b1")
    call = peers.caller(daemon, 5000)
    wait_until(lambda: state(daemon, "a1") == "busy", 5, "a1 on the call")
    (live,) = api(daemon, "/api/v1/calls")  # type: ignore[misc]
    path = f"/api/v1/calls/{live['id']}/transfer"  # type: ignore[index]
    status, body = post(daemon, path, {"queue": "nowhere"})
    assert (status, json.loads(body)["detail"]) == (409, "no queue 'nowhere'")
    status, body = post(daemon, path, {"queue": "sales", "number": "1"})
    assert (status, json.loads(body)["detail"]) == (409, "give a queue or a number")
    status, body = post(daemon, path, {"queue": "sales"})
    assert (status, json.loads(body)) == (200, {"call_id": live["id"], "transferred_to": "sales"})  # type: ignore[index]
    wait_until(lambda: state(daemon, "b1") == "busy", 5, "b1 on the transferred call")
    assert state(daemon, "a1") in ("wrap_up", "available")
    assert finished(first, 5) == 0, sipp_output(first)  # a1 was hung up at once
    assert call.poll() is None  # the caller is still talking, now to b1
    assert finished(call, 20) == 0, sipp_output(call)
    assert finished(second, 10) == 0, sipp_output(second)
    assert received(peers.messages("agent_answer", first)) == ["INVITE", "ACK", "BYE"]
    assert received(peers.messages("agent_answer", second)) == ["INVITE", "ACK", "BYE"]
    (row,), events = cdr(daemon)
    assert (row["disposition"], row["agent_id"], row["queue"]) == ("answered", "b1", "sales")
    assert json.loads(row["flow_data"])["transferred_to"] == "sales"
    assert events == [
        ("enter", None, None),
        ("offer", "a1", None),
        ("answer", "a1", None),
        ("transfer", "a1", None),
        ("enter", None, None),
        ("offer", "b1", None),
        ("answer", "b1", None),
        ("complete", "b1", None),
    ]
    assert calls_active(daemon) == 0
    if media_workers:
        _, body, _ = daemon.get("/metrics")
        assert 'acd_media_handoffs_total{outcome="carried"} 2.0' in body.decode()


def test_agent_transfer_to_a_busy_number_puts_the_caller_back_in_the_queue(
    start_daemon: DaemonFactory, peers: Peers
) -> None:
    first, second = peers.agent("agent_answer"), peers.agent("agent_answer")
    pbx = peers.agent("agent_busy")  # the number behind the trunk answers 486
    daemon = start_daemon(
        config({"a1": first.sip_port, "a2": second.sip_port})  # type: ignore[attr-defined]
        + f"""
[[trunks]]
name = "pbx"
allow = ["192.0.2.1"]
outbound_proxy = "127.0.0.1:{pbx.sip_port}"
"""  # type: ignore[attr-defined]
    )
    login(daemon, "a1")
    call = peers.caller(daemon, 5000)
    wait_until(lambda: state(daemon, "a1") == "busy", 5, "a1 on the call")
    login(daemon, "a2")  # only now: the caller must come back to someone
    (live,) = api(daemon, "/api/v1/calls")  # type: ignore[misc]
    status, _ = post(daemon, f"/api/v1/calls/{live['id']}/transfer", {"number": "5000"})  # type: ignore[index]
    assert status == 200
    wait_until(lambda: state(daemon, "a2") == "busy", 8, "a2 took the caller back")
    assert finished(pbx, 5) == 0, sipp_output(pbx)
    assert finished(call, 20) == 0, sipp_output(call)
    (row,), events = cdr(daemon)
    assert (row["disposition"], row["agent_id"], row["queue"]) == ("answered", "a2", "support")
    data = json.loads(row["flow_data"])
    assert (data["transferred_to"], data["transfer_status"]) == ("5000", "busy")
    assert [e for e, _, _ in events] == [
        "enter", "offer", "answer", "transfer", "enter", "offer", "answer", "complete",
    ]  # fmt: skip
    assert calls_active(daemon) == 0


def test_trunk_requiring_100rel_and_session_timers_keeps_its_call(
    start_daemon: DaemonFactory, peers: Peers
) -> None:
    """Carriers' SBCs require 100rel and refresh sessions by UPDATE: the 180 is sent reliably
    and PRACKed, the 200 grants the timer, the UPDATE refresh is answered with it (the SIPp
    scenario checks each header); an interval below 90 s gets 422 with Min-SE first."""
    daemon = start_daemon(config({"a1": 9}))  # nobody logs in: the caller waits in the queue
    refused = peers.scripted_caller(daemon, "caller_expect_422")
    assert finished(refused, 20) == 0, sipp_output(refused)
    call = peers.scripted_caller(daemon, "caller_100rel_timers")
    assert finished(call, 20) == 0, sipp_output(call)
    seen = [m for m in received(peers.messages("caller_100rel_timers", call)) if m != "100"]
    # 180 once (PRACKed before a retransmission), then the 200s of PRACK and INVITE (either
    # order; SIPp matched each to its transaction), of the UPDATE and of the BYE.
    assert seen == ["180", "200", "200", "200", "200"]
    (row,), _ = cdr(daemon)
    assert (row["disposition"], row["hangup_side"], row["hangup_reason"]) == (
        "abandoned", "caller", "bye",
    )  # fmt: skip
    _, exposition, _ = daemon.get("/metrics")
    assert 'acd_sip_parse_errors_total{reason="interval_too_small"} 1.0' in exposition.decode()
    assert daemon.stop() == 0
