"""Search the call detail records, newest first.

How this works: the query arguments become a query on the CDR store's ``calls`` table, at most
``MAX_CDR_ROWS`` rows a request; page back with ``until`` = the oldest ``arrived_at`` seen. An agent
searches only its own calls.
"""

from __future__ import annotations

from aiohttp import web

from engine.api.app import json_response
from engine.api.auth import principal_of
from engine.api.context import CONTEXT_KEY, float_arg, int_arg
from engine.config import Role
from engine.storage import queries

# A CDR search returns at most this many rows; page with `until` = the oldest arrived_at seen.
MAX_CDR_ROWS = 1000


async def search_cdr(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    principal = principal_of(request)
    if ctx.store is None:
        raise web.HTTPServiceUnavailable(text="storage is not open")
    since = float_arg(request, "since", None)
    until = float_arg(request, "until", None)
    limit = int_arg(request, "limit", 100, minimum=1, maximum=MAX_CDR_ROWS)
    agent = request.query.get("agent")
    if not principal.at_least(Role.SUPERVISOR):
        if agent not in (None, principal.agent_id):
            raise web.HTTPForbidden(text="agents may only search their own calls")
        agent = principal.agent_id
    rows = await queries.search_calls(
        ctx.store,
        limit=limit,
        since=since,
        until=until,
        queue=request.query.get("queue"),
        caller=request.query.get("caller"),
        disposition=request.query.get("disposition"),
        agent=agent,
    )
    return json_response(rows)
