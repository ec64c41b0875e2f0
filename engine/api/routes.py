"""The control API under ``/api/v1``: bearer tokens with roles, live figures, agents, CDRs, statistics.

How this works: ``auth_middleware`` resolves ``Authorization: Bearer <token>`` to a ``Principal``
(name, role, agent id) from the config's ``[[api.tokens]]`` and the agents' ``api_token``; tokens
are looked up by their SHA-256, so a config may hold only hashes and a lookup leaks no timing about
the secret. Roles nest: admin > supervisor > agent; an agent sees only itself and its own calls.
Every state change made through the API (agent state, reload) is written to the audit log and to
the agent-events table, so "who paused agent 1002 at 10:41" has an answer.

Handlers reach the daemon through ``ApiContext``; they never hold state of their own. Agent state is
read from and changed in the routing service (the one owner, DESIGN.md section 2).

Statistics come from the CDR store: ``service_level`` is answered within the queue's threshold
divided by answered (the same definition as ``acd simulate``'s ``service_level``), ``asa_s`` the
mean wait of answered calls, ``aht_s`` the mean talk plus wrap-up, ``abandon_rate`` abandoned over
offered.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

import msgspec
import sqlalchemy as sa
import structlog
from aiohttp import WSCloseCode, web

import routing_core as rc
from engine.api.app import Problem, json_response
from engine.config import Config, Role
from engine.recording.service import (
    CONTENT_TYPES,
    RecordingRefused,
    RecordingService,
)
from engine.routing.service import RoutingService
from engine.runtime.events import Event, EventBus, Subscription
from engine.storage import Store
from engine.storage.cdr import CdrWriter
from engine.storage.schema import audit_log, calls, recordings

log = structlog.stdlib.get_logger("acd.api")

_RANK = {Role.AGENT: 0, Role.SUPERVISOR: 1, Role.ADMIN: 2}
# A CDR search returns at most this many rows; page with `until` = the oldest arrived_at seen.
MAX_CDR_ROWS = 1000
# Interval statistics cover at most this span per request (31 days of 15-minute intervals).
MAX_STATS_SPAN_S = 31 * 86400


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role
    agent_id: str | None = None

    def at_least(self, role: Role) -> bool:
        return _RANK[self.role] >= _RANK[role]


@dataclass
class ApiContext:
    """What the API needs from the daemon; filled in by the daemon as parts start."""

    get_config: Callable[[], Config]
    reload: Callable[[], bool]
    store: Store | None = None
    cdr: CdrWriter | None = None
    routing: RoutingService | None = None
    bus: EventBus | None = None
    recordings: RecordingService | None = None
    calls: Any = (
        None  # engine.calls.service.CallService (typed loosely: calls imports this module's peers)
    )


CONTEXT_KEY = web.AppKey("api_context", ApiContext)
PRINCIPAL_KEY = web.RequestKey("principal", Principal)  # request-scoped, set by the middleware


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenTable:
    """token SHA-256 -> Principal, rebuilt when the config object changes (reload)."""

    def __init__(self) -> None:
        self._config: Config | None = None
        self._table: dict[str, Principal] = {}

    def lookup(self, config: Config, token: str) -> Principal | None:
        if config is not self._config:
            table: dict[str, Principal] = {}
            for t in config.api.tokens:
                table[t.token_sha256 or _sha256(t.token)] = Principal(t.name, t.role)
            for agent in config.agents:
                if agent.api_token:
                    table[_sha256(agent.api_token)] = Principal(
                        f"agent:{agent.id}", Role.AGENT, agent.id
                    )
            self._table, self._config = table, config
        return self._table.get(_sha256(token))


def _problem(
    status: int, title: str, detail: str = "", headers: Mapping[str, str] | None = None
) -> web.Response:
    response = json_response(Problem(title=title, status=status, detail=detail), status=status)
    response.content_type = "application/problem+json"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


# The event stream authenticates in its first message (browsers cannot set headers on a WebSocket).
# Public to the bearer middleware: the index, the OpenAPI document, and the two WebSockets, which
# authenticate in their first message (a browser cannot set headers on a WebSocket).
_PUBLIC = {"/api/v1/", "/api/v1/openapi.json", "/api/v1/events", "/api/v1/agent/rtc"}
# Seconds a WebSocket client has to send its auth message.
WS_AUTH_TIMEOUT_S = 5.0
# Seconds we wait for a client to answer our close frame before dropping the connection. A client
# that is there answers in milliseconds; aiohttp's default (10 s) would outlast the shutdown budget.
WS_CLOSE_TIMEOUT_S = 1.0


TOKENS_KEY = web.AppKey("api_tokens", TokenTable)
# The open /api/v1/events sockets, so that shutdown can close them (1001) instead of waiting them out.
EVENT_STREAMS_KEY = web.AppKey("event_streams", set[web.WebSocketResponse])


def make_auth_middleware(tokens: TokenTable) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def auth_middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith("/api/") or request.path in _PUBLIC:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        principal = None
        if scheme.lower() == "bearer" and token:
            principal = tokens.lookup(request.app[CONTEXT_KEY].get_config(), token.strip())
        if principal is None:
            return _problem(
                401,
                "Unauthorized",
                "send Authorization: Bearer <token>",
                {"WWW-Authenticate": 'Bearer realm="acd"'},
            )
        request[PRINCIPAL_KEY] = principal
        return await handler(request)

    return auth_middleware


def _principal(request: web.Request) -> Principal:
    principal: Principal = request[PRINCIPAL_KEY]
    return principal


def _require(request: web.Request, role: Role) -> Principal:
    principal = _principal(request)
    if not principal.at_least(role):
        raise web.HTTPForbidden(text=f"needs the {role.value} role")
    return principal


async def audit(
    ctx: ApiContext,
    request: web.Request,
    *,
    action: str,
    outcome: str,
    object_type: str | None = None,
    object_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Write one audit row (and a log line). A failing store is logged, never fails the request."""
    principal: Principal | None = request.get(PRINCIPAL_KEY)
    row = {
        "at": time.time(),
        "actor": principal.name if principal else "anonymous",
        "role": principal.role.value if principal else None,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "outcome": outcome,
        "remote_addr": request.remote,
        "detail": detail,
    }
    log.info("audit", **{k: v for k, v in row.items() if k != "at"})
    if ctx.store is None:
        return
    try:
        async with ctx.store.engine.begin() as conn:
            await conn.execute(audit_log.insert().values(**row))
    except sa.exc.SQLAlchemyError as exc:
        log.error("audit_write_failed", reason=str(exc), action=action)


# -- structs the API returns ---------------------------------------------------------------------


class DayFigures(msgspec.Struct, frozen=True):
    offered: int
    answered: int
    abandoned: int
    service_level: float | None
    asa_s: float | None
    aht_s: float | None
    abandon_rate: float | None


class QueueView(msgspec.Struct, frozen=True):
    name: str
    strategy: str
    waiting: int
    oldest_wait_s: float
    agents: dict[str, int]
    service_level_s: float
    today: DayFigures


class AgentView(msgspec.Struct, frozen=True):
    id: str
    name: str
    state: str
    reason: str
    queues: dict[str, int]
    skills: dict[str, int]
    # Seconds of wrap-up left when this answer was made (null outside wrap-up). Relative, not a
    # wall-clock end time: a page counts down from its own receipt, whatever its clock says.
    wrap_up_remaining_s: float | None = None


class AgentStateChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    state: str  # ready | not_ready | logged_out | logged_in
    reason: str = ""


class IntervalFigures(msgspec.Struct, frozen=True):
    start: float
    queue: str
    figures: DayFigures


def summarize(rows: Iterable[Mapping[str, Any]], threshold_s: float) -> DayFigures:
    offered = answered = abandoned = within = 0
    waits: list[float] = []
    handle: list[float] = []
    for row in rows:
        offered += 1
        if row["agent_answered_at"] is not None:
            answered += 1
            wait = float(row["wait_s"] or 0.0)
            waits.append(wait)
            within += wait <= threshold_s
            handle.append(float(row["talk_s"] or 0.0) + float(row["wrap_up_s"] or 0.0))
        elif row["disposition"] == "abandoned":
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


_STAT_COLUMNS = (
    calls.c.queue,
    calls.c.arrived_at,
    calls.c.agent_answered_at,
    calls.c.disposition,
    calls.c.wait_s,
    calls.c.talk_s,
    calls.c.wrap_up_s,
)


def start_of_today(now: float | None = None) -> float:
    """Local midnight of the server's time zone, as epoch seconds (what 'today' means on a wallboard)."""
    moment = datetime.fromtimestamp(time.time() if now is None else now).astimezone()
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


async def _stat_rows(
    store: Store, since: float, until: float | None, queues: Iterable[str] | None
) -> list[Mapping[str, Any]]:
    query = sa.select(*_STAT_COLUMNS).where(calls.c.arrived_at >= since, calls.c.queue.is_not(None))
    if until is not None:
        query = query.where(calls.c.arrived_at < until)
    if queues is not None:
        query = query.where(calls.c.queue.in_(list(queues)))
    async with store.engine.connect() as conn:
        return [dict(row) for row in (await conn.execute(query)).mappings()]


# -- handlers ------------------------------------------------------------------------------------


async def list_queues(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    principal = _principal(request)
    config = ctx.get_config()
    if principal.at_least(Role.SUPERVISOR):
        visible = list(config.queues)
    else:  # an agent sees the queues it is a member of
        agent = next((a for a in config.agents if a.id == principal.agent_id), None)
        member_of = set(agent.queues) if agent else set()
        visible = [q for q in config.queues if q.name in member_of]
    live: dict[str, tuple[int, float]] = {}
    by_state: dict[tuple[str, str], int] = {}
    if ctx.routing is not None:
        live = {name: (n, wait) for name, n, wait in ctx.routing.queue_figures()}
        by_state = ctx.routing.agents_by_queue_and_state()
    rows = (
        await _stat_rows(ctx.store, start_of_today(), None, [q.name for q in visible])
        if ctx.store
        else []
    )
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
            )
        )
    return json_response(views)


def _agent_view(ctx: ApiContext, agent_id: str) -> AgentView | None:
    agent = next((a for a in ctx.get_config().agents if a.id == agent_id), None)
    if agent is None:
        return None
    state, reason, wrap_left = "logged_out", "", None
    if ctx.routing is not None:
        state = ctx.routing.agent_state(agent.id).name.lower()
        if state == "not_ready":
            reason = ctx.routing.router.not_ready_reason(agent.id)
        until = ctx.routing.router.wrap_up_until(agent.id)
        if until is not None:
            # 0 once due: the routing timer may not have run yet; its agent event follows.
            wrap_left = round(max(0.0, until - ctx.routing.now), 3)
    return AgentView(
        id=agent.id,
        name=agent.name,
        state=state,
        reason=reason,
        queues=dict(agent.queues),
        skills=dict(agent.skills),
        wrap_up_remaining_s=wrap_left,
    )


async def list_agents(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    principal = _principal(request)
    ids = [a.id for a in ctx.get_config().agents]
    if not principal.at_least(Role.SUPERVISOR):
        ids = [i for i in ids if i == principal.agent_id]
    return json_response([v for v in (_agent_view(ctx, i) for i in ids) if v is not None])


def _check_agent_access(principal: Principal, agent_id: str) -> None:
    if not principal.at_least(Role.SUPERVISOR) and principal.agent_id != agent_id:
        raise web.HTTPForbidden(text="agents may only see and change themselves")


async def get_agent(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    agent_id = request.match_info["agent_id"]
    _check_agent_access(_principal(request), agent_id)
    view = _agent_view(ctx, agent_id)
    if view is None:
        raise web.HTTPNotFound(text=f"no agent {agent_id!r}")
    return json_response(view)


_STATE_EVENTS = {"ready": "available", "not_ready": "not_ready", "logged_out": "logged_out"}


async def set_agent_state(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    agent_id = request.match_info["agent_id"]
    principal = _principal(request)
    _check_agent_access(principal, agent_id)
    if _agent_view(ctx, agent_id) is None:
        raise web.HTTPNotFound(text=f"no agent {agent_id!r}")
    try:
        change = msgspec.json.decode(await request.read(), type=AgentStateChange)
    except msgspec.DecodeError as exc:
        raise web.HTTPBadRequest(text=f'expected {{"state": ..., "reason": ...}}: {exc}') from None
    if change.state not in ("ready", "not_ready", "logged_out", "logged_in"):
        raise web.HTTPBadRequest(text="state must be ready, not_ready, logged_out or logged_in")
    if ctx.routing is None:
        raise web.HTTPServiceUnavailable(text="routing is not running")
    routing = ctx.routing
    actions: dict[str, Callable[[], None]] = {
        "ready": lambda: routing.set_ready(agent_id),
        "not_ready": lambda: routing.set_not_ready(agent_id, change.reason),
        "logged_out": lambda: routing.logout(agent_id),
        "logged_in": lambda: routing.login(agent_id),
    }
    detail = {"state": change.state, "reason": change.reason}
    try:
        actions[change.state]()
    except rc.InvalidTransition as exc:
        await audit(ctx, request, action="agent_state", outcome="refused", object_type="agent",
                    object_id=agent_id, detail={**detail, "why": str(exc)})  # fmt: skip
        raise web.HTTPConflict(text=str(exc)) from None
    await audit(ctx, request, action="agent_state", outcome="done", object_type="agent",
                object_id=agent_id, detail=detail)  # fmt: skip
    if ctx.cdr is not None:
        event = _STATE_EVENTS.get(change.state, "available")
        ctx.cdr.agent_event(agent_id, event, reason=change.reason or f"api:{principal.name}")
    view = _agent_view(ctx, agent_id)
    return json_response(view)


def _float_arg(request: web.Request, name: str, default: float | None) -> float | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be epoch seconds, found {raw!r}") from None


async def search_cdr(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    principal = _principal(request)
    if ctx.store is None:
        raise web.HTTPServiceUnavailable(text="storage is not open")
    since = _float_arg(request, "since", None)
    until = _float_arg(request, "until", None)
    try:
        limit = min(int(request.query.get("limit", "100")), MAX_CDR_ROWS)
    except ValueError:
        raise web.HTTPBadRequest(text="limit must be an integer") from None
    query = sa.select(calls).order_by(calls.c.arrived_at.desc()).limit(limit)
    if since is not None:
        query = query.where(calls.c.arrived_at >= since)
    if until is not None:
        query = query.where(calls.c.arrived_at < until)
    for arg in ("queue", "caller", "disposition"):
        if arg in request.query:
            query = query.where(calls.c[arg] == request.query[arg])
    agent = request.query.get("agent")
    if not principal.at_least(Role.SUPERVISOR):
        if agent not in (None, principal.agent_id):
            raise web.HTTPForbidden(text="agents may only search their own calls")
        agent = principal.agent_id
    if agent is not None:
        query = query.where(calls.c.agent_id == agent)
    async with ctx.store.engine.connect() as conn:
        rows = [dict(r) for r in (await conn.execute(query)).mappings()]
    return json_response(rows)


async def interval_stats(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    _require(request, Role.SUPERVISOR)
    if ctx.store is None:
        raise web.HTTPServiceUnavailable(text="storage is not open")
    now = time.time()
    interval_s = _float_arg(request, "interval_s", 900.0) or 900.0
    since = _float_arg(request, "since", start_of_today(now))
    until = _float_arg(request, "until", now)
    assert since is not None
    assert until is not None
    if interval_s < 60 or until <= since or until - since > MAX_STATS_SPAN_S:
        raise web.HTTPBadRequest(
            text=f"need interval_s >= 60 and 0 < until - since <= {MAX_STATS_SPAN_S} s"
        )
    config = ctx.get_config()
    thresholds = {q.name: q.service_level_s for q in config.queues}
    wanted = [request.query["queue"]] if "queue" in request.query else list(thresholds)
    rows = await _stat_rows(ctx.store, since, until, wanted)
    buckets: dict[tuple[float, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        start = since + ((row["arrived_at"] - since) // interval_s) * interval_s
        buckets.setdefault((start, row["queue"]), []).append(row)
    out = [
        IntervalFigures(
            start=start, queue=queue, figures=summarize(group, thresholds.get(queue, 20.0))
        )
        for (start, queue), group in sorted(buckets.items())
    ]
    return json_response(out)


async def reload_config(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    _require(request, Role.ADMIN)
    applied = ctx.reload()
    await audit(ctx, request, action="reload", outcome="done" if applied else "refused")
    if not applied:
        raise web.HTTPUnprocessableEntity(
            text="the config file is invalid; the running config stays (see the log)"
        )
    return json_response({"reloaded": True})


async def _recording_row(ctx: ApiContext, recording_id: str) -> dict[str, Any] | None:
    if ctx.store is None:
        raise web.HTTPServiceUnavailable(text="storage is not open")
    async with ctx.store.engine.connect() as conn:
        row = (
            (await conn.execute(sa.select(recordings).where(recordings.c.id == recording_id)))
            .mappings()
            .first()
        )
    return None if row is None else dict(row)


def _may_hear(ctx: ApiContext, principal: Principal, row: dict[str, Any]) -> bool:
    if principal.at_least(Role.SUPERVISOR):
        return True
    own = row["agent_id"] is not None and row["agent_id"] == principal.agent_id
    return own and ctx.get_config().recordings.agents_download_own


async def list_recordings(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    principal = _principal(request)
    if ctx.store is None:
        raise web.HTTPServiceUnavailable(text="storage is not open")
    query = sa.select(recordings).order_by(recordings.c.started_at.desc())
    query = query.limit(min(int(request.query.get("limit", "100") or 100), MAX_CDR_ROWS))
    for arg, column in (("call_id", recordings.c.call_id), ("queue", recordings.c.queue)):
        if arg in request.query:
            query = query.where(column == request.query[arg])
    since = _float_arg(request, "since", None)
    if since is not None:
        query = query.where(recordings.c.started_at >= since)
    agent = request.query.get("agent")
    if not principal.at_least(Role.SUPERVISOR):
        if not ctx.get_config().recordings.agents_download_own or agent not in (
            None,
            principal.agent_id,
        ):
            raise web.HTTPForbidden(
                text="recordings are for supervisors (or own calls when allowed)"
            )
        agent = principal.agent_id
    if agent is not None:
        query = query.where(recordings.c.agent_id == agent)
    async with ctx.store.engine.connect() as conn:
        rows = [dict(r) for r in (await conn.execute(query)).mappings()]
    return json_response(rows)


async def download_recording(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT_KEY]
    principal = _principal(request)
    recording_id = request.match_info["recording_id"]
    row = await _recording_row(ctx, recording_id)
    if row is None:
        raise web.HTTPNotFound(text=f"no recording {recording_id!r}")
    if not _may_hear(ctx, principal, row):
        await audit(ctx, request, action="recording_download", outcome="denied",
                    object_type="recording", object_id=recording_id)  # fmt: skip
        raise web.HTTPForbidden(text="not allowed to hear this recording")
    if ctx.recordings is None or row["purged_at"] is not None:
        raise web.HTTPGone(text="the recording is no longer stored")
    try:
        size, pieces = await asyncio.to_thread(ctx.recordings.open_stream, row["path"])
    except (OSError, ValueError) as exc:
        await audit(ctx, request, action="recording_download", outcome="failed",
                    object_type="recording", object_id=recording_id, detail={"why": str(exc)})  # fmt: skip
        raise web.HTTPServiceUnavailable(text=f"cannot open the recording: {exc}") from None
    await audit(ctx, request, action="recording_download", outcome="allowed",
                object_type="recording", object_id=recording_id,
                detail={"call_id": row["call_id"], "encrypted": row["key_id"] is not None})  # fmt: skip
    response = web.StreamResponse(
        headers={
            "Content-Type": CONTENT_TYPES.get(row["codec"] or "wav", "application/octet-stream"),
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{recording_id}.{row["codec"] or "wav"}"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    iterator = iter(pieces)
    while True:
        piece = await asyncio.to_thread(next, iterator, None)
        if piece is None:
            break
        await response.write(piece)
    await response.write_eof()
    return response


async def live_calls(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    _require(request, Role.SUPERVISOR)
    return json_response([] if ctx.calls is None else ctx.calls.live_calls())


class CallTransfer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """POST /api/v1/calls/{call_id}/transfer: a blind transfer of the bridged caller to a queue,
    or to a number through a trunk (default: the one trunk with an outbound_proxy)."""

    queue: str = ""
    number: str = ""
    trunk: str = ""


async def transfer_call(request: web.Request) -> web.Response:
    """The call's agent or a supervisor sends the caller elsewhere; the agent's part ends."""
    ctx = request.app[CONTEXT_KEY]
    principal = _principal(request)
    call_id = request.match_info["call_id"]
    try:
        body = msgspec.json.decode(await request.read(), type=CallTransfer)
    except msgspec.DecodeError as exc:
        raise web.HTTPBadRequest(
            text=f'expected {{"queue": ...}} or {{"number": ...}}: {exc}'
        ) from None
    detail: dict[str, Any] = {k: v for k, v in msgspec.structs.asdict(body).items() if v}
    act = _CallAction(request, "transfer", call_id, detail)
    await act.own_call(principal)
    try:
        where = ctx.calls.request_transfer(
            call_id, queue=body.queue, number=body.number, trunk=body.trunk, by=principal.name
        )
    except (KeyError, ValueError) as exc:
        await act.refuse(web.HTTPConflict, "refused", str(exc.args[0] if exc.args else exc))
    await act.done()
    return json_response({"call_id": call_id, "transferred_to": where})


class _CallAction:
    """An audited action on a live call, allowed to the call's agent and to supervisors: every
    attempt lands in the audit log, refused (with why) or done."""

    def __init__(
        self, request: web.Request, action: str, call_id: str, detail: dict[str, Any] | None = None
    ) -> None:
        self.request, self.action, self.call_id = request, action, call_id
        self.detail = detail or {}
        self.ctx = request.app[CONTEXT_KEY]

    async def refuse(self, error: type[web.HTTPException], outcome: str, text: str) -> NoReturn:
        await audit(self.ctx, self.request, action=self.action, outcome=outcome,
                    object_type="call", object_id=self.call_id,
                    detail={**self.detail, "why": text})  # fmt: skip
        raise error(text=text)

    async def own_call(self, principal: Principal) -> Any:
        """The live call, if ``principal`` may act on it (404 / 403 otherwise, audited)."""
        calls = self.ctx.calls
        call = None if calls is None else calls.calls.get(self.call_id)
        if call is None:
            await self.refuse(web.HTTPNotFound, "refused", f"no live call {self.call_id!r}")
        if not principal.at_least(Role.SUPERVISOR) and principal.agent_id != call.agent_id:
            await self.refuse(web.HTTPForbidden, "denied", "only the call's agent or a supervisor")
        return call

    async def done(self, detail: dict[str, Any] | None = None) -> None:
        await audit(self.ctx, self.request, action=self.action, outcome="done",
                    object_type="call", object_id=self.call_id,
                    detail=self.detail if detail is None else detail)  # fmt: skip


class CallRecordingChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """PUT /api/v1/calls/{call_id}/recording: exactly one of ``paused`` (PCI pause/resume) or
    ``record: true`` (start recording now, for queues recorded on demand)."""

    paused: bool | None = None
    record: bool | None = None


class CallRecordingState(msgspec.Struct, frozen=True):
    call_id: str
    recording_id: str | None
    recording_paused: bool
    on_demand: bool = False


_RECORDING_BODY = 'expected {"paused": true|false} or {"record": true}'


async def change_call_recording(request: web.Request) -> web.Response:
    """The call's agent or a supervisor: pause/resume (PCI: card data is not recorded) or start
    recording now (on demand). Every attempt that names an action is audited, refused or not."""
    ctx = request.app[CONTEXT_KEY]
    principal = _principal(request)
    call_id = request.match_info["call_id"]
    try:
        body = msgspec.json.decode(await request.read(), type=CallRecordingChange)
    except msgspec.DecodeError as exc:
        raise web.HTTPBadRequest(text=f"{_RECORDING_BODY}: {exc}") from None
    if (body.paused is None) == (body.record is None):
        raise web.HTTPBadRequest(text=f"{_RECORDING_BODY}, one of the two")
    if body.record is False:
        raise web.HTTPBadRequest(
            text='a recording cannot be stopped mid-call; {"paused": true} stops writing audio'
        )
    if body.record:
        action = "recording_start"
    else:
        action = "recording_pause" if body.paused else "recording_resume"

    act = _CallAction(request, action, call_id)
    refuse = act.refuse
    call = await act.own_call(principal)
    if body.paused is not None:
        if not ctx.calls.pause_recording(call_id, body.paused):
            await refuse(web.HTTPConflict, "refused", "the call is not being recorded")
        await act.done({"recording_id": call.recording_id})
        return json_response(
            CallRecordingState(call_id, call.recording_id, body.paused, _on_demand(call))
        )
    try:
        recording_id = await ctx.calls.start_recording(call_id, principal.name)
    except KeyError:
        await refuse(web.HTTPNotFound, "refused", f"the call {call_id!r} ended")
    except RecordingRefused as exc:
        await refuse(web.HTTPConflict, "refused", str(exc))
    except sa.exc.SQLAlchemyError as exc:
        log.error("recording_start_failed", call_id=call_id, reason=str(exc))
        await refuse(web.HTTPServiceUnavailable, "failed", "the recordings index is unavailable")
    await act.done({"recording_id": recording_id, "on_demand": True})
    return json_response(CallRecordingState(call_id, recording_id, False, True))


def _on_demand(call: Any) -> bool:
    return bool(call.recording_on_demand)


class LegalHold(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    legal_hold: bool


async def set_legal_hold(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    _require(request, Role.ADMIN)
    recording_id = request.match_info["recording_id"]
    if await _recording_row(ctx, recording_id) is None:
        raise web.HTTPNotFound(text=f"no recording {recording_id!r}")
    try:
        hold = msgspec.json.decode(await request.read(), type=LegalHold)
    except msgspec.DecodeError as exc:
        raise web.HTTPBadRequest(text=f'expected {{"legal_hold": true|false}}: {exc}') from None
    assert ctx.store is not None  # checked by _recording_row
    async with ctx.store.engine.begin() as conn:
        await conn.execute(
            recordings.update()
            .where(recordings.c.id == recording_id)
            .values(legal_hold=hold.legal_hold)
        )
    await audit(ctx, request, action="legal_hold", outcome="done", object_type="recording",
                object_id=recording_id, detail={"legal_hold": hold.legal_hold})  # fmt: skip
    return json_response({"id": recording_id, "legal_hold": hold.legal_hold})


class WsAuth(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    type: str
    token: str


def _event_filter(config: Config, principal: Principal) -> Callable[[Event], bool] | None:
    if principal.at_least(Role.SUPERVISOR):
        return None
    agent = next((a for a in config.agents if a.id == principal.agent_id), None)
    queues = set(agent.queues) if agent else set()

    def accept(event: Event) -> bool:
        if event.type == "agent":
            return event.agent_id == principal.agent_id
        return event.queue in queues

    return accept


async def event_stream(request: web.Request) -> web.WebSocketResponse:
    """WebSocket: send {"type": "auth", "token": ...} first; then events arrive as JSON objects.

    Close codes: 4401 bad token, 4008 too slow (reconnect and re-read state), 1001 the daemon is
    shutting down."""
    ctx = request.app[CONTEXT_KEY]
    ws = web.WebSocketResponse(heartbeat=30.0, timeout=WS_CLOSE_TIMEOUT_S)
    await ws.prepare(request)
    streams = request.app[EVENT_STREAMS_KEY]
    streams.add(ws)  # from here on, shutdown closes it (even before it authenticated)
    try:
        try:
            first = await ws.receive(timeout=WS_AUTH_TIMEOUT_S)
            auth = (
                msgspec.json.decode(first.data, type=WsAuth) if first.type.name == "TEXT" else None
            )
        except (TimeoutError, msgspec.DecodeError):
            auth = None
        config = ctx.get_config()
        principal = None if auth is None else request.app[TOKENS_KEY].lookup(config, auth.token)
        if principal is None or ctx.bus is None:
            await ws.close(code=4401, message=b"unauthorized")
            return ws
        request[PRINCIPAL_KEY] = principal
        sub = ctx.bus.subscribe(_event_filter(config, principal))
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(_read_until_closed(ws, sub))
                await _forward_events(ws, sub, principal)
        finally:
            sub.close()
    finally:
        streams.discard(ws)
    return ws


async def _read_until_closed(ws: web.WebSocketResponse, sub: Subscription) -> None:
    """The client has nothing to say after its auth message, but reading is how a socket that
    closed (the page left, the TCP connection dropped, shutdown closed it) is noticed at once
    rather than at the next event, which on a quiet night may be hours away."""
    async for _ignored in ws:
        pass
    sub.close()  # wakes the forwarder


async def _forward_events(ws: web.WebSocketResponse, sub: Subscription, who: Principal) -> None:
    try:
        await ws.send_str(msgspec.json.encode({"type": "hello", "principal": who.name}).decode())
        while (payload := await sub.get()) is not None:
            await ws.send_str(payload.decode())
    except ConnectionResetError:
        pass  # the socket closed under a send; the reader has seen it or is about to
    if sub.overflowed:
        await ws.close(code=4008, message=b"too slow: reconnect and re-read state")
    else:  # no-op when the client or the shutdown closed it; ends the reader otherwise
        await ws.close()


async def close_event_streams(app: web.Application) -> None:
    """``on_shutdown``: tell every event stream the daemon is going away (1001), all at once. Their
    handlers then end by themselves, instead of holding the HTTP server's shutdown for its whole
    ``shutdown_timeout`` (the close waits at most WS_CLOSE_TIMEOUT_S for each client's answer)."""
    open_streams = app[EVENT_STREAMS_KEY]
    streams = list(open_streams)  # a copy: handlers leave the set as their sockets close
    if streams:
        log.info("event_streams_closing", streams=len(streams))
    await asyncio.gather(
        *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down") for ws in streams),
        return_exceptions=True,
    )


def add_routes(app: web.Application, ctx: ApiContext) -> None:
    app[CONTEXT_KEY] = ctx
    app.router.add_get("/api/v1/queues", list_queues)
    app.router.add_get("/api/v1/agents", list_agents)
    app.router.add_get("/api/v1/agents/{agent_id}", get_agent)
    app.router.add_put("/api/v1/agents/{agent_id}/state", set_agent_state)
    app.router.add_get("/api/v1/cdr", search_cdr)
    app.router.add_get("/api/v1/stats/intervals", interval_stats)
    app.router.add_post("/api/v1/reload", reload_config)
    app.router.add_get("/api/v1/events", event_stream)
    app[EVENT_STREAMS_KEY] = set[web.WebSocketResponse]()
    app.on_shutdown.append(close_event_streams)
    app.router.add_get("/api/v1/recordings", list_recordings)
    app.router.add_get("/api/v1/recordings/{recording_id}/audio", download_recording)
    app.router.add_put("/api/v1/recordings/{recording_id}/legal_hold", set_legal_hold)
    app.router.add_get("/api/v1/calls", live_calls)
    app.router.add_put("/api/v1/calls/{call_id}/recording", change_call_recording)
    app.router.add_post("/api/v1/calls/{call_id}/transfer", transfer_call)


def _op(
    summary: str, ok_schema: dict[str, Any], *, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{"bearer": []}],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": ok_schema}}},
            "401": {"$ref": "#/components/responses/Problem"},
            "403": {"$ref": "#/components/responses/Problem"},
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def openapi_paths() -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) of the routes ``add_routes`` serves."""
    (queues, agents, agent, change, intervals), schemas = msgspec.json.schema_components(
        [list[QueueView], list[AgentView], AgentView, AgentStateChange, list[IntervalFigures]],
        ref_template="#/components/schemas/{name}",
    )
    agent_id = {"name": "agent_id", "in": "path", "required": True, "schema": {"type": "string"}}
    epoch = {"type": "number", "description": "epoch seconds"}
    paths: dict[str, Any] = {
        "/api/v1/queues": {"get": _op("Queues with live and today's figures", queues)},
        "/api/v1/agents": {"get": _op("Agents and their routing state", agents)},
        "/api/v1/agents/{agent_id}": {
            "get": {**_op("One agent", agent), "parameters": [agent_id]},
        },
        "/api/v1/agents/{agent_id}/state": {
            "put": {
                **_op("Change an agent's state (audited)", agent, body=change),
                "parameters": [agent_id],
            },
        },
        "/api/v1/cdr": {
            "get": {
                **_op(
                    "Search call detail records, newest first",
                    {"type": "array", "items": {"type": "object"}},
                ),
                "parameters": [
                    {"name": n, "in": "query", "schema": sch}
                    for n, sch in (
                        ("since", epoch),
                        ("until", epoch),
                        ("queue", {"type": "string"}),
                        ("agent", {"type": "string"}),
                        ("caller", {"type": "string"}),
                        ("disposition", {"type": "string"}),
                        ("limit", {"type": "integer", "maximum": MAX_CDR_ROWS}),
                    )
                ],
            }
        },
        "/api/v1/stats/intervals": {
            "get": {
                **_op("Per-interval queue statistics", intervals),
                "parameters": [
                    {"name": n, "in": "query", "schema": sch}
                    for n, sch in (
                        ("since", epoch),
                        ("until", epoch),
                        ("interval_s", {"type": "number", "minimum": 60}),
                        ("queue", {"type": "string"}),
                    )
                ],
            }
        },
        "/api/v1/reload": {
            "post": _op("Reload the config file (admin, audited)", {"type": "object"})
        },
        **_recording_paths(),
    }
    (change, state), recording_schemas = msgspec.json.schema_components(
        [CallRecordingChange, CallRecordingState], ref_template="#/components/schemas/{name}"
    )
    put = paths["/api/v1/calls/{call_id}/recording"]["put"]
    put["requestBody"]["content"]["application/json"]["schema"] = change
    put["responses"]["200"]["content"]["application/json"]["schema"] = state
    return paths, {**schemas, **recording_schemas}


def _recording_paths() -> dict[str, Any]:
    """Recordings and the live calls' recording control (bodies filled in by openapi_paths)."""
    rows = {"type": "array", "items": {"type": "object"}}

    def path_param(name: str) -> dict[str, Any]:
        return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}

    def problems(op: dict[str, Any], **codes: str) -> dict[str, Any]:
        for code, description in codes.items():
            # OpenAPI 3.1: a reference may carry its own description
            op["responses"][code.removeprefix("s")] = {
                "$ref": "#/components/responses/Problem",
                "description": description,
            }
        return op

    audio = _op("Download a recording, decrypted (audited)", {"type": "string"})
    audio["responses"]["200"] = {
        "description": "the audio file",
        "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in CONTENT_TYPES.values()},
    }  # fmt: skip
    change = problems(
        _op(
            "The call's agent or a supervisor pauses/resumes the recording (PCI) or, with "
            '{"record": true}, starts recording it from now to the hang-up (any queue policy '
            "but never; the index row says on_demand). Every attempt is audited.",
            {"type": "object"},
            body={"type": "object"},
        ),
        s404="no such live call",
        s409="refused: not bridged yet, already recorded, not recorded (pause), or the queue's "
        "policy is never",
    )
    return {
        "/api/v1/recordings": {
            "get": {
                **_op("Search the recordings index, newest first", rows),
                "parameters": [
                    {"name": n, "in": "query", "schema": {"type": t}}
                    for n, t in (
                        ("call_id", "string"),
                        ("queue", "string"),
                        ("agent", "string"),
                        ("since", "number"),
                        ("limit", "integer"),
                    )
                ],
            }
        },
        "/api/v1/recordings/{recording_id}/audio": {
            "get": {
                **problems(audio, s404="no such recording", s410="purged"),
                "parameters": [path_param("recording_id")],
            },
        },
        "/api/v1/recordings/{recording_id}/legal_hold": {
            "put": {
                **_op(
                    "Set or clear a recording's legal hold (admin, audited)",
                    {"type": "object"},
                    body={"type": "object", "properties": {"legal_hold": {"type": "boolean"}}},
                ),
                "parameters": [path_param("recording_id")],
            },
        },
        "/api/v1/calls": {"get": _op("Live calls (supervisor)", rows)},
        "/api/v1/calls/{call_id}/recording": {
            "put": {**change, "parameters": [path_param("call_id")]},
        },
        "/api/v1/calls/{call_id}/transfer": {
            "post": {
                **problems(
                    _op(
                        "The call's agent or a supervisor blind-transfers the caller to a queue, "
                        "or to a number through a trunk; the agent's part ends (audited). A "
                        "number that does not answer puts the caller back in its queue.",
                        {"type": "object"},
                        body={
                            "type": "object",
                            "properties": {
                                "queue": {"type": "string"},
                                "number": {"type": "string"},
                                "trunk": {"type": "string"},
                            },
                        },
                    ),
                    s404="no such live call",
                    s409="refused: not bridged, unknown queue, no trunk to the number",
                ),
                "parameters": [path_param("call_id")],
            },
        },
    }
