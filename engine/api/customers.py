"""A customer's contacts on every channel: ``GET /api/v1/customers/contacts``.

How this works: the query names the customer by ``phone``, ``email`` or ``id`` (the CRM's), any
of them; the answer is their calls and tasks newest first (``engine.storage.customers``, where
the matching rules are). Supervisors and admins only, since it reads across agents' work; each
look-up is audited (it reads personal data). An agent sees a customer's history in the
screen-pop of a call and through ``GET /api/v1/tasks/{id}/contacts`` for a task it holds.
"""

from __future__ import annotations

from aiohttp import web

from engine.api.app import json_response
from engine.api.auth import audit, require_role
from engine.api.context import CONTEXT_KEY, int_arg
from engine.config import Role
from engine.storage import customers

KEYS = ("phone", "email", "id")


async def customer_contacts(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    require_role(request, Role.SUPERVISOR)
    if ctx.store is None:
        raise web.HTTPServiceUnavailable(text="storage is not open")
    q = request.query
    given = {k: q[k] for k in KEYS if q.get(k)}
    if not given:
        raise web.HTTPUnprocessableEntity(text="name the customer: phone, email or id")
    if "phone" in given and customers.normalize_phone(given["phone"]) is None:
        raise web.HTTPUnprocessableEntity(text="phone: no digits in it")
    limit = int_arg(request, "limit", 20, minimum=1, maximum=customers.MAX_CONTACTS)
    rows = await customers.contacts(
        ctx.store, phone=given.get("phone"), email=given.get("email"), ref=given.get("id"),
        limit=limit,
    )  # fmt: skip
    await audit(ctx, request, action="customer_contacts", outcome="allowed",
                object_type="customer", detail={**given, "rows": len(rows)})  # fmt: skip
    return json_response(rows)
