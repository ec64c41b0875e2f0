"""Reload the config file from the API (admin, audited).

How this works: the same reload as SIGHUP (``ApiContext.reload``): an invalid file, or one that
would strand waiting callers (a removed queue that still holds some), is refused with 422 and the
running config stays; the attempt is audited either way.
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
            text="the config file is invalid, or removes a queue callers still wait in;"
            " the running config stays (see the log line reload_rejected)"
        )
    return json_response({"reloaded": True})
