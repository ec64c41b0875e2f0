"""SIGHUP under a live call: the call carries on, new routes/flows/queues/agents work at once, and
what the running Router cannot change in place is reported as needing a restart."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import DaemonFactory
from tests.e2e.peers import sipp

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
    # The new queue and agent were added live; the changed requirement waits for a restart.
    assert applied["restart_needed_for"] == ["queues.support"]

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
    import json
    import urllib.request

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
