"""Supervisor monitoring (engine.calls.monitoring) in one process: the real CallService, routing
and CDR writer, with our own SIP stack as caller, agent and supervisor phones over loopback UDP.

What the e2e test (tests/e2e/test_supervisor_monitor.py) cannot reach cheaply: a supervisor who
is busy or never answers, a DELETE while the phone rings (CANCEL), the call ending under a
joined supervisor (BYE), the checks that refuse a request, and the event stream's facts.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.calls.flows import FlowRunner
from engine.calls.monitoring import MonitorRefused
from engine.calls.service import CallService
from engine.config import parse_config
from engine.routing.agents import AgentDirectory
from engine.routing.service import RoutingService
from engine.runtime.events import Event, EventBus
from engine.runtime.metrics import Metrics
from engine.storage import Store
from engine.storage.cdr import CdrWriter
from sip.endpoint import (
    AckReceived,
    ByeReceived,
    CancelReceived,
    Endpoint,
    EndpointConfig,
    EndpointEvent,
    RequestReceived,
    ResponseReceived,
)
from sip.registrar import Registrar
from sip.transport.udp import serve_udp
from tests.conftest import free_port
from tests.engine.test_calls import AGENT_SDP, CALLER_SDP, Peer, open_peer, until

SUPERVISOR_SDP = AGENT_SDP.replace(b"42000", str(free_port()).encode())


def config_text(agent_port: int, supervisor_port: int, rtp_base: int, workers: int = 0) -> str:
    return f"""
[sip]
listeners = [{{ transport = "udp", bind = "127.0.0.1", port = 0 }}]

[media]
rtp_port_min = {rtp_base}
rtp_port_max = {rtp_base + 40}
workers = {workers}

[[trunks]]
name = "local"
allow = ["127.0.0.0/8"]

[[routes]]
number = "support"
flow = "support"

[[flows]]
name = "support"
steps = [{{ type = "answer" }}, {{ type = "enqueue", queue = "support" }}]

[[queues]]
name = "support"
ring_timeout_s = 0.5

[[agents]]
id = "2001"
login = "static"
contact = "sip:2001@127.0.0.1:{agent_port}"
queues = {{ support = 0 }}

[[agents]]
id = "2009"
login = "static"
contact = "sip:2009@127.0.0.1:{supervisor_port}"

[[agents]]
id = "2010"
login = "webrtc"
"""


async def open_supervisor(answer: int | None) -> Peer:
    """A phone that answers INVITEs with ``answer`` (200 with SDP, or a refusal), or only rings
    (None) until CANCELled."""
    peer: Peer

    def on_event(endpoint: Endpoint, event: EndpointEvent) -> None:
        peer.events.append(event)
        if isinstance(event, RequestReceived) and event.request.method == "INVITE":
            now = asyncio.get_running_loop().time()
            if answer == 200:
                endpoint.answer(event.transaction_id, SUPERVISOR_SDP, now=now)
            else:
                endpoint.send_response(event.transaction_id, answer or 180, now=now)

    def make(addr: tuple[str, int]) -> Endpoint:
        return Endpoint(
            EndpointConfig(local_host=addr[0], local_port=addr[1], t1_s=0.1),
            registrar=Registrar(),
        )

    peer = Peer(await serve_udp(make, on_event, "127.0.0.1", 0))
    return peer


@dataclass
class Floor:
    service: CallService
    caller: Peer
    agent: Peer
    supervisor: Peer
    events: list[Event]

    def monitor_events(self) -> list[tuple[str, str | None]]:
        return [(e.event, e.reason) for e in self.events if e.type == "monitor"]

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.service._metrics.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value

    async def bridged_call(self) -> str:
        now = asyncio.get_running_loop().time()
        self.caller.endpoint.invite(
            "sip:support@127.0.0.1", self.service.listening[0][1], now=now, body=CALLER_SDP,
            from_uri="sip:+15551234@127.0.0.1",
        )  # fmt: skip
        self.caller.transport.transmit()
        await until(lambda: any(c["phase"] == "bridged" for c in self.service.live_calls()))
        return str(self.service.live_calls()[0]["id"])

    def hang_up_caller(self) -> None:
        (answered,) = [e for e in self.caller.of(ResponseReceived) if e.response.status == 200]
        self.caller.endpoint.bye(answered.dialog_id, now=asyncio.get_running_loop().time())
        self.caller.transport.transmit()


@pytest.fixture
async def floor(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Floor]:
    answer, workers = getattr(request, "param", (200, 0))
    agent, caller, supervisor = await open_peer(), await open_peer(), await open_supervisor(answer)
    rtp_base = free_port() // 2 * 2
    cfg = parse_config(config_text(agent.addr[1], supervisor.addr[1], rtp_base, workers), "t.toml")
    loop = asyncio.get_running_loop()
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/cdr.sqlite3")
    metrics, bus = Metrics(), EventBus()
    cdr = CdrWriter(store, metrics)
    routing = RoutingService(cfg, loop=loop)
    agents = AgentDirectory(cfg, routing, cdr, loop)
    service = CallService(
        cfg, routing=routing, agents=agents, cdr=cdr, recordings=None, metrics=metrics,
        flows=FlowRunner(cfg, None), bus=bus,
    )  # fmt: skip
    routing.connect(on_offer=service.on_offer, on_withdraw=service.on_withdraw)
    routing.login("2001")
    events: list[Event] = []
    subscription = bus.subscribe()
    await service.start()

    async def collect() -> None:
        import msgspec

        while (raw := await subscription.get()) is not None:
            events.append(msgspec.json.decode(raw, type=Event))

    reader = asyncio.ensure_future(collect())
    try:
        yield Floor(service, caller, agent, supervisor, events)
    finally:
        subscription.close()
        await reader
        await service.stop()
        agents.close()
        for peer in (agent, caller, supervisor):
            peer.transport.close()
        await store.close()


async def test_a_joined_supervisor_is_hung_up_when_the_call_ends(floor: Floor) -> None:
    call_id = await floor.bridged_call()
    session = floor.service.monitoring.start(call_id, "2009", "whisper", "ops")
    assert session.state == "ringing"
    await until(lambda: bool(floor.supervisor.of(RequestReceived)))
    (invite,) = [e for e in floor.supervisor.of(RequestReceived) if e.request.method == "INVITE"]
    assert invite.request.headers.get("X-ACD-Call-ID") == call_id
    await until(lambda: session.state == "active")
    assert session.monitor is not None
    assert session.monitor.mode == "whisper"
    assert floor.service.live_calls()[0]["monitor"]["state"] == "active"
    assert floor.metric("acd_monitor_sessions_total", {"mode": "whisper"}) == 1
    assert floor.metric("acd_monitor_sessions_active") == 1
    floor.service.monitoring.set_mode(call_id, "barge", "ops")
    assert session.monitor.mode == "barge"
    floor.hang_up_caller()
    await until(lambda: bool(floor.supervisor.of(ByeReceived)))  # the supervisor's BYE
    await until(lambda: not floor.service.calls)
    assert session.state == "ended"
    assert not session.monitor.running
    assert floor.metric("acd_monitor_sessions_active") == 0
    await until(lambda: ("ended", "call ended") in floor.monitor_events())
    assert floor.monitor_events() == [
        ("ringing", None), ("started", None), ("mode_changed", None), ("ended", "call ended"),
    ]  # fmt: skip


async def test_the_supervisor_hanging_up_leaves_the_call_bridged(floor: Floor) -> None:
    call_id = await floor.bridged_call()
    session = floor.service.monitoring.start(call_id, "2009", "listen", "ops")
    await until(lambda: session.state == "active")
    await until(lambda: bool(floor.supervisor.of(AckReceived)))
    (ack,) = floor.supervisor.of(AckReceived)
    floor.supervisor.endpoint.bye(ack.dialog_id, now=asyncio.get_running_loop().time())
    floor.supervisor.transport.transmit()
    await until(lambda: session.state == "ended")
    assert ("ended", "supervisor bye") in floor.monitor_events()
    await asyncio.sleep(0.1)
    (live,) = floor.service.live_calls()
    assert (live["id"], live["phase"], live["monitor"]) == (call_id, "bridged", None)
    assert not floor.agent.of(ByeReceived)
    # the supervisor may come back
    again = floor.service.monitoring.start(call_id, "2009", "barge", "ops")
    await until(lambda: again.state == "active")
    floor.hang_up_caller()
    await until(lambda: not floor.service.calls)


@pytest.mark.parametrize("floor", [(None, 0)], indirect=True)
async def test_a_ringing_supervisor_is_cancelled_by_stop_and_by_no_answer(floor: Floor) -> None:
    call_id = await floor.bridged_call()
    session = floor.service.monitoring.start(call_id, "2009", "listen", "ops")
    await until(lambda: bool(floor.supervisor.of(RequestReceived)))
    floor.service.monitoring.stop(call_id, "ops")
    await until(lambda: bool(floor.supervisor.of(CancelReceived)))
    assert session.state == "ended"
    # the queue's ring_timeout_s (0.5 s) without an answer: CANCEL, and the call goes on
    late = floor.service.monitoring.start(call_id, "2009", "listen", "ops")
    await until(lambda: late.state == "ended", timeout_s=3.0)
    await until(lambda: len(floor.supervisor.of(CancelReceived)) == 2)
    assert [r for _, r in floor.monitor_events() if r] == ["stopped by ops", "no_answer"]
    assert floor.service.live_calls()[0]["phase"] == "bridged"
    assert floor.metric("acd_monitor_sessions_total", {"mode": "listen"}) == 0  # never joined
    floor.hang_up_caller()
    await until(lambda: not floor.service.calls)


@pytest.mark.parametrize("floor", [(486, 0)], indirect=True)
async def test_a_busy_supervisor_ends_the_monitoring_not_the_call(floor: Floor) -> None:
    call_id = await floor.bridged_call()
    session = floor.service.monitoring.start(call_id, "2009", "barge", "ops")
    await until(lambda: session.state == "ended")
    assert ("ended", "busy (486)") in floor.monitor_events()
    assert floor.service.live_calls()[0]["phase"] == "bridged"
    floor.hang_up_caller()
    await until(lambda: not floor.service.calls)


async def test_requests_that_cannot_be_done_are_refused_with_why(floor: Floor) -> None:
    monitoring = floor.service.monitoring
    with pytest.raises(KeyError):
        monitoring.start("no-such-call", "2009", "listen", "ops")
    call_id = await floor.bridged_call()
    with pytest.raises(ValueError, match="mode must be one of listen, whisper, barge"):
        monitoring.start(call_id, "2009", "spy", "ops")
    with pytest.raises(ValueError, match="no supervisor '9999'"):
        monitoring.start(call_id, "9999", "listen", "ops")
    with pytest.raises(MonitorRefused, match="2001 is the call's agent"):
        monitoring.start(call_id, "2001", "listen", "ops")
    with pytest.raises(MonitorRefused, match="WebRTC"):
        monitoring.start(call_id, "2010", "listen", "ops")
    with pytest.raises(KeyError):
        monitoring.set_mode(call_id, "barge", "ops")  # not monitored
    session = monitoring.start(call_id, "2009", "listen", "ops")
    with pytest.raises(MonitorRefused, match="already monitored by 2009"):
        monitoring.start(call_id, "2009", "barge", "ops")
    with pytest.raises(ValueError, match="mode must be one of"):
        monitoring.set_mode(call_id, "loud", "ops")
    await until(lambda: session.state == "active")
    floor.hang_up_caller()
    await until(lambda: not floor.service.calls)


class _Ear(asyncio.DatagramProtocol):
    """The supervisor phone's RTP port: counts what arrives."""

    def __init__(self) -> None:
        self.packets = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets += 1


@pytest.mark.parametrize("floor", [(200, 1)], indirect=True)
async def test_a_call_carried_by_a_media_worker_is_mixed_there(floor: Floor) -> None:
    """The supervisor's leg goes to the worker that carries the call (nothing of it is sent
    from the daemon), and comes back (and is closed) when the supervisor leaves."""
    transport, ear = await asyncio.get_running_loop().create_datagram_endpoint(
        _Ear, local_addr=("127.0.0.1", int(SUPERVISOR_SDP.split(b"m=audio ")[1].split()[0]))
    )
    try:
        call_id = await floor.bridged_call()
        await until(lambda: floor.metric("acd_media_handoffs_total", {"outcome": "carried"}) == 1)
        session = floor.service.monitoring.start(call_id, "2009", "listen", "ops")
        await until(lambda: session.state == "active")
        assert session.leg is not None
        sup_rtp = session.leg.rtp
        await until(lambda: sup_rtp.detached)  # handed to the worker
        sent_here = sup_rtp.packets_sent
        await until(lambda: ear.packets >= 10)  # the worker's mix, one frame per 20 ms
        assert sup_rtp.packets_sent == sent_here
        floor.service.monitoring.set_mode(call_id, "barge", "ops")
        floor.service.monitoring.stop(call_id, "ops")
        await until(lambda: sup_rtp.closed and not sup_rtp.detached)  # home, then closed
        heard = ear.packets
        await asyncio.sleep(0.2)
        assert ear.packets <= heard + 1  # nothing more after the leg came home
        assert floor.service.live_calls()[0]["phase"] == "bridged"
        # a second supervisor session, then the call ends under it: the leg comes home too
        again = floor.service.monitoring.start(call_id, "2009", "whisper", "ops")
        await until(lambda: again.state == "active")
        assert again.leg is not None
        await until(lambda: again.leg is not None and again.leg.rtp.detached)
        floor.hang_up_caller()
        await until(lambda: not floor.service.calls)
        await until(lambda: again.leg is not None and again.leg.rtp.closed)
        assert not again.leg.rtp.detached
        assert floor.metric("acd_monitor_sessions_active") == 0
    finally:
        transport.close()


@pytest.mark.parametrize("floor", [(200, 1)], indirect=True)
async def test_a_worker_that_dies_under_a_supervisor_leaves_the_mix_to_the_daemon(
    floor: Floor,
) -> None:
    transport, ear = await asyncio.get_running_loop().create_datagram_endpoint(
        _Ear, local_addr=("127.0.0.1", int(SUPERVISOR_SDP.split(b"m=audio ")[1].split()[0]))
    )
    try:
        call_id = await floor.bridged_call()
        session = floor.service.monitoring.start(call_id, "2009", "barge", "ops")
        await until(lambda: session.state == "active")
        assert session.leg is not None
        sup_rtp = session.leg.rtp
        await until(lambda: sup_rtp.detached and ear.packets >= 5)
        workers = floor.service.media_workers
        assert workers is not None
        (pid,) = workers.pool.pids
        os.kill(pid, signal.SIGKILL)  # the worker this test's service started
        await until(lambda: not sup_rtp.detached)  # the leg is home...
        sent = sup_rtp.packets_sent
        await until(lambda: sup_rtp.packets_sent >= sent + 10)  # ...and mixed here now
        assert session.state == "active"
        assert floor.service.live_calls()[0]["phase"] == "bridged"
        floor.service.monitoring.set_mode(call_id, "listen", "ops")
        floor.hang_up_caller()
        await until(lambda: not floor.service.calls)
        await until(lambda: sup_rtp.closed)
        assert floor.metric("acd_monitor_sessions_active") == 0
    finally:
        transport.close()
