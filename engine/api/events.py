"""The live event stream: a WebSocket at ``/api/v1/events``.

How this works: a browser cannot set headers on a WebSocket, so the socket is public to the bearer
middleware and the client authenticates in its first message, ``{"type": "auth", "token": ...}``,
within ``WS_AUTH_TIMEOUT_S``. Then it subscribes to the event bus (an agent only to its own agent
events, its queues' events and the task events naming it; an integration token only to task
events) and one task forwards events while another reads, so that a socket
that closed is noticed at once. A subscriber that falls behind is closed with 4008 (reconnect and
re-read state); shutdown closes every stream with 1001 at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import msgspec
import structlog
from aiohttp import WSCloseCode, web

from engine.api.auth import PRINCIPAL_KEY, TOKENS_KEY, Principal, too_many_attempts
from engine.api.context import CONTEXT_KEY
from engine.config import Config, Role
from engine.runtime.events import Event, Subscription

log = structlog.stdlib.get_logger("acd.api")


# Seconds a WebSocket client has to send its auth message.
WS_AUTH_TIMEOUT_S = 5.0
# Seconds we wait for a client to answer our close frame before dropping the connection. A client
# that is there answers in milliseconds; aiohttp's default (10 s) would outlast the shutdown budget.
WS_CLOSE_TIMEOUT_S = 1.0


# The open /api/v1/events sockets, so that shutdown can close them (1001) instead of waiting them out.
EVENT_STREAMS_KEY = web.AppKey("event_streams", set[web.WebSocketResponse])


class WsAuth(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    type: str
    token: str


def _event_filter(config: Config, principal: Principal) -> Callable[[Event], bool] | None:
    if principal.at_least(Role.SUPERVISOR):
        return None
    if principal.role is Role.INTEGRATION:  # the tasks' events (and messages), nothing of calls
        return lambda event: event.type == "task"
    agent = next((a for a in config.agents if a.id == principal.agent_id), None)
    queues = set(agent.queues) if agent else set()

    def accept(event: Event) -> bool:
        if event.type in ("monitor", "qa"):  # a supervisor on the call, QA outcomes: not for agents
            return False
        if event.type in ("agent", "task"):  # a task event names the agent it is offered to
            return event.agent_id == principal.agent_id
        return event.queue in queues

    return accept


async def event_stream(request: web.Request) -> web.StreamResponse:
    """WebSocket: send {"type": "auth", "token": ...} first; then events arrive as JSON objects.

    Close codes: 4401 bad token, 4403 a monitoring token, 4008 too slow (reconnect and re-read state), 1001 the daemon is
    shutting down. A source banned for guessing tokens gets 429 instead of the upgrade."""
    ctx = request.app[CONTEXT_KEY]
    banned_s = request.app[TOKENS_KEY].refused_for(ctx.get_config(), request.remote)
    if banned_s is not None:
        return too_many_attempts(banned_s)
    ws = web.WebSocketResponse(heartbeat=30.0, timeout=WS_CLOSE_TIMEOUT_S)
    await ws.prepare(request)
    streams = request.app[EVENT_STREAMS_KEY]
    streams.add(ws)  # from here on, shutdown closes it (even before it authenticated)
    try:
        try:
            first = await ws.receive(timeout=WS_AUTH_TIMEOUT_S)
            auth = (
                msgspec.json.decode(first.data, type=WsAuth) if first.type.name == "TEXT" else None
            )
        except (TimeoutError, msgspec.DecodeError):
            auth = None
        config = ctx.get_config()
        principal = (
            None
            if auth is None
            else request.app[TOKENS_KEY].lookup(config, auth.token, request.remote)
        )
        if principal is None or ctx.bus is None:
            await ws.close(code=4401, message=b"unauthorized")
            return ws
        if principal.role is Role.MONITORING:  # scrapes and probes; no events
            await ws.close(code=4403, message=b"forbidden")
            return ws
        request[PRINCIPAL_KEY] = principal
        # An agent's stream names its agent: the bus skips it for other agents' events.
        agent_id = principal.agent_id if principal.role is Role.AGENT else None
        sub = ctx.bus.subscribe(_event_filter(config, principal), agent_id=agent_id)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(_read_until_closed(ws, sub))
                await _forward_events(ws, sub, principal)
        finally:
            sub.close()
    finally:
        streams.discard(ws)
    return ws


async def _read_until_closed(ws: web.WebSocketResponse, sub: Subscription) -> None:
    """The client has nothing to say after its auth message, but reading is how a socket that
    closed (the page left, the TCP connection dropped, shutdown closed it) is noticed at once
    rather than at the next event, which on a quiet night may be hours away."""
    async for _ignored in ws:
        pass
    sub.close()  # wakes the forwarder


async def _forward_events(ws: web.WebSocketResponse, sub: Subscription, who: Principal) -> None:
    try:
        await ws.send_str(msgspec.json.encode({"type": "hello", "principal": who.name}).decode())
        while (payload := await sub.get()) is not None:
            await ws.send_str(payload.decode())
    except ConnectionResetError:
        pass  # the socket closed under a send; the reader has seen it or is about to
    if sub.overflowed:
        await ws.close(code=4008, message=b"too slow: reconnect and re-read state")
    else:  # no-op when the client or the shutdown closed it; ends the reader otherwise
        await ws.close()


async def close_event_streams(app: web.Application) -> None:
    """``on_shutdown``: tell every event stream the daemon is going away (1001), all at once. Their
    handlers then end by themselves, instead of holding the HTTP server's shutdown for its whole
    ``shutdown_timeout`` (the close waits at most WS_CLOSE_TIMEOUT_S for each client's answer)."""
    open_streams = app[EVENT_STREAMS_KEY]
    streams = list(open_streams)  # a copy: handlers leave the set as their sockets close
    if streams:
        log.info("event_streams_closing", streams=len(streams))
    await asyncio.gather(
        *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down") for ws in streams),
        return_exceptions=True,
    )
