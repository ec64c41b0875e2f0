"""Every queue strategy through the daemon: which agent the daemon's CDR says took each call.

One daemon for the module, one queue per strategy, each with agents of its own (so one queue's
calls never change another's counts, idle times or rotation). All agents' contacts are user parts
on one test UAS process (``sipp/simple_uas.py``: answers every INVITE at once, 200s the BYE), so
a call is answered by whichever agent the strategy picked; the caller is SIPp's built-in uac, one
call at a time per queue (``-l 1``), each hanging up after a short talk. With ``wrap_up_s = 0`` the
agent is free again when the call ends, so each call's agent is the strategy's choice among all of
the queue's agents. The queues run their callers side by side. ring_all's second agent is a SIPp
phone that rings and never answers: it must be CANCELled once the first agent has answered.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.configs import front_door
from tests.e2e.conftest import DaemonProcess, running_daemon, wait_until
from tests.e2e.peers import simple_uas, sipp, stop
from tests.e2e.test_call_scenarios import (
    ADMIN,
    SCENARIOS,
    Proc,
    finished,
    login,
    sip_target,
    sipp_output,
)

pytestmark = pytest.mark.e2e

# queue -> (strategy, [(agent, skill level)] in membership (config) order)
QUEUES: dict[str, tuple[str, list[tuple[str, int]]]] = {
    "lin": ("linear", [("lin3", 1), ("lin1", 1), ("lin2", 1)]),
    "rr": ("round_robin", [("rr1", 1), ("rr2", 1), ("rr3", 1)]),
    "fc": ("fewest_calls", [("fc1", 1), ("fc2", 1), ("fc3", 1)]),
    "li": ("longest_idle", [("li1", 1), ("li2", 1), ("li3", 1)]),
    "ms": ("most_skilled", [("ms1", 1), ("ms2", 5), ("ms3", 3)]),
    "rnd": ("random", [("rnd1", 1), ("rnd2", 1)]),
    "wr": ("weighted_random", [("wr1", 1), ("wr2", 5)]),
    "ltt": ("least_talk_time", [("lt1", 1), ("lt2", 1)]),
    "ra": ("ring_all", [("ra1", 1), ("ra2", 1)]),  # ra2: a SIPp phone that rings, never answers
}
# longest_idle: the agents log in in this order, so the one idle longest is li3, then li1, li2
LOGIN_ORDER = ["li3", "li1", "li2"]


def strategies_config(uas_port: int, ringing_port: int) -> str:
    parts = [front_door(ADMIN, numbers=tuple(QUEUES))]
    for queue, (strategy, agents) in QUEUES.items():
        parts.append(
            f'[[queues]]\nname = "{queue}"\nstrategy = "{strategy}"\n'
            f"requirements = {{ {queue} = 1 }}\nring_timeout_s = 5.0\nwrap_up_s = 0.0\n"
            'record = "never"\n'
        )
        for agent, level in agents:
            parts.append(
                f'[[agents]]\nid = "{agent}"\nlogin = "static"\n'
                f'contact = "sip:{agent}@127.0.0.1:{ringing_port if agent == "ra2" else uas_port}"\n'
                f"skills = {{ {queue} = {level} }}\nqueues = {{ {queue} = 0 }}\n"
            )
    return "\n".join(parts)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("strategies")


@pytest.fixture(scope="module")
def uas_port(workdir: Path) -> Iterator[int]:
    with simple_uas(workdir) as port:
        yield port


@pytest.fixture(scope="module")
def ringing_phone(workdir: Path) -> Iterator[Proc]:
    """ra2's phone: SIPp ringing for one call until it is CANCELled (200, 487, then the ACK)."""
    proc = sipp(workdir, ["-sf", str(SCENARIOS / "agent_no_answer.xml")], None, "-m", "1")
    try:
        yield proc
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def daemon(workdir: Path, uas_port: int, ringing_phone: Proc) -> Iterator[DaemonProcess]:
    home = workdir / "daemon"
    home.mkdir()
    config = strategies_config(uas_port, ringing_phone.sip_port)  # type: ignore[attr-defined]
    with running_daemon(home, config) as running:
        agents = [agent for _, members in QUEUES.values() for agent, _ in members]
        for agent in LOGIN_ORDER + [a for a in agents if a not in LOGIN_ORDER]:
            login(running, agent)
        yield running


def call_agents(daemon: DaemonProcess, queue: str) -> list[str | None]:
    """The agents of ``queue``'s finished calls, in arrival order (from the daemon's CDR)."""
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        rows = db.execute(
            "SELECT agent_id FROM calls WHERE queue = ? AND ended_at IS NOT NULL "
            "ORDER BY arrived_at",
            (queue,),
        ).fetchall()
    return [row[0] for row in rows]


@pytest.fixture(scope="module")
def calls(daemon: DaemonProcess, workdir: Path) -> dict[str, list[str | None]]:
    """Place every queue's calls (side by side across queues, one at a time within a queue) and
    return each queue's answering agents in arrival order."""
    counts = {"lin": 3, "rr": 6, "fc": 4, "li": 4, "ms": 3, "rnd": 16, "wr": 40, "ra": 1}
    target = sip_target(daemon)
    one_at_a_time = ["-l", "1", "-r", "20"]

    def place(batch: dict[str, tuple[int, int]]) -> None:  # queue -> (calls, talk ms)
        callers = {
            queue: sipp(
                workdir,
                ["-sn", "uac"],
                target,
                "-s",
                queue,
                "-m",
                str(n),
                *one_at_a_time,
                "-d",
                str(talk_ms),
            )
            for queue, (n, talk_ms) in batch.items()
        }
        try:
            for queue, proc in callers.items():
                assert finished(proc, 40) == 0, f"{queue}: {sipp_output(proc)}"
        finally:
            for proc in callers.values():
                stop(proc)

    # least_talk_time: one 2 s call first, then three of 0.3 s once it is over
    place({queue: (n, 300) for queue, n in counts.items()} | {"ltt": (1, 2000)})
    place({"ltt": (3, 300)})
    counts["ltt"] = 4
    for queue, n in counts.items():
        wait_until(lambda q=queue, n=n: len(call_agents(daemon, q)) == n, 10, f"{queue}'s rows")  # type: ignore[misc]
    return {queue: call_agents(daemon, queue) for queue in counts}


def test_linear_offers_the_first_member_in_configured_order(
    calls: dict[str, list[str | None]],
) -> None:
    assert calls["lin"] == ["lin3"] * 3  # lin3 is configured first, though its id sorts last


def test_round_robin_rotates_through_the_members(calls: dict[str, list[str | None]]) -> None:
    assert calls["rr"] == ["rr1", "rr2", "rr3", "rr1", "rr2", "rr3"]


def test_fewest_calls_offers_the_agent_with_fewer_calls(
    calls: dict[str, list[str | None]],
) -> None:
    # each call goes to an agent with the fewest calls so far (ties: configured order)
    assert calls["fc"] == ["fc1", "fc2", "fc3", "fc1"]


def test_longest_idle_offers_the_agent_idle_longest(calls: dict[str, list[str | None]]) -> None:
    # logged in li3, li1, li2: each answered call makes its agent the most recently idle
    assert calls["li"] == ["li3", "li1", "li2", "li3"]


def test_most_skilled_offers_the_highest_level(calls: dict[str, list[str | None]]) -> None:
    assert calls["ms"] == ["ms2"] * 3


def test_random_gives_every_agent_calls(calls: dict[str, list[str | None]]) -> None:
    counts = Counter(calls["rnd"])
    # 16 uniform draws between two agents: one left out has probability 2 * 2**-16
    assert set(counts) == {"rnd1", "rnd2"}, counts


def test_weighted_random_skews_towards_the_heavier_agent(
    calls: dict[str, list[str | None]],
) -> None:
    counts = Counter(calls["wr"])
    # weights 1 + level: wr1 2, wr2 6, so wr1 takes each call with p = 1/4: over 40 calls it
    # gets none with probability 1e-5 and at least half with 6e-4 (binomial tails)
    assert 0 < counts["wr1"] < counts["wr2"], counts


def test_ring_all_rings_everyone_and_the_first_answer_wins(
    daemon: DaemonProcess, calls: dict[str, list[str | None]], ringing_phone: Proc
) -> None:
    assert calls["ra"] == ["ra1"]
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        offered = db.execute(
            "SELECT agent_id FROM queue_events WHERE queue = 'ra' AND event = 'offer'"
        ).fetchall()
    assert sorted(agent for (agent,) in offered) == ["ra1", "ra2"]
    # ra2's SIPp phone ends well only once CANCELled (200 to it, 487 to the INVITE, ACKed)
    assert finished(ringing_phone, 10) == 0, sipp_output(ringing_phone)


def test_least_talk_time_offers_the_agent_who_talked_least(
    calls: dict[str, list[str | None]],
) -> None:
    # lt1 talked 2 s on the first call; lt2's three 0.3 s calls stay below that (round_robin or
    # fewest_calls would give lt1 the third call)
    assert calls["ltt"] == ["lt1", "lt2", "lt2", "lt2"]
