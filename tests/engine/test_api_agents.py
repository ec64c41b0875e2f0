"""The agent view of the control API over real HTTP, with the real routing service behind it.

The wrap-up countdown on the agent desktop is driven by ``wrap_up_remaining_s``: seconds left at the
moment the answer was made (so the page's clock does not matter), null outside wrap-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import routing_core as rc
from engine import api
from engine.api.app import make_app
from engine.config import parse_config
from engine.routing.service import RoutingService
from engine.runtime.metrics import Metrics
from tests.conftest import free_port

WRAP_S = 1.0
CONFIG = f"""
[[queues]]
name = "support"
wrap_up_s = {WRAP_S}

[[agents]]
id = "1001"
name = "Alice"
queues = {{ support = 0 }}
api_token = "agent-1001-token-api-agents"

[[agents]]
id = "1002"
name = "Bob"
queues = {{ support = 0 }}
api_token = "agent-1002-token-api-agents"
"""
TOKEN = {"1001": "agent-1001-token-api-agents", "1002": "agent-1002-token-api-agents"}


@pytest.fixture
async def served() -> AsyncIterator[tuple[RoutingService, list[rc.Offer], str]]:
    config = parse_config(CONFIG, "test.toml")
    offers: list[rc.Offer] = []
    routing = RoutingService(
        config, on_offer=offers.append, on_withdraw=lambda _: None, loop=asyncio.get_running_loop()
    )
    tokens = api.TokenTable()
    app = make_app(Metrics(), {}, middlewares=(api.make_auth_middleware(tokens),))
    app[api.TOKENS_KEY] = tokens
    api.add_routes(app, api.ApiContext(get_config=lambda: config, reload=lambda: False,
                                       routing=routing))  # fmt: skip
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield routing, offers, f"http://127.0.0.1:{port}/api/v1/agents"
    finally:
        routing.close()
        await runner.cleanup()


async def _view(http: aiohttp.ClientSession, url: str, agent: str) -> dict[str, Any]:
    async with http.get(f"{url}/{agent}", headers={"Authorization": f"Bearer {TOKEN[agent]}"}) as r:
        assert r.status == 200
        body: dict[str, Any] = await r.json()
        return body


async def _serve_one_call(routing: RoutingService, offers: list[rc.Offer], agent: str) -> None:
    routing.login(agent)
    routing.enqueue(f"call-{agent}", "support")
    for _ in range(100):
        if any(o.agent_id == agent for o in offers):
            break
        await asyncio.sleep(0.01)
    routing.accept(f"call-{agent}", agent)
    routing.complete(agent, f"call-{agent}")


async def test_wrap_up_remaining_counts_down_and_is_null_outside_wrap_up(
    served: tuple[RoutingService, list[rc.Offer], str],
) -> None:
    routing, offers, url = served
    async with aiohttp.ClientSession() as http:
        idle = await _view(http, url, "1001")
        assert (idle["state"], idle["wrap_up_remaining_s"]) == ("logged_out", None)

        await _serve_one_call(routing, offers, "1001")
        first = await _view(http, url, "1001")
        assert first["state"] == "wrap_up"
        assert 0.0 < first["wrap_up_remaining_s"] <= WRAP_S
        await asyncio.sleep(0.2)
        later = await _view(http, url, "1001")
        assert later["state"] == "wrap_up"
        assert later["wrap_up_remaining_s"] <= first["wrap_up_remaining_s"] - 0.15

        # Ended early by the agent: no countdown left.
        async with http.put(
            f"{url}/1001/state",
            json={"state": "ready"},
            headers={"Authorization": f"Bearer {TOKEN['1001']}"},
        ) as r:
            assert r.status == 200
            ready = await r.json()
        assert (ready["state"], ready["wrap_up_remaining_s"]) == ("available", None)

        # Ended by the routing timer: the same.
        routing.logout("1001")  # the next call must go to 1002
        await _serve_one_call(routing, offers, "1002")
        assert (await _view(http, url, "1002"))["wrap_up_remaining_s"] > 0.0
        for _ in range(100):
            if routing.agent_state("1002") is rc.AgentState.AVAILABLE:
                break
            await asyncio.sleep(0.02)
        done = await _view(http, url, "1002")
        assert (done["state"], done["wrap_up_remaining_s"]) == ("available", None)
