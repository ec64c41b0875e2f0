"""The interval report per queue and the agent report, as JSON or CSV.

How this works: ``GET /api/v1/stats/intervals`` cuts [since, until) into ``interval_s`` buckets
by arrival and gives, per (interval, queue), the calls' figures (``engine.api.queues.summarize``),
the service level by the chosen definition (``sl``, one of ``routing_core.stats.SL_DEFINITIONS``:
a..e, default "a", the one ``service_level`` has always been; a short abandon for "e" is one
under ``short_abandon_s``, default 5 s), the mean talk and wrap-up of answered calls (wrap-up
from the agent event log's ``wrap_up`` row naming the call), the transfer rate (calls the agent
transferred over answered), and per task channel offered / handled / cancelled / mean handle.
``aht_s`` there is talk plus wrap-up. Hold is not recorded per call yet, so no hold figure.

``GET /api/v1/stats/agents`` gives per agent its time per state in the window, ``occupancy``
(busy + wrap-up over busy + wrap-up + available), ``utilisation`` (busy + wrap-up over the time
logged in, i.e. every state but logged_out), the calls it answered that arrived in the window
with their mean talk and wrap-up and transfers, and the time it held tasks per channel.

Both answer CSV (one header row, then one row per JSON object, nested figures flattened with
``.``) for ``Accept: text/csv`` or ``?format=csv``. Both are for supervisors.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from aiohttp import web

from engine.api.app import json_response
from engine.api.auth import require_role
from engine.api.context import CONTEXT_KEY, float_arg
from engine.api.queues import DayFigures, start_of_today, summarize
from engine.config import TASK_CHANNELS, Role
from engine.storage import reports
from engine.storage import tasks as task_store
from routing_core.stats import SL_DEFINITIONS, service_level_defs

# Interval statistics cover at most this span per request (31 days of 15-minute intervals).
MAX_STATS_SPAN_S = 31 * 86400
DEFAULT_SL = "a"
DEFAULT_SHORT_ABANDON_S = 5.0
# The states an agent spends handling a call (occupancy's and utilisation's numerator).
HANDLING_STATES = ("busy", "wrap_up")


class TaskChannelFigures(msgspec.Struct, frozen=True):
    offered: int
    handled: int  # accepted by an agent
    cancelled: int  # cancelled before an agent accepted it
    average_handle_s: float | None


class IntervalFigures(msgspec.Struct, frozen=True):
    start: float
    queue: str
    figures: DayFigures
    sl_definition: str
    service_level_by_definition: float | None
    talk_s: float | None
    wrap_up_s: float | None
    transferred: int
    transfer_rate: float | None  # transferred over answered
    tasks: dict[str, TaskChannelFigures] = msgspec.field(default_factory=dict)


class AgentFigures(msgspec.Struct, frozen=True):
    agent: str
    state_s: dict[str, float]
    logged_in_s: float
    handling_s: float
    occupancy: float | None
    utilisation: float | None
    calls_answered: int
    talk_s: float | None
    wrap_up_s: float | None
    transferred: int
    task_handle_s: dict[str, float]


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 6) if values else None


def _ratio(num: float, den: float) -> float | None:
    return round(num / den, 6) if den > 0 else None


def sl_by_definition(
    rows: Iterable[Mapping[str, Any]], definition: str, threshold_s: float, short_abandon_s: float
) -> float | None:
    """The service level of calls by one of routing_core's five definitions (None: no calls)."""
    rows = list(rows)
    value = service_level_defs(
        [r["agent_answered_at"] is not None for r in rows],
        [r["agent_answered_at"] is None and r["disposition"] == "abandoned" for r in rows],
        [float(r["wait_s"] or 0.0) for r in rows],
        threshold_s,
        short_abandon_s,
    )[definition]
    return None if math.isnan(value) else round(value, 6)


def interval_figures(
    start: float,
    queue: str,
    calls: list[Mapping[str, Any]],
    task_rows: list[Mapping[str, Any]],
    wrap_by_call: Mapping[str, float],
    *,
    threshold_s: float,
    definition: str,
    short_abandon_s: float,
) -> IntervalFigures:
    answered = [r for r in calls if r["agent_answered_at"] is not None]
    talk = [float(r["talk_s"] or 0.0) for r in answered]
    wrap = [wrap_by_call.get(r["id"], 0.0) for r in answered]
    transferred = sum(r["disposition"] == "transferred" for r in answered)
    figures = summarize(
        [{**r, "wrap_up_s": wrap_by_call.get(r["id"], 0.0)} for r in calls], threshold_s
    )
    channels: dict[str, TaskChannelFigures] = {}
    for channel in TASK_CHANNELS:
        of_channel = [t for t in task_rows if t["channel"] == channel]
        if not of_channel:
            continue
        handled = [t for t in of_channel if t["accepted_at"] is not None]
        channels[channel] = TaskChannelFigures(
            offered=len(of_channel),
            handled=len(handled),
            cancelled=sum(
                t["accepted_at"] is None and t["state"] == "cancelled" for t in of_channel
            ),
            average_handle_s=_mean(
                [float(t["handle_s"]) for t in handled if t["handle_s"] is not None]
            ),
        )
    return IntervalFigures(
        start=start,
        queue=queue,
        figures=figures,
        sl_definition=definition,
        service_level_by_definition=sl_by_definition(
            calls, definition, threshold_s, short_abandon_s
        )
        if calls
        else None,
        talk_s=_mean(talk),
        wrap_up_s=_mean(wrap),
        transferred=transferred,
        transfer_rate=_ratio(transferred, len(answered)),
        tasks=channels,
    )


def agent_figures(
    agent: str,
    state_s: Mapping[str, float],
    calls: list[Mapping[str, Any]],
    wrap_by_call: Mapping[str, float],
    task_handle_s: Mapping[str, float],
) -> AgentFigures:
    handling = sum(state_s.get(s, 0.0) for s in HANDLING_STATES)
    logged_in = sum(v for s, v in state_s.items() if s != "logged_out")
    answered = [r for r in calls if r["agent_answered_at"] is not None]
    return AgentFigures(
        agent=agent,
        state_s={s: round(v, 6) for s, v in sorted(state_s.items())},
        logged_in_s=round(logged_in, 6),
        handling_s=round(handling, 6),
        occupancy=_ratio(handling, handling + state_s.get("available", 0.0)),
        utilisation=_ratio(handling, logged_in),
        calls_answered=len(answered),
        talk_s=_mean([float(r["talk_s"] or 0.0) for r in answered]),
        wrap_up_s=_mean([wrap_by_call.get(r["id"], 0.0) for r in answered]),
        transferred=sum(r["disposition"] == "transferred" for r in answered),
        task_handle_s={c: round(v, 6) for c, v in sorted(task_handle_s.items())},
    )


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(inner, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = "" if value is None else value


def csv_body(items: list[Any]) -> str:
    """CSV of structs: a header row (the union of flattened keys, in first-seen order), then rows."""
    flat: list[dict[str, Any]] = []
    for item in items:
        row: dict[str, Any] = {}
        _flatten(msgspec.to_builtins(item), "", row)
        flat.append(row)
    header: dict[str, None] = {}
    for row in flat:
        header.update(dict.fromkeys(row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(header), restval="", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(flat)
    return buffer.getvalue()


def _wants_csv(request: web.Request) -> bool:
    fmt = request.query.get("format")
    if fmt is not None:
        if fmt not in ("json", "csv"):
            raise web.HTTPBadRequest(text=f"format must be json or csv, found {fmt!r}")
        return fmt == "csv"
    return "text/csv" in request.headers.get("Accept", "")


def _respond(request: web.Request, items: list[Any]) -> web.Response:
    if _wants_csv(request):
        return web.Response(text=csv_body(items), content_type="text/csv", charset="utf-8")
    return json_response(items)


def _window(request: web.Request) -> tuple[float, float]:
    now = time.time()
    since = float_arg(request, "since", start_of_today(now))
    until = float_arg(request, "until", now)
    assert since is not None
    assert until is not None
    if until <= since or until - since > MAX_STATS_SPAN_S:
        raise web.HTTPBadRequest(text=f"need 0 < until - since <= {MAX_STATS_SPAN_S} s")
    return since, until


async def interval_stats(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    require_role(request, Role.SUPERVISOR)
    if ctx.store is None:
        raise web.HTTPServiceUnavailable(text="storage is not open")
    _wants_csv(request)  # a bad format is a 400 before any work
    interval_s = float_arg(request, "interval_s", 900.0) or 900.0
    if interval_s < 60:
        raise web.HTTPBadRequest(text="need interval_s >= 60")
    since, until = _window(request)
    definition = request.query.get("sl", DEFAULT_SL)
    if definition not in SL_DEFINITIONS:
        raise web.HTTPBadRequest(
            text=f"sl must be one of {', '.join(SL_DEFINITIONS)}, found {definition!r}"
        )
    short_abandon_s = float_arg(request, "short_abandon_s", DEFAULT_SHORT_ABANDON_S)
    assert short_abandon_s is not None
    config = ctx.get_config()
    thresholds = {q.name: q.service_level_s for q in config.queues}
    wanted = [request.query["queue"]] if "queue" in request.query else list(thresholds)
    calls = await reports.call_rows(ctx.store, since, until, wanted)
    task_rows = await reports.task_rows(ctx.store, since, until, wanted)
    _, wrap_by_call = await reports.agent_state_spans(ctx.store, since, until)

    def bucket(at: float) -> float:
        return since + ((at - since) // interval_s) * interval_s

    call_buckets: dict[tuple[float, str], list[Any]] = {}
    for row in calls:
        call_buckets.setdefault((bucket(row["arrived_at"]), row["queue"]), []).append(row)
    task_buckets: dict[tuple[float, str], list[Any]] = {}
    for row in task_rows:
        task_buckets.setdefault((bucket(row["arrived_at"]), row["queue"]), []).append(row)
    out = [
        interval_figures(
            start,
            queue,
            call_buckets.get((start, queue), []),
            task_buckets.get((start, queue), []),
            wrap_by_call,
            threshold_s=thresholds.get(queue, 20.0),
            definition=definition,
            short_abandon_s=short_abandon_s,
        )
        for start, queue in sorted(set(call_buckets) | set(task_buckets))
    ]
    return _respond(request, out)


async def agent_stats(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    require_role(request, Role.SUPERVISOR)
    if ctx.store is None:
        raise web.HTTPServiceUnavailable(text="storage is not open")
    _wants_csv(request)
    since, until = _window(request)
    spans, wrap_by_call = await reports.agent_state_spans(ctx.store, since, until)
    calls = await reports.call_rows(ctx.store, since, until, None)
    handle = await task_store.task_handle_seconds(ctx.store, since, until)
    agents = sorted({a.id for a in ctx.get_config().agents} | set(spans))
    if "agent" in request.query:
        agents = [a for a in agents if a == request.query["agent"]]
    out = [
        agent_figures(
            agent,
            spans.get(agent, {}),
            [r for r in calls if r["agent_id"] == agent],
            wrap_by_call,
            {c: s for (a, c), s in handle.items() if a == agent},
        )
        for agent in agents
    ]
    return _respond(request, out)
