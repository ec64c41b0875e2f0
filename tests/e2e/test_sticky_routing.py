"""Sticky routing through the daemon: last-agent routing from the CDR store, its timeout, a
preferred agent set by the flow, and callers who call back or overflow keeping their places.

SIPp's built-in uac calls from the same caller id ("sipp") every time; agents are SIPp UAS
processes at static contacts, logged in through the API. The queue is "longest idle", so every
offer that goes to the agent who is *not* longest idle is the preference's doing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.configs import front_door
from tests.e2e.conftest import DaemonFactory
from tests.e2e.peers import free_port_block
from tests.e2e.test_call_scenarios import (
    ADMIN,
    SCENARIOS,
    Peers,
    Proc,
    api,
    cdr,
    finished,
    login,
    peers,  # noqa: F401 - the fixture
    sip_target,
    sipp_output,
    wait_until,
)

pytestmark = pytest.mark.e2e


def test_last_agent_then_its_timeout_then_the_flows_preferred_agent(
    start_daemon: DaemonFactory,
    peers: Peers,  # noqa: F811
    tmp_path: Path,
) -> None:
    a = peers.agent("agent_answer", "-m", "3")
    b = peers.agent("agent_answer")
    agents = "".join(
        f'[[agents]]\nid = "{name}"\nlogin = "static"\n'
        f'contact = "sip:{name}@127.0.0.1:{phone.sip_port}"\n'  # type: ignore[attr-defined]
        "skills = { support = 5 }\nqueues = { support = 0 }\n"
        for name, phone in (("A", a), ("B", b))
    )
    daemon = start_daemon(
        front_door(ADMIN, numbers=("support",), rtp_base=free_port_block(40))
        + '[[routes]]\nnumber = "direct"\nflow = "direct"\n'
        + '[[flows]]\nname = "direct"\nsteps = [{ type = "answer" }, '
        '{ type = "set", queue = "support", preferred_agent = "A" }, { type = "enqueue" }]\n'
        + '[[queues]]\nname = "support"\nrequirements = { support = 1 }\nwrap_up_s = 0.0\n'
        'record = "never"\nlast_agent_days = 1.0\npreferred_agent_timeout_s = 1.5\n' + agents
    )
    login(daemon, "A")  # idle longest: the first call is A's
    login(daemon, "B")
    first = peers.caller(daemon, 300)
    assert finished(first, 20) == 0, sipp_output(first)
    rows, _ = cdr(daemon, 1)
    assert rows[-1]["agent_id"] == "A"

    # B is idle longest now, but this caller spoke to A: A again, at once.
    second = peers.caller(daemon, 300)
    assert finished(second, 20) == 0, sipp_output(second)
    rows, _ = cdr(daemon, 2)
    assert rows[-1]["agent_id"] == "A"
    assert rows[-1]["wait_s"] < 1.0
    picked = [line for line in daemon.log_lines() if line.get("event") == "preferred_agent"]
    assert [(p["agent"], p["source"]) for p in picked] == [("A", "last_agent")]

    # A is logged in but not ready: the caller waits preferred_agent_timeout_s for A, then B.
    api(daemon, "/api/v1/agents/A/state", {"state": "not_ready", "reason": "lunch"})
    third = peers.caller(daemon, 3000)  # the hold counts from the flow's answer
    assert finished(third, 20) == 0, sipp_output(third)
    rows, _ = cdr(daemon, 3)
    assert rows[-1]["agent_id"] == "B"
    assert 1.4 <= rows[-1]["wait_s"] < 3.0

    # The flow prefers A: neither the last agent (B now) nor the longest idle (B) gets it.
    api(daemon, "/api/v1/agents/A/state", {"state": "ready"})
    fourth = peers.caller(daemon, 300, number="direct")
    assert finished(fourth, 20) == 0, sipp_output(fourth)
    rows, _ = cdr(daemon, 4)
    assert rows[-1]["agent_id"] == "A"
    picked = [line for line in daemon.log_lines() if line.get("event") == "preferred_agent"]
    assert [(p["agent"], p["source"]) for p in picked][-1] == ("A", "flow")
    assert finished(a, 10) == 0, sipp_output(a)
    assert finished(b, 10) == 0, sipp_output(b)
    assert daemon.stop() == 0


def test_callers_coming_back_within_keep_place_s_keep_their_places(
    start_daemon: DaemonFactory,
    peers: Peers,  # noqa: F811
) -> None:
    """Xavier waits, hangs up and calls back; meanwhile Olga waited in queue ``front`` and
    overflowed into ``support`` (max_wait_s), and Yvonne called ``support`` directly. With
    ``support``'s keep_place_s both keep the time they first joined: Xavier (the earliest) is
    ahead, then Olga, then Yvonne, although Yvonne reached ``support`` before both of them."""
    agent = peers.agent("agent_answer", "-m", "3")
    daemon = start_daemon(
        front_door(ADMIN, numbers=("support", "front"), rtp_base=free_port_block(40))
        + '[[flows]]\nname = "to_support"\nsteps = [{ type = "enqueue", queue = "support" }]\n'
        + '[[queues]]\nname = "support"\nwrap_up_s = 0.0\nrecord = "never"\nkeep_place_s = 30.0\n'
        + '[[queues]]\nname = "front"\nmax_wait_s = 1.0\noverflow = "to_support"\n'
        f'[[agents]]\nid = "A"\nlogin = "static"\n'
        f'contact = "sip:A@127.0.0.1:{agent.sip_port}"\nqueues = {{ support = 0 }}\n'  # type: ignore[attr-defined]
    )
    scenario = ["-sf", str(SCENARIOS / "caller_as.xml")]

    def caller(name: str, hold_ms: int, number: str = "support") -> Proc:
        return peers._start(scenario, sip_target(daemon), "-s", number, "-m", "1",
                            "-key", "caller", name, "-d", str(hold_ms))  # fmt: skip

    def positions(queue: str = "support") -> dict[str, int]:
        live = api(daemon, "/api/v1/calls")
        return {
            c["caller"]: c["position"]  # type: ignore[index]
            for c in live  # type: ignore[union-attr]
            if c["phase"] == "queued" and c["queue"] == queue  # type: ignore[index]
        }

    first = caller("xavier", 800)  # nobody logged in: waits, then hangs up
    assert finished(first, 20) == 0, sipp_output(first)
    olga = caller("olga", 4000, "front")
    wait_until(lambda: positions("front") == {"olga": 1}, 10, "olga queued in front")
    yvonne = caller("yvonne", 4000)
    wait_until(lambda: positions() == {"yvonne": 1}, 10, "yvonne queued")
    wait_until(lambda: "olga" in positions(), 10, "olga overflowed into support")
    xavier = caller("xavier", 1000)
    wait_until(lambda: len(positions()) == 3, 10, "xavier queued again")
    assert positions() == {"xavier": 1, "olga": 2, "yvonne": 3}
    api(daemon, "/api/v1/agents/A/state", {"state": "logged_in"})  # answers at once
    for proc in (xavier, olga, yvonne):
        assert finished(proc, 20) == 0, sipp_output(proc)
    rows, _ = cdr(daemon, 4)
    answered = [
        who
        for _, who in sorted(
            (r["agent_answered_at"], r["caller"]) for r in rows if r["agent_answered_at"]
        )
    ]
    assert answered == ["xavier", "olga", "yvonne"][: len(answered)]
    assert answered[:1] == ["xavier"]
    assert daemon.stop() == 0
