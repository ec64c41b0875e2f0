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


async def get_object(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    require_role(request, Role.ADMIN)
    kind, name = _kind(request), request.match_info["name"]
    entry = _entry(ctx, kind, name)
    if entry is None:
        raise web.HTTPNotFound(text=f"no {kind} {name!r}")
    return json_response(entry)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    body.pop("source", None)  # as GET shows it: not part of the section
    return body


async def _change(
    request: web.Request, kind: str, name: str, body: dict[str, Any] | None, action: str
) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    if ctx.admin_change is None:
        raise web.HTTPServiceUnavailable(text="the daemon is not running its store yet")
    detail = {"body": body}
    try:
        await ctx.admin_change(kind, name, body, principal_of(request).name)
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
    if body is None:
        return web.Response(status=204)
    entry = _entry(ctx, kind, name)
    return json_response(entry)


async def put_object(request: web.Request) -> web.Response:
    require_role(request, Role.ADMIN)
    kind, name = _kind(request), request.match_info["name"]
    return await _change(request, kind, name, await _body(request), f"admin_put_{kind}")


async def patch_object(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    require_role(request, Role.ADMIN)
    kind, name = _kind(request), request.match_info["name"]
    entry = _entry(ctx, kind, name)
    if entry is None:
        raise web.HTTPNotFound(text=f"no {kind} {name!r}")
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
