"""Agents and queues made, changed and deleted through the API (admin; every change audited).

How this works: ``/api/v1/admin/agents`` and ``/api/v1/admin/queues`` list the effective config's
entries (the config file with the stored objects on top, ``engine.config.overlay``), each with
``source`` "file" or "api". PUT creates or replaces one (the body is its TOML section: an
agent's ``queues`` and ``skills`` are its memberships, as in the file), PATCH merges top-level
keys into the current entry, DELETE removes it (and hides a same-named entry of the file). The
daemon's ``ApiContext.admin_change`` checks the resulting config with the file's own checks (a
failure is 422 naming the key, e.g. ``agents[3].skills.support``), stores the object and applies
it through the reload machinery, so an agent added can register and take calls at once. A queue
that callers or tasks still wait in cannot be deleted: 409 naming it (``AdminRefused``).

Skills are no section of the file: ``/api/v1/admin/skills`` is a view over the agents' ``skills``
and the queues' ``requirements``. PUT ``{"agents": {id: level}, "queues": {name: level}}`` makes
exactly those agents hold it and those queues require it, DELETE takes it from all; either is
stored as the changed agents and queues, in one all-or-none change.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from aiohttp import web

from engine.api.app import json_response
from engine.api.auth import audit, principal_of, require_role
from engine.api.context import CONTEXT_KEY, ApiContext
from engine.config import KINDS, ConfigError, Role

_PATHS: Final = {"agents": "agent", "queues": "queue"}


class AdminRefused(Exception):
    """The change is valid config but would strand live work (a deleted queue callers wait in)."""


def _builtins(value: Any) -> Any:
    """A config entry as its TOML section: JSON builtins, no null values (TOML has none)."""
    if isinstance(value, dict):
        return {k: _builtins(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_builtins(v) for v in value]
    return value


def _kind(request: web.Request) -> str:
    return _PATHS[request.match_info["kind"]]


def _entries(ctx: ApiContext, kind: str) -> list[dict[str, Any]]:
    table, key = KINDS[kind]
    stored = {o.name for o in ctx.admin_objects() if o.kind == kind and not o.deleted}
    out = []
    for entry in getattr(ctx.get_config(), table):
        body = _builtins(msgspec.to_builtins(entry))
        body["source"] = "api" if body[key] in stored else "file"
        out.append(body)
    return out


def _entry(ctx: ApiContext, kind: str, name: str) -> dict[str, Any] | None:
    key = KINDS[kind][1]
    return next((e for e in _entries(ctx, kind) if e[key] == name), None)


async def list_objects(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    require_role(request, Role.ADMIN)
    return json_response(_entries(ctx, _kind(request)))


def _existing(request: web.Request) -> tuple[str, str, dict[str, Any]]:
    """(kind, name, effective entry) of the object the admin request names; 404 if none."""
    ctx = request.app[CONTEXT_KEY]
    require_role(request, Role.ADMIN)
    kind, name = _kind(request), request.match_info["name"]
    entry = _entry(ctx, kind, name)
    if entry is None:
        raise web.HTTPNotFound(text=f"no {kind} {name!r}")
    return kind, name, entry


async def get_object(request: web.Request) -> web.Response:
    return json_response(_existing(request)[2])


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    body.pop("source", None)  # as GET shows it: not part of the section
    return body


async def _apply(
    request: web.Request,
    kind: str,
    name: str,
    changes: list[tuple[str, str, dict[str, Any] | None]],
    action: str,
    detail: dict[str, Any],
) -> web.Response | None:
    """Apply the changes (all or none) and audit them; the error response, or None when done."""
    ctx = request.app[CONTEXT_KEY]
    if ctx.admin_change is None:
        raise web.HTTPServiceUnavailable(text="the daemon is not running its store yet")
    try:
        await ctx.admin_change(changes, principal_of(request).name)
    except ConfigError as exc:
        await audit(ctx, request, action=action, outcome="invalid", object_type=kind,
                    object_id=name, detail={**detail, "error": str(exc)})  # fmt: skip
        return json_response(
            {"error": exc.problem, "key": exc.key_path, "message": str(exc)}, status=422
        )
    except AdminRefused as exc:
        await audit(ctx, request, action=action, outcome="refused", object_type=kind,
                    object_id=name, detail={**detail, "error": str(exc)})  # fmt: skip
        return json_response({"error": str(exc)}, status=409)
    await audit(ctx, request, action=action, outcome="done", object_type=kind, object_id=name,
                detail=detail)  # fmt: skip
    return None


async def _change(
    request: web.Request, kind: str, name: str, body: dict[str, Any] | None, action: str
) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    failed = await _apply(request, kind, name, [(kind, name, body)], action, {"body": body})
    if failed is not None:
        return failed
    if body is None:
        return web.Response(status=204)
    entry = _entry(ctx, kind, name)
    return json_response(entry)


async def put_object(request: web.Request) -> web.Response:
    require_role(request, Role.ADMIN)
    kind, name = _kind(request), request.match_info["name"]
    return await _change(request, kind, name, await _body(request), f"admin_put_{kind}")


async def patch_object(request: web.Request) -> web.Response:
    kind, name, entry = _existing(request)
    entry.pop("source")
    merged = {**entry, **await _body(request)}
    return await _change(request, kind, name, merged, f"admin_patch_{kind}")


async def delete_object(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    require_role(request, Role.ADMIN)
    kind, name = _kind(request), request.match_info["name"]
    if _entry(ctx, kind, name) is None:
        raise web.HTTPNotFound(text=f"no {kind} {name!r}")
    return await _change(request, kind, name, None, f"admin_delete_{kind}")


# -- skills: a view over the agents' `skills` and the queues' `requirements` ---------------------


def _skills(ctx: ApiContext) -> dict[str, dict[str, Any]]:
    cfg = ctx.get_config()
    skills: dict[str, dict[str, Any]] = {}
    for agent in cfg.agents:
        for skill, level in agent.skills.items():
            skills.setdefault(skill, {"name": skill, "agents": {}, "queues": {}})
            skills[skill]["agents"][agent.id] = level
    for queue in cfg.queues:
        for skill, level in queue.requirements.items():
            skills.setdefault(skill, {"name": skill, "agents": {}, "queues": {}})
            skills[skill]["queues"][queue.name] = level
    return dict(sorted(skills.items()))


async def list_skills(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    require_role(request, Role.ADMIN)
    return json_response(list(_skills(ctx).values()))


async def get_skill(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    require_role(request, Role.ADMIN)
    name = request.match_info["name"]
    skill = _skills(ctx).get(name)
    if skill is None:
        raise web.HTTPNotFound(text=f"no agent has, and no queue requires, skill {name!r}")
    return json_response(skill)


def _skill_changes(
    ctx: ApiContext, name: str, agents: dict[str, Any], queues: dict[str, Any]
) -> list[tuple[str, str, dict[str, Any] | None]]:
    """The agent and queue entries whose ``skills`` / ``requirements`` change so that exactly
    ``agents`` hold skill ``name`` (at their levels) and exactly ``queues`` require it."""
    changes: list[tuple[str, str, dict[str, Any] | None]] = []
    for kind, field, wanted in (("agent", "skills", agents), ("queue", "requirements", queues)):
        key = KINDS[kind][1]
        for entry in _entries(ctx, kind):
            levels = dict(entry.get(field, {}))
            if entry[key] in wanted:
                levels[name] = wanted[entry[key]]
            elif name in levels:
                del levels[name]
            else:
                continue
            if levels == entry.get(field, {}):
                continue
            entry.pop("source")
            changes.append((kind, entry[key], {**entry, field: levels}))
    return changes


async def _refuse_skill(
    request: web.Request, name: str, body: dict[str, Any], error: str, key: str, message: str
) -> web.Response:
    """A skill body refused before any entry changes: 422 naming the key, audited."""
    ctx = request.app[CONTEXT_KEY]
    await audit(ctx, request, action="admin_put_skill", outcome="invalid", object_type="skill",
                object_id=name, detail={"body": body, "error": message})  # fmt: skip
    return json_response({"error": error, "key": key, "message": message}, status=422)


async def put_skill(request: web.Request) -> web.Response:
    """PUT {"agents": {id: level}, "queues": {name: min level}}: exactly these agents hold the
    skill and these queues require it (either key left out: unchanged). Naming an agent or a
    queue that does not exist is 422, like the file's check."""
    ctx = request.app[CONTEXT_KEY]
    require_role(request, Role.ADMIN)
    name = request.match_info["name"]
    body = await _body(request)
    current = _skills(ctx).get(name, {"agents": {}, "queues": {}})
    unknown = set(body) - {"agents", "queues"}
    if unknown:
        return await _refuse_skill(request, name, body, "unknown key", sorted(unknown)[0],
                                   "a skill has `agents` and `queues`")  # fmt: skip
    agents = body.get("agents", current["agents"])
    queues = body.get("queues", current["queues"])
    for key, wanted, kind in (("agents", agents, "agent"), ("queues", queues, "queue")):
        if not isinstance(wanted, dict):
            return await _refuse_skill(request, name, body, "expected a table", key,
                                       f"{key}: expected a table")  # fmt: skip
        known = {e[KINDS[kind][1]] for e in _entries(ctx, kind)}
        missing = sorted(set(wanted) - known)
        if missing:
            return await _refuse_skill(request, name, body, f"no such {kind}",
                                       f"{key}.{missing[0]}",
                                       f"{key}.{missing[0]}: no such {kind}")  # fmt: skip
    changes = _skill_changes(ctx, name, agents, queues)
    failed = await _apply(request, "skill", name, changes, "admin_put_skill", {"body": body})
    if failed is not None:
        return failed
    return json_response(_skills(ctx).get(name, {"name": name, "agents": {}, "queues": {}}))


async def delete_skill(request: web.Request) -> web.Response:
    """The skill is taken from every agent and every queue's requirements."""
    ctx = request.app[CONTEXT_KEY]
    require_role(request, Role.ADMIN)
    name = request.match_info["name"]
    if name not in _skills(ctx):
        raise web.HTTPNotFound(text=f"no agent has, and no queue requires, skill {name!r}")
    changes = _skill_changes(ctx, name, {}, {})
    failed = await _apply(request, "skill", name, changes, "admin_delete_skill", {})
    return failed or web.Response(status=204)
