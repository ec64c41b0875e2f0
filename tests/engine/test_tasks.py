"""The task service with the real RoutingService, Router and store (SQLite), on a real event loop.

Offers of non-voice tasks come from the same Router as the calls', so the tests below enqueue
calls next to tasks and check that one agent's capacity is counted across channels.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest

import routing_core as rc
from engine.config import SERVICE_CHANNELS, Config, StorageConfig, parse_config
from engine.routing.service import RoutingService
from engine.runtime.events import Event, EventBus
from engine.storage import StorageError, Store, database_url
from engine.storage.schema import task_events, task_messages, tasks
from engine.storage.tasks import TaskWrite, TaskWriter
from engine.tasks import (
    InvalidTask,
    Task,
    TaskCollector,
    TaskConflict,
    TaskMetrics,
    TaskService,
    TaskState,
)

CONFIG = """
[[queues]]
name = "support"
wrap_up_s = 0.0
offer_timeout_s = 0.3

[[queues]]
name = "billing"
wrap_up_s = 0.0

[[agents]]
id = "1001"
skills = { support = 5 }
queues = { support = 0, billing = 0 }
capacity = { voice = 1, chat = 2, email = 1 }

[[agents]]
id = "1002"
skills = { support = 5 }
queues = { support = 1 }
capacity = { voice = 1, chat = 0, email = 3 }
"""


@dataclass
class Setup:
    cfg: Config
    routing: RoutingService
    service: TaskService
    writer: TaskWriter
    store: Store
    bus_events: list[Event]
    voice_offers: list[rc.Offer]
    metrics: TaskMetrics
    registry: CollectorRegistry

    def offered(self, agent: str) -> list[str]:
        return sorted(t.id for t in self.service.tasks.values() if agent in t.offered_to)


async def until(predicate: Callable[[], bool], timeout_s: float = 3.0) -> None:
    """Poll: the facts checked live in the Router and the service, which signal nothing."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def build(store: Store, text: str = CONFIG) -> tuple[Setup, asyncio.Task[None]]:
    cfg = parse_config(text, "t.toml")
    loop = asyncio.get_running_loop()
    routing = RoutingService(cfg, loop=loop)
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
    metrics = TaskMetrics(registry)
    service = TaskService(cfg, routing, writer=writer, bus=bus, metrics=metrics)
    registry.register(TaskCollector(lambda: service))
    voice: list[rc.Offer] = []
    routing.connect(
        on_offer=voice.append,
        on_withdraw=lambda _: None,
        channels={ch: service.handlers() for ch in SERVICE_CHANNELS},
    )
    return Setup(cfg, routing, service, writer, store, events, voice, metrics, registry), runner


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        s = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/acd.sqlite3")
    else:  # one server for the session: each test starts from empty task tables
        s = await Store.open(
            database_url(StorageConfig(url=request.getfixturevalue("postgres_url")))
        )
        async with s.engine.begin() as conn:
            for table in (tasks, task_events, task_messages):
                await conn.execute(table.delete())
    yield s
    await s.close()


@pytest.fixture
async def setup(store: Store) -> AsyncIterator[Setup]:
    s, runner = await build(store)
    yield s
    s.service.close()
    s.routing.close()
    await s.writer.close()
    await runner


async def test_one_agents_capacity_is_counted_across_voice_and_chat(setup: Setup) -> None:
    s = setup
    s.routing.login("1001")
    chats = [
        (await s.service.create(channel="chat", queue="support", created_by="w"))[0].id
        for _ in range(3)
    ]
    s.routing.enqueue("call-1", "support")
    await until(lambda: len(s.offered("1001")) == 2 and len(s.voice_offers) == 1)
    assert s.voice_offers[0].agent_id == "1001"
    assert s.offered("1001") == sorted(chats[:2])  # the oldest two, never the third
    for task_id in chats[:2]:
        await s.service.accept(task_id, "1001", by="agent:1001")
    s.routing.accept("call-1", "1001")
    await asyncio.sleep(0.05)
    assert s.offered("1001") == []
    assert s.routing.agent_load("1001") == {"voice": (1, 1), "chat": (2, 2), "email": (1, 0)}
    done = await s.service.complete(chats[0], "1001", by="agent:1001", disposition="resolved")
    assert done.state is TaskState.COMPLETED
    await until(lambda: s.offered("1001") == [chats[2]])


async def test_a_callback_keeps_its_callers_place_among_the_calls_on_voice_capacity(
    setup: Setup,
) -> None:
    """A callback task (a waiting caller's key, engine.calls.callbacks) is ordered among the
    queue's calls by its effective enqueue time and takes the agent's voice capacity: the call
    that came later waits until the callback is done."""
    s = setup
    s.routing.enqueue("call-later", "support")
    callback, _ = await s.service.create(
        channel="callback", queue="support", created_by="system", enqueued_at=s.service.wall() - 30,
        data={"call_id": "call-earlier", "number": "5550100"}, channels=("callback",),
    )  # fmt: skip
    assert callback.enqueued_at < callback.arrived_at - 29
    figures = {q: n for q, n, _ in s.routing.queue_figures()}
    assert figures["support"] == 2  # the callback counts with the waiting calls
    s.routing.login("1002")  # voice capacity 1, no chat: one call-like contact at a time
    await until(lambda: s.offered("1002") == [callback.id])
    await asyncio.sleep(0.1)
    assert s.voice_offers == []  # the later call is behind it, not offered meanwhile
    assert s.routing.agent_load("1002")["voice"] == (1, 1)
    assert s.service.open_counts()[("callback", "offered")] == 1
    await s.service.accept(callback.id, "1002", by="agent:1002")
    await s.service.complete(callback.id, "1002", by="agent:1002", disposition="called_back")
    await until(lambda: [o.task_id for o in s.voice_offers] == ["call-later"])
    with pytest.raises(InvalidTask, match="found 'callback'"):  # not a channel of the API
        await s.service.create(channel="callback", queue="support", created_by="api")


async def test_an_agent_with_chat_capacity_0_is_never_offered_a_chat(setup: Setup) -> None:
    s = setup
    s.routing.login("1002")
    task, _ = await s.service.create(channel="chat", queue="support", created_by="w")
    email, _ = await s.service.create(channel="email", queue="support", created_by="w")
    await until(lambda: s.offered("1002") == [email.id])
    await asyncio.sleep(0.1)
    assert task.state is TaskState.WAITING
    assert task.offered_to == set()
    s.routing.login("1001")
    await until(lambda: s.offered("1001") == [task.id])


async def test_reject_and_offer_timeout_go_to_the_next_agent(setup: Setup) -> None:
    s = setup
    s.routing.login("1001")
    s.routing.login("1002")
    task, _ = await s.service.create(channel="email", queue="support", created_by="w")
    await until(lambda: task.offered_to == {"1001"})  # penalty 0 before penalty 1
    offered = next(e for e in s.bus_events if e.event == "offered")
    assert offered.type == "task"
    assert offered.agent_id == "1001"
    assert offered.data is not None
    assert offered.data["task_id"] == task.id
    with pytest.raises(TaskConflict):
        await s.service.accept(task.id, "1002", by="agent:1002")  # not offered to 1002
    await s.service.reject(task.id, "1001", by="agent:1001")
    await until(lambda: task.offered_to == {"1002"})
    # 1002 lets the offer time out (0.3 s): nobody is left who was not excluded.
    await until(lambda: task.state is TaskState.WAITING and not task.offered_to, 2.0)
    events = [e["event"] for e in task.history]
    assert events == ["created", "offered", "rejected", "offered", "offer_timeout"]
    assert [e["agent_id"] for e in task.history[1:]] == ["1001", "1001", "1002", "1002"]
    text = generate_latest(s.registry).decode()
    assert 'acd_task_offers_total{channel="email",outcome="timeout"} 1.0' in text
    assert 'acd_task_offers_total{channel="email",outcome="rejected"} 1.0' in text
    assert 'acd_queue_waiting_tasks{channel="email",queue="support"} 1.0' in text


async def test_bad_fields_are_named_and_external_id_is_idempotent(setup: Setup) -> None:
    s = setup
    for kwargs, field in (
        ({"channel": "fax", "queue": "support"}, "channel"),
        ({"channel": "voice", "queue": "support"}, "channel"),
        ({"channel": "chat", "queue": "nope"}, "queue"),
        ({"channel": "chat", "queue": "support", "requirements": {"karate": 1}}, "requirements.karate"),
        ({"channel": "chat", "queue": "support", "requirements": {"support": 0}}, "requirements.support"),
    ):  # fmt: skip
        with pytest.raises(InvalidTask) as err:
            await s.service.create(created_by="w", **kwargs)  # type: ignore[arg-type]
        assert err.value.field == field
    first, created = await s.service.create(
        channel="chat", queue="support", created_by="w", external_id="x-1"
    )
    again, created_again = await s.service.create(
        channel="chat", queue="billing", created_by="w", external_id="x-1"
    )
    assert (created, created_again, again.id) == (True, False, first.id)
    assert s.routing.router.waiting("support") == 1
    assert s.routing.router.waiting("billing") == 0


async def test_messages_transfer_and_the_stored_record(setup: Setup) -> None:
    s = setup
    s.routing.login("1001")
    task, _ = await s.service.create(
        channel="chat",
        queue="support",
        created_by="widget",
        customer={"id": "c1", "name": "Ada", "email": "ada@example.com", "phone": None},
        subject="Refund",
    )
    await until(lambda: task.offered_to == {"1001"})
    await s.service.accept(task.id, "1001", by="agent:1001")
    await s.service.post_message(task.id, sender="customer", author="widget", text="hello")
    await s.service.post_message(task.id, sender="agent", author="agent:1001", text="hi Ada")
    enqueued = task.enqueued_at
    await s.service.transfer(task.id, by="agent:1001", queue="billing")
    await until(lambda: task.offered_to == {"1001"})  # 1001 is in billing too
    assert task.queue == "billing"
    assert task.enqueued_at == enqueued
    await s.service.accept(task.id, "1001", by="agent:1001")
    await s.service.complete(task.id, "1001", by="agent:1001", disposition="refunded", notes="ok")
    await s.writer.flush()
    async with s.store.engine.connect() as conn:
        row = (await conn.execute(sa.select(tasks))).mappings().one()
        events = (await conn.execute(sa.select(task_events.c.event))).scalars().all()
        texts = (await conn.execute(sa.select(task_messages.c.text))).scalars().all()
    assert row["state"] == "completed"
    assert row["disposition"] == "refunded"
    assert row["queue"] == "billing"
    assert row["agent_id"] == "1001"
    for stamp in ("arrived_at", "first_offer_at", "accepted_at", "ended_at"):
        assert row[stamp] is not None
    assert row["wait_s"] is not None
    assert row["handle_s"] is not None
    assert list(events) == [
        "created", "offered", "accepted", "transferred", "offered", "accepted", "completed",
    ]  # fmt: skip
    assert list(texts) == ["hello", "hi Ada"]
    assert s.routing.agent_state("1001") is rc.AgentState.AVAILABLE  # released, no wrap-up
    stored = await s.service.stored(task.id)
    assert stored is not None
    assert [m["sender"] for m in stored.messages] == ["customer", "agent"]


async def test_cancel_withdraws_the_offer(setup: Setup) -> None:
    s = setup
    s.routing.login("1001")
    task, _ = await s.service.create(channel="chat", queue="support", created_by="w")
    await until(lambda: task.offered_to == {"1001"})
    await s.service.cancel(task.id, by="widget")
    assert task.state is TaskState.CANCELLED
    assert s.service.get(task.id) is None
    assert s.routing.router.waiting("support") == 0
    assert s.routing.agent_state("1001") is rc.AgentState.AVAILABLE


async def test_a_restart_puts_open_tasks_back_in_their_order(store: Store) -> None:
    first, runner = await build(store)
    created = [
        (await first.service.create(channel="chat", queue="support", created_by="w"))[0]
        for _ in range(3)
    ]
    first.routing.login("1001")
    await until(lambda: len(first.offered("1001")) == 2)
    await first.service.accept(created[0].id, "1001", by="agent:1001")
    before = {t.id: t.enqueued_at for t in created}
    first.service.close()
    first.routing.close()
    await first.writer.close()
    await runner

    second, runner = await build(store)
    try:
        assert await second.service.recover(store) == 3
        assert {t.id: t.enqueued_at for t in second.service.tasks.values()} == before
        assert all(t.state is TaskState.WAITING for t in second.service.tasks.values())
        # 1002 has no chat capacity; 1001 logs in: the assigned one comes back to it first,
        # then the oldest waiting one (capacity 2).
        second.routing.login("1001")
        await until(lambda: len(second.offered("1001")) == 2)
        assert second.offered("1001") == sorted([created[0].id, created[1].id])
        history = second.service.tasks[created[0].id].history
        assert [e["event"] for e in history][-2:] == ["requeued_after_restart", "offered"]
    finally:
        second.service.close()
        second.routing.close()
        await second.writer.close()
        await runner


async def test_concurrent_creates_with_one_external_id_make_one_task(setup: Setup) -> None:
    s = setup
    made = await asyncio.gather(
        *(
            s.service.create(channel="chat", queue="support", created_by="w", external_id="dup")
            for _ in range(5)
        )
    )
    assert len({task.id for task, _ in made}) == 1
    assert sorted(created for _, created in made) == [False] * 4 + [True]
    assert s.routing.router.waiting("support") == 1


async def test_a_task_the_store_refused_is_not_routed(setup: Setup) -> None:
    s = setup
    await s.service.create(channel="chat", queue="support", created_by="w", external_id="x")
    await s.writer.flush()
    s.service._by_external.clear()  # forget it in memory: the store's unique index refuses it
    s.service.tasks.clear()
    original = s.service._existing

    async def not_found(_external_id: str) -> None:
        return None

    s.service._existing = not_found  # type: ignore[assignment,method-assign]
    with pytest.raises(StorageError):
        await s.service.create(channel="chat", queue="support", created_by="w", external_id="x")
    s.service._existing = original  # type: ignore[method-assign]
    assert s.service.tasks == {}
    assert s.routing.router.waiting("support") == 1  # only the first, which is on disk


async def test_a_callback_rung_on_the_agents_phone_retries_in_its_place_then_connects(
    store: Store,
) -> None:
    """An agent-first callback (engine.calls.dialout): the offer goes to ``ring`` with no
    offer timer and no API accept; the phone's refusal goes to the next agent; a failed dial
    frees the agent without wrap-up and schedules the task again with its old place; the
    connected one is the agent's, then completed with the agent in wrap-up."""
    s, runner = await build(
        store,
        CONFIG.replace(
            "wrap_up_s = 0.0\noffer_timeout_s = 0.3", "wrap_up_s = 5.0\noffer_timeout_s = 0.3"
        ),
    )
    rung: list[tuple[str, str]] = []
    unrung: list[tuple[str, str]] = []
    s.service.ring = lambda task, agent: rung.append((task.id, agent)) is None
    s.service.unring = lambda task_id, agent: unrung.append((task_id, agent))
    try:
        task, _ = await s.service.create(
            channel="callback", queue="support", created_by="system",
            enqueued_at=s.service.wall() - 30, data={"number": "5550100"}, channels=("callback",),
        )  # fmt: skip
        place = task.enqueued_at
        s.routing.login("1002")
        await until(lambda: rung == [(task.id, "1002")])
        await asyncio.sleep(0.5)  # longer than offer_timeout_s: the phone's ring timeout applies
        assert s.offered("1002") == [task.id]
        with pytest.raises(TaskConflict, match="phone"):
            await s.service.accept(task.id, "1002", by="agent:1002")
        with pytest.raises(TaskConflict, match="phone"):
            await s.service.reject(task.id, "1002", by="agent:1002")
        s.service.phone_refused(task.id, "1002", "busy")  # to the next agent, 1002 excluded
        s.routing.login("1001")
        await until(lambda: rung[-1] == (task.id, "1001"))
        outcome = await s.service.dial_ended(
            task.id, "1001", "call-a", "no_answer", attempts=2, retry_s=0.2
        )
        assert (outcome, task.state) == ("retry", TaskState.SCHEDULED)
        assert s.routing.agent_state("1001") is rc.AgentState.AVAILABLE  # no wrap-up
        await until(lambda: len(rung) == 3)  # due after retry_s, offered again
        agent = rung[-1][1]
        assert task.enqueued_at == place
        await s.service.phone_answered(task.id, agent, "call-b")
        assert task.state is TaskState.ASSIGNED
        assert (
            await s.service.dial_ended(
                task.id, agent, "call-b", "connected", attempts=2, retry_s=0.2
            )
            == "connected"
        )
        assert (task.state, task.disposition) == (TaskState.COMPLETED, "connected")
        assert s.routing.agent_state(agent) is rc.AgentState.WRAP_UP
        assert task.data is not None
        assert (task.data["attempts"], task.data["calls"]) == (2, ["call-a", "call-b"])
        assert [e["event"] for e in task.history].count("retry") == 1
        assert unrung == []  # nothing was withdrawn behind the phone's back
    finally:
        s.service.close()
        s.routing.close()
        await s.writer.close()
        await runner


async def test_a_callback_rung_on_the_phone_fails_after_its_attempts(setup: Setup) -> None:
    s = setup
    s.service.ring = lambda task, agent: True
    task, _ = await s.service.create(
        channel="callback", queue="support", created_by="system", channels=("callback",)
    )
    s.routing.login("1001")
    await until(lambda: s.offered("1001") == [task.id])
    outcome = await s.service.dial_ended(task.id, "1001", "c", "busy", attempts=1, retry_s=0.0)
    assert outcome == "failed"
    assert (task.state, task.disposition) == (TaskState.COMPLETED, "failed")
    assert task.id not in s.service.tasks
    assert s.routing.agent_state("1001") is rc.AgentState.AVAILABLE
    stored = await s.service.stored(task.id)
    assert stored is not None
    assert (stored.state, stored.disposition) == (TaskState.COMPLETED, "failed")


async def test_writes_queued_together_commit_together_and_a_refused_one_fails_alone(
    setup: Setup,
) -> None:
    """The writer's group commit: writes submitted while it was busy go in one transaction, in
    order (an update after its insert, the history in submission order); when the batch fails,
    the writes are applied one by one and only the one the store refuses fails."""
    s = setup
    begins: list[int] = []
    sa.event.listen(s.store.engine.sync_engine, "begin", lambda _conn: begins.append(1))

    def new(n: int, external_id: str | None = None) -> Task:
        return Task(id=f"g{n}", channel="chat", queue="support", priority=0, arrived_at=float(n),
                    enqueued_at=float(n), created_by="w", external_id=external_id)  # fmt: skip

    def event(task: Task, what: str) -> list[dict[str, object]]:
        return [{"task_id": task.id, "at": 1.0, "event": what, "actor": "w", "agent_id": None,
                 "queue": task.queue, "data": None}]  # fmt: skip

    first = [new(n, external_id=f"e{n}") for n in range(5)]
    futures = [s.writer.submit(TaskWrite(t.row(), insert=True, events=event(t, "created")))
               for t in first]  # fmt: skip
    first[2].subject = "changed"
    futures.append(s.writer.submit(TaskWrite(first[2].row(), events=event(first[2], "edited"))))
    await asyncio.gather(*futures)
    assert len(begins) == 1  # six writes, one transaction

    clash = new(9, external_id="e1")  # the unique index refuses a second e1
    later = [new(n) for n in (6, 7)]
    futures = [s.writer.submit(TaskWrite(t.row(), insert=True, events=event(t, "created")))
               for t in (later[0], clash, later[1])]  # fmt: skip
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert [type(o).__name__ for o in outcomes] == ["NoneType", "StorageError", "NoneType"]
    async with s.store.engine.connect() as conn:
        rows = dict((await conn.execute(sa.select(tasks.c.id, tasks.c.subject))).all())
        history = (
            await conn.execute(
                sa.select(task_events.c.task_id, task_events.c.event).order_by(task_events.c.id)
            )
        ).all()
    assert rows == {**{f"g{n}": None for n in (0, 1, 3, 4, 6, 7)}, "g2": "changed"}
    assert [tuple(r) for r in history] == [
        *((f"g{n}", "created") for n in range(5)),
        ("g2", "edited"),
        ("g6", "created"),
        ("g7", "created"),
    ]
