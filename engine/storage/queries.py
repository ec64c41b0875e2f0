"""The queries the control API (and last-agent routing) make on the CDR store: searches and
lookups, plus its two writes.

How this works: each function takes the open ``Store`` and plain values (no request, no principal)
and returns plain dicts, so the API's handlers keep the HTTP side (parsing, limits, who may see
what) and this module keeps the SQL. Searches add a condition only for the filters given (``None``
means "any"). The writes are an audit row and a recording's legal-hold flag; a failing store raises
SQLAlchemy's errors to the caller, which decides whether the request fails.

Audit rows are group-committed: each ``insert_audit`` queues its row, then takes the store's
audit lock; the holder writes every row queued so far in one transaction, so the requests that
queued theirs meanwhile find them written when their turn comes and return without a
transaction of their own. Every caller still returns only once its row is on disk (or raises
the batch's error). Under a burst of task creates a transaction per row was half the writes.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from engine.storage.schema import audit_log, calls, recordings
from engine.storage.store import Store

# What queue statistics read from a call: when it came and was answered, how it ended, its times.
# The outbound calls of agent-first callbacks (engine.calls.dialout, flow "callback") are no
# contacts of their own in the figures: the caller's call that asked for the callback is.
NOT_A_CALLBACK_ATTEMPT = sa.or_(calls.c.flow.is_(None), calls.c.flow != "callback")

_STAT_COLUMNS = (
    calls.c.queue,
    calls.c.arrived_at,
    calls.c.agent_answered_at,
    calls.c.disposition,
    calls.c.wait_s,
    calls.c.talk_s,
    calls.c.wrap_up_s,
    calls.c.csat_score,
)


async def stat_rows(
    store: Store, since: float, until: float | None, queues: Iterable[str] | None
) -> list[Mapping[str, Any]]:
    """The statistics columns of the finished queued calls that arrived in [since, until) (a
    live call's row, ``ended_at`` NULL, is no figure yet; nor is an agent-first callback's
    outbound call: the call that asked for it is the contact)."""
    query = sa.select(*_STAT_COLUMNS).where(
        calls.c.arrived_at >= since, calls.c.queue.is_not(None), calls.c.ended_at.is_not(None),
        NOT_A_CALLBACK_ATTEMPT,
    )  # fmt: skip
    if until is not None:
        query = query.where(calls.c.arrived_at < until)
    if queues is not None:
        query = query.where(calls.c.queue.in_(list(queues)))
    async with store.engine.connect() as conn:
        return [dict(row) for row in (await conn.execute(query)).mappings()]


async def search_calls(
    store: Store,
    *,
    limit: int,
    since: float | None,
    until: float | None,
    queue: str | None,
    caller: str | None,
    disposition: str | None,
    agent: str | None,
) -> list[dict[str, Any]]:
    """Call detail records, newest first, at most ``limit``."""
    query = sa.select(calls).order_by(calls.c.arrived_at.desc()).limit(limit)
    if since is not None:
        query = query.where(calls.c.arrived_at >= since)
    if until is not None:
        query = query.where(calls.c.arrived_at < until)
    for column, value in (("queue", queue), ("caller", caller), ("disposition", disposition)):
        if value is not None:
            query = query.where(calls.c[column] == value)
    if agent is not None:
        query = query.where(calls.c.agent_id == agent)
    async with store.engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


async def last_agent(store: Store, caller: str, agents: Iterable[str], since: float) -> str | None:
    """The agent among ``agents`` who last answered a call from ``caller`` that arrived at or
    after ``since`` (epoch seconds), or None (last-agent routing; the caller/arrived_at index)."""
    query = (
        sa.select(calls.c.agent_id)
        .where(
            calls.c.caller == caller,
            calls.c.arrived_at >= since,
            calls.c.agent_id.in_(list(agents)),
            calls.c.agent_answered_at.is_not(None),
        )
        .order_by(calls.c.arrived_at.desc())
        .limit(1)
    )
    async with store.engine.connect() as conn:
        agent = (await conn.execute(query)).scalar_one_or_none()
    return None if agent is None else str(agent)


async def recording_row(store: Store, recording_id: str) -> dict[str, Any] | None:
    """One row of the recordings index, or None."""
    async with store.engine.connect() as conn:
        row = (
            (await conn.execute(sa.select(recordings).where(recordings.c.id == recording_id)))
            .mappings()
            .first()
        )
    return None if row is None else dict(row)


async def search_recordings(
    store: Store,
    *,
    limit: int,
    call_id: str | None,
    queue: str | None,
    since: float | None,
    agent: str | None,
) -> list[dict[str, Any]]:
    """Rows of the recordings index, newest first, at most ``limit``."""
    query = sa.select(recordings).order_by(recordings.c.started_at.desc()).limit(limit)
    for column, value in ((recordings.c.call_id, call_id), (recordings.c.queue, queue)):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(recordings.c.started_at >= since)
    if agent is not None:
        query = query.where(recordings.c.agent_id == agent)
    async with store.engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


async def update_legal_hold(store: Store, recording_id: str, legal_hold: bool) -> None:
    async with store.write() as conn:
        await conn.execute(
            recordings.update().where(recordings.c.id == recording_id).values(legal_hold=legal_hold)
        )


class _AuditBatch:
    """One store's audit rows waiting for their transaction, and who writes them."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.rows: list[Mapping[str, Any]] = []
        self.done: list[asyncio.Future[None]] = []


_audit_batches: weakref.WeakKeyDictionary[Store, _AuditBatch] = weakref.WeakKeyDictionary()


async def insert_audit(store: Store, row: Mapping[str, Any]) -> None:
    """One row of the audit log (columns as in ``schema.audit_log``, every row the same keys),
    on disk when this returns; written together with the rows other requests queued meanwhile."""
    batch = _audit_batches.get(store)
    if batch is None:
        batch = _audit_batches[store] = _AuditBatch()
    mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    batch.rows.append(row)
    batch.done.append(mine)
    async with batch.lock:
        if not mine.done():  # nobody took it along: write it and everything queued behind it
            rows, done = batch.rows, batch.done
            batch.rows, batch.done = [], []
            try:
                async with store.write() as conn:
                    await conn.execute(audit_log.insert(), rows)
            except Exception as exc:  # the store failed: so did every row of the batch
                for future in done:
                    if future is not mine and not future.done():
                        future.set_exception(exc)
                raise
            except BaseException:  # this request was cancelled: the next holder writes the rest
                others = [(r, f) for r, f in zip(rows, done, strict=True) if f is not mine]
                batch.rows[:0] = [r for r, _ in others]
                batch.done[:0] = [f for _, f in others]
                raise
            for future in done:
                if not future.done():
                    future.set_result(None)
    await mine
