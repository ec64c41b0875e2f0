"""Writing CDRs, queue events and agent state changes to the store without ever holding up a call.

How this works: call handlers hand records to ``CdrWriter`` (``call_open``, ``call_ended``,
``queue_event``, ``agent_event``); those methods only append to in-memory lists and never await the
database. A live call's row is written too (``call_open``, again as it progresses: queued,
answered), with ``ended_at`` NULL, and completed in place when it ends, so a crash leaves a row
for every call it cut off; ``close_interrupted_calls`` closes them when the node starts again. A
call that ends before the next flush never writes its open row at all (the newest open row of a
call waits in a dict, which ``call_ended`` empties), so short calls cost one row as before. One writer task flushes the lists every ``flush_interval_s`` (or sooner when a batch is
full) in a single transaction. If the database fails, the batch stays in memory, the failure is
logged and counted, ``/readyz`` reports it, and the next flush retries with backoff: a broken disk
costs reporting latency, never a call. Memory is bounded by ``max_backlog``; beyond it the oldest
rows are dropped and counted in ``acd_cdr_dropped_rows_total`` (an operator sees it; a call never
blocks on it). ``close()`` drains what is left on shutdown.

Event payloads are typed structs (``QueueEventData``): the same fields feed the store's JSON column,
the queue_log export and, later, the WebSocket stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import msgspec
import sqlalchemy as sa
import structlog
from prometheus_client import Counter, Gauge
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from engine.runtime.events import Event, EventBus
from engine.runtime.metrics import Metrics
from engine.storage import StorageError, Store, customers, queries
from engine.storage.schema import agent_events, calls, queue_events

log = structlog.stdlib.get_logger("acd.cdr")

QUEUE_EVENTS = (
    "enter",
    "offer",
    "ring_no_answer",
    "answer",
    "abandon",
    "overflow",
    "transfer",
    "complete",
    "callback",  # the waiting caller pressed the queue's callback key (target: the task id)
)
AGENT_STATES = ("logged_out", "available", "reserved", "busy", "wrap_up", "not_ready")
# Rows of one task (chat, email, ...) in the agent event log, with its channel: offered to the
# agent, accepted (from here to its end it holds a unit of the agent's capacity), ended (with
# the reason: rejected, offer_timeout, withdrawn, completed, released, transferred, cancelled).
TASK_AGENT_STATES = ("task_offered", "task_accepted", "task_ended")


class CallRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One call: the row of the ``calls`` table (``ended_at`` None while it is live)."""

    id: str
    sip_call_id: str
    arrived_at: float
    trunk: str | None = None
    caller: str | None = None
    caller_name: str | None = None
    dialed: str | None = None
    flow: str | None = None
    queue: str | None = None
    agent_id: str | None = None
    flow_answered_at: float | None = None
    enqueued_at: float | None = None
    first_offer_at: float | None = None
    agent_answered_at: float | None = None
    ended_at: float | None = None
    disposition: str | None = None
    hangup_side: str | None = None
    hangup_reason: str | None = None
    wait_s: float | None = None
    talk_s: float | None = None
    wrap_up_s: float | None = None
    hold_s: float | None = None  # the caller's time on the agent's hold (None: never bridged)
    flow_data: dict[str, Any] | None = None
    recording_id: str | None = None
    node: str | None = None
    csat_score: int | None = None  # the post-call survey's answer, 1-5 (None: not asked or none)
    csat_second_score: int | None = None  # its optional second question's


#: What ``close_interrupted_calls`` writes into the rows a crash left open.
INTERRUPTED_REASON = "interrupted: the daemon stopped during the call"


async def close_interrupted_calls(store: Store, node: str, at: float) -> int:
    """Close this node's rows that are still open at its start (it crashed, or was killed, with
    those calls live): ``failed``, ended by the system at ``at``. The number closed."""
    query = (
        sa.update(calls)
        .where(calls.c.node == node, calls.c.ended_at.is_(None))
        .values(
            ended_at=at, disposition="failed", hangup_side="system",
            hangup_reason=INTERRUPTED_REASON,
        )
    )  # fmt: skip
    try:
        async with store.write() as conn:
            result = await conn.execute(query)
    except (SQLAlchemyError, OSError) as exc:
        raise StorageError(f"closing the calls a crash interrupted failed: {exc}") from exc
    return int(result.rowcount or 0)


def _upsert(dialect: str, table: sa.Table) -> Any:
    """INSERT that replaces the row with the same primary key (a call's open row, completed)."""
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = make(table)
    keys = [c.name for c in table.primary_key.columns]
    return stmt.on_conflict_do_update(
        index_elements=keys,
        set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys},
    )


class QueueEventData(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Facts an event carries beyond (time, call, queue, agent, kind); all optional."""

    caller: str | None = None
    position: int | None = None  # position in the queue when the event happened (1 = next)
    orig_position: int | None = None  # position when the caller entered
    wait_s: float | None = None
    ring_s: float | None = None
    talk_s: float | None = None
    hangup_side: str | None = None  # caller | agent | callee (a transfer target) | system
    target: str | None = None  # transfer or overflow destination
    reason: str | None = None  # overflow: timeout | full | empty


class CdrMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.backlog = Gauge(
            "acd_cdr_backlog_rows",
            "CDR, queue and agent event rows waiting to be written to the store.",
            registry=metrics.registry,
        )
        self.written = Counter(
            "acd_cdr_rows_written_total",
            "Rows written to the store, by table.",
            ["table"],
            registry=metrics.registry,
        )
        self.dropped = Counter(
            "acd_cdr_dropped_rows_total",
            "Rows dropped because the store was unavailable for longer than the backlog holds.",
            registry=metrics.registry,
        )
        self.storage_errors = metrics.storage_errors


class CdrWriter:
    # Rows one transaction writes at most: large enough to amortise the commit, small enough that a
    # flush never holds the SQLite write lock long enough to be felt by API readers.
    BATCH_ROWS = 2000

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        flush_interval_s: float = 0.5,
        max_backlog: int = 200_000,
        retry_max_s: float = 30.0,
        bus: EventBus | None = None,
    ) -> None:
        self._store = store
        self._bus = bus
        self._metrics = CdrMetrics(metrics)
        self._flush_interval_s = flush_interval_s
        self._retry_max_s = retry_max_s
        self._pending: dict[str, deque[dict[str, Any]]] = {
            "calls": deque(),
            "queue_events": deque(),
            "agent_events": deque(),
        }
        # The newest open row of each live call not yet written (call id -> row): replaced as
        # the call progresses, removed when it ends (its final row then says everything).
        self._open: dict[str, dict[str, Any]] = {}
        # Wrap-up times of calls whose final row may be written already (call id -> seconds):
        # an UPDATE at the next flush, after that flush's inserts.
        self._wrap_ups: dict[str, float] = {}
        self._calls_upsert = _upsert(store.dialect, calls)
        self._max_backlog = max_backlog
        self._backlog = 0  # rows across the three tables; kept, not summed, on the hot path
        self._wake = asyncio.Event()
        self.last_error: str | None = None

    # -- readers ----------------------------------------------------------------------------------

    async def previous_contacts(self, caller: str, limit: int = 5) -> list[dict[str, Any]]:
        """The caller's latest contacts on every channel, newest first (for the agent's
        screen-pop): finished calls from this number and tasks whose customer has it
        (``engine.storage.customers``); the live call's own row is not one of them.
        Rows still waiting for the next flush are not seen; a store error gives an empty list."""
        if not caller:
            return []
        try:
            return await customers.contacts(
                self._store, phone=caller, limit=limit, finished_calls_only=True
            )
        except (SQLAlchemyError, OSError) as exc:
            log.warning("previous_contacts_failed", reason=str(exc))
            return []

    async def last_agent(self, caller: str, agents: Iterable[str], days: float) -> str | None:
        """The member of ``agents`` who last answered ``caller`` within ``days`` (last-agent
        routing), or None; like ``previous_contacts``, rows not yet flushed are not seen and a
        store error gives None (the caller is routed as if new)."""
        members = list(agents)
        if not caller or caller == "anonymous" or not members:
            return None
        try:
            return await queries.last_agent(
                self._store, caller, members, time.time() - days * 86400.0
            )
        except (SQLAlchemyError, OSError) as exc:
            log.warning("last_agent_failed", reason=str(exc))
            return None

    # -- producers (never await) -------------------------------------------------------------------

    def call_started(self, call_id: str, data: dict[str, Any]) -> None:
        """A trunk INVITE became a call (its flow starts): an event for the bus's consumers
        (webhooks, plugins), as ``call_ended`` publishes the finished call. Its live row is
        ``call_open``'s."""
        if self._bus is not None:
            self._bus.publish(
                Event(type="call", at=time.time(), event="started", call_id=call_id, data=data),
                stream=False,
            )

    def call_open(self, record: CallRecord) -> None:
        """A live call's row as it stands (arrived, queued, answered): written at the next flush
        unless the call ends first."""
        if self._open.pop(record.id, None) is None:
            self._count(+1)
        self._open[record.id] = msgspec.structs.asdict(record)
        self._overflow()

    def call_ended(self, record: CallRecord) -> None:
        if self._open.pop(record.id, None) is not None:
            self._count(-1)
        row = msgspec.structs.asdict(record)
        if record.id in self._wrap_ups:  # its wrap-up was over first (none at all, say)
            row["wrap_up_s"] = self._wrap_ups[record.id]
        self._append("calls", row)
        # An attempt refused before it became a call (no call_started) is a row, not an event.
        if self._bus is not None and record.disposition != "rejected":
            self._bus.publish(
                Event(type="call", at=record.ended_at or time.time(), event="completed",
                      call_id=record.id, queue=record.queue, agent_id=record.agent_id,
                      data=dict(row)),
                stream=False,
            )  # fmt: skip

    def call_wrap_up(self, call_id: str, wrap_up_s: float) -> None:
        """The agent's wrap-up after the call ended (``wrap_up_s``: from its start to the agent
        being ready again): into the call's final row if still queued, and an UPDATE of the row
        at the next flush in case it was written already (or is being written)."""
        for row in self._pending["calls"]:
            if row["id"] == call_id:
                row["wrap_up_s"] = wrap_up_s
        if call_id not in self._wrap_ups:
            self._count(+1)
        self._wrap_ups[call_id] = wrap_up_s

    def queue_event(
        self,
        event: str,
        *,
        call_id: str,
        queue: str,
        agent_id: str | None = None,
        data: QueueEventData | None = None,
        at: float | None = None,
    ) -> None:
        if event not in QUEUE_EVENTS:
            raise ValueError(f"unknown queue event {event!r}")
        when = time.time() if at is None else at
        payload: dict[str, Any] | None = msgspec.to_builtins(data) if data is not None else None
        self._append(
            "queue_events",
            {"at": when, "call_id": call_id, "queue": queue, "agent_id": agent_id, "event": event,
             "data": payload},
        )  # fmt: skip
        if self._bus is not None:
            self._bus.publish(
                Event(type="queue", at=when, event=event, call_id=call_id, queue=queue,
                      agent_id=agent_id, data=payload)
            )  # fmt: skip

    def agent_event(
        self,
        agent_id: str,
        state: str,
        *,
        reason: str | None = None,
        call_id: str | None = None,
        at: float | None = None,
    ) -> None:
        if state not in AGENT_STATES:
            raise ValueError(f"unknown agent state {state!r}")
        when = time.time() if at is None else at
        self._append(
            "agent_events",
            {
                "at": when,
                "agent_id": agent_id,
                "state": state,
                "reason": reason,
                "call_id": call_id,
                "channel": None,  # every row has every column: one executemany per batch
                "task_id": None,
            },
        )
        if self._bus is not None:
            self._bus.publish(
                Event(type="agent", at=when, event=state, agent_id=agent_id, reason=reason,
                      call_id=call_id)
            )  # fmt: skip

    def task_agent_event(
        self,
        agent_id: str,
        state: str,
        *,
        channel: str,
        task_id: str,
        reason: str | None = None,
        at: float | None = None,
    ) -> None:
        """A task's row in the agent event log; not on the event stream, which has the task's
        own events (``type`` "task"), and not the agent's state, which calls' rows give."""
        if state not in TASK_AGENT_STATES:
            raise ValueError(f"unknown task agent state {state!r}")
        self._append(
            "agent_events",
            {
                "at": time.time() if at is None else at,
                "agent_id": agent_id,
                "state": state,
                "reason": reason,
                "call_id": None,
                "channel": channel,
                "task_id": task_id,
            },
        )

    def _append(self, table: str, row: dict[str, Any]) -> None:
        self._pending[table].append(row)
        self._count(+1)
        self._overflow()

    def _count(self, delta: int) -> None:
        self._backlog += delta
        self._metrics.backlog.set(self._backlog)
        if self._backlog >= self.BATCH_ROWS:
            self._wake.set()

    def _overflow(self) -> None:
        if self._backlog <= self._max_backlog:
            return
        # Drop live calls' interim rows first (their final rows follow), then the oldest event
        # rows; finished calls' rows are the last thing to give up.
        if self._open:
            del self._open[next(iter(self._open))]
        else:
            for name in ("agent_events", "queue_events", "calls"):
                if self._pending[name]:
                    self._pending[name].popleft()
                    break
        self._metrics.dropped.inc()
        self._count(-1)

    @property
    def backlog(self) -> int:
        return self._backlog

    # -- the writer task -----------------------------------------------------------------------------

    async def flush(self) -> int:
        """Write everything pending in one transaction; the number of rows written.

        Raises StorageError (and keeps the rows) if the database fails.
        """
        tables = {"calls": calls, "queue_events": queue_events, "agent_events": agent_events}
        batch = {
            name: [rows[i] for i in range(min(len(rows), self.BATCH_ROWS))]
            for name, rows in self._pending.items()
        }
        opened = list(itertools.islice(self._open.items(), self.BATCH_ROWS))
        wrap_ups = list(itertools.islice(self._wrap_ups.items(), self.BATCH_ROWS))
        if not opened and not any(batch.values()) and not wrap_ups:
            return 0
        try:
            async with self._store.write() as conn:
                # Open rows first: a call's final row, if in this batch too, comes after and wins.
                if opened:
                    await conn.execute(self._calls_upsert, [row for _, row in opened])
                for name, rows in batch.items():
                    if rows:
                        stmt = self._calls_upsert if name == "calls" else tables[name].insert()
                        await conn.execute(stmt, rows)
                if wrap_ups:
                    await conn.execute(
                        sa.update(calls)
                        .where(calls.c.id == sa.bindparam("call_id"))
                        .values(wrap_up_s=sa.bindparam("seconds")),
                        [{"call_id": c, "seconds": w} for c, w in wrap_ups],
                    )
        except (SQLAlchemyError, OSError) as exc:
            # Disk full, database locked, connection lost: the rows stay queued for the next try.
            raise StorageError(
                f"writing {len(opened) + len(wrap_ups) + sum(map(len, batch.values()))} rows failed: {exc}"
            ) from exc
        written = 0
        for call_id, seconds in wrap_ups:
            if self._wrap_ups.get(call_id) == seconds:
                del self._wrap_ups[call_id]
                self._backlog -= 1
        written += len(wrap_ups)
        for call_id, row in opened:
            # Still the row we wrote (not replaced by a newer one, or gone with the call's end
            # during the write): it is done.
            if self._open.get(call_id) is row:
                del self._open[call_id]
                self._backlog -= 1
        if opened:
            self._metrics.written.labels(table="calls").inc(len(opened))
            written += len(opened)
        for name, rows in batch.items():
            for _ in rows:
                self._pending[name].popleft()
            self._backlog -= len(rows)
            if rows:
                self._metrics.written.labels(table=name).inc(len(rows))
            written += len(rows)
        self._metrics.backlog.set(self.backlog)
        return written

    async def run(self) -> None:
        """Flush periodically until cancelled; failures back off and retry."""
        delay = self._flush_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            try:
                while await self.flush() >= self.BATCH_ROWS:
                    pass
            except StorageError as exc:
                self._metrics.storage_errors.inc()
                if self.last_error is None:
                    log.error("cdr_write_failed", reason=str(exc), backlog=self.backlog)
                self.last_error = str(exc)
                delay = min(max(delay * 2, 1.0), self._retry_max_s)
                continue
            if self.last_error is not None:
                log.info("cdr_write_recovered", backlog=self.backlog)
                self.last_error = None
            delay = self._flush_interval_s

    async def ready_check(self) -> str | None:
        if self.last_error is None:
            return None
        return f"CDR writes failing ({self.backlog} rows queued): {self.last_error}"

    async def close(self) -> None:
        """Final drain at shutdown; what cannot be written is logged with its count."""
        try:
            while await self.flush():
                pass
        except StorageError as exc:
            self._metrics.storage_errors.inc()
            log.error("cdr_rows_lost_at_shutdown", rows=self.backlog, reason=str(exc))
