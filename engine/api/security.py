"""SIP source bans: list them, lift one (admin; lifting is audited).

How this works: the bans live in the call layer's one guard (``engine.calls.security``), shared
by every SIP listener; these handlers read and change it through ``ApiContext.calls.security``.
Times are epoch seconds. Lifting ends the ban at once (its source's strikes stay, so a next ban
still lasts longer) and is logged as ``security_unban`` with reason ``lifted``; an address that
is not banned is 404, and the attempt is audited either way.
"""

from __future__ import annotations

import ipaddress

import msgspec
from aiohttp import web

from engine.api.app import json_response
from engine.api.auth import audit, require_role
from engine.api.context import CONTEXT_KEY
from engine.calls.security import Security
from engine.config import Role
from sip.security import Ban


class BanView(msgspec.Struct, frozen=True):
    """One ban of a SIP source address."""

    address: str
    # auth_failures (its own failed logins), user_auth_failures (failures for one user name from
    # anywhere), scanner (a scanner's User-Agent, with ban_scanners) or manual
    reason: str
    since: float  # epoch seconds
    until: float  # epoch seconds
    remaining_s: float
    failures: int  # failed logins counted when it was banned
    strikes: int  # bans this source has had (this one included): each doubles the ban time
    user: str | None  # the user name whose failure tipped it (as the peer sent it)


def _security(request: web.Request) -> Security:
    ctx = request.app[CONTEXT_KEY]
    if ctx.calls is None:
        raise web.HTTPServiceUnavailable(text="the SIP listeners are not running")
    security: Security = ctx.calls.security
    return security


def _view(security: Security, ban: Ban, now: float) -> BanView:
    return BanView(
        address=ban.address,
        reason=ban.reason,
        since=round(security.wall(ban.since), 3),
        until=round(security.wall(ban.until), 3),
        remaining_s=round(max(0.0, ban.until - now), 3),
        failures=ban.failures,
        strikes=ban.strikes,
        user=ban.user,
    )


async def list_bans(request: web.Request) -> web.Response:
    require_role(request, Role.ADMIN)
    security = _security(request)
    now = security.now()
    return json_response([_view(security, ban, now) for ban in security.bans(now)])


async def lift_ban(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    require_role(request, Role.ADMIN)
    address = request.match_info["address"]
    try:
        ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        raise web.HTTPBadRequest(text=f"not an IP address: {address!r}") from None
    security = _security(request)
    now = security.now()
    ban = security.lift(address, now)
    if ban is None:
        await audit(ctx, request, action="security_unban", outcome="not_found",
                    object_type="address", object_id=address)  # fmt: skip
        raise web.HTTPNotFound(text=f"{address} is not banned")
    view = _view(security, ban, now)
    await audit(ctx, request, action="security_unban", outcome="done", object_type="address",
                object_id=ban.address, detail={"reason": ban.reason, "until": view.until})  # fmt: skip
    return json_response(view)
