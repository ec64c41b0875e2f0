"""The ticket lifecycle, SLA clocks, scheduled follow-ups and the task rows of the agent event log.

The task service runs with the real RoutingService, Router, task writer, CDR writer and store
(SQLite, and PostgreSQL where the storage tests run it); its timers (SLA due times, auto-close,
``not_before``) and its wall clock are a ``ManualClock``, so hours of ticket life pass without
sleeping. Offers still come from the Router on the real event loop, as in the daemon.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
import structlog
from prometheus_client import CollectorRegistry, generate_latest

from engine.config import StorageConfig, parse_config
from engine.routing.service import RoutingService
from engine.runtime.events import Event, EventBus
from engine.runtime.metrics import Metrics
from engine.storage import Store, database_url
from engine.storage.cdr import CdrWriter
from engine.storage.schema import agent_events, task_events, task_messages, task_states, tasks
from engine.storage.tasks import TaskWriter, task_handle_seconds
from engine.tasks import (
    IllegalTransition,
    TaskConflict,
    TaskMetrics,
    TaskService,
    TaskState,
    UnknownTask,
)
from tests.engine.clocks import ManualClock

CONFIG = """
[[queues]]
name = "desk"
wrap_up_s = 0.0
reopen_sticky_s = 300.0
close_solved_after_s = 7200.0
sla = { ticket = { first_response_s = 600.0, resolution_s = 3600.0 } }

[[queues]]
name = "chat"
wrap_up_s = 0.0

[[agents]]
id = "1001"
queues = { desk = 0, chat = 0 }
capacity = { ticket = 2, chat = 1 }

[[agents]]
id = "1002"
queues = { desk = 1 }
capacity = { ticket = 2 }
"""


@dataclass
class Desk:
    clock: ManualClock
    routing: RoutingService
    service: TaskService
    writer: TaskWriter
    cdr: CdrWriter
    store: Store
    events: list[Event]
    registry: CollectorRegistry
    runner: asyncio.Task[None]

    def offered(self, agent: str) -> list[str]:
        return sorted(t.id for t in self.service.tasks.values() if agent in t.offered_to)

    def load(self, agent: str, channel: str = "ticket") -> int:
        return self.routing.agent_load(agent)[channel][1]

    def metric(self, line: str) -> bool:
        return line in generate_latest(self.registry).decode()

    async def stop(self) -> None:
        self.service.close()
        self.routing.close()
        await self.writer.close()
        await self.runner
        await self.cdr.flush()


async def until(predicate: Callable[[], bool], timeout_s: float = 3.0) -> None:
    """Poll: offers come from the Router on the event loop, which signals nothing."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def open_desk(store: Store, clock: ManualClock, text: str = CONFIG) -> Desk:
    cfg = parse_config(text, "t.toml")
    routing = RoutingService(cfg, loop=asyncio.get_running_loop())
    writer = TaskWriter(store)
    runner = asyncio.create_task(writer.run())
    bus = EventBus()
    events: list[Event] = []
    original = bus.publish

    def publish(event: Event) -> None:
        events.append(event)
        original(event)

    bus.publish = publish  # type: ignore[method-assign]
    registry = CollectorRegistry()
    cdr = CdrWriter(store, Metrics())
    service = TaskService(
        cfg,
        routing,
        writer=writer,
        bus=bus,
        metrics=TaskMetrics(registry),
        scheduler=clock,
        wall=clock.time,
        cdr=cdr,
    )
    routing.connect(
        on_offer=lambda _: None,
        on_withdraw=lambda _: None,
        channels={ch: service.handlers() for ch in ("chat", "email", "social", "ticket")},
    )
    return Desk(clock, routing, service, writer, cdr, store, events, registry, runner)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        s = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/acd.sqlite3")
    else:  # one server for the session: each test starts from empty task tables
        s = await Store.open(
            database_url(StorageConfig(url=request.getfixturevalue("postgres_url")))
        )
        async with s.engine.begin() as conn:
            for table in (tasks, task_events, task_messages, task_states, agent_events):
                await conn.execute(table.delete())
    yield s
    await s.close()


@pytest.fixture
async def desk(store: Store) -> AsyncIterator[Desk]:
    d = await open_desk(store, ManualClock(start=1_800_000_000.0))
    yield d
    await d.stop()


async def taken_ticket(d: Desk, agent: str = "1001") -> str:
    ticket, _ = await d.service.create(channel="ticket", queue="desk", created_by="crm")
    await until(lambda: d.offered(agent) == [ticket.id])
    await d.service.accept(ticket.id, agent, by=f"agent:{agent}")
    return ticket.id


async def test_pending_reply_sticky_solved_and_closed_by_itself(desk: Desk) -> None:
    d = desk
    d.routing.login("1002")  # 1001, the better by penalty, logs in later
    tid = await taken_ticket(d, "1002")
    task = d.service.tasks[tid]
    assert (task.status, d.load("1002")) == ("open", 1)
    created = task.arrived_at
    assert task.first_response_due_at == created + 600
    assert task.resolution_due_at == created + 3600

    d.clock.advance(100)
    await d.service.transition(tid, "pending", by="agent:1002")
    assert (task.state, task.status, d.load("1002")) == (TaskState.PENDING, "pending", 0)
    assert task.first_response_at == created + 100  # asking the customer answers them
    assert task.sla_paused_at == created + 100
    assert task.agent_id == "1002"  # its last agent, for the reply

    d.clock.advance(5000)  # far past the resolution due time, but pending: the clock stands
    assert not task.resolution_breached
    assert not [e for e in d.events if e.event == "sla_breached"]

    # The customer's reply brings it back to 1002 alone, although 1001 is free and first by
    # penalty.
    d.routing.login("1001")
    await d.service.post_message(tid, sender="customer", author="crm", text="here is the photo")
    assert task.state in (TaskState.WAITING, TaskState.OFFERED)
    assert task.resolution_due_at == created + 3600 + 5000
    await until(lambda: d.offered("1002") == [tid])
    await asyncio.sleep(0.05)
    assert d.offered("1001") == []
    await d.service.accept(tid, "1002", by="agent:1002")
    d.clock.advance(60)
    done = await d.service.complete(tid, "1002", by="agent:1002", disposition="replaced")
    assert (done.state, done.disposition, d.load("1002")) == (TaskState.SOLVED, "replaced", 0)

    with pytest.raises(IllegalTransition) as refused:
        await d.service.transition(tid, "pending", by="agent:1002")
    assert refused.value.allowed == ["open", "closed"]
    assert refused.value.status == 409

    d.clock.advance(7199)
    assert task.state is TaskState.SOLVED
    d.clock.advance(1)  # close_solved_after_s
    assert task.state is TaskState.CLOSED
    assert d.service.get(tid) is None
    await d.writer.flush()
    stored = await d.service.stored(tid)
    assert stored is not None
    assert stored.state is TaskState.CLOSED
    assert [e["event"] for e in stored.history] == [
        "created", "offered", "accepted", "pending", "customer_replied", "offered", "accepted",
        "solved", "closed",
    ]  # fmt: skip
    assert stored.history[4]["data"]["sticky_agent"] == "1002"
    assert stored.history[-1]["actor"] == "daemon"
    async with d.store.engine.connect() as conn:
        moves = (
            await conn.execute(
                sa.select(task_states.c.from_state, task_states.c.to_state).order_by(
                    task_states.c.id
                )
            )
        ).all()
    assert [tuple(m) for m in moves] == [
        (None, "waiting"), ("waiting", "offered"), ("offered", "assigned"),
        ("assigned", "pending"), ("pending", "waiting"), ("waiting", "offered"),
        ("offered", "assigned"), ("assigned", "solved"), ("solved", "closed"),
    ]  # fmt: skip
    assert d.metric('acd_task_state_changes_total{channel="ticket",state="pending"} 1.0')
    assert d.metric('acd_task_state_changes_total{channel="ticket",state="closed"} 1.0')
    assert d.metric('acd_tasks_total{channel="ticket",outcome="closed"} 1.0')
    assert not task.resolution_breached
    assert not task.first_response_breached


async def test_illegal_moves_name_the_allowed_ones(desk: Desk) -> None:
    d = desk
    ticket, _ = await d.service.create(channel="ticket", queue="desk", created_by="crm")
    chat, _ = await d.service.create(channel="chat", queue="chat", created_by="widget")
    for task_id, wanted, allowed in (
        (ticket.id, "solved", ["cancelled"]),
        (ticket.id, "open", ["cancelled"]),
        (chat.id, "pending", ["cancelled"]),  # no ticket lifecycle for a chat
    ):
        with pytest.raises(IllegalTransition) as refused:
            await d.service.transition(task_id, wanted, by="ops")
        assert refused.value.allowed == allowed
    d.routing.login("1001")
    await until(lambda: d.offered("1001") == sorted([ticket.id, chat.id]))
    await d.service.accept(chat.id, "1001", by="agent:1001")
    with pytest.raises(IllegalTransition) as refused:
        await d.service.transition(chat.id, "solved", by="agent:1001")
    assert refused.value.allowed == ["completed"]
    done = await d.service.transition(chat.id, "completed", by="agent:1001")
    assert done.state is TaskState.COMPLETED  # a chat completes, it is not solved
    await d.service.accept(ticket.id, "1001", by="agent:1001")
    await d.service.transition(ticket.id, "solved", by="agent:1001")
    await d.service.transition(ticket.id, "closed", by="agent:1001")  # by hand, at once
    assert d.service.get(ticket.id) is None
    with pytest.raises(UnknownTask):  # closed is final: no longer live (the API answers 409)
        await d.service.transition(ticket.id, "open", by="ops")


async def test_reopened_goes_to_anyone_when_its_last_agent_is_logged_out(desk: Desk) -> None:
    d = desk
    d.routing.login("1001")
    d.routing.login("1002")
    tid = await taken_ticket(d)
    await d.service.transition(tid, "solved", by="agent:1001")
    d.routing.logout("1001")
    reopened = await d.service.transition(tid, "open", by="crm")
    assert reopened.status == "open"  # taken before: not new
    await until(lambda: d.offered("1002") == [tid])
    assert reopened.history[-2]["data"]["sticky_agent"] is None


async def test_sla_breaches_are_events_metrics_and_stored(desk: Desk) -> None:
    d = desk  # nobody logged in: the ticket waits
    ticket, _ = await d.service.create(channel="ticket", queue="desk", created_by="crm")
    chat, _ = await d.service.create(channel="chat", queue="chat", created_by="widget")
    assert (chat.first_response_due_at, chat.resolution_due_at) == (None, None)  # no target
    d.clock.advance(599)
    assert not ticket.first_response_breached
    d.clock.advance(1)
    assert ticket.first_response_breached
    (breach,) = [e for e in d.events if e.event == "sla_breached"]
    assert breach.data is not None
    assert (breach.data["task_id"], breach.data["kind"]) == (ticket.id, "first_response")
    assert breach.data["due_at"] == ticket.first_response_due_at
    line = 'acd_task_sla_breaches_total{channel="ticket",kind="%s",queue="desk"} 1.0'
    assert d.metric(line % "first_response")
    assert not d.metric(line % "resolution")
    d.clock.advance(3000)
    assert ticket.resolution_breached
    assert d.metric(line % "resolution")
    d.clock.advance(10_000)  # reported once
    assert len([e for e in d.events if e.event == "sla_breached"]) == 2
    await d.writer.flush()
    async with d.store.engine.connect() as conn:
        row = (await conn.execute(sa.select(tasks).where(tasks.c.id == ticket.id))).mappings().one()
    assert (row["first_response_breached"], row["resolution_breached"]) == (True, True)
    assert row["resolution_due_at"] == ticket.resolution_due_at


async def test_due_times_survive_a_restart_and_a_breach_meanwhile_is_reported(
    store: Store,
) -> None:
    clock = ManualClock(start=1_800_000_000.0)
    first = await open_desk(store, clock)
    ticket, _ = await first.service.create(channel="ticket", queue="desk", created_by="crm")
    due = (ticket.first_response_due_at, ticket.resolution_due_at)
    await first.stop()

    clock.advance(1000)  # the daemon is down past the first-response due time
    second = await open_desk(store, clock)
    try:
        assert await second.service.recover(store) == 1
        again = second.service.tasks[ticket.id]
        assert (again.first_response_due_at, again.resolution_due_at) == due
        assert again.first_response_breached
        (breach,) = [e for e in second.events if e.event == "sla_breached"]
        assert breach.data is not None
        assert breach.data["during_downtime"] is True
        assert not again.resolution_breached
        clock.advance(2600)  # the resolution timer was armed again
        assert again.resolution_breached
    finally:
        await second.stop()


async def test_a_pending_ticket_stays_paused_across_a_restart(store: Store) -> None:
    clock = ManualClock(start=1_800_000_000.0)
    first = await open_desk(store, clock)
    first.routing.login("1001")
    tid = await taken_ticket(first)
    await first.service.transition(tid, "pending", by="agent:1001")
    await first.stop()
    clock.advance(10_000)
    second = await open_desk(store, clock)
    try:
        await second.service.recover(store)
        task = second.service.tasks[tid]
        assert task.state is TaskState.PENDING
        assert not task.resolution_breached
        assert second.routing.router.waiting("desk") == 0
        second.routing.login("1001")
        await second.service.post_message(tid, sender="customer", author="crm", text="ok")
        await until(lambda: second.offered("1001") == [tid])
    finally:
        await second.stop()


async def test_a_scheduled_follow_up_enters_its_queue_when_due(desk: Desk) -> None:
    d = desk
    d.routing.login("1001")
    when = d.clock.time() + 3600
    task, _ = await d.service.create(
        channel="ticket", queue="desk", created_by="crm", subject="check-in", not_before=when
    )
    assert (task.state, task.status, task.enqueued_at) == (TaskState.SCHEDULED, "scheduled", when)
    assert task.first_response_due_at == when + 600  # the SLA starts when it is due
    await asyncio.sleep(0.05)
    assert d.offered("1001") == []
    assert d.routing.router.waiting("desk") == 0
    d.clock.advance(3599)
    assert task.state is TaskState.SCHEDULED
    d.clock.advance(1)
    await until(lambda: d.offered("1001") == [task.id])
    assert [e["event"] for e in task.history] == ["created", "due", "offered"]
    d.clock.advance(20)  # within the offer timeout (30 s)
    await d.service.accept(task.id, "1001", by="agent:1001")
    assert task.row()["wait_s"] == 20.0  # from when it fell due, not the hour before


async def test_a_scheduled_follow_up_survives_a_restart(store: Store) -> None:
    clock = ManualClock(start=1_800_000_000.0)
    first = await open_desk(store, clock)
    later, _ = await first.service.create(
        channel="ticket", queue="desk", created_by="crm", not_before=clock.time() + 600
    )
    soon, _ = await first.service.create(
        channel="ticket", queue="desk", created_by="crm", not_before=clock.time() + 60
    )
    cancelled, _ = await first.service.create(
        channel="ticket", queue="desk", created_by="crm", not_before=clock.time() + 60
    )
    await first.service.cancel(cancelled.id, by="crm")
    await first.stop()
    clock.advance(120)  # `soon` fell due while the daemon was down
    second = await open_desk(store, clock)
    try:
        assert await second.service.recover(store) == 2
        clock.advance(0)
        assert second.service.tasks[soon.id].state is TaskState.WAITING
        assert second.service.tasks[later.id].state is TaskState.SCHEDULED
        assert second.routing.router.waiting("desk") == 1
        clock.advance(480)
        assert second.service.tasks[later.id].state is TaskState.WAITING
        assert second.routing.router.waiting("desk") == 2
    finally:
        await second.stop()


async def test_task_rows_in_the_agent_event_log_give_occupancy_per_channel(desk: Desk) -> None:
    d = desk
    d.routing.login("1001")
    start = d.clock.time()
    ticket, _ = await d.service.create(channel="ticket", queue="desk", created_by="crm")
    chat, _ = await d.service.create(channel="chat", queue="chat", created_by="widget")
    await until(lambda: d.offered("1001") == sorted([ticket.id, chat.id]))
    await d.service.reject(chat.id, "1001", by="agent:1001")
    await d.service.accept(ticket.id, "1001", by="agent:1001")
    d.clock.advance(300)
    await d.service.transition(ticket.id, "pending", by="agent:1001")
    d.clock.advance(100)
    await d.cdr.flush()
    async with d.store.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(agent_events.c.state, agent_events.c.channel, agent_events.c.reason)
                .where(agent_events.c.task_id.is_not(None))
                .order_by(agent_events.c.id)
            )
        ).all()
    assert sorted(tuple(r) for r in rows) == sorted([
        ("task_offered", "ticket", None), ("task_offered", "chat", None),
        ("task_ended", "chat", "rejected"), ("task_accepted", "ticket", None),
        ("task_ended", "ticket", "released"),
    ])  # fmt: skip
    held = await task_handle_seconds(d.store, start, d.clock.time())
    assert held == {("1001", "ticket"): pytest.approx(300.0)}
    # Another chat, held when the daemon stops: its row ends there, not at the next start.
    other, _ = await d.service.create(channel="chat", queue="chat", created_by="widget")
    await until(lambda: d.offered("1001") == [other.id])
    await d.service.accept(other.id, "1001", by="agent:1001")
    d.clock.advance(50)
    d.service.close()
    d.clock.advance(1000)  # down
    await d.cdr.flush()
    held = await task_handle_seconds(d.store, start, d.clock.time())
    assert held == {("1001", "ticket"): pytest.approx(300.0), ("1001", "chat"): pytest.approx(50.0)}


async def test_a_failing_timer_is_logged_and_never_reaches_the_loop(desk: Desk) -> None:
    d = desk
    ticket, _ = await d.service.create(channel="ticket", queue="desk", created_by="crm")

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    d.service.save = broken  # type: ignore[assignment,method-assign]
    with structlog.testing.capture_logs() as logs:
        d.clock.advance(601)  # the first-response breach's save raises
    (failed,) = [e for e in logs if e["event"] == "task_timer_failed"]
    assert failed["task_id"] == ticket.id
    assert failed["log_level"] == "error"


async def test_a_reply_to_a_full_queue_keeps_the_ticket_pending(store: Store) -> None:
    d = await open_desk(
        store, ManualClock(), CONFIG.replace('name = "desk"\n', 'name = "desk"\nmax_length = 1\n')
    )
    try:
        d.routing.login("1001")
        tid = await taken_ticket(d)
        await d.service.transition(tid, "pending", by="agent:1001")
        d.routing.logout("1001")
        await d.service.create(channel="ticket", queue="desk", created_by="crm")  # fills it
        with pytest.raises(TaskConflict, match="full"):
            await d.service.post_message(tid, sender="customer", author="crm", text="hello?")
        task = d.service.tasks[tid]
        assert task.state is TaskState.PENDING
        assert task.sla_paused_at is not None
        assert [m["text"] for m in task.messages] == ["hello?"]  # the reply is kept
    finally:
        await d.stop()


async def test_a_pending_ticket_moves_to_another_department_with_a_note(desk: Desk) -> None:
    d = desk
    d.routing.login("1002")
    tid = await taken_ticket(d, "1002")
    await d.service.transition(tid, "pending", by="agent:1002")
    moved = await d.service.transfer(
        tid, by="agent:1002", queue="chat", note="billing question, not a repair"
    )
    assert (moved.state, moved.queue) == (TaskState.PENDING, "chat")
    entry = moved.history[-1]
    assert (entry["event"], entry["actor"], entry["queue"]) == ("transferred", "agent:1002", "chat")
    assert entry["data"]["note"] == "billing question, not a repair"
    assert entry["data"]["from_queue"] == "desk"
    # The reply is routed in the new department: 1002 is no member of it, 1001 is.
    d.routing.login("1001")
    await d.service.post_message(tid, sender="customer", author="crm", text="my invoice")
    await until(lambda: d.offered("1001") == [tid])
    await d.service.accept(tid, "1001", by="agent:1001")
    await d.service.transition(tid, "solved", by="agent:1001")
    with pytest.raises(TaskConflict):  # solved: nothing left to hand over
        await d.service.transfer(tid, by="ops", queue="desk")
