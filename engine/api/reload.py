"""Reload the config file from the API (admin, audited).

How this works: the same reload as SIGHUP (``ApiContext.reload``): an invalid file is refused with
422 and the running config stays; the attempt is audited either way.
"""

from __future__ import annotations

from aiohttp import web

from engine.api.app import json_response
from engine.api.auth import audit, require_role
from engine.api.context import CONTEXT_KEY
from engine.config import Role


async def reload_config(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    require_role(request, Role.ADMIN)
    applied = ctx.reload()
    await audit(ctx, request, action="reload", outcome="done" if applied else "refused")
    if not applied:
        raise web.HTTPUnprocessableEntity(
            text="the config file is invalid; the running config stays (see the log)"
        )
    return json_response({"reloaded": True})
