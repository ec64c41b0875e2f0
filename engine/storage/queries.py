"""The queries the control API (and last-agent routing) make on the CDR store: searches and
lookups, plus its two writes.

How this works: each function takes the open ``Store`` and plain values (no request, no principal)
and returns plain dicts, so the API's handlers keep the HTTP side (parsing, limits, who may see
what) and this module keeps the SQL. Searches add a condition only for the filters given (``None``
means "any"). The writes are an audit row and a recording's legal-hold flag; a failing store raises
SQLAlchemy's errors to the caller, which decides whether the request fails.
"""

from __future__ import annotations

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
    async with store.engine.begin() as conn:
        await conn.execute(
            recordings.update().where(recordings.c.id == recording_id).values(legal_hold=legal_hold)
        )


async def insert_audit(store: Store, row: Mapping[str, Any]) -> None:
    """One row of the audit log (columns as in ``schema.audit_log``)."""
    async with store.engine.begin() as conn:
        await conn.execute(audit_log.insert().values(**row))
