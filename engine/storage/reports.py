"""What the interval and agent reports read from the store: finished calls, tasks, agent states.

How this works: each function takes the open ``Store`` and a window [since, until) and returns
plain values; ``engine.api.reports`` turns them into figures. Calls and tasks belong to the
window they arrived in and count only once finished (a live call's row, ``ended_at`` NULL, and a
task still open are no figures yet). Agent time comes from the agent event log's state rows
(``channel`` NULL): each row starts a span that lasts until the agent's next state row, clipped
to the window; the state an agent was in at ``since`` is its last row before it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from engine.storage.queries import NOT_A_CALLBACK_ATTEMPT
from engine.storage.schema import agent_events, calls, tasks
from engine.storage.store import Store

# A task in one of these states is finished: its figures are final.
TASK_FINAL_STATES = ("completed", "closed", "cancelled")

_CALL_COLUMNS = (
    calls.c.id,
    calls.c.queue,
    calls.c.agent_id,
    calls.c.arrived_at,
    calls.c.agent_answered_at,
    calls.c.disposition,
    calls.c.wait_s,
    calls.c.talk_s,
    calls.c.csat_score,
)


async def _rows(store: Store, query: sa.Select[Any]) -> list[dict[str, Any]]:
    async with store.engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


async def call_rows(
    store: Store, since: float, until: float, queues: Iterable[str] | None
) -> list[dict[str, Any]]:
    """Finished queued calls that arrived in [since, until). An agent-first callback's own
    calls (flow ``callback``) are not contacts of their own: the caller's call that asked for
    it is, and the callback is a task (``task_rows``)."""
    query = sa.select(*_CALL_COLUMNS).where(
        calls.c.arrived_at >= since,
        calls.c.arrived_at < until,
        calls.c.queue.is_not(None),
        calls.c.ended_at.is_not(None),
        NOT_A_CALLBACK_ATTEMPT,
    )
    if queues is not None:
        query = query.where(calls.c.queue.in_(list(queues)))
    return await _rows(store, query.order_by(calls.c.arrived_at, calls.c.id))


async def task_rows(
    store: Store, since: float, until: float, queues: Iterable[str] | None
) -> list[dict[str, Any]]:
    """Tasks that arrived in [since, until) and are finished (``TASK_FINAL_STATES``)."""
    query = sa.select(
        tasks.c.queue,
        tasks.c.channel,
        tasks.c.state,
        tasks.c.arrived_at,
        tasks.c.accepted_at,
        tasks.c.wait_s,
        tasks.c.handle_s,
    ).where(
        tasks.c.arrived_at >= since,
        tasks.c.arrived_at < until,
        tasks.c.state.in_(TASK_FINAL_STATES),
    )
    if queues is not None:
        query = query.where(tasks.c.queue.in_(list(queues)))
    return await _rows(store, query)


async def agent_state_spans(
    store: Store, since: float, until: float
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """(agent -> state -> seconds in [since, until), call id -> seconds of wrap-up after it).

    A call's wrap-up is the span of the ``wrap_up`` row that names it; it is counted whole (up
    to ``until``) for the call even when it began before ``since``, since the call owns it."""
    last_before = (
        sa.select(sa.func.max(agent_events.c.id).label("id"))
        .where(agent_events.c.at < since, agent_events.c.channel.is_(None))
        .group_by(agent_events.c.agent_id)
        .subquery()
    )
    columns = (agent_events.c.agent_id, agent_events.c.at, agent_events.c.state,
               agent_events.c.call_id, agent_events.c.id)  # fmt: skip
    before = await _rows(
        store, sa.select(*columns).where(agent_events.c.id.in_(sa.select(last_before.c.id)))
    )
    inside = await _rows(
        store,
        sa.select(*columns).where(
            agent_events.c.at >= since,
            agent_events.c.at < until,
            agent_events.c.channel.is_(None),
        ),
    )
    by_agent: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(before + inside, key=lambda r: (r["at"], r["id"])):
        by_agent.setdefault(row["agent_id"], []).append(row)
    spans: dict[str, dict[str, float]] = {}
    wrap_by_call: dict[str, float] = {}
    for agent, rows in by_agent.items():
        states = spans.setdefault(agent, {})
        for row, following in zip(rows, [*rows[1:], None], strict=True):
            end = until if following is None else following["at"]
            seconds = min(end, until) - max(row["at"], since)
            if seconds > 0:
                states[row["state"]] = states.get(row["state"], 0.0) + seconds
            if row["state"] == "wrap_up" and row["call_id"] is not None:
                wrap_by_call[row["call_id"]] = max(0.0, min(end, until) - row["at"])
    return spans, wrap_by_call
