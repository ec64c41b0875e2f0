"""Outbound webhooks' dead letters: list them, re-send one (admin; re-sending is audited).

How this works: the dead-letter list lives in the store (``engine.webhooks``); these handlers
reach it through ``ApiContext.webhooks``. A re-send is one attempt, now, with the webhook's
current secret: 200 with ``delivered`` true (the row is marked ``delivered_at``), 502 when the
receiver failed again (the row counts the attempt), 404 for an unknown id, 409 when it was
already delivered or no configured webhook has its URL any more.
"""

from __future__ import annotations

from aiohttp import web

from engine.api.app import json_response
from engine.api.auth import audit, require_role
from engine.api.context import CONTEXT_KEY
from engine.config import Role
from engine.webhooks import RetryOutcome, WebhookService
from engine.webhooks.service import MAX_DEAD_LETTER_ROWS


def _service(request: web.Request) -> WebhookService:
    service = request.app[CONTEXT_KEY].webhooks
    if service is None:
        raise web.HTTPServiceUnavailable(text="webhooks are not running")
    return service


async def list_dead_letters(request: web.Request) -> web.Response:
    require_role(request, Role.ADMIN)
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_DEAD_LETTER_ROWS:
        raise web.HTTPBadRequest(text=f"limit must be 1..{MAX_DEAD_LETTER_ROWS}, found {raw!r}")
    return json_response(await _service(request).dead_letters(int(raw)))


async def retry_dead_letter(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    require_role(request, Role.ADMIN)
    delivery_id = request.match_info["delivery_id"]
    result = await _service(request).retry(delivery_id)
    outcome = result if isinstance(result, str) else ("done" if result.delivered else "failed")
    await audit(ctx, request, action="webhook_retry", outcome=outcome,
                object_type="webhook_delivery", object_id=delivery_id[:64])  # fmt: skip
    if result == "not_found":
        raise web.HTTPNotFound(text=f"no dead letter {delivery_id!r}")
    if result == "delivered":
        raise web.HTTPConflict(text=f"{delivery_id} was already delivered")
    if result == "not_configured":
        raise web.HTTPConflict(text="no configured webhook has this dead letter's URL any more")
    assert isinstance(result, RetryOutcome)
    if not result.delivered:
        raise web.HTTPBadGateway(text=f"the receiver failed again: {result.dead_letter.last_error}")
    return json_response(result)
