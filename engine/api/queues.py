"""Queues with their live and today's figures (per-interval statistics: ``engine.api.reports``).

How this works: live figures (waiting, oldest wait, agents per state) come from the routing
service; the day's and the intervals' figures come from the CDR store. ``service_level`` is
answered within the queue's threshold divided by answered (the same definition as ``acd
simulate``'s ``service_level``), ``asa_s`` the mean wait of answered calls, ``aht_s`` the mean
talk plus wrap-up, ``abandon_rate`` abandoned over offered. An agent sees only its own queues;
interval statistics are for supervisors.

The figures above are the calls'. ``tasks`` has the same per task channel (chat, email, social,
ticket): live waiting and oldest wait from the same router, and today's from the tasks table,
where a task is "answered" when an agent accepted it (``service_level`` accepted within the
queue's threshold over accepted, ``asa_s`` the mean wait to accept, ``aht_s`` the mean time from
accept to complete) and "abandoned" when it was cancelled before that. ``csat_responses`` and
``csat_average`` are the calls' post-call survey answers (first question, 1-5) and their mean.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import msgspec
from aiohttp import web

from engine.api.app import json_response
from engine.api.auth import principal_of
from engine.api.context import CONTEXT_KEY
from engine.config import TASK_CHANNELS, Role
from engine.storage import queries
from engine.storage import tasks as task_store


class DayFigures(msgspec.Struct, frozen=True):
    offered: int
    answered: int
    abandoned: int
    service_level: float | None
    asa_s: float | None
    aht_s: float | None
    abandon_rate: float | None
    # post-call survey (queues[].csat): answers to its first question, and their mean (1-5)
    csat_responses: int = 0
    csat_average: float | None = None


class ChannelFigures(msgspec.Struct, frozen=True):
    waiting: int  # not yet accepted: waiting or offered
    oldest_wait_s: float
    today: DayFigures


class QueueView(msgspec.Struct, frozen=True):
    name: str
    strategy: str
    waiting: int  # calls
    oldest_wait_s: float
    agents: dict[str, int]
    service_level_s: float
    today: DayFigures
    # per task channel (chat, email, social, ticket): the same figures for the tasks
    tasks: dict[str, ChannelFigures] = msgspec.field(default_factory=dict)


def summarize(rows: Iterable[Mapping[str, Any]], threshold_s: float) -> DayFigures:
    """Figures of CDR rows (calls): answered by an agent, or abandoned; and their CSAT scores."""
    rows = list(rows)
    figures = _figures(
        (
            (
                None if row["agent_answered_at"] is None else float(row["wait_s"] or 0.0),
                float(row["talk_s"] or 0.0) + float(row["wrap_up_s"] or 0.0),
                row["disposition"] == "abandoned",
            )
            for row in rows
        ),
        threshold_s,
    )
    scores = [int(row["csat_score"]) for row in rows if row.get("csat_score") is not None]
    if not scores:
        return figures
    return msgspec.structs.replace(
        figures, csat_responses=len(scores), csat_average=round(sum(scores) / len(scores), 3)
    )


def summarize_tasks(rows: Iterable[Mapping[str, Any]], threshold_s: float) -> DayFigures:
    """Figures of task rows: accepted by an agent, or cancelled by the customer."""
    return _figures(
        (
            (
                None if row["accepted_at"] is None else float(row["wait_s"] or 0.0),
                None if row["handle_s"] is None else float(row["handle_s"]),
                row["state"] == "cancelled",
            )
            for row in rows
        ),
        threshold_s,
    )


def _figures(
    contacts: Iterable[tuple[float | None, float | None, bool]], threshold_s: float
) -> DayFigures:
    """One queue's figures from (wait if answered else None, handle time, abandoned) per contact."""
    offered = answered = abandoned = within = 0
    waits: list[float] = []
    handle: list[float] = []
    for wait, handle_s, gave_up in contacts:
        offered += 1
        if wait is not None:
            answered += 1
            waits.append(wait)
            within += wait <= threshold_s
            if handle_s is not None:
                handle.append(handle_s)
        elif gave_up:
            abandoned += 1
    return DayFigures(
        offered=offered,
        answered=answered,
        abandoned=abandoned,
        service_level=within / answered if answered else None,
        asa_s=sum(waits) / len(waits) if waits else None,
        aht_s=sum(handle) / len(handle) if handle else None,
        abandon_rate=abandoned / offered if offered else None,
    )


def start_of_today(now: float | None = None) -> float:
    """Local midnight of the server's time zone, as epoch seconds (what 'today' means on a wallboard)."""
    moment = datetime.fromtimestamp(time.time() if now is None else now).astimezone()
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


async def list_queues(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    principal = principal_of(request)
    config = ctx.get_config()
    if principal.at_least(Role.SUPERVISOR):
        visible = list(config.queues)
    else:  # an agent sees the queues it is a member of
        agent = next((a for a in config.agents if a.id == principal.agent_id), None)
        member_of = set(agent.queues) if agent else set()
        visible = [q for q in config.queues if q.name in member_of]
    live: dict[str, tuple[int, float]] = {}
    live_tasks: dict[tuple[str, str], tuple[int, float]] = {}
    by_state: dict[tuple[str, str], int] = {}
    if ctx.routing is not None:
        live = {name: (n, wait) for name, n, wait in ctx.routing.queue_figures()}
        for channel in TASK_CHANNELS:
            for name, n, wait in ctx.routing.queue_figures(channel):
                live_tasks[(name, channel)] = (n, wait)
        by_state = ctx.routing.agents_by_queue_and_state()
    names = [q.name for q in visible]
    since = start_of_today()
    rows = await queries.stat_rows(ctx.store, since, None, names) if ctx.store else []
    task_rows = await task_store.day_rows(ctx.store, since, names) if ctx.store else []
    views = []
    for queue in visible:
        waiting, oldest = live.get(queue.name, (0, 0.0))
        views.append(
            QueueView(
                name=queue.name,
                strategy=queue.strategy.value,
                waiting=waiting,
                oldest_wait_s=round(oldest, 3),
                agents={s: n for (q, s), n in by_state.items() if q == queue.name},
                service_level_s=queue.service_level_s,
                today=summarize(
                    (r for r in rows if r["queue"] == queue.name), queue.service_level_s
                ),
                tasks={
                    channel: ChannelFigures(
                        waiting=live_tasks.get((queue.name, channel), (0, 0.0))[0],
                        oldest_wait_s=round(live_tasks.get((queue.name, channel), (0, 0.0))[1], 3),
                        today=summarize_tasks(
                            (
                                r
                                for r in task_rows
                                if r["queue"] == queue.name and r["channel"] == channel
                            ),
                            queue.service_level_s,
                        ),
                    )
                    for channel in TASK_CHANNELS
                },
            )
        )
    return json_response(views)
