"""CdrWriter on a real SQLite file: batching, a real database failure and recovery, the backlog bound,
and the queue_log export an Asterisk reporting tool reads."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.runtime.metrics import Metrics
from engine.storage import StorageError, Store
from engine.storage.cdr import CallRecord, CdrWriter, QueueEventData
from engine.storage.queue_log import export_queue_log
from engine.storage.schema import calls, queue_events

T0 = 1_795_000_000.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/cdr.sqlite3")
    yield s
    await s.close()


def metric(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def one_call(writer: CdrWriter) -> None:
    writer.queue_event(
        "enter",
        call_id="c1",
        queue="support",
        data=QueueEventData(caller="+1555", position=1, orig_position=1),
        at=T0,
    )
    writer.queue_event(
        "ring_no_answer",
        call_id="c1",
        queue="support",
        agent_id="1002",
        data=QueueEventData(ring_s=20.0),
        at=T0 + 21,
    )
    writer.queue_event(
        "answer",
        call_id="c1",
        queue="support",
        agent_id="1001",
        data=QueueEventData(wait_s=30.4, ring_s=3.2),
        at=T0 + 31,
    )
    writer.queue_event(
        "complete",
        call_id="c1",
        queue="support",
        agent_id="1001",
        data=QueueEventData(wait_s=30.4, talk_s=95.6, orig_position=1, hangup_side="agent"),
        at=T0 + 127,
    )
    writer.call_ended(
        CallRecord(
            id="c1",
            sip_call_id="abc@pbx",
            arrived_at=T0 - 5,
            caller="+1555",
            queue="support",
            agent_id="1001",
            enqueued_at=T0,
            agent_answered_at=T0 + 31,
            ended_at=T0 + 127,
            disposition="answered",
            hangup_side="agent",
            wait_s=30.4,
            talk_s=95.6,
            flow_data={"account": "42"},
        )
    )


async def test_rows_are_written_in_one_flush(store: Store) -> None:
    metrics = Metrics()
    writer = CdrWriter(store, metrics)
    one_call(writer)
    writer.agent_event("1001", "available", at=T0 - 100)
    assert writer.backlog == 6
    assert await writer.flush() == 6
    assert writer.backlog == 0
    async with store.engine.connect() as conn:
        row = (await conn.execute(sa.select(calls))).mappings().one()
        kinds = (
            (await conn.execute(sa.select(queue_events.c.event).order_by(queue_events.c.at)))
            .scalars()
            .all()
        )
        data = (
            await conn.execute(
                sa.select(queue_events.c.data).where(queue_events.c.event == "answer")
            )
        ).scalar()
    assert row["disposition"] == "answered"
    assert row["flow_data"] == {"account": "42"}
    assert kinds == ["enter", "ring_no_answer", "answer", "complete"]
    assert data == {"wait_s": 30.4, "ring_s": 3.2}  # unset fields are omitted, not stored as null
    assert metric(metrics, "acd_cdr_rows_written_total", {"table": "queue_events"}) == 4
    assert metric(metrics, "acd_cdr_backlog_rows") == 0


async def test_unknown_event_names_are_a_programming_error(store: Store) -> None:
    writer = CdrWriter(store, Metrics())
    with pytest.raises(ValueError, match="unknown queue event"):
        writer.queue_event("teleport", call_id="c", queue="q")
    with pytest.raises(ValueError, match="unknown agent state"):
        writer.agent_event("a", "sleeping")


async def test_database_failure_keeps_rows_reports_not_ready_and_recovers(
    store: Store, tmp_path: Path
) -> None:
    metrics = Metrics()
    writer = CdrWriter(store, metrics, flush_interval_s=0.05, retry_max_s=0.2)
    task = asyncio.create_task(writer.run())
    try:
        # A real failure through the real driver: another process takes the table away.
        db = tmp_path / "cdr.sqlite3"
        with sqlite3.connect(db) as conn:
            conn.execute("ALTER TABLE queue_events RENAME TO queue_events_moved")
        writer.queue_event("enter", call_id="c9", queue="support", at=T0)
        for _ in range(100):
            if writer.last_error:
                break
            await asyncio.sleep(0.02)
        reason = await writer.ready_check()
        assert reason is not None
        assert "CDR writes failing (1 rows queued)" in reason
        assert "queue_events" in reason
        assert metric(metrics, "acd_storage_errors_total") >= 1
        assert writer.backlog == 1

        with sqlite3.connect(db) as conn:
            conn.execute("ALTER TABLE queue_events_moved RENAME TO queue_events")
        for _ in range(100):
            if writer.last_error is None and writer.backlog == 0:
                break
            await asyncio.sleep(0.05)
        assert await writer.ready_check() is None
        assert writer.backlog == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    async with store.engine.connect() as conn:
        assert (await conn.execute(sa.select(queue_events.c.call_id))).scalars().all() == ["c9"]


async def test_flush_failure_raises_storage_error_and_keeps_the_batch(
    store: Store, tmp_path: Path
) -> None:
    writer = CdrWriter(store, Metrics())
    with sqlite3.connect(tmp_path / "cdr.sqlite3") as conn:
        conn.execute("DROP TABLE agent_events")
    writer.agent_event("1001", "available", at=T0)
    with pytest.raises(StorageError, match="agent_events"):
        await writer.flush()
    assert writer.backlog == 1


async def test_backlog_is_bounded_and_drops_are_counted(store: Store) -> None:
    metrics = Metrics()
    writer = CdrWriter(store, metrics, max_backlog=5)
    for i in range(8):
        writer.queue_event("offer", call_id=f"c{i}", queue="q", at=T0 + i)
    writer.call_ended(CallRecord(id="kept", sip_call_id="x", arrived_at=T0))
    assert writer.backlog == 5
    assert metric(metrics, "acd_cdr_dropped_rows_total") == 4
    await writer.flush()
    async with store.engine.connect() as conn:
        ids = (await conn.execute(sa.select(queue_events.c.call_id))).scalars().all()
        kept = (await conn.execute(sa.select(calls.c.id))).scalars().all()
    assert ids == ["c4", "c5", "c6", "c7"]  # the oldest event rows went first
    assert kept == ["kept"]  # the call row survived


async def test_close_drains_everything(store: Store) -> None:
    writer = CdrWriter(store, Metrics())
    for i in range(CdrWriter.BATCH_ROWS + 10):
        writer.queue_event("offer", call_id=f"c{i}", queue="q", at=T0 + i)
    await writer.close()
    async with store.engine.connect() as conn:
        count = (await conn.execute(sa.select(sa.func.count()).select_from(queue_events))).scalar()
    assert count == CdrWriter.BATCH_ROWS + 10


EXPECTED_QUEUE_LOG = [
    "1794999900|NONE|NONE|Agent/1001|AGENTLOGIN|",
    "1794999950|NONE|NONE|Agent/1002|AGENTLOGIN|",
    "1795000000|c1|support|NONE|ENTERQUEUE||+1555|1",
    "1795000021|c1|support|Agent/1002|RINGNOANSWER|20000",
    "1795000022|NONE|NONE|Agent/1002|PAUSE|auto-paused",
    "1795000031|c1|support|Agent/1001|CONNECT|30|c1|3",
    "1795000127|c1|support|Agent/1001|COMPLETEAGENT|30|96|1",
    "1795000200|NONE|NONE|Agent/1002|UNPAUSE|",
    "1795000300|c2|sales|NONE|ENTERQUEUE||+1666|2",
    "1795000340|c2|sales|NONE|ABANDON|1|2|40",
    "1795000400|c3|sales|NONE|EXITWITHTIMEOUT|3|3|600",
    "1795000500|NONE|NONE|Agent/1001|AGENTLOGOFF|",
]


async def fill_queue_log(store: Store) -> None:
    writer = CdrWriter(store, Metrics())
    writer.agent_event("1001", "available", at=T0 - 100)
    writer.agent_event("1002", "available", at=T0 - 50)
    one_call(writer)
    writer.queue_event(
        "offer", call_id="c1", queue="support", agent_id="1002", at=T0 + 1
    )  # not exported
    writer.agent_event("1002", "not_ready", reason="auto-paused", at=T0 + 22)
    writer.agent_event("1001", "busy", call_id="c1", at=T0 + 31)  # no queue_log line
    # A ticket 1002 holds while paused: the agent's rows around it still read PAUSE .. UNPAUSE
    # (a task's rows have no queue_log line, and do not count as the agent's state).
    for state, at in (("task_accepted", T0 + 60), ("task_ended", T0 + 150)):
        writer.task_agent_event("1002", state, channel="ticket", task_id="t1", at=at)
    writer.agent_event("1002", "available", at=T0 + 200)
    writer.queue_event(
        "enter",
        call_id="c2",
        queue="sales",
        data=QueueEventData(caller="+1666", position=2),
        at=T0 + 300,
    )
    writer.queue_event(
        "abandon",
        call_id="c2",
        queue="sales",
        data=QueueEventData(position=1, orig_position=2, wait_s=40.0),
        at=T0 + 340,
    )
    writer.queue_event(
        "overflow",
        call_id="c3",
        queue="sales",
        data=QueueEventData(position=3, orig_position=3, wait_s=600.0, reason="timeout"),
        at=T0 + 400,
    )
    writer.agent_event("1001", "logged_out", at=T0 + 500)
    await writer.close()


async def test_queue_log_export_matches_asterisk_format(store: Store) -> None:
    await fill_queue_log(store)
    lines = [line async for line in export_queue_log(store)]
    assert lines == EXPECTED_QUEUE_LOG


async def test_queue_log_export_window_keeps_pause_state(store: Store) -> None:
    await fill_queue_log(store)
    lines = [line async for line in export_queue_log(store, since=T0 + 100, until=T0 + 350)]
    # 1002 was paused before the window: its 'available' inside it is an UNPAUSE, not a login.
    assert lines == EXPECTED_QUEUE_LOG[6:10]


async def test_cli_export_queue_log(store: Store, tmp_path: Path) -> None:
    await fill_queue_log(store)
    cfg = tmp_path / "acd.toml"
    cfg.write_text(f'[storage]\nsqlite_path = "{tmp_path}/cdr.sqlite3"\n')
    out = tmp_path / "queue_log"
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "engine.cli", "export", "queue-log", "--config", str(cfg), "-o", str(out),
         "--since", "2026-11-18T11:10:50"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # T0 + 250 s is 2026-11-18T11:10:50Z: everything from the second call on.
    assert out.read_text().splitlines() == EXPECTED_QUEUE_LOG[8:]


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The upsert of a live call's row is dialect-specific: both dialects, real servers."""
    from engine.config.schema import StorageConfig
    from engine.storage import database_url

    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/cdr.sqlite3"
    else:
        url = database_url(StorageConfig(url=request.getfixturevalue("postgres_url")))
    s = await Store.open(url)
    async with s.engine.begin() as conn:
        await conn.execute(calls.delete())
    yield s
    await s.close()


async def rows(store: Store) -> list[dict[str, object]]:
    async with store.engine.connect() as conn:
        found = (await conn.execute(sa.select(calls).order_by(calls.c.id))).mappings().all()
    return [dict(r) for r in found]


async def test_a_live_calls_row_is_written_then_completed_in_place(any_store: Store) -> None:
    from engine.storage.cdr import INTERRUPTED_REASON, close_interrupted_calls

    metrics = Metrics()
    writer = CdrWriter(any_store, metrics)
    arrived = CallRecord(id="c1", sip_call_id="s1", arrived_at=T0, caller="+1555", node="n1")
    writer.call_open(arrived)
    assert writer.backlog == 1
    assert await writer.flush() == 1
    (row,) = await rows(any_store)
    assert (row["ended_at"], row["queue"], row["node"]) == (None, None, "n1")
    # Queued, then answered before the next flush: only the newest live row is written.
    writer.call_open(CallRecord(id="c1", sip_call_id="s1", arrived_at=T0, queue="q", node="n1"))
    answered = CallRecord(
        id="c1", sip_call_id="s1", arrived_at=T0, queue="q", agent_id="1001", node="n1"
    )
    writer.call_open(answered)
    assert writer.backlog == 1
    assert await writer.flush() == 1
    (row,) = await rows(any_store)
    assert (row["queue"], row["agent_id"], row["ended_at"]) == ("q", "1001", None)
    ended = CallRecord(
        id="c1", sip_call_id="s1", arrived_at=T0, queue="q", agent_id="1001", node="n1",
        ended_at=T0 + 60, disposition="answered", talk_s=50.0,
    )  # fmt: skip
    writer.call_ended(ended)
    assert await writer.flush() == 1
    (row,) = await rows(any_store)
    assert (row["disposition"], row["ended_at"], row["talk_s"]) == ("answered", T0 + 60, 50.0)

    # A call that ends before a flush never writes its live row: one row, one write.
    writer.call_open(CallRecord(id="c2", sip_call_id="s2", arrived_at=T0, node="n1"))
    writer.call_ended(
        CallRecord(id="c2", sip_call_id="s2", arrived_at=T0, node="n1", ended_at=T0 + 1)
    )
    assert writer.backlog == 1
    assert await writer.flush() == 1
    assert metric(metrics, "acd_cdr_rows_written_total", {"table": "calls"}) == 4

    # Live rows of two nodes when n1 restarts after a crash: it closes only its own.
    writer.call_open(CallRecord(id="c3", sip_call_id="s3", arrived_at=T0, node="n1"))
    writer.call_open(CallRecord(id="c4", sip_call_id="s4", arrived_at=T0, node="n2"))
    await writer.flush()
    assert await close_interrupted_calls(any_store, "n1", T0 + 99) == 1
    by_id = {r["id"]: r for r in await rows(any_store)}
    assert (by_id["c3"]["disposition"], by_id["c3"]["ended_at"]) == ("failed", T0 + 99)
    assert by_id["c3"]["hangup_reason"] == INTERRUPTED_REASON
    assert by_id["c4"]["ended_at"] is None  # n2's call is live on n2
    assert by_id["c1"]["disposition"] == "answered"  # finished rows untouched
    assert await close_interrupted_calls(any_store, "n1", T0 + 100) == 0


async def test_a_live_row_replaced_or_ended_during_its_write_is_not_lost(store: Store) -> None:
    writer = CdrWriter(store, Metrics())
    writer.call_open(CallRecord(id="c1", sip_call_id="s1", arrived_at=T0))
    writer.call_open(CallRecord(id="c2", sip_call_id="s2", arrived_at=T0))
    flushing = asyncio.create_task(writer.flush())
    await asyncio.sleep(0)  # the flush has taken its batch and is writing
    writer.call_open(CallRecord(id="c1", sip_call_id="s1", arrived_at=T0, queue="q"))
    writer.call_ended(CallRecord(id="c2", sip_call_id="s2", arrived_at=T0, ended_at=T0 + 5))
    assert await flushing == 2
    assert writer.backlog == 2  # c1's newer live row and c2's final row are still to write
    assert await writer.flush() == 2
    by_id = {r["id"]: r for r in await rows(store)}
    assert by_id["c1"]["queue"] == "q"
    assert by_id["c2"]["ended_at"] == T0 + 5
    assert writer.backlog == 0


async def test_last_agent_is_the_newest_answering_member_within_the_window(store: Store) -> None:
    """Last-agent routing's query on the real store: newest answered call of that caller, among
    the given agents, no older than the window; unanswered calls and other callers don't count."""
    writer = CdrWriter(store, Metrics())

    def call(n: int, caller: str, at: float, agent: str | None) -> None:
        writer.call_ended(
            CallRecord(
                id=f"c{n}", sip_call_id=f"s{n}", arrived_at=at, caller=caller, queue="support",
                agent_id=agent, agent_answered_at=None if agent is None else at + 5,
                disposition="answered" if agent else "abandoned",
            )
        )  # fmt: skip

    now = time.time()
    call(1, "+1555", now - 3 * 86400, "old")  # outside a 2-day window
    call(2, "+1555", now - 3600, "1001")
    call(3, "+1555", now - 600, "1002")  # the newest answered by a member...
    call(4, "+1555", now - 60, None)  # ...an abandoned call since does not count
    call(5, "+1666", now - 30, "1003")  # another caller
    await writer.flush()
    assert await writer.last_agent("+1555", ["1001", "1002", "old"], 2.0) == "1002"
    assert await writer.last_agent("+1555", ["1001", "old"], 2.0) == "1001"  # 1002 not a member
    assert await writer.last_agent("+1555", ["old"], 2.0) is None
    assert await writer.last_agent("+1555", ["old"], 4.0) == "old"
    assert await writer.last_agent("anonymous", ["1001"], 2.0) is None
    assert await writer.last_agent("+1777", ["1001"], 2.0) is None
