"""Agent availability from registrations and feature codes, with the real registrar and Router."""

from __future__ import annotations

import asyncio

import pytest

import routing_core as rc
from engine.config import parse_config
from engine.routing.agents import AgentDirectory
from engine.routing.service import OfferHandlers, RoutingService
from sip.registrar import ContactRequest, Registrar
from tests.engine.clocks import ManualClock

CONFIG = """
[[queues]]
name = "support"

[[agents]]
id = "1001"
queues = { support = 0 }

[[agents]]
id = "2001"
login = "static"
contact = "sip:2001@pbx.example.net"
queues = { support = 0 }
"""


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def directory(clock: ManualClock) -> tuple[AgentDirectory, RoutingService, list[rc.Offer]]:
    loop = asyncio.get_running_loop()
    cfg = parse_config(CONFIG, "t.toml")
    offers: list[rc.Offer] = []
    routing = RoutingService(cfg, on_offer=offers.append, on_withdraw=offers.append, loop=loop)
    registrar = Registrar(min_expires_s=1, default_expires_s=1)
    # Registration expiry runs on the test's clock (no sleeping); routing on the real loop.
    return AgentDirectory(cfg, routing, None, clock, registrar=registrar), routing, offers


PHONE = [ContactRequest("sip:1001@127.0.0.1:5284;transport=udp")]


async def test_register_makes_available_and_expiry_logs_out(
    directory: tuple[AgentDirectory, RoutingService, list[rc.Offer]], clock: ManualClock
) -> None:
    agents, routing, _ = directory
    assert routing.agent_state("1001") is rc.AgentState.LOGGED_OUT
    result = agents.register("1001", PHONE, call_id="r1", cseq=1, expires=1)
    assert result.ok
    assert routing.agent_state("1001") is rc.AgentState.AVAILABLE
    assert agents.contacts("1001") == ["sip:1001@127.0.0.1:5284;transport=udp"]
    assert clock.pending == 1  # one sweep timer serves every expiry
    clock.advance(0.9)
    assert routing.agent_state("1001") is rc.AgentState.AVAILABLE
    clock.advance(0.2)
    assert routing.agent_state("1001") is rc.AgentState.LOGGED_OUT
    assert agents.contacts("1001") == []
    agents.close()


async def test_refresh_keeps_the_agent_and_unregister_logs_out(
    directory: tuple[AgentDirectory, RoutingService, list[rc.Offer]], clock: ManualClock
) -> None:
    agents, routing, _ = directory
    agents.register("1001", PHONE, call_id="r1", cseq=1, expires=1)
    clock.advance(0.6)
    assert agents.register("1001", PHONE, call_id="r1", cseq=2, expires=1).ok
    clock.advance(0.6)  # past the first expiry, within the refreshed one
    assert routing.agent_state("1001") is rc.AgentState.AVAILABLE
    gone = agents.register(
        "1001", [ContactRequest(PHONE[0].uri, expires=0)], call_id="r1", cseq=3, expires=None
    )
    assert gone.ok
    assert routing.agent_state("1001") is rc.AgentState.LOGGED_OUT
    agents.close()


async def test_phone_gone_during_a_call_logs_out_after_the_call(
    directory: tuple[AgentDirectory, RoutingService, list[rc.Offer]], clock: ManualClock
) -> None:
    agents, routing, offers = directory
    agents.register("1001", PHONE, call_id="r1", cseq=1, expires=1)
    routing.enqueue("call-1", "support")
    await asyncio.sleep(0.05)
    assert offers == [rc.Offer("call-1", "1001", "support")]
    routing.accept("call-1", "1001")
    clock.advance(1.1)  # the registration expires mid-call
    assert agents.contacts("1001") == []
    assert routing.agent_state("1001") is rc.AgentState.BUSY
    routing.complete("1001", "call-1")
    agents.call_completed("1001")
    assert routing.agent_state("1001") is rc.AgentState.LOGGED_OUT
    agents.close()


async def test_a_logout_deferred_by_a_call_waits_for_the_agents_chats_too(
    clock: ManualClock,
) -> None:
    cfg = parse_config(CONFIG.replace('queues = { support = 0 }\n', 'queues = { support = 0 }\n'
                                      'capacity = { voice = 1, chat = 1 }\n', 1), "t.toml")  # fmt: skip
    offers: list[rc.Offer] = []
    routing = RoutingService(cfg, loop=asyncio.get_running_loop())
    record = OfferHandlers(offers.append, offers.append)
    routing.connect(on_offer=offers.append, on_withdraw=offers.append, channels={"chat": record})
    registrar = Registrar(min_expires_s=1, default_expires_s=1)
    agents = AgentDirectory(cfg, routing, None, clock, registrar=registrar)
    agents.register("1001", PHONE, call_id="r1", cseq=1, expires=1)
    routing.enqueue("call-1", "support")
    routing.enqueue("chat-1", "support", channel="chat")
    await asyncio.sleep(0.05)
    assert sorted(o.task_id for o in offers) == ["call-1", "chat-1"]
    routing.accept("call-1", "1001")
    routing.accept("chat-1", "1001")
    clock.advance(1.1)  # the registration expires mid-call
    routing.complete("1001", "call-1")
    agents.call_completed("1001")  # the chat goes on: still busy, no InvalidTransition
    assert routing.agent_state("1001") is rc.AgentState.BUSY
    routing.complete("1001", "chat-1")
    agents.call_completed("1001")  # what the task service reports when a task ends
    assert routing.agent_state("1001") is rc.AgentState.LOGGED_OUT
    agents.close()


async def test_feature_codes(
    directory: tuple[AgentDirectory, RoutingService, list[rc.Offer]],
) -> None:
    agents, routing, _ = directory
    assert agents.feature_code("2001", "*5") is None
    action = agents.feature_code("2001", "*1")  # static agent logs in by feature code
    assert action is not None
    assert action.state == "ready"
    assert routing.agent_state("2001") is rc.AgentState.AVAILABLE
    agents.feature_code("2001", "*2")
    assert routing.agent_state("2001") is rc.AgentState.NOT_READY
    assert routing.router.not_ready_reason("2001") == "feature code"
    agents.feature_code("2001", "*1")
    assert routing.agent_state("2001") is rc.AgentState.AVAILABLE
    agents.feature_code("2001", "*3")
    assert routing.agent_state("2001") is rc.AgentState.LOGGED_OUT
    refused = agents.feature_code("2001", "*2")  # cannot pause while logged out
    assert refused is not None
    assert refused.prompt == "invalid"
    assert agents.contacts("2001") == ["sip:2001@pbx.example.net"]
    agents.close()
