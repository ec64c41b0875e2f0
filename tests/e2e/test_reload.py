"""SIGHUP or POST /api/v1/reload under live calls: the calls carry on, new routes/flows/queues/agents
work at once, changed queues and agents apply to the callers already waiting (in their places),
and a reload that would strand waiting callers is refused."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.configs import front_door
from tests.e2e.conftest import DaemonFactory, DaemonProcess
from tests.e2e.peers import free_port_block, sipp, stop
from tests.e2e.test_call_scenarios import (
    ADMIN,
    Peers,
    api,
    cdr,
    finished,
    login,
    peers,  # noqa: F401 - the fixture
    sipp_output,
    wait_until,
)

pytestmark = pytest.mark.e2e

BASE = """
[[trunks]]
name = "local"
allow = ["127.0.0.0/8"]

[[routes]]
number = "support"
flow = "support"

[[flows]]
name = "support"
steps = [{ type = "answer" }, { type = "enqueue", queue = "support" }]

[[queues]]
name = "support"
requirements = { support = 1 }

[[agents]]
id = "1001"
skills = { support = 5, sales = 5 }
queues = { support = 0 }
"""

ADDED = """
[[routes]]
number = "sales"
flow = "sales"

[[flows]]
name = "sales"
steps = [{ type = "answer" }, { type = "enqueue", queue = "sales" }]

[[queues]]
name = "sales"
requirements = { sales = 1 }

[[agents]]
id = "1002"
skills = { sales = 7 }
queues = { sales = 0 }
"""


def test_reload_under_a_live_call(start_daemon: DaemonFactory, tmp_path: Path) -> None:
    daemon = start_daemon(BASE)
    target = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")
    # Before the reload "sales" is not routed: 404, so SIPp's uac fails.
    refused = sipp(tmp_path, ["-sn", "uac"], target, "-s", "sales", "-m", "1", "-timeout", "10s")
    assert refused.wait(timeout=30) != 0
    live = sipp(tmp_path, ["-sn", "uac"], target, "-s", "support", "-m", "1", "-d", "6000")
    time.sleep(1.5)  # the live call is queued (no agent logged in) when the config changes

    text = daemon.config_path.read_text()
    changed = text.replace("requirements = { support = 1 }", "requirements = { support = 2 }")
    daemon.config_path.write_text(changed + ADDED)
    daemon.signal(signal.SIGHUP)
    applied = daemon.wait_for_log("reload_applied")
    # The new queue and agent were added live, and the changed requirement applied at once.
    assert applied["restart_needed_for"] == []

    accepted = sipp(tmp_path, ["-sn", "uac"], target, "-s", "sales", "-m", "1", "-d", "500")
    assert accepted.wait(timeout=30) == 0  # the new route, flow and queue work at once
    assert live.wait(timeout=30) == 0  # the call that was live during the reload completed
    time.sleep(1.5)
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        rows = db.execute(
            "SELECT dialed, queue, disposition, hangup_reason FROM calls ORDER BY arrived_at"
        ).fetchall()
    assert rows == [
        ("sales", None, "rejected", "404 No route for this number"),  # before the reload
        ("support", "support", "abandoned", "bye"),  # live across the reload
        ("sales", "sales", "abandoned", "bye"),  # routed by the new config
    ]
    assert daemon.stop() == 0


def test_waiting_callers_get_positions_and_announcements(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    admin = "admin-token-0123456789"
    extra = BASE.replace(
        "requirements = { support = 1 }", "requirements = { support = 1 }\nannounce_every_s = 1.0"
    )
    extra += f'\n[[api.tokens]]\nname = "ops"\nrole = "admin"\ntoken = "{admin}"\n'
    daemon = start_daemon(extra)
    target = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")
    first = sipp(tmp_path, ["-sn", "uac"], target, "-s", "support", "-m", "1", "-d", "5000")
    time.sleep(0.5)
    second = sipp(tmp_path, ["-sn", "uac"], target, "-s", "support", "-m", "1", "-d", "5000")
    time.sleep(3.0)
    request = urllib.request.Request(daemon.base_url + "/api/v1/calls")
    request.add_header("Authorization", f"Bearer {admin}")
    with urllib.request.urlopen(request, timeout=5) as resp:
        live = json.loads(resp.read())
    assert sorted((c["phase"], c["position"]) for c in live) == [("queued", 1), ("queued", 2)]
    oldest = max(live, key=lambda c: c["age_s"])
    assert oldest["position"] == 1  # the earlier caller is ahead
    _, exposition, _ = daemon.get("/metrics")
    count = next(
        float(line.split()[-1])
        for line in exposition.decode().splitlines()
        if line.startswith('acd_queue_announcements_total{queue="support"}')
    )
    assert count >= 2  # each caller heard at least one announcement in 3 s at 1 s intervals
    assert first.wait(timeout=30) == 0
    assert second.wait(timeout=30) == 0


def reload_api(daemon: DaemonProcess) -> int:
    """POST /api/v1/reload as admin; the HTTP status."""
    request = urllib.request.Request(daemon.base_url + "/api/v1/reload", data=b"", method="POST")
    request.add_header("Authorization", f"Bearer {ADMIN}")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def queued(daemon: DaemonProcess) -> list[int]:
    return sorted(
        int(c["position"])  # type: ignore[call-overload]
        for c in api(daemon, "/api/v1/calls")  # type: ignore[union-attr]
        if c["phase"] == "queued"  # type: ignore[index]
    )


def test_waiting_callers_keep_their_places_and_the_reload_picks_their_agents(
    start_daemon: DaemonFactory,
    peers: Peers,  # noqa: F811
) -> None:
    """Two callers wait for skill level 9, which nobody has; the reload (through the API) lowers
    the queue's requirement, makes it "most skilled" and raises agent B's skill to 9. The first
    caller must go to B (under the old longest-idle strategy, or with B's old level, it would go to
    A, who logged in first) and the second to A; a reload removing the queue while they wait is
    refused first, and changes nothing."""
    a, b = peers.agent("agent_answer"), peers.agent("agent_answer")
    contact = {name: f"sip:{name}@127.0.0.1:{p.sip_port}" for name, p in (("A", a), ("B", b))}  # type: ignore[attr-defined]
    flow = '{ type = "answer" }, { type = "enqueue", queue = "support" }'
    queue = (
        '[[queues]]\nname = "support"\nrequirements = { support = 9 }\n'
        'wrap_up_s = 0.0\nrecord = "never"\n'
    )
    agents = "".join(
        f'[[agents]]\nid = "{name}"\nlogin = "static"\ncontact = "{contact[name]}"\n'
        f"skills = {{ support = {level} }}\nqueues = {{ support = 0 }}\n"
        for name, level in (("A", 5), ("B", 3))
    )
    base = front_door(ADMIN, steps=flow, rtp_base=free_port_block(40)) + queue + agents
    daemon = start_daemon(base)
    login(daemon, "A")  # idle longest
    time.sleep(0.05)
    login(daemon, "B")
    first = peers.caller(daemon, 1500)
    wait_until(lambda: queued(daemon) == [1], 10, "the first caller queued")
    second = peers.caller(daemon, 1500)
    wait_until(lambda: queued(daemon) == [1, 2], 10, "the second caller queued")
    text = daemon.config_path.read_text()

    gone = text.replace(queue, "").replace(flow, '{ type = "answer" }, { type = "hangup" }')
    daemon.config_path.write_text(gone.replace("queues = { support = 0 }", "queues = {}"))
    assert reload_api(daemon) == 422
    refused = daemon.wait_for_log("reload_rejected")
    assert "queues.support: removed while 2 waiting in it" in str(refused["reason"])
    assert queued(daemon) == [1, 2]

    changed = (
        text.replace('name = "support"\nrequirements = { support = 9 }',
                     'name = "support"\nstrategy = "most_skilled"\nrequirements = { support = 4 }')
        .replace(f'contact = "{contact["B"]}"\nskills = {{ support = 3 }}',
                 f'contact = "{contact["B"]}"\nskills = {{ support = 9 }}')
    )  # fmt: skip
    daemon.config_path.write_text(changed)
    assert reload_api(daemon) == 200
    assert daemon.wait_for_log("reload_applied")["restart_needed_for"] == []
    assert finished(first, 20) == 0, sipp_output(first)
    assert finished(second, 20) == 0, sipp_output(second)
    rows, events = cdr(daemon, 2)
    assert [(r["disposition"], r["agent_id"]) for r in rows] == [
        ("answered", "B"),
        ("answered", "A"),
    ]
    assert [e for e in events if e[0] == "offer"] == [("offer", "B", None), ("offer", "A", None)]
    assert daemon.stop() == 0


def test_a_reload_gives_waiting_callers_the_new_announcements_and_max_wait(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """A caller waits (no agent logged in) in a queue that neither announces nor gives up; the
    reload sets ``announce_every_s`` and a ``max_wait_s`` that counts from when it joined, so
    it hears announcements from then on and goes to overflow at 2.5 s of waiting."""
    daemon = start_daemon(BASE)
    target = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")
    caller = sipp(tmp_path, ["-sn", "uac"], target, "-s", "support", "-m", "1", "-d", "15000")
    daemon.wait_for_log("call_arrived")
    time.sleep(1.0)  # waiting in the queue, hearing only the music
    keys = (
        'requirements = { support = 1 }\nannounce_every_s = 0.4\nmax_wait_s = 2.5\noverflow = "bye"'
    )
    bye = '\n[[flows]]\nname = "bye"\nsteps = [{ type = "hangup" }]\n'
    daemon.config_path.write_text(
        daemon.config_path.read_text().replace("requirements = { support = 1 }", keys) + bye
    )
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("reload_applied")
    ended = daemon.wait_for_log("call_ended", timeout_s=10)
    assert ended["disposition"] == "flow_ended"  # the overflow flow hung up
    events = [line.get("event") for line in daemon.log_lines()]
    # Announced (a prompt takes about a second) only after the reload: the caller heard them.
    assert "queue_announcement" in events[events.index("reload_applied") :]
    _, trail = cdr(daemon)
    assert trail == [("enter", None, None), ("overflow", None, "timeout")]
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        (data,) = db.execute("SELECT data FROM queue_events WHERE event = 'overflow'").fetchone()
    # Counted from when the caller joined, not from the reload (about 1 s later).
    assert json.loads(data)["wait_s"] == pytest.approx(2.5, abs=0.4)
    stop(caller)  # SIPp's uac did not expect the BYE: it is no judge here
    assert daemon.stop() == 0
