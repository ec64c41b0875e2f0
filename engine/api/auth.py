"""Who is asking: bearer tokens, roles, and the audit log of what they changed.

How this works: ``auth_middleware`` resolves ``Authorization: Bearer <token>`` to a ``Principal``
(name, role, agent id) from the config's ``[[api.tokens]]`` and the agents' ``api_token``; tokens
are looked up by their SHA-256, so a config may hold only hashes and a lookup leaks no timing about
the secret. Roles nest: admin > supervisor > agent; an agent sees only itself and its own calls.
The integration role stands outside the nesting (a chat widget or CRM is not a person): it may
use the tasks API and nothing else, which the middleware enforces by path, so no handler written
for people can leak calls, CDRs or recordings to it.
Every state change made through the API (agent state, reload) is written to the audit log and to
the agent-events table, so "who paused agent 1002 at 10:41" has an answer.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import structlog
from aiohttp import web

from engine.api.app import Problem, json_response
from engine.api.context import CONTEXT_KEY, ApiContext
from engine.config import Config, Role
from engine.storage import queries

log = structlog.stdlib.get_logger("acd.api")


_RANK = {Role.INTEGRATION: -1, Role.AGENT: 0, Role.SUPERVISOR: 1, Role.ADMIN: 2}
# What an integration token may reach (the event stream checks its role itself).
_INTEGRATION_PATHS = ("/api/v1/tasks",)


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role
    agent_id: str | None = None

    def at_least(self, role: Role) -> bool:
        return _RANK[self.role] >= _RANK[role]


PRINCIPAL_KEY = web.RequestKey("principal", Principal)  # request-scoped, set by the middleware


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenTable:
    """token SHA-256 -> Principal, rebuilt when the config object changes (reload)."""

    def __init__(self) -> None:
        self._config: Config | None = None
        self._table: dict[str, Principal] = {}

    def lookup(self, config: Config, token: str) -> Principal | None:
        if config is not self._config:
            table: dict[str, Principal] = {}
            for t in config.api.tokens:
                table[t.token_sha256 or _sha256(t.token)] = Principal(t.name, t.role)
            for agent in config.agents:
                if agent.api_token:
                    table[_sha256(agent.api_token)] = Principal(
                        f"agent:{agent.id}", Role.AGENT, agent.id
                    )
            self._table, self._config = table, config
        return self._table.get(_sha256(token))


def _problem(
    status: int, title: str, detail: str = "", headers: Mapping[str, str] | None = None
) -> web.Response:
    response = json_response(Problem(title=title, status=status, detail=detail), status=status)
    response.content_type = "application/problem+json"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


# Public to the bearer middleware: the index, the OpenAPI document, and the two WebSockets, which
# authenticate in their first message (a browser cannot set headers on a WebSocket).
_PUBLIC = {"/api/v1/", "/api/v1/openapi.json", "/api/v1/events", "/api/v1/agent/rtc"}


TOKENS_KEY = web.AppKey("api_tokens", TokenTable)


def make_auth_middleware(tokens: TokenTable) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def auth_middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith("/api/") or request.path in _PUBLIC:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        principal = None
        if scheme.lower() == "bearer" and token:
            principal = tokens.lookup(request.app[CONTEXT_KEY].get_config(), token.strip())
        if principal is None:
            return _problem(
                401,
                "Unauthorized",
                "send Authorization: Bearer <token>",
                {"WWW-Authenticate": 'Bearer realm="acd"'},
            )
        request[PRINCIPAL_KEY] = principal
        if principal.role is Role.INTEGRATION and not _integration_may(request.path):
            return _problem(403, "Forbidden", "integration tokens may only use /api/v1/tasks")
        return await handler(request)

    return auth_middleware


def _integration_may(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in _INTEGRATION_PATHS)


def principal_of(request: web.Request) -> Principal:
    """Who sent this request, as the auth middleware resolved it (not set on its public paths)."""
    principal: Principal = request[PRINCIPAL_KEY]
    return principal


def require_role(request: web.Request, role: Role) -> Principal:
    """The request's principal if it holds ``role`` or a higher one; 403 otherwise."""
    principal = principal_of(request)
    if not principal.at_least(role):
        raise web.HTTPForbidden(text=f"needs the {role.value} role")
    return principal


async def audit(
    ctx: ApiContext,
    request: web.Request,
    *,
    action: str,
    outcome: str,
    object_type: str | None = None,
    object_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Write one audit row (and a log line). A failing store is logged, never fails the request."""
    principal: Principal | None = request.get(PRINCIPAL_KEY)
    row = {
        "at": time.time(),
        "actor": principal.name if principal else "anonymous",
        "role": principal.role.value if principal else None,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "outcome": outcome,
        "remote_addr": request.remote,
        "detail": detail,
    }
    log.info("audit", **{k: v for k, v in row.items() if k != "at"})
    if ctx.store is None:
        return
    try:
        await queries.insert_audit(ctx.store, row)
    except sa.exc.SQLAlchemyError as exc:
        log.error("audit_write_failed", reason=str(exc), action=action)
