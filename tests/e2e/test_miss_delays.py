"""A missed offer through the daemon: the queue's busy / reject / no-answer delay keeps the agent
from being offered again before it has passed, and ``auto_pause_after`` consecutive misses pause it.

Test UAS processes (``sipp/simple_uas.py``) stand in for the phones: one answers 486 to every
INVITE, one 603, one rings for good (180), one answers 200. Each queue (linear) has a missing
agent first and an answering one second, and SIPp's uac calls it one call at a time: every call the
missing agent is offered it misses, the answering agent takes it; the daemon's queue_events say
when each offer and miss happened. A queue with a wrap-up (``wrap``) has the same daemon check
the wrap-up time written into the call's row.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import pytest

from tests.e2e.configs import front_door
from tests.e2e.conftest import DaemonProcess, running_daemon, wait_until
from tests.e2e.peers import simple_uas, sipp, stop
from tests.e2e.test_call_scenarios import ADMIN, api, finished, login, sip_target, sipp_output

pytestmark = pytest.mark.e2e

DELAY_S = 1.5
# queue -> (the missing agent's UAS status, its queue keys)
QUEUES = {
    "busy": (486, f"busy_delay_s = {DELAY_S}"),
    "reject": (603, f"reject_delay_s = {DELAY_S}"),
    "noans": (180, f"no_answer_delay_s = {DELAY_S}\nring_timeout_s = 0.3"),
    "pause": (486, "auto_pause_after = 2"),
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    workdir = tmp_path_factory.mktemp("miss_delays")
    with (
        simple_uas(workdir, 200) as answers,
        simple_uas(workdir, 486) as busy,
        simple_uas(workdir, 603) as declines,
        simple_uas(workdir, 180) as rings,
    ):
        ports = {200: answers, 486: busy, 603: declines, 180: rings}
        parts = [front_door(ADMIN, numbers=tuple(QUEUES))]
        for queue, (status, keys) in QUEUES.items():
            parts.append(
                f'[[queues]]\nname = "{queue}"\nstrategy = "linear"\nwrap_up_s = 0.0\n'
                f'record = "never"\n{keys}\n'
            )
            for agent, port in ((f"{queue}-miss", ports[status]), (f"{queue}-ok", answers)):
                parts.append(
                    f'[[agents]]\nid = "{agent}"\nlogin = "static"\n'
                    f'contact = "sip:{agent}@127.0.0.1:{port}"\nqueues = {{ {queue} = 0 }}\n'
                )
        parts.append('[[queues]]\nname = "wrap"\nwrap_up_s = 1.0\nrecord = "never"\n')
        parts.append(
            f'[[agents]]\nid = "wrapper"\nlogin = "static"\n'
            f'contact = "sip:wrapper@127.0.0.1:{answers}"\nqueues = {{ wrap = 0 }}\n'
        )
        parts[0] = front_door(ADMIN, numbers=(*QUEUES, "wrap"))
        home = workdir / "daemon"
        home.mkdir()
        with running_daemon(home, "\n".join(parts)) as running:
            for queue in QUEUES:
                login(running, f"{queue}-miss")
                login(running, f"{queue}-ok")
            login(running, "wrapper")
            yield running


def events(daemon: DaemonProcess, queue: str) -> list[tuple[float, str, str | None, str | None]]:
    """(at, event, agent, reason) of ``queue``'s queue events, in order."""
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        rows = db.execute(
            "SELECT at, event, agent_id, data FROM queue_events WHERE queue = ? ORDER BY id",
            (queue,),
        ).fetchall()
    out = []
    for at, ev, agent, data in rows:
        fields = (json.loads(data) if data else None) or {}
        out.append((at, ev, agent, fields.get("reason")))
    return out


def answered(daemon: DaemonProcess, queue: str) -> list[str | None]:
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        rows = db.execute(
            "SELECT agent_id FROM calls WHERE queue = ? AND ended_at IS NOT NULL "
            "ORDER BY arrived_at",
            (queue,),
        ).fetchall()
    return [row[0] for row in rows]


@pytest.fixture(scope="module")
def placed(daemon: DaemonProcess) -> dict[str, int]:
    """Calls to every queue, one at a time per queue, queues side by side, for longer than two
    delays (10 calls of ~0.35 s, plus the rings that time out)."""
    counts = {"busy": 10, "reject": 10, "noans": 8, "pause": 6}
    target = sip_target(daemon)
    talk_ms = {"noans": "800"}  # outlasts a ring timeout (0.3 s), or the caller gives up first
    callers = [
        sipp(
            daemon.workdir,
            ["-sn", "uac"],
            target,
            "-s",
            queue,
            "-m",
            str(n),
            "-l",
            "1",
            "-r",
            "20",
            "-d",
            talk_ms.get(queue, "300"),
        )
        for queue, n in counts.items()
    ]
    try:
        for proc in callers:
            assert finished(proc, 40) == 0, sipp_output(proc)
    finally:
        for proc in callers:
            stop(proc)
    for queue, n in counts.items():
        wait_until(lambda q=queue, n=n: len(answered(daemon, q)) == n, 10, f"{queue}'s rows")  # type: ignore[misc]
    return counts


@pytest.mark.parametrize(("queue", "reason"), [("busy", "busy"), ("reject", "reject"),
                                               ("noans", "no_answer")])  # fmt: skip
def test_a_missed_agent_is_not_offered_again_before_the_delay(
    daemon: DaemonProcess, placed: dict[str, int], queue: str, reason: str
) -> None:
    trail = events(daemon, queue)
    miss = f"{queue}-miss"
    misses = [at for at, ev, agent, why in trail if ev == "ring_no_answer" and agent == miss]
    offers = [at for at, ev, agent, _ in trail if ev == "offer" and agent == miss]
    assert {why for _, ev, agent, why in trail if ev == "ring_no_answer"} == {reason}, trail
    # it was offered again (the calls outlast the delay), each time no sooner than the delay
    assert len(misses) >= 2, trail
    for missed_at in misses:
        later = [at for at in offers if at > missed_at]
        if later:
            assert later[0] - missed_at >= DELAY_S - 0.05, (missed_at, later[0], trail)
    # meanwhile the other agent took calls without the missing one being offered them first
    assert answered(daemon, queue).count(f"{queue}-ok") == placed[queue]
    direct = sum(1 for c in trail_calls(trail) if c == [f"{queue}-ok"])
    assert direct >= 1, trail


def trail_calls(trail: list[tuple[float, str, str | None, str | None]]) -> list[list[str | None]]:
    """The agents each call was offered to, in order (calls split at their 'enter')."""
    out: list[list[str | None]] = []
    for _, ev, agent, _ in trail:
        if ev == "enter":
            out.append([])
        elif ev == "offer" and out:
            out[-1].append(agent)
    return out


def test_consecutive_misses_pause_the_agent(daemon: DaemonProcess, placed: dict[str, int]) -> None:
    trail = events(daemon, "pause")
    offers = [agent for _, ev, agent, _ in trail if ev == "offer"]
    # no delay: the first two calls are offered to pause-miss (busy) first; then it is paused
    assert offers.count("pause-miss") == 2, trail
    assert answered(daemon, "pause") == ["pause-ok"] * placed["pause"]
    view = api(daemon, "/api/v1/agents/pause-miss")
    assert (view["state"], view["reason"]) == ("not_ready", "auto-paused"), view
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        recorded = db.execute(
            "SELECT state, reason FROM agent_events WHERE agent_id = 'pause-miss' ORDER BY id"
        ).fetchall()
    assert recorded[-1] == ("not_ready", "auto-paused"), recorded
    # made ready again, it is offered the next call first (linear) and misses it again
    api(daemon, "/api/v1/agents/pause-miss/state", {"state": "ready"})
    caller = sipp(daemon.workdir, ["-sn", "uac"], sip_target(daemon), "-s", "pause", "-m", "1",
                  "-d", "300")  # fmt: skip
    try:
        assert finished(caller, 20) == 0, sipp_output(caller)
    finally:
        stop(caller)
    wait_until(lambda: len(answered(daemon, "pause")) == placed["pause"] + 1, 10, "the row")
    offers = [agent for _, ev, agent, _ in events(daemon, "pause") if ev == "offer"]
    assert offers[-2:] == ["pause-miss", "pause-ok"], offers


def wrap_up_of(daemon: DaemonProcess, n: int) -> float | None:
    """The wrap_up_s of the ``n``-th (from 1) call to ``wrap``, once written; None before."""
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        rows = db.execute(
            "SELECT wrap_up_s FROM calls WHERE queue = 'wrap' AND ended_at IS NOT NULL "
            "ORDER BY arrived_at"
        ).fetchall()
    return rows[n - 1][0] if len(rows) >= n else None


def test_the_calls_row_has_the_wrap_up_the_agent_took(daemon: DaemonProcess) -> None:
    """The configured 1 s when the timer ends it; less when the agent is made ready early."""

    def one_call() -> None:
        caller = sipp(daemon.workdir, ["-sn", "uac"], sip_target(daemon), "-s", "wrap",
                      "-m", "1", "-d", "300")  # fmt: skip
        try:
            assert finished(caller, 20) == 0, sipp_output(caller)
        finally:
            stop(caller)

    one_call()
    wait_until(lambda: wrap_up_of(daemon, 1) is not None, 10, "the first call's wrap-up")
    assert 0.95 <= wrap_up_of(daemon, 1) <= 1.6  # type: ignore[operator]
    one_call()
    wait_until(lambda: state_of(daemon, "wrapper") == "wrap_up", 5, "wrap-up")
    api(daemon, "/api/v1/agents/wrapper/state", {"state": "ready"})
    wait_until(lambda: wrap_up_of(daemon, 2) is not None, 10, "the second call's wrap-up")
    assert 0.0 <= wrap_up_of(daemon, 2) < 0.7  # type: ignore[operator]


def test_a_queue_without_wrap_up_writes_zero(daemon: DaemonProcess, placed: dict[str, int]) -> None:
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        rows = db.execute("SELECT wrap_up_s, hold_s FROM calls WHERE queue = 'busy'").fetchall()
    assert rows == [(0.0, 0.0)] * placed["busy"]  # and nobody was held


def state_of(daemon: DaemonProcess, agent_id: str) -> str:
    return str(api(daemon, f"/api/v1/agents/{agent_id}")["state"])
