"""Who is asking: bearer tokens, roles, and the audit log of what they changed.

How this works: ``auth_middleware`` resolves ``Authorization: Bearer <token>`` to a ``Principal``
(name, role, agent id) from the config's ``[[api.tokens]]`` and the agents' ``api_token``; tokens
are looked up by their SHA-256, so a config may hold only hashes and a lookup leaks no timing about
the secret. Roles nest: admin > supervisor > agent; an agent sees only itself and its own calls.
The integration role stands outside the nesting (a chat widget or CRM is not a person): it may
use the tasks API and nothing else, which the middleware enforces by path, so no handler written
for people can leak calls, CDRs or recordings to it. The monitoring role (a Prometheus server, a
load balancer's probe) reads ``/metrics``, ``/healthz`` and ``/readyz`` and nothing else; those three
need a token at all only when ``[http] open_paths`` leaves them out (then monitoring, supervisor or
admin).
Every state change made through the API (agent state, reload) is written to the audit log and to
the agent-events table, so "who paused agent 1002 at 10:41" has an answer.

Guessing tokens: a request that presents a token nobody holds is a failure of its source address,
counted in ``acd_api_auth_failures_total{reason="bad_token"}``; by the ``[security.bans]`` policy
(fail2ban's figures: N failures within the window, doubling ban times) the source is then refused
with 429 and ``Retry-After`` before its token is even looked up (``reason="banned"``), the event
stream's WebSocket included. These bans outlast a restart with the SIP ones (``TokenTable.on_ban``,
``export_bans``/``restore_bans``, kept by ``engine.calls.security.Security.keep``). Only ``[security] allow`` exempts a source here: a trunk's network
earns no pass to the API. A request without any token is not counted (browsers and probes send
those), and lookups stay by SHA-256, so neither path leaks timing about a secret.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from engine.api.app import Problem, json_response
from engine.api.context import CONTEXT_KEY, ApiContext
from engine.calls.security import ban_policy_of, iso_utc
from engine.config import HTTP_OPEN_PATHS, Config, Role
from engine.storage import queries
from sip.security import AllowList, BanTracker, parse_networks

log = structlog.stdlib.get_logger("acd.api")
security_log = structlog.stdlib.get_logger("acd.security")


_RANK = {
    Role.MONITORING: -1,
    Role.INTEGRATION: -1,
    Role.AGENT: 0,
    Role.SUPERVISOR: 1,
    Role.ADMIN: 2,
}
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
    """token SHA-256 -> Principal, rebuilt when the config object changes (reload); and the
    sources that guessed wrong too often, refused for a while."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._config: Config | None = None
        self._table: dict[str, Principal] = {}
        self._bans: BanTracker | None = None
        self._bans_config: Config | None = None
        self.failures = Counter(
            "acd_api_auth_failures_total",
            "API requests refused for their bearer token: bad_token (nobody holds it), banned "
            "(its source guessed wrong too often: [security.bans]).",
            ["reason"],
            registry=registry,
        )
        for reason in ("bad_token", "banned"):
            self.failures.labels(reason=reason)
        # Called when a source is banned: the daemon keeps the bans across a restart with the
        # SIP ones (engine.calls.security: Security.keep / changed).
        self.on_ban: Callable[[], None] = lambda: None

    def export_bans(self) -> dict[str, object] | None:
        """The token bans and strikes as JSON-ready data (None before the first request)."""
        return None if self._bans is None else self._bans.export_state(time.monotonic())

    def restore_bans(self, config: Config, state: Mapping[str, object], elapsed_s: float) -> None:
        """Take back ``export_bans``' state after ``elapsed_s`` of downtime (ValueError if it is
        not such a state)."""
        now = time.monotonic()
        tracker = self._tracker(config, now)
        if tracker is not None:
            tracker.import_state(state, now, elapsed_s=elapsed_s)

    def _tracker(self, config: Config, now: float) -> BanTracker | None:
        if config is not self._bans_config:
            policy = ban_policy_of(config)
            tracker = None
            if policy is not None:
                tracker = BanTracker(policy, AllowList(parse_networks(config.security.allow)))
                if self._bans is not None:  # a reload keeps who is banned and their strikes
                    tracker.import_state(self._bans.export_state(now), now)
            self._bans, self._bans_config = tracker, config
        return self._bans

    def refused_for(self, config: Config, address: str | None) -> float | None:
        """Seconds ``address`` is still banned for guessing tokens (counted), or None."""
        now = time.monotonic()
        tracker = self._tracker(config, now) if address else None
        ban = tracker.ban_of(address, now) if tracker is not None and address else None
        if ban is None:
            return None
        self.failures.labels(reason="banned").inc()
        return ban.until - now

    def lookup(self, config: Config, token: str, address: str | None = None) -> Principal | None:
        """The token's principal, or None; with ``address``, None is a failure of that source."""
        principal = self._principal(config, token)
        if principal is None and address:
            self.failures.labels(reason="bad_token").inc()
            now = time.monotonic()
            tracker = self._tracker(config, now)
            if tracker is not None:
                ban = tracker.record_failure(address, None, now)
                if ban is not None:
                    self.on_ban()
                    stamp = iso_utc(time.time() + ban.until - now)
                    # The shape of the SIP side's ban line (address first, logger acd.security),
                    # so the one fail2ban filter of docs/security.md bans API guessers too.
                    security_log.warning(
                        "security_ban", address=address, reason="api_bad_tokens", until=stamp,
                        ban_s=round(ban.until - ban.since, 3), failures=ban.failures,
                        strikes=ban.strikes, user=None,
                        message=f"API source {address} banned until {stamp}: wrong bearer "
                        f"tokens, {ban.failures} failures, ban number {ban.strikes}",
                    )  # fmt: skip
        return principal

    def _principal(self, config: Config, token: str) -> Principal | None:
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
        probe = request.path in HTTP_OPEN_PATHS  # /healthz, /readyz, /metrics
        if not probe and (not request.path.startswith("/api/") or request.path in _PUBLIC):
            return await handler(request)
        config = request.app[CONTEXT_KEY].get_config()
        if probe and request.path in config.http.open_paths:
            return await handler(request)
        banned_s = tokens.refused_for(config, request.remote)
        if banned_s is not None:
            return too_many_attempts(banned_s)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        principal = None
        if scheme.lower() == "bearer" and token:
            principal = tokens.lookup(config, token.strip(), request.remote)
        if principal is None:
            return _problem(
                401,
                "Unauthorized",
                "send Authorization: Bearer <token>",
                {"WWW-Authenticate": 'Bearer realm="acd"'},
            )
        request[PRINCIPAL_KEY] = principal
        if probe:
            if principal.role is not Role.MONITORING and not principal.at_least(Role.SUPERVISOR):
                return _problem(403, "Forbidden", f"{request.path} needs a monitoring token")
        elif principal.role is Role.MONITORING:
            return _problem(
                403, "Forbidden", "monitoring tokens may only read /metrics, /healthz and /readyz"
            )
        elif principal.role is Role.INTEGRATION and not _integration_may(request.path):
            return _problem(403, "Forbidden", "integration tokens may only use /api/v1/tasks")
        return await handler(request)

    return auth_middleware


def too_many_attempts(banned_s: float) -> web.Response:
    """429 for a source banned for guessing tokens, with when to try again (RFC 6585 4)."""
    return _problem(
        429,
        "Too Many Requests",
        "too many wrong tokens from this address",
        {"Retry-After": str(max(1, math.ceil(banned_s)))},
    )


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
