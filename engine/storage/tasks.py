"""Tasks in the store: the ordered writer the task service persists through, and its queries.

How this works: the task service keeps its open tasks in memory (the routing core holds their
places in the queues) and hands every change to ``TaskWriter.submit`` as one ``TaskWrite``: the
task's whole row as it now is, plus the history events and messages the change added. One writer
task applies them in submission order, each in its own transaction, so the row, its history and
its transcript never disagree and a later change can never be overtaken by an earlier one.
``submit`` returns a future: the API awaits it before answering (a created task is on disk before
the client hears 201), while changes the router makes (an offer, an offer timing out) do not wait.

Writes that queued up while the previous transaction ran are applied together, in order, in one
transaction (a group commit, up to ``MAX_BATCH_WRITES``; consecutive new rows and all history,
message and state rows as one multi-row INSERT each): a transaction's begin and commit cost more
than its rows, and under a burst of creates the profile put most of a create's CPU there. Should
the batch fail, its writes are applied again one by one, so a write the store refuses (a second
task with one ``external_id``) fails alone.

A failed write is logged and counted (``acd_storage_errors_total``) and its future carries the
``StorageError``: unlike a CDR, a task is live state, so the request that made the change fails
instead of pretending it was kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import SQLAlchemyError

from engine.storage import StorageError, Store
from engine.storage.schema import agent_events, task_events, task_messages, task_states, tasks

log = structlog.stdlib.get_logger("acd.tasks")

# Writes applied in one transaction at most: bounds how long one commit holds SQLite's write
# lock and how much one failing batch has to redo write by write.
MAX_BATCH_WRITES = 256

# What the task service keeps live, and recovers after a restart (engine.tasks.model.LIVE_STATES)
LIVE_STATES = ("scheduled", "waiting", "offered", "assigned", "pending", "solved")


@dataclass(slots=True)
class TaskWrite:
    row: dict[str, Any]  # the tasks row, every column
    insert: bool = False  # a new task: INSERT; otherwise UPDATE by id
    events: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)  # task_states rows


class TaskWriter:
    """Applies ``TaskWrite``s in order; ``run()`` is owned by the daemon's task group."""

    def __init__(self, store: Store, *, on_error: Callable[[], None] | None = None) -> None:
        self.store = store
        self._queue: asyncio.Queue[tuple[TaskWrite, asyncio.Future[None]] | None] = asyncio.Queue()
        self._on_error = on_error
        self._idle = asyncio.Event()
        self._idle.set()
        self.failures = 0

    def submit(self, write: TaskWrite) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle.clear()
        self._queue.put_nowait((write, future))
        return future

    async def run(self) -> None:
        closing = False
        while not closing and (item := await self._queue.get()) is not None:
            batch = [item]
            while len(batch) < MAX_BATCH_WRITES and not self._queue.empty():
                more = self._queue.get_nowait()
                if more is None:  # close(): apply what came before it, then end
                    closing = True
                    break
                batch.append(more)
            if len(batch) > 1:
                try:
                    await self._apply(*(write for write, _ in batch))
                except StorageError:
                    pass  # one by one below: the write at fault fails alone
                else:
                    for _, future in batch:
                        if not future.done():
                            future.set_result(None)
                    batch = []
            for write, future in batch:
                self._tell(write, future, await self._try_apply(write))
            if self._queue.empty():
                self._idle.set()

    async def _try_apply(self, write: TaskWrite) -> StorageError | None:
        try:
            await self._apply(write)
        except StorageError as exc:
            return exc
        return None

    def _tell(
        self, write: TaskWrite, future: asyncio.Future[None], exc: StorageError | None
    ) -> None:
        if exc is not None:
            self.failures += 1
            if self._on_error is not None:
                self._on_error()
            log.error("task_write_failed", task_id=write.row.get("id"), reason=str(exc))
            if not future.done():
                future.set_exception(exc)
        elif not future.done():
            future.set_result(None)
        if not future.cancelled():
            future.exception()  # retrieved: nobody awaiting a router-made change is warned

    async def flush(self) -> None:
        """Wait until everything submitted so far is applied (or failed)."""
        await self._idle.wait()

    async def close(self) -> None:
        """Apply what is queued, then end ``run``."""
        self._queue.put_nowait(None)

    async def _apply(self, *writes: TaskWrite) -> None:
        """``writes`` in one transaction, in order: new rows are held back and inserted
        together until an update comes (which must see them), the history, message and state
        rows of all of them after the rows they belong to, each kind in submission order."""
        new_rows: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        messages: list[dict[str, Any]] = []
        states: list[dict[str, Any]] = []
        try:
            async with self.store.write() as conn:
                for write in writes:
                    if write.insert:
                        new_rows.append(write.row)
                    else:
                        if new_rows:
                            await conn.execute(tasks.insert(), new_rows)
                            new_rows = []
                        values = {k: v for k, v in write.row.items() if k != "id"}
                        await conn.execute(
                            tasks.update().where(tasks.c.id == write.row["id"]).values(values)
                        )
                    events += write.events
                    messages += write.messages
                    states += write.states
                for table, rows in (
                    (tasks, new_rows),
                    (task_events, events),
                    (task_messages, messages),
                    (task_states, states),
                ):
                    if rows:
                        await conn.execute(table.insert(), rows)
        except (SQLAlchemyError, OSError) as exc:
            ids = ", ".join(str(w.row.get("id")) for w in writes[:3])
            more = f" and {len(writes) - 3} more" if len(writes) > 3 else ""
            raise StorageError(f"task {ids}{more}: {exc}") from exc


async def _rows(store: Store, query: sa.Select[Any]) -> list[dict[str, Any]]:
    try:
        async with store.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings().all()]
    except (SQLAlchemyError, OSError) as exc:
        raise StorageError(f"task query failed: {exc}") from exc


async def open_tasks(store: Store) -> list[dict[str, Any]]:
    """Tasks the daemon had not finished when it stopped (live: in a queue, scheduled, pending or
    solved), oldest effective enqueue time first."""
    query = (
        sa.select(tasks)
        .where(tasks.c.state.in_(LIVE_STATES))
        .order_by(tasks.c.priority.desc(), tasks.c.enqueued_at, tasks.c.arrived_at)
    )
    return await _rows(store, query)


async def task_row(store: Store, task_id: str) -> dict[str, Any] | None:
    rows = await _rows(store, sa.select(tasks).where(tasks.c.id == task_id))
    return rows[0] if rows else None


async def task_id_for_external(store: Store, external_id: str) -> str | None:
    rows = await _rows(store, sa.select(tasks.c.id).where(tasks.c.external_id == external_id))
    return str(rows[0]["id"]) if rows else None


async def history(store: Store, task_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """task id -> its events, oldest first."""
    rows = await _rows(
        store,
        sa.select(task_events)
        .where(task_events.c.task_id.in_(task_ids))
        .order_by(task_events.c.at, task_events.c.id),
    )
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in task_ids}
    for r in rows:
        out[r.pop("task_id")].append({k: v for k, v in r.items() if k != "id"})
    return out


async def messages(store: Store, task_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """task id -> its messages, oldest first."""
    rows = await _rows(
        store,
        sa.select(task_messages)
        .where(task_messages.c.task_id.in_(task_ids))
        .order_by(task_messages.c.at, task_messages.c.id),
    )
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in task_ids}
    for r in rows:
        out[r.pop("task_id")].append(r)
    return out


async def search_tasks(
    store: Store,
    *,
    states: Iterable[str],
    queue: str | None = None,
    channel: str | None = None,
    agent: str | None = None,
    breached: Sequence[str] = (),
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Rows in ``states``, newest arrival first; with ``breached`` (SLA kinds: first_response,
    resolution) only those that breached one of them."""
    query = sa.select(tasks).where(tasks.c.state.in_(list(states)))
    if queue is not None:
        query = query.where(tasks.c.queue == queue)
    if channel is not None:
        query = query.where(tasks.c.channel == channel)
    if agent is not None:
        query = query.where(tasks.c.agent_id == agent)
    if breached:
        query = query.where(sa.or_(*(tasks.c[f"{kind}_breached"].is_(True) for kind in breached)))
    return await _rows(store, query.order_by(tasks.c.arrived_at.desc()).limit(limit))


async def day_rows(store: Store, since: float, queues: Sequence[str]) -> list[dict[str, Any]]:
    """What the queues' task figures are made of: tasks arrived since ``since`` in ``queues``."""
    if not queues:
        return []
    columns = (tasks.c.queue, tasks.c.channel, tasks.c.state, tasks.c.accepted_at,
               tasks.c.wait_s, tasks.c.handle_s)  # fmt: skip
    query = sa.select(*columns).where(tasks.c.arrived_at >= since, tasks.c.queue.in_(queues))
    return await _rows(store, query)


async def task_handle_seconds(
    store: Store, since: float, until: float
) -> dict[tuple[str, str], float]:
    """(agent, channel) -> seconds the agent held tasks of that channel within [since, until),
    summed over tasks (two chats at once for an hour count two hours: divide by the capacity
    for occupancy), from the ``task_accepted`` / ``task_ended`` rows of the agent event log.
    A task still held at ``until`` counts up to ``until``."""
    query = (
        sa.select(
            agent_events.c.agent_id,
            agent_events.c.channel,
            agent_events.c.task_id,
            agent_events.c.state,
            agent_events.c.at,
        )
        .where(
            agent_events.c.task_id.is_not(None),
            agent_events.c.state.in_(("task_accepted", "task_ended")),
            agent_events.c.at < until,
        )
        .order_by(agent_events.c.at, agent_events.c.id)
    )
    held: dict[tuple[str, str], tuple[str, float]] = {}  # (agent, task) -> (channel, since)
    out: dict[tuple[str, str], float] = {}
    for row in await _rows(store, query):
        key = (row["agent_id"], row["task_id"])
        if row["state"] == "task_accepted":
            held[key] = (row["channel"], row["at"])
            continue
        if key not in held:  # an offer that ended unaccepted
            continue
        channel, start = held.pop(key)
        span = min(row["at"], until) - max(start, since)
        if span > 0:
            out[(row["agent_id"], channel)] = out.get((row["agent_id"], channel), 0.0) + span
    for (agent, _), (channel, start) in held.items():
        span = until - max(start, since)
        if span > 0:
            out[(agent, channel)] = out.get((agent, channel), 0.0) + span
    return out
