"""The interval and agent reports of a running daemon, reconciled with its CDR rows to the call.

SIPp's built-in uac places three calls to ``support``: two answered by one static agent (a SIPp
UAS answering two calls) with a 1 s wrap-up, and one while the agent is not ready, which the
caller abandons. The report's figures must be what the daemon's own SQLite rows (calls and
agent_events) give when worked out here, in JSON and in CSV.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import sqlite3
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import DaemonFactory, DaemonProcess, wait_until
from tests.e2e.peers import sipp, stop
from tests.e2e.test_call_scenarios import (
    ADMIN,
    SCENARIOS,
    api,
    config,
    finished,
    login,
    sip_target,
    sipp_output,
    state,
)

pytestmark = pytest.mark.e2e


def get(daemon: DaemonProcess, path: str, accept: str = "application/json") -> str:
    request = urllib.request.Request(daemon.base_url + path)
    request.add_header("Authorization", f"Bearer {ADMIN}")
    request.add_header("Accept", accept)
    with urllib.request.urlopen(request, timeout=5) as resp:
        return str(resp.read().decode())


def caller(daemon: DaemonProcess, workdir: Path, hold_ms: int) -> int:
    proc = sipp(workdir, ["-sn", "uac"], sip_target(daemon), "-s", "support", "-m", "1",
                "-d", str(hold_ms))  # fmt: skip
    try:
        return finished(proc, 20)
    finally:
        stop(proc)


def test_reports_match_the_cdr_rows(start_daemon: DaemonFactory, tmp_path: Path) -> None:
    since = time.time() - 1
    agent = sipp(tmp_path, ["-sf", str(SCENARIOS / "agent_answer.xml")], None, "-m", "2")
    try:
        daemon = start_daemon(config({"a1": agent.sip_port}))  # type: ignore[attr-defined]
        login(daemon, "a1")
        db_path = daemon.workdir / "var" / "acd.sqlite3"

        def finished_calls() -> list[sqlite3.Row]:
            with sqlite3.connect(db_path) as db:
                db.row_factory = sqlite3.Row
                return db.execute(
                    "SELECT * FROM calls WHERE ended_at IS NOT NULL ORDER BY arrived_at"
                ).fetchall()

        for n in (1, 2):
            assert caller(daemon, tmp_path, 1000) == 0
            wait_until(lambda n=n: len(finished_calls()) == n, 10, f"call {n}'s row")
            wait_until(lambda: state(daemon, "a1") == "available", 10, "a1 out of wrap-up")
        assert finished(agent, 10) == 0, sipp_output(agent)
        api(daemon, "/api/v1/agents/a1/state", {"state": "not_ready", "reason": "lunch"})
        assert caller(daemon, tmp_path, 800) == 0  # nobody to answer: hangs up in the queue
        wait_until(lambda: len(finished_calls()) == 3, 10, "the abandoned call's row")
        until = time.time() + 1
    finally:
        stop(agent)

    rows = finished_calls()
    assert [r["disposition"] for r in rows] == ["answered", "answered", "abandoned"]
    answered = rows[:2]
    with sqlite3.connect(db_path) as db:
        log = db.execute(
            "SELECT at, state, call_id FROM agent_events "
            "WHERE agent_id = 'a1' AND channel IS NULL ORDER BY at, id"
        ).fetchall()
    # Each answered call's wrap-up: from its wrap_up row to the agent's next state row.
    wrap = {
        call_id: following[0] - at
        for (at, st, call_id), following in itertools.pairwise(log)
        if st == "wrap_up"
    }
    assert set(wrap) == {r["id"] for r in answered}
    assert all(0.9 <= w <= 3.0 for w in wrap.values()), wrap  # the queue's wrap_up_s = 1.0
    mean_talk = sum(r["talk_s"] for r in answered) / 2
    mean_wrap = sum(wrap.values()) / 2

    (interval,) = json.loads(
        get(daemon, f"/api/v1/stats/intervals?since={since}&until={until}&interval_s=3600&sl=c")
    )
    figures = interval["figures"]
    assert (figures["offered"], figures["answered"], figures["abandoned"]) == (3, 2, 1)
    assert figures["asa_s"] == pytest.approx(sum(r["wait_s"] for r in answered) / 2, abs=1e-6)
    assert interval["talk_s"] == pytest.approx(mean_talk, abs=1e-5)
    assert interval["wrap_up_s"] == pytest.approx(mean_wrap, abs=1e-5)
    assert figures["aht_s"] == pytest.approx(mean_talk + mean_wrap, abs=1e-5)
    assert all(r["wait_s"] <= 20.0 for r in answered)  # within the threshold...
    assert interval["service_level_by_definition"] == pytest.approx(2 / 3, abs=1e-6)  # ...of 3
    assert (interval["transferred"], interval["transfer_rate"]) == (0, 0.0)

    (a1,) = json.loads(get(daemon, f"/api/v1/stats/agents?since={since}&until={until}&agent=a1"))
    assert a1["calls_answered"] == 2
    assert a1["talk_s"] == pytest.approx(mean_talk, abs=1e-5)
    assert a1["state_s"]["wrap_up"] == pytest.approx(sum(wrap.values()), abs=1e-5)
    # Busy and wrap-up over those plus available; over every logged-in second.
    handling = a1["state_s"]["busy"] + a1["state_s"]["wrap_up"]
    assert a1["occupancy"] == pytest.approx(
        handling / (handling + a1["state_s"]["available"]), abs=1e-5
    )
    assert a1["utilisation"] == pytest.approx(handling / a1["logged_in_s"], abs=1e-5)
    assert 0 < a1["utilisation"] < a1["occupancy"] < 1  # not-ready time counts only in the first

    table = list(
        csv.DictReader(
            io.StringIO(
                get(daemon, f"/api/v1/stats/agents?since={since}&until={until}", "text/csv")
            )
        )
    )
    assert {r["agent"]: r["calls_answered"] for r in table} == {"a1": "2"}
    assert daemon.stop() == 0
