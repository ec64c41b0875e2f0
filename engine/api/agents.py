"""Agents and their routing state: read it, and change it (audited).

How this works: an agent's view joins its config (name, queues, skills) with its live state in the
routing service, the one owner of agent state. A change (ready, not ready with a reason, log in or
out) goes through the routing service, which refuses transitions its state machine does not allow
(409); each attempt is audited, and a change that took is also written to the agent-events table.
An agent sees and changes only itself; supervisors and admins see everyone.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from aiohttp import web

import routing_core as rc
from engine.api.app import json_response
from engine.api.auth import Principal, audit, principal_of
from engine.api.context import CONTEXT_KEY, ApiContext
from engine.config import Role


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
    principal = principal_of(request)
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
    _check_agent_access(principal_of(request), agent_id)
    view = _agent_view(ctx, agent_id)
    if view is None:
        raise web.HTTPNotFound(text=f"no agent {agent_id!r}")
    return json_response(view)


_STATE_EVENTS = {"ready": "available", "not_ready": "not_ready", "logged_out": "logged_out"}


async def set_agent_state(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    agent_id = request.match_info["agent_id"]
    principal = principal_of(request)
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
