"""The call layer (engine.calls) in one process: the real CallService with every phase, the real
routing core, agent directory and CDR writer on a SQLite file, and our own SIP stack as the
trunk's caller and the agent's phone over loopback UDP. No daemon, no external peer: what the
e2e tests do with SIPp and baresip, here fast enough to test each phase's decisions one by one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa

import routing_core as rc
from engine.calls.flows import FlowRunner
from engine.calls.listeners import family
from engine.calls.media import CallMedia
from engine.calls.model import Call
from engine.calls.record import record_of, rejected_attempt
from engine.calls.ringing import through_trunk, with_transport
from engine.calls.service import CallService
from engine.config import parse_config
from engine.routing.agents import AgentDirectory
from engine.routing.service import RoutingService
from engine.runtime.metrics import Metrics
from engine.storage import Store
from engine.storage.cdr import CdrWriter
from engine.storage.schema import calls as calls_table
from engine.storage.schema import queue_events
from sip import Uri
from sip.endpoint import (
    ByeReceived,
    CancelReceived,
    Endpoint,
    EndpointConfig,
    EndpointEvent,
    RequestReceived,
    ResponseReceived,
)
from sip.registrar import Registrar
from sip.transport.udp import UdpTransport, serve_udp
from tests.conftest import free_port

CALLER_SDP = (
    b"v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 41000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)
AGENT_SDP = (
    b"v=0\r\no=agent 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 42000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
)


def config_text(agent_port: int, rtp_base: int, *, allow: str = "127.0.0.0/8") -> str:
    return f"""
[sip]
listeners = [{{ transport = "udp", bind = "127.0.0.1", port = 0 }}]

[media]
rtp_port_min = {rtp_base}
rtp_port_max = {rtp_base + 40}

[[trunks]]
name = "local"
allow = ["{allow}"]

[[routes]]
number = "support"
flow = "support"

[[flows]]
name = "support"
steps = [{{ type = "answer" }}, {{ type = "enqueue", queue = "support" }}]

[[queues]]
name = "support"
ring_timeout_s = 5

[[agents]]
id = "2001"
login = "static"
contact = "sip:2001@127.0.0.1:{agent_port}"
queues = {{ support = 0 }}
"""


@dataclass
class Peer:
    """One of our own SIP endpoints on loopback, recording every event it gets."""

    transport: UdpTransport
    events: list[EndpointEvent] = field(default_factory=list)
    answer_invites: bool = True

    @property
    def endpoint(self) -> Endpoint:
        return self.transport.endpoint

    @property
    def addr(self) -> tuple[str, int]:
        return self.transport.local_addr

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def statuses(self) -> list[int]:
        return [e.response.status for e in self.of(ResponseReceived)]


async def open_peer(*, answer_invites: bool = True) -> Peer:
    peer: Peer

    def on_event(endpoint: Endpoint, event: EndpointEvent) -> None:
        peer.events.append(event)
        if isinstance(event, RequestReceived) and event.request.method == "INVITE":
            now = asyncio.get_running_loop().time()
            if peer.answer_invites:
                endpoint.answer(event.transaction_id, AGENT_SDP, now=now)
            else:
                endpoint.send_response(event.transaction_id, 180, now=now)

    def make(addr: tuple[str, int]) -> Endpoint:
        return Endpoint(
            EndpointConfig(local_host=addr[0], local_port=addr[1], t1_s=0.1),
            registrar=Registrar(),
        )

    transport = await serve_udp(make, on_event, "127.0.0.1", 0)
    peer = Peer(transport, answer_invites=answer_invites)
    return peer


async def until(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@dataclass
class Layer:
    service: CallService
    routing: RoutingService
    store: Store
    cdr: CdrWriter
    agent: Peer
    caller: Peer

    @property
    def sip_addr(self) -> tuple[str, int]:
        return self.service.listening[0][1]

    def dial(self, number: str) -> int:
        now = asyncio.get_running_loop().time()
        request_id = self.caller.endpoint.invite(
            f"sip:{number}@127.0.0.1", self.sip_addr, now=now, body=CALLER_SDP,
            from_uri="sip:+15551234@127.0.0.1",
        )  # fmt: skip
        self.caller.transport.transmit()
        return request_id

    async def rows(self, table: sa.Table) -> list[Any]:
        await self.cdr.flush()
        async with self.store.engine.connect() as conn:
            return list((await conn.execute(sa.select(table))).all())


@pytest.fixture
async def layer(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Layer]:
    answer = getattr(request, "param", True)
    agent = await open_peer(answer_invites=answer)
    caller = await open_peer()
    allow = "10.0.0.0/8" if answer == "foreign" else "127.0.0.0/8"
    rtp_base = free_port() // 2 * 2
    cfg = parse_config(config_text(agent.addr[1], rtp_base, allow=allow), "t.toml")
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
    routing.login("2001")  # a static agent is logged in by the API or a feature code
    await service.start()
    try:
        yield Layer(service, routing, store, cdr, agent, caller)
    finally:
        await service.stop()
        agents.close()
        for peer in (agent, caller):
            peer.transport.close()
        await store.close()


def metric(layer: Layer, name: str, labels: dict[str, str]) -> float:
    value = layer.service._metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_a_trunk_call_is_queued_rung_to_the_agent_bridged_and_recorded_in_the_cdr(
    layer: Layer,
) -> None:
    layer.dial("support")
    await until(lambda: 200 in layer.caller.statuses())  # the flow's answer step
    await until(lambda: bool(layer.agent.of(RequestReceived)))
    invites = [e for e in layer.agent.of(RequestReceived) if e.request.method == "INVITE"]
    assert invites, "the agent's phone was not rung"
    assert invites[0].request.headers.get("X-ACD-Queue") == "support"
    await until(lambda: any(c["phase"] == "bridged" for c in layer.service.live_calls()))
    (live,) = layer.service.live_calls()
    assert (live["agent_id"], live["queue"], live["caller"]) == ("2001", "support", "+15551234")
    assert layer.routing.agent_state("2001") is rc.AgentState.BUSY
    # the caller hangs up: the agent's leg gets BYE, the call's row says answered
    (answered,) = [e for e in layer.caller.of(ResponseReceived) if e.response.status == 200]
    assert answered.dialog_id is not None
    layer.caller.endpoint.bye(answered.dialog_id, now=asyncio.get_running_loop().time())
    layer.caller.transport.transmit()
    await until(lambda: bool(layer.agent.of(ByeReceived)))
    await until(lambda: not layer.service.calls)
    (row,) = await layer.rows(calls_table)
    assert (row.disposition, row.agent_id, row.queue, row.hangup_side) == (
        "answered", "2001", "support", "caller",
    )  # fmt: skip
    assert row.enqueued_at <= row.agent_answered_at <= row.ended_at
    kinds = [e.event for e in await layer.rows(queue_events)]
    assert kinds == ["enter", "offer", "answer", "complete"]
    assert metric(layer, "acd_calls_total", {"outcome": "answered"}) == 1
    assert metric(layer, "acd_calls_active", {}) == 0


@pytest.mark.parametrize("layer", [False], indirect=True)
async def test_a_caller_who_hangs_up_while_the_agent_rings_leaves_no_agent_reserved(
    layer: Layer,
) -> None:
    layer.dial("support")
    await until(lambda: any(c["phase"] == "ringing" for c in layer.service.live_calls()))
    assert layer.routing.agent_state("2001") is rc.AgentState.RESERVED
    # the caller gives up (its INVITE was answered by the flow's answer step: a BYE)
    (answered,) = [e for e in layer.caller.of(ResponseReceived) if e.response.status == 200]
    layer.caller.endpoint.bye(answered.dialog_id, now=asyncio.get_running_loop().time())
    layer.caller.transport.transmit()
    await until(lambda: bool(layer.agent.of(CancelReceived)))  # the ringing leg is cancelled
    await until(lambda: not layer.service.calls)
    assert layer.routing.agent_state("2001") is rc.AgentState.AVAILABLE
    (row,) = await layer.rows(calls_table)
    assert (row.disposition, row.agent_id, row.hangup_side) == ("abandoned", None, "caller")
    assert (
        metric(layer, "acd_queue_wait_seconds_count", {"queue": "support", "outcome": "abandoned"})
        == 1
    )


async def test_an_unrouted_number_gets_404_and_a_rejected_row(layer: Layer) -> None:
    layer.dial("nobody")
    await until(lambda: 404 in layer.caller.statuses())
    assert not layer.agent.events  # nobody was rung
    (row,) = await layer.rows(calls_table)
    assert (row.disposition, row.hangup_reason, row.trunk) == (
        "rejected", "404 No route for this number", "local",
    )  # fmt: skip


@pytest.mark.parametrize("layer", ["foreign"], indirect=True)
async def test_a_source_no_trunk_allows_gets_403(layer: Layer) -> None:
    layer.dial("support")
    await until(lambda: 403 in layer.caller.statuses())
    (row,) = await layer.rows(calls_table)
    assert (row.disposition, row.hangup_reason, row.trunk) == (
        "rejected", "403 Source not allowed", None,
    )  # fmt: skip


async def test_a_draining_service_answers_503_with_retry_after(layer: Layer) -> None:
    drain = asyncio.ensure_future(layer.service.drain(0.2))
    await asyncio.sleep(0)
    layer.dial("support")
    await until(lambda: 503 in layer.caller.statuses())
    (refusal,) = [e for e in layer.caller.of(ResponseReceived) if e.response.status == 503]
    assert refusal.response.headers.get("Retry-After") == "60"
    await drain


# -- the pure pieces --------------------------------------------------------------------------------


def test_family_of_a_listener_is_its_socket_family_for_udp_and_any_for_tcp() -> None:
    def endpoint(host: str, transport: str) -> Endpoint:
        return Endpoint(EndpointConfig(local_host=host, local_port=5060, transport=transport))

    assert family(endpoint("127.0.0.1", "UDP")) == "A"
    assert family(endpoint("[::1]", "UDP")) == "AAAA"
    assert family(endpoint("127.0.0.1", "TCP")) == "any"
    assert family(endpoint("acd.example.com", "UDP")) == "any"


def test_an_extension_behind_a_pbx_is_reached_through_its_trunk() -> None:
    cfg = parse_config(
        """
[[trunks]]
name = "pbx"
allow = ["192.0.2.0/24"]
outbound_proxy = "sip:pbx.example.net:5070"
outbound_username = "acd"
outbound_password = "s3cret"
transport = "tcp"
""",
        "t.toml",
    )
    trunk = cfg.trunks[0]
    contact = with_transport(Uri.parse("sip:2001@pbx.example.net"), trunk.transport)
    assert contact.transport == "tcp"
    assert with_transport(contact, "udp") is contact  # UDP or already set: unchanged
    destination, auth = through_trunk(trunk, contact)
    assert (destination.host, destination.port) == ("pbx.example.net", 5070)
    assert auth is not None


def test_the_cdr_row_of_a_call_carries_its_times_and_its_wait() -> None:
    cfg = parse_config(config_text(5090, 30000), "t.toml")
    call = Call(
        id="c1", sip_call_id="s1", transaction_id=1, request=None,  # type: ignore[arg-type]
        source=("127.0.0.1", 5060), trunk=cfg.trunks[0], flow="support", arrived_at=100.0,
        caller="+1555", dialed="support",
    )  # fmt: skip
    call.queue, call.enqueued_at, call.agent_answered_at = "support", 110.0, 125.0
    call.agent_id, call.disposition, call.hangup_side = "2001", "answered", "agent"
    row = record_of(call, ended_at=185.0, talk_s=60.0, node="n1")
    assert (row.wait_s, row.talk_s, row.ended_at, row.trunk) == (15.0, 60.0, 185.0, "local")
    assert row.node == "n1"
    live = record_of(call, ended_at=None, talk_s=None, node="n1")  # answered, still talking
    assert (live.ended_at, live.wait_s, live.agent_id) == (None, 15.0, "2001")
    assert (live.disposition, live.hangup_side, live.hangup_reason) == (None, None, None)
    call.agent_answered_at = None
    assert (
        record_of(call, ended_at=185.0, talk_s=None, node="n1").wait_s == 75.0
    )  # waited to the end
    assert record_of(call, ended_at=None, talk_s=None, node="n1").wait_s is None  # still waiting
    attempt = rejected_attempt(
        sip_call_id="s2", trunk=None, caller="x", dialed="y", status=403, reason="No", node="n1"
    )
    assert (attempt.disposition, attempt.hangup_reason, attempt.node) == (
        "rejected",
        "403 No",
        "n1",
    )
    assert attempt.arrived_at == attempt.ended_at


@pytest.mark.parametrize(
    ("mode", "telephone_event_pt", "listens"),
    [
        ("auto", None, True),  # no telephone-event negotiated: the caller can only send tones
        ("auto", 101, False),
        ("inband", 101, True),  # (our answer offers none; a caller sending events anyway)
        ("inband", None, True),
        ("rfc4733", None, False),
    ],
)
def test_tones_are_listened_for_only_on_legs_whose_trunk_sends_them(
    mode: str, telephone_event_pt: int | None, listens: bool
) -> None:
    class Leg:
        def __init__(self) -> None:
            self.dtmf_payload_type = telephone_event_pt
            self.detecting: list[bool] = []

        def detect_inband_dtmf(self, on: bool) -> None:
            self.detecting.append(on)

    cfg = parse_config(config_text(9, 20000), "t.toml")
    media = CallMedia(SimpleNamespace(config=cfg))  # type: ignore[arg-type]
    leg = Leg()
    call = SimpleNamespace(trunk=msgspec.structs.replace(cfg.trunks[0], dtmf=mode), rtp=leg)
    media.listen_for_tones(call, True)  # type: ignore[arg-type]
    media.listen_for_tones(call, False)  # type: ignore[arg-type]
    assert leg.detecting == [listens, False]
