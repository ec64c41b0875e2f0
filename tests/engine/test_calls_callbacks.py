"""The caller's side of callbacks (engine.calls.callbacks) in one process: the real CallService,
routing core, agent directory and SQLite CDR store, our own SIP stack as the caller (its key as
SIP INFO, application/dtmf-relay) and as the agent's phone over loopback UDP. The task service
is not here: ``create_task`` is the daemon's hook to it, so these tests give it one that records
the request, or one that fails as a store that is down does (the e2e test runs the real one).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.calls.callbacks import CallbackRequest
from engine.calls.flows import FlowRunner
from engine.calls.service import CallService
from engine.config import parse_config
from engine.routing.agents import AgentDirectory
from engine.routing.service import RoutingService
from engine.runtime.metrics import Metrics
from engine.storage import StorageError, Store
from engine.storage.cdr import CdrWriter
from engine.storage.schema import calls as calls_table
from engine.storage.schema import queue_events
from sip.endpoint import ByeReceived, RequestReceived, ResponseReceived
from tests.conftest import free_port
from tests.engine.test_calls import CALLER_SDP, Peer, open_peer, until
from tests.engine.test_calls import config_text as base_config_text


def config_text(agent_port: int, rtp_base: int) -> str:
    """test_calls' one-queue config, the caller at priority 3, and a callback on "#"."""
    text = base_config_text(agent_port, rtp_base)
    for old, added in (
        ('{ type = "answer" }, ', '{ type = "answer" }, { type = "set", priority = 3 }, '),
        ("ring_timeout_s = 5\n", 'ring_timeout_s = 5\nannounce_every_s = 30\n'
         'callback = { key = "#", confirm_prompt = "" }\n'),
    ):  # fmt: skip
        assert old in text
        text = text.replace(old, added, 1)
    return text


@dataclass
class Layer:
    service: CallService
    routing: RoutingService
    store: Store
    cdr: CdrWriter
    agent: Peer
    caller: Peer
    requests: list[CallbackRequest]

    def dial(self) -> None:
        sip_addr = self.service.listening[0][1]
        now = asyncio.get_running_loop().time()
        self.caller.endpoint.invite(
            "sip:support@127.0.0.1", sip_addr, now=now, body=CALLER_SDP,
            from_uri="sip:+15551234@127.0.0.1",
        )  # fmt: skip
        self.caller.transport.transmit()

    def press(self, key: str) -> None:
        # the first 200 answers the INVITE (later ones answer our INFOs)
        answered = next(e for e in self.caller.of(ResponseReceived) if e.response.status == 200)
        assert answered.dialog_id is not None
        body = f"Signal={key}\r\nDuration=160\r\n".encode()
        now = asyncio.get_running_loop().time()
        self.caller.endpoint.info(answered.dialog_id, body, "application/dtmf-relay", now=now)
        self.caller.transport.transmit()

    def waiting(self) -> bool:
        return any(c["phase"] == "queued" for c in self.service.live_calls())


@pytest.fixture
async def layer(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Layer]:
    agent = await open_peer(answer_invites=getattr(request, "param", True))
    caller = await open_peer()
    cfg = parse_config(config_text(agent.addr[1], free_port() // 2 * 2), "t.toml")
    loop = asyncio.get_running_loop()
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/cdr.sqlite3")
    metrics = Metrics()
    cdr = CdrWriter(store, metrics)
    routing = RoutingService(cfg, loop=loop)
    agents = AgentDirectory(cfg, routing, cdr, loop)
    service = CallService(
        cfg, routing=routing, agents=agents, cdr=cdr, recordings=None, metrics=metrics,
        flows=FlowRunner(cfg, None),
    )  # fmt: skip
    routing.connect(on_offer=service.on_offer, on_withdraw=service.on_withdraw)
    requests: list[CallbackRequest] = []

    async def create_task(request: CallbackRequest) -> str:
        requests.append(request)
        return f"task-{len(requests)}"

    service.callbacks.create_task = create_task
    await service.start()
    try:
        yield Layer(service, routing, store, cdr, agent, caller, requests)
    finally:
        await service.stop()
        agents.close()
        for peer in (agent, caller):
            peer.transport.close()
        await store.close()


def metric(layer: Layer, outcome: str) -> float:
    value = layer.service._metrics.registry.get_sample_value(
        "acd_callbacks_total", {"queue": "support", "outcome": outcome}
    )
    return 0.0 if value is None else value


async def test_the_key_hands_the_place_to_a_callback_and_ends_the_call(layer: Layer) -> None:
    layer.dial()
    await until(layer.waiting)
    (call,) = layer.service.calls.values()
    layer.press("1")  # not this queue's key: ignored
    await asyncio.sleep(0.2)
    assert layer.requests == []
    assert layer.waiting()
    layer.press("#")
    await until(lambda: bool(layer.caller.of(ByeReceived)))  # no confirmation: at once
    (request,) = layer.requests
    assert (request.call_id, request.queue, request.number, request.trunk) == (
        call.id, "support", "+15551234", "local",
    )  # fmt: skip
    assert request.priority == 3
    assert request.place_at == call.enqueued_at
    assert layer.routing.router.waiting("support") == 0  # the task holds the place now
    await until(lambda: not layer.service.calls)
    (row,) = await layer_rows(layer, calls_table)
    assert (row.disposition, row.hangup_side) == ("callback_requested", "system")
    assert row.flow_data["callback_task"] == "task-1"
    events = [
        (e.event, (e.data or {}).get("target")) for e in await layer_rows(layer, queue_events)
    ]
    assert events == [("enter", None), ("callback", "task-1")]  # not abandoned
    assert metric(layer, "requested") == 1


async def layer_rows(layer: Layer, table: sa.Table) -> list[Any]:
    await layer.cdr.flush()
    async with layer.store.engine.connect() as conn:
        return list((await conn.execute(sa.select(table))).all())


async def test_a_callback_that_cannot_be_stored_leaves_the_caller_in_its_place(
    layer: Layer,
) -> None:
    async def store_down(request: CallbackRequest) -> str:
        raise StorageError("database is locked")

    layer.service.callbacks.create_task = store_down
    layer.dial()
    await until(layer.waiting)
    (call,) = layer.service.calls.values()
    await asyncio.sleep(0.3)
    layer.press("#")
    await until(lambda: metric(layer, "failed") == 1)
    assert layer.waiting()
    assert call.disposition != "callback_requested"
    # back in the router where it stood: its wait counts from its first enqueue
    assert layer.routing.router.waiting("support") == 1
    waited = time.time() - (call.enqueued_at or 0.0)
    oldest = layer.routing.router.oldest_wait("support", layer.routing.now)
    assert oldest == pytest.approx(waited, abs=0.1)
    assert oldest >= 0.3
    layer.routing.login("2001")  # and an agent still gets it
    await until(lambda: any(c["phase"] == "bridged" for c in layer.service.live_calls()))
    assert not layer.caller.of(ByeReceived)


@pytest.mark.parametrize("layer", [False], indirect=True)
async def test_the_key_while_an_agent_rings_is_ignored(layer: Layer) -> None:
    layer.routing.login("2001")  # its phone rings and does not answer (180 only)
    layer.dial()
    await until(lambda: any(c["phase"] == "ringing" for c in layer.service.live_calls()))
    assert any(e.request.method == "INVITE" for e in layer.agent.of(RequestReceived))
    layer.press("#")
    await asyncio.sleep(0.3)
    assert layer.requests == []
    assert any(c["phase"] == "ringing" for c in layer.service.live_calls())
    assert not layer.caller.of(ByeReceived)
