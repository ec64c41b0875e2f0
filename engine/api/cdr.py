"""Search the call detail records, newest first.

How this works: the query arguments become a query on the CDR store's ``calls`` table, at most
``MAX_CDR_ROWS`` rows a request; page back with ``until`` = the oldest ``arrived_at`` seen. An agent
searches only its own calls.
"""

from __future__ import annotations

import sqlalchemy as sa
from aiohttp import web

from engine.api.app import json_response
from engine.api.auth import _principal
from engine.api.context import CONTEXT_KEY, _float_arg
from engine.config import Role
from engine.storage.schema import calls

# A CDR search returns at most this many rows; page with `until` = the oldest arrived_at seen.
MAX_CDR_ROWS = 1000


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
