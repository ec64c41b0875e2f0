"""HTTP surface (aiohttp): health, readiness, Prometheus metrics and the versioned JSON API.

- ``/healthz``: the process is up and its event loop answers. Never touches dependencies, so a slow
  database does not get a healthy daemon restarted by its supervisor.
- ``/readyz``: every readiness check passes (listeners open, storage reachable, CDR writer and
  recordings healthy, every WebRTC media worker up when ``[webrtc] workers`` > 0).
  503 with the failing checks named otherwise; this is what a load balancer or Kamailio's dispatcher
  probes before sending calls.
- ``/metrics``: Prometheus text exposition of the daemon's own registry.
- ``/api/v1/``: JSON API, described by ``/api/v1/openapi.json`` (OpenAPI 3.1, schemas from msgspec).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from engine import __version__
from engine.runtime.metrics import Metrics

# A readiness check returns None when fine, or a short operator-readable reason when not.
ReadyCheck = Callable[[], Awaitable[str | None]]

# Readiness must answer quickly even when a dependency hangs: a probe that times out is a failure.
_CHECK_TIMEOUT_S = 2.0


class Health(msgspec.Struct, frozen=True):
    status: str
    version: str


class Readiness(msgspec.Struct, frozen=True):
    status: str  # "ready" or "not_ready"
    checks: dict[str, str]  # check name -> "ok" or the reason it fails


class ApiIndex(msgspec.Struct, frozen=True):
    version: str
    api: str
    links: dict[str, str]


class Problem(msgspec.Struct, frozen=True):
    """RFC 9457 problem details, the body of every API error."""

    title: str
    status: int
    detail: str = ""


METRICS_KEY = web.AppKey("metrics", Metrics)
CHECKS_KEY = web.AppKey("ready_checks", dict[str, ReadyCheck])

_json = msgspec.json.Encoder()


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_json.encode(body), status=status, content_type="application/json")


async def healthz(_request: web.Request) -> web.Response:
    return json_response(Health(status="ok", version=__version__))


async def _run_check(check: ReadyCheck) -> str:
    try:
        reason = await asyncio.wait_for(check(), _CHECK_TIMEOUT_S)
    except TimeoutError:
        return f"timed out after {_CHECK_TIMEOUT_S:g}s"
    return "ok" if reason is None else reason


async def run_checks(checks: dict[str, ReadyCheck]) -> dict[str, str]:
    """Every readiness check at once: name -> "ok" or the reason it fails (a hung one times out)."""
    names = list(checks)
    results = await asyncio.gather(*(_run_check(checks[n]) for n in names))
    return dict(zip(names, results, strict=True))


async def readyz(request: web.Request) -> web.Response:
    outcome = await run_checks(request.app[CHECKS_KEY])
    ready = all(r == "ok" for r in outcome.values())
    request.app[METRICS_KEY].ready.set(1 if ready else 0)
    body = Readiness(status="ready" if ready else "not_ready", checks=outcome)
    return json_response(body, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    payload = generate_latest(request.app[METRICS_KEY].registry)
    return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def api_index(_request: web.Request) -> web.Response:
    return json_response(
        ApiIndex(
            version=__version__,
            api="v1",
            links={"openapi": "/api/v1/openapi.json", "health": "/healthz", "ready": "/readyz"},
        )
    )


def openapi_document(
    extra_paths: dict[str, Any] | None = None, extra_schemas: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The OpenAPI 3.1 description of this module's routes plus the control API's."""
    (health, ready, index, problem), components = msgspec.json.schema_components(
        [Health, Readiness, ApiIndex, Problem], ref_template="#/components/schemas/{name}"
    )

    def ok(schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "acd",
            "version": __version__,
            "description": "Contact-center ACD daemon: health, metrics and the control API.",
        },
        "paths": {
            "/healthz": {
                "get": {
                    "summary": "Liveness: the process and its event loop answer",
                    "responses": {"200": ok(health, "alive")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: listeners open, storage reachable",
                    "responses": {
                        "200": ok(ready, "ready to take calls"),
                        "503": ok(ready, "not ready; the failing checks are named"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (text exposition format)",
                    "responses": {
                        "200": {
                            "description": "metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/api/v1/": {
                "get": {"summary": "API index", "responses": {"200": ok(index, "API index")}}
            },
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {**components, **(extra_schemas or {})},
            "responses": {"Problem": ok(problem, "error")},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
    doc["paths"].update(extra_paths or {})
    return doc


OPENAPI_KEY = web.AppKey("openapi", dict[str, Any])


async def openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI_KEY])


@web.middleware
async def problem_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """API errors as RFC 9457 problem JSON instead of aiohttp's HTML pages."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        return json_response(
            Problem(title=exc.reason, status=exc.status, detail=exc.text or ""), status=exc.status
        )


def make_app(
    metrics_: Metrics,
    checks: dict[str, ReadyCheck],
    *,
    middlewares: tuple[Any, ...] = (),
    openapi_doc: dict[str, Any] | None = None,
) -> web.Application:
    app = web.Application(middlewares=[problem_middleware, *middlewares])
    app[METRICS_KEY] = metrics_
    app[CHECKS_KEY] = checks
    app[OPENAPI_KEY] = openapi_doc or openapi_document()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/", api_index)
    app.router.add_get("/api/v1/openapi.json", openapi)
    return app
