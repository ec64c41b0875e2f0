"""The interval and agent reports' figures from hand-made rows on a real SQLite file.

Every expected number below was worked out by hand from the rows (the comments show how).
Window [1000, 2000), 900 s intervals, queue "support" with a 20 s service-level threshold.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.api.reports import agent_figures, csv_body, interval_figures
from engine.config import StorageConfig
from engine.storage import Store, database_url, queries, reports
from engine.storage import tasks as task_store
from engine.storage.schema import agent_events, calls, tasks

SINCE, UNTIL = 1000.0, 2000.0

# id, agent, arrived, answered_at, disposition, wait, talk, ended_at
CALLS = [
    ("c1", "A", 1010.0, 1025.0, "answered", 15.0, 100.0, 1125.0),  # within 20 s
    ("c2", "A", 1020.0, 1060.0, "transferred", 40.0, 200.0, 1400.0),  # answered late, transferred
    ("c3", None, 1030.0, None, "abandoned", 30.0, None, 1060.0),  # abandoned after T
    ("c4", None, 1040.0, None, "abandoned", 8.0, None, 1048.0),  # abandoned within T
    ("c7", None, 1060.0, None, "abandoned", 2.0, None, 1062.0),  # short abandon (< 5 s)
    ("c5", "A", 1050.0, None, None, None, None, None),  # live: no figure yet
    ("c6", "A", 2100.0, 2110.0, "answered", 10.0, 50.0, 2200.0),  # after the window
]
# agent A's states (channel NULL): at, state, call
STATES = [
    (900.0, "available", None),  # before the window: A is available at 1000
    (1025.0, "busy", "c1"),
    (1125.0, "wrap_up", "c1"),
    (1135.0, "available", None),
    (1200.0, "busy", "c2"),
    (1400.0, "wrap_up", "c2"),
    (1430.0, "not_ready", None),
    (1500.0, "logged_out", None),
]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(
        database_url(StorageConfig(sqlite_path="var/cdr.sqlite3"), base_dir=tmp_path)
    )
    async with s.engine.begin() as conn:
        for cid, agent, arrived, answered, disp, wait, talk, ended in CALLS:
            await conn.execute(
                calls.insert().values(
                    id=cid, sip_call_id=cid, queue="support", agent_id=agent,
                    arrived_at=arrived, agent_answered_at=answered, disposition=disp,
                    wait_s=wait, talk_s=talk, ended_at=ended,
                )
            )  # fmt: skip
        # An agent-first callback's outbound call (flow "callback") is no contact of its own.
        await conn.execute(
            calls.insert().values(
                id="cb", sip_call_id="", queue="support", agent_id="A", flow="callback",
                arrived_at=1500.0, agent_answered_at=1510.0, disposition="answered",
                talk_s=30.0, ended_at=1540.0,
            )
        )  # fmt: skip
        for at, state, call_id in STATES:
            await conn.execute(
                agent_events.insert().values(at=at, agent_id="A", state=state, call_id=call_id)
            )
        # A task row in the same log (a chat held 1100-1160) is no agent state.
        for at, state in ((1100.0, "task_accepted"), (1160.0, "task_ended")):
            await conn.execute(
                agent_events.insert().values(
                    at=at, agent_id="A", state=state, channel="chat", task_id="t1"
                )
            )
        for tid, channel, state, arrived, accepted, handle in (
            ("t1", "chat", "completed", 1050.0, 1100.0, 60.0),
            ("t2", "chat", "cancelled", 1060.0, None, None),
            ("t3", "chat", "waiting", 1070.0, None, None),  # still open: no figure
            ("t4", "email", "completed", 1080.0, 1090.0, 300.0),
        ):
            await conn.execute(
                tasks.insert().values(
                    id=tid, channel=channel, queue="support", state=state, priority=0,
                    arrived_at=arrived, enqueued_at=arrived, accepted_at=accepted,
                    handle_s=handle, wait_s=None if accepted is None else accepted - arrived,
                )
            )  # fmt: skip
    yield s
    await s.close()


async def test_call_rows_are_the_finished_calls_of_the_window(store: Store) -> None:
    rows = await reports.call_rows(store, SINCE, UNTIL, ["support"])
    assert [r["id"] for r in rows] == ["c1", "c2", "c3", "c4", "c7"]
    assert await reports.call_rows(store, SINCE, UNTIL, ["sales"]) == []


async def test_a_callbacks_outbound_call_is_no_contact_of_its_own(store: Store) -> None:
    stats = await queries.stat_rows(store, SINCE, UNTIL, ["support"])
    assert len(stats) == 5  # c1, c2, c3, c4, c7: not the callback's call "cb"
    assert all(r["talk_s"] != 30.0 for r in stats)


async def test_agent_state_spans_clip_to_the_window(store: Store) -> None:
    spans, wrap = await reports.agent_state_spans(store, SINCE, UNTIL)
    assert spans == {
        "A": {
            "available": 25.0 + 65.0,  # 1000-1025, 1135-1200
            "busy": 100.0 + 200.0,  # 1025-1125, 1200-1400
            "wrap_up": 10.0 + 30.0,  # 1125-1135, 1400-1430
            "not_ready": 70.0,  # 1430-1500
            "logged_out": 500.0,  # 1500-2000
        }
    }
    assert wrap == {"c1": 10.0, "c2": 30.0}
    # A narrower window starting mid-busy: the state at 1100 is c1's busy from 1025.
    spans, _ = await reports.agent_state_spans(store, 1100.0, 1130.0)
    assert spans == {"A": {"busy": 25.0, "wrap_up": 5.0}}


@pytest.mark.parametrize(
    ("definition", "expected"),
    [
        ("a", 1 / 2),  # c1 within / answered c1, c2
        ("b", (1 + 2) / 5),  # (c1 + c4, c7 abandoned within) / (2 answered + 3 abandoned)
        ("c", 1 / 5),  # c1 / every answered and abandoned
        ("d", 1 / 3),  # c1 / (2 answered + c3, the only abandon after T)
        ("e", 1 / 4),  # c1 / (5 - c7, the one short abandon)
    ],
)
async def test_interval_figures_by_definition(
    store: Store, definition: str, expected: float
) -> None:
    rows = await reports.call_rows(store, SINCE, UNTIL, None)
    task_rows = await reports.task_rows(store, SINCE, UNTIL, None)
    _, wrap = await reports.agent_state_spans(store, SINCE, UNTIL)
    figures = interval_figures(
        SINCE, "support", rows, task_rows, wrap,
        threshold_s=20.0, definition=definition, short_abandon_s=5.0,
    )  # fmt: skip
    assert figures.service_level_by_definition == pytest.approx(expected, abs=1e-6)
    assert figures.figures.offered == 5
    assert figures.figures.answered == 2
    assert figures.figures.abandoned == 3
    assert figures.talk_s == 150.0  # (100 + 200) / 2
    assert figures.wrap_up_s == 20.0  # (10 + 30) / 2
    assert figures.figures.aht_s == 170.0  # (110 + 230) / 2
    assert figures.transferred == 1
    assert figures.transfer_rate == 0.5
    assert figures.figures.abandon_rate == 0.6  # 3 / 5
    chat, email = figures.tasks["chat"], figures.tasks["email"]
    assert (chat.offered, chat.handled, chat.cancelled, chat.average_handle_s) == (2, 1, 1, 60.0)
    assert (email.offered, email.handled, email.cancelled, email.average_handle_s) == (
        1, 1, 0, 300.0,
    )  # fmt: skip


async def test_agent_figures(store: Store) -> None:
    spans, wrap = await reports.agent_state_spans(store, SINCE, UNTIL)
    rows = await reports.call_rows(store, SINCE, UNTIL, None)
    handle = await task_store.task_handle_seconds(store, SINCE, UNTIL)
    figures = agent_figures(
        "A",
        spans["A"],
        [r for r in rows if r["agent_id"] == "A"],
        wrap,
        {c: s for (a, c), s in handle.items() if a == "A"},
    )
    assert figures.handling_s == 340.0  # busy 300 + wrap-up 40
    assert figures.logged_in_s == 500.0  # 90 + 300 + 40 + 70
    assert figures.occupancy == round(340 / 430, 6)  # handling / (handling + available 90)
    assert figures.utilisation == 0.68  # 340 / 500
    assert figures.calls_answered == 2
    assert (figures.talk_s, figures.wrap_up_s, figures.transferred) == (150.0, 20.0, 1)
    assert figures.task_handle_s == {"chat": 60.0}
    idle = agent_figures("B", {}, [], {}, {})
    assert (idle.occupancy, idle.utilisation, idle.calls_answered) == (None, None, 0)


async def test_csv_has_a_header_and_one_row_per_item(store: Store) -> None:
    spans, wrap = await reports.agent_state_spans(store, SINCE, UNTIL)
    items = [agent_figures("A", spans["A"], [], wrap, {}), agent_figures("B", {}, [], {}, {})]
    parsed = list(csv.DictReader(io.StringIO(csv_body(items))))
    assert [r["agent"] for r in parsed] == ["A", "B"]
    assert parsed[0]["state_s.busy"] == "300.0"
    assert parsed[0]["utilisation"] == "0.68"
    assert parsed[1]["utilisation"] == ""  # None
    assert parsed[1]["state_s.busy"] == ""  # B has no such key: empty, same header


async def test_open_tasks_are_no_figures(store: Store) -> None:
    rows = await reports.task_rows(store, SINCE, UNTIL, ["support"])
    assert sorted(r["state"] for r in rows) == ["cancelled", "completed", "completed"]
    async with store.engine.connect() as conn:
        total = (await conn.execute(sa.select(sa.func.count()).select_from(tasks))).scalar_one()
    assert total == 4
