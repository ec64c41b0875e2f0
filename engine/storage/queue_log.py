"""Export queue and agent events in Asterisk's queue_log format.

Reporting tools written for Asterisk (QueueMetrics, Asternic, home-grown SQL over queue_log) read
one event per line: ``epoch|callid|queue|agent|EVENT|data1|data2|...``. The mapping from our events
follows Asterisk's documented queue_log events (doc/queuelog.txt, app_queue.c):

| ours            | Asterisk          | data fields                                   |
|-----------------|-------------------|-----------------------------------------------|
| enter           | ENTERQUEUE        | url (empty), caller id, position               |
| ring_no_answer  | RINGNOANSWER      | ring time in milliseconds                      |
| answer          | CONNECT           | hold time, bridged call id, ring time (s)      |
| abandon         | ABANDON           | position, original position, wait time         |
| overflow        | EXITWITHTIMEOUT / FULL / EXITEMPTY / JOINEMPTY | position, original position, wait time |
| transfer        | BLINDTRANSFER     | target, context (empty), hold time, talk time, original position |
| complete        | COMPLETECALLER / COMPLETEAGENT | hold time, talk time, original position |
| agent available after not_ready | UNPAUSE | reason                                   |
| agent not_ready | PAUSE             | reason                                         |
| agent logged in / out | AGENTLOGIN / AGENTLOGOFF | (none)                             |

``offer`` has no Asterisk counterpart (app_queue logs only the outcome of a ring) and is not
exported. Times are whole seconds, as Asterisk writes them. Agents appear as ``Agent/<id>``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa

from engine.storage import Store
from engine.storage.schema import agent_events, queue_events


def _secs(value: Any) -> str:
    return "" if value is None else str(round(float(value)))


def _int(value: Any) -> str:
    return "" if value is None else str(int(value))


def format_queue_event(row: dict[str, Any]) -> str | None:
    """One queue_log line for a ``queue_events`` row, or None for events Asterisk has no name for."""
    data: dict[str, Any] = row.get("data") or {}
    event = row["event"]
    agent = f"Agent/{row['agent_id']}" if row.get("agent_id") else "NONE"
    fields: list[str]
    if event == "enter":
        name, fields = "ENTERQUEUE", ["", data.get("caller") or "", _int(data.get("position"))]
    elif event == "ring_no_answer":
        ring_ms = data.get("ring_s")
        name, fields = "RINGNOANSWER", ["" if ring_ms is None else str(round(ring_ms * 1000))]
    elif event == "answer":
        name, fields = (
            "CONNECT",
            [_secs(data.get("wait_s")), row["call_id"], _secs(data.get("ring_s"))],
        )
    elif event == "abandon":
        name = "ABANDON"
        fields = [
            _int(data.get("position")),
            _int(data.get("orig_position")),
            _secs(data.get("wait_s")),
        ]
    elif event == "overflow":
        name = {"full": "FULL", "empty": "EXITEMPTY", "join_empty": "JOINEMPTY"}.get(
            data.get("reason") or "", "EXITWITHTIMEOUT"
        )
        fields = [
            _int(data.get("position")),
            _int(data.get("orig_position")),
            _secs(data.get("wait_s")),
        ]
    elif event == "transfer":
        name = "BLINDTRANSFER"
        fields = [
            data.get("target") or "",
            "",
            _secs(data.get("wait_s")),
            _secs(data.get("talk_s")),
            _int(data.get("orig_position")),
        ]
    elif event == "callback":  # Asterisk's exit on a key press, with the key
        name = "EXITWITHKEY"
        fields = [
            data.get("reason") or "",
            _int(data.get("position")),
            _int(data.get("orig_position")),
            _secs(data.get("wait_s")),
        ]
    elif event == "complete":
        name = "COMPLETEAGENT" if data.get("hangup_side") == "agent" else "COMPLETECALLER"
        fields = [
            _secs(data.get("wait_s")),
            _secs(data.get("talk_s")),
            _int(data.get("orig_position")),
        ]
    else:
        return None
    return "|".join([str(int(row["at"])), row["call_id"], row["queue"], agent, name, *fields])


def format_agent_event(row: dict[str, Any], previous_state: str | None) -> str | None:
    state = row["state"]
    agent = f"Agent/{row['agent_id']}"
    at = str(int(row["at"]))
    if state == "logged_out":
        return f"{at}|NONE|NONE|{agent}|AGENTLOGOFF|"
    if state == "not_ready":
        return f"{at}|NONE|NONE|{agent}|PAUSE|{row.get('reason') or ''}"
    if state == "available" and previous_state in (None, "logged_out"):
        return f"{at}|NONE|NONE|{agent}|AGENTLOGIN|"
    if state == "available" and previous_state == "not_ready":
        return f"{at}|NONE|NONE|{agent}|UNPAUSE|"
    return None


async def export_queue_log(
    store: Store, *, since: float | None = None, until: float | None = None
) -> AsyncIterator[str]:
    """queue_log lines in time order (queue and agent events merged), streamed from the store."""
    q = sa.select(queue_events).order_by(queue_events.c.at, queue_events.c.id)
    # The agents' own states; a task's rows (offer, accept, end of a chat ...) have no queue_log
    # line and must not pass for the state the next row is judged against.
    a = (
        sa.select(agent_events)
        .where(agent_events.c.task_id.is_(None))
        .order_by(agent_events.c.at, agent_events.c.id)
    )
    if since is not None:
        q, a = q.where(queue_events.c.at >= since), a.where(agent_events.c.at >= since)
    if until is not None:
        q, a = q.where(queue_events.c.at < until), a.where(agent_events.c.at < until)
    async with store.engine.connect() as conn:
        queue_rows = [dict(r) for r in (await conn.execute(q)).mappings()]
        agent_rows = [dict(r) for r in (await conn.execute(a)).mappings()]
        # The state before `since` decides whether the first 'available' is a login or an unpause.
        previous: dict[str, str | None] = {}
        if since is not None:
            latest = (
                sa.select(agent_events.c.agent_id, agent_events.c.state)
                .where(agent_events.c.at < since, agent_events.c.task_id.is_(None))
                .order_by(agent_events.c.at, agent_events.c.id)
            )
            for agent_id, state in (await conn.execute(latest)).all():
                previous[agent_id] = state
    merged = sorted(
        [(r["at"], 0, i, r) for i, r in enumerate(agent_rows)]
        + [(r["at"], 1, i, r) for i, r in enumerate(queue_rows)],
        key=lambda item: item[:3],
    )
    for _at, kind, _i, row in merged:
        if kind == 0:
            line = format_agent_event(row, previous.get(row["agent_id"]))
            previous[row["agent_id"]] = row["state"]
        else:
            line = format_queue_event(row)
        if line is not None:
            yield line
