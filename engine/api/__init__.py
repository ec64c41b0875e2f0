"""HTTP API: the aiohttp app (health, metrics), the JSON API under /api/v1/ and its event stream.

How this works: the daemon makes the app with ``app.make_app`` (``/healthz``, ``/readyz``,
``/metrics``, the index and the OpenAPI document, Problem JSON for errors), adds
``make_auth_middleware``, and calls ``add_routes`` below with its ``ApiContext``. Every handler is
a function of the request alone; what it needs from the daemon it reads from that context.

Where each resource lives, one module per concern:

- ``app``: the aiohttp app, health, readiness, metrics, ``Problem`` and ``json_response``
- ``context``: ``ApiContext``, the daemon's parts the handlers reach, and query-argument parsing
- ``auth``: bearer tokens, roles (``Principal``), the auth middleware, the audit log
- ``queues``: ``GET /api/v1/queues`` (live and today's figures)
- ``reports``: ``GET /api/v1/stats/intervals`` (per queue), ``GET /api/v1/stats/agents``, JSON or CSV
- ``agents``: ``GET /api/v1/agents``, ``GET|PUT /api/v1/agents/{agent_id}[/state]``
- ``cdr``: ``GET /api/v1/cdr``
- ``recordings``: ``GET /api/v1/recordings``, ``.../{recording_id}/audio``, ``.../legal_hold``
- ``calls``: ``GET /api/v1/calls``, ``PUT .../{call_id}/recording``, ``POST .../{call_id}/transfer``,
  ``POST|PATCH|DELETE .../{call_id}/monitor`` (supervisor listen / whisper / barge)
- ``tasks``: ``/api/v1/tasks`` (chats, e-mails, social messages, tickets) and their actions
- ``reload``: ``POST /api/v1/reload``
- ``transcripts``: ``GET /api/v1/calls/{call_id}/transcript``, ``GET /api/v1/transcripts``
  (search), ``GET /api/v1/qa/flagged``
- ``security``: ``GET /api/v1/security/bans``, ``DELETE /api/v1/security/bans/{address}``
- ``webhooks``: ``GET /api/v1/webhooks/dead-letters``, ``POST .../{delivery_id}/retry``
- ``events``: the ``/api/v1/events`` WebSocket
- ``openapi``: the control API's paths and schemas in ``/api/v1/openapi.json``

The browser agents' ``/api/v1/agent/rtc`` WebSocket is served by ``engine.webrtc.gateway``.

This package's own names (``__all__``) are what the daemon uses to put the API together.
"""

from aiohttp import web

from engine.api import (
    admin,
    agents,
    calls,
    cdr,
    customers,
    events,
    queues,
    recordings,
    reload,
    reports,
    security,
    tasks,
    transcripts,
    webhooks,
)
from engine.api.auth import TOKENS_KEY, TokenTable, make_auth_middleware
from engine.api.context import CONTEXT_KEY, ApiContext
from engine.api.openapi import openapi_paths

__all__ = [
    "TOKENS_KEY",
    "ApiContext",
    "TokenTable",
    "add_routes",
    "make_auth_middleware",
    "openapi_paths",
]


def add_routes(app: web.Application, ctx: ApiContext) -> None:
    app[CONTEXT_KEY] = ctx
    app.router.add_get("/api/v1/queues", queues.list_queues)
    app.router.add_get("/api/v1/agents", agents.list_agents)
    app.router.add_get("/api/v1/agents/{agent_id}", agents.get_agent)
    app.router.add_put("/api/v1/agents/{agent_id}/state", agents.set_agent_state)
    app.router.add_get("/api/v1/cdr", cdr.search_cdr)
    app.router.add_get("/api/v1/customers/contacts", customers.customer_contacts)
    app.router.add_get("/api/v1/stats/intervals", reports.interval_stats)
    app.router.add_get("/api/v1/stats/agents", reports.agent_stats)
    app.router.add_post("/api/v1/reload", reload.reload_config)
    kinds = "{kind:agents|queues}"
    app.router.add_get(f"/api/v1/admin/{kinds}", admin.list_objects)
    app.router.add_get(f"/api/v1/admin/{kinds}/{{name}}", admin.get_object)
    app.router.add_put(f"/api/v1/admin/{kinds}/{{name}}", admin.put_object)
    app.router.add_patch(f"/api/v1/admin/{kinds}/{{name}}", admin.patch_object)
    app.router.add_delete(f"/api/v1/admin/{kinds}/{{name}}", admin.delete_object)
    app.router.add_get("/api/v1/admin/skills", admin.list_skills)
    app.router.add_get("/api/v1/admin/skills/{name}", admin.get_skill)
    app.router.add_put("/api/v1/admin/skills/{name}", admin.put_skill)
    app.router.add_delete("/api/v1/admin/skills/{name}", admin.delete_skill)
    app.router.add_get("/api/v1/events", events.event_stream)
    app[events.EVENT_STREAMS_KEY] = set[web.WebSocketResponse]()
    app.on_shutdown.append(events.close_event_streams)
    app.router.add_get("/api/v1/recordings", recordings.list_recordings)
    app.router.add_get("/api/v1/recordings/{recording_id}/audio", recordings.download_recording)
    app.router.add_put("/api/v1/recordings/{recording_id}/legal_hold", recordings.set_legal_hold)
    app.router.add_get("/api/v1/calls", calls.live_calls)
    app.router.add_put("/api/v1/calls/{call_id}/recording", calls.change_call_recording)
    app.router.add_post("/api/v1/calls/{call_id}/transfer", calls.transfer_call)
    app.router.add_post("/api/v1/calls/{call_id}/monitor", calls.start_monitor)
    app.router.add_patch("/api/v1/calls/{call_id}/monitor", calls.change_monitor)
    app.router.add_delete("/api/v1/calls/{call_id}/monitor", calls.stop_monitor)
    app.router.add_get("/api/v1/security/bans", security.list_bans)
    app.router.add_delete("/api/v1/security/bans/{address}", security.lift_ban)
    app.router.add_get("/api/v1/webhooks/dead-letters", webhooks.list_dead_letters)
    app.router.add_post(
        "/api/v1/webhooks/dead-letters/{delivery_id}/retry", webhooks.retry_dead_letter
    )
    tasks.add_task_routes(app)
    transcripts.add_transcript_routes(app)
