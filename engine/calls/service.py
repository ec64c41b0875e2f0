"""Calls: the B2BUA that takes a trunk call through its flow and queue to an agent and bridges them.

How this works (DESIGN.md section 3): ``CallService`` is the coordinator the daemon and the API
talk to; the work is done by one object per phase of a call, each in its own module:

- ``listeners``: the SIP listeners (UDP, TCP, TLS) and their endpoints;
- ``security``: the flood limits, auth-failure bans and scanner drops all listeners share;
- ``dispatch``: every endpoint event, to the phase that handles it;
- ``inbound``: a trunk INVITE admitted (trunk, route) and the call's task running its flow;
- ``session``: answering with SDP, re-INVITEs, hold and resume;
- ``media``: RTP legs, prompts and music on hold, DTMF, the bridge and its recording;
- ``queueing``: waiting in queue with announcements, overflow, the bridge on answer;
- ``ringing``: routing offers ringing agents' phones (RFC 3263 failover), answers and refusals;
- ``softphones``: the same for browser agents, over the WebRTC gateway;
- ``transfers``: blind transfers to a queue or a number;
- ``surveys``: the post-call CSAT survey after the agent hangs up (``queues[].csat``);
- ``monitoring``: a supervisor listening to, whispering into or barging in on a bridged call;
- ``teardown``: hang-ups, releasing everything, and the CDR row (``record``).

They share this object: the config, the routing service, the agent directory, the CDR writer,
the recording service, the flow runner, the metrics, the ``CallIndex`` and the task set. Every way
a caller can leave (CANCEL before answer, BYE during the flow, while queued or while an agent
rings) cancels the call's task; its ``finally`` releases routing, ringing legs, RTP ports and the
recording, and writes the CDR. An exception inside one call ends that call (logged with its
call_id and counted), never the daemon.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import structlog

import routing_core as rc
from engine.calls.callbacks import Callbacks
from engine.calls.dialout import Dialout
from engine.calls.dispatch import Dispatcher
from engine.calls.flows import FlowRunner
from engine.calls.inbound import Inbound
from engine.calls.listeners import Listeners
from engine.calls.media import CallMedia
from engine.calls.metrics import CallMetrics, SecurityCollector, SipMediaCollector
from engine.calls.model import Call, CallIndex
from engine.calls.monitoring import Monitoring
from engine.calls.queueing import Queueing
from engine.calls.record import record_of
from engine.calls.ringing import Ringing
from engine.calls.security import Security
from engine.calls.session import Session
from engine.calls.softphones import Softphones
from engine.calls.surveys import Surveys
from engine.calls.teardown import Teardown
from engine.calls.transfers import Transfers
from engine.config import Config
from engine.media.offload import MediaWorkers
from engine.plugins import PluginSet
from engine.recording.service import RecordingService
from engine.routing.agents import AgentDirectory
from engine.routing.service import RoutingService
from engine.runtime.events import EventBus
from engine.runtime.metrics import Metrics
from engine.storage.cdr import CdrWriter

log = structlog.stdlib.get_logger("acd.calls")


class CallService:
    def __init__(
        self,
        config: Config,
        *,
        routing: RoutingService,
        agents: AgentDirectory,
        cdr: CdrWriter | None,
        recordings: RecordingService | None,
        metrics: Metrics,
        flows: FlowRunner,
        bus: EventBus | None = None,
    ) -> None:
        self.config = config
        self.routing = routing
        self.agents = agents
        self.cdr = cdr
        self.recordings = recordings
        self.flows = flows
        self.bus = bus  # the live event stream (monitoring's events)
        self.metrics = CallMetrics(metrics)
        self._metrics = metrics
        self.index = CallIndex()
        self._tasks: set[asyncio.Task[None]] = set()
        self.draining = False
        self.dispatch = Dispatcher(self)
        self.security = Security(
            config,
            self.dispatch.on_security_event,
            lambda op: self.metrics.security_state_errors.labels(op=op).inc(),
        )
        self.listeners = Listeners(
            config, agents.registrar, self.dispatch.on_event, self.security.guard
        )
        self.inbound = Inbound(self)
        self.session = Session(self)
        self.media = CallMedia(self)
        self.queueing = Queueing(self)
        self.ringing = Ringing(self)
        self.softphones = Softphones(self)
        self.transfers = Transfers(self)
        self.surveys = Surveys(self, metrics)
        self.callbacks = Callbacks(self, metrics)
        self.dialout = Dialout(self)
        self.monitoring = Monitoring(self)
        self.teardown = Teardown(self)
        metrics.registry.register(SipMediaCollector(self.listeners, self.media.stats))
        metrics.registry.register(SecurityCollector(self.listeners, self.security))

    @property
    def calls(self) -> dict[str, Call]:
        """The live calls by id."""
        return self.index.calls

    @property
    def listening(self) -> list[tuple[str, tuple[str, int]]]:
        """(kind, address) of each SIP listener, in the config's order."""
        return self.listeners.listening

    @property
    def media_workers(self) -> MediaWorkers | None:
        return self.media.workers

    def apply(self, config: Config, plugins: PluginSet | None = None) -> None:
        """A reloaded config: trunks, routes, flows, prompts and agent passwords apply to new calls
        and registrations at once; calls in progress keep what they started with. A changed
        ``[security]`` (or a trunk's ``allow``) screens the next request, keeping the bans."""
        self.config = config
        now = self.security.now()
        replaced, ended = self.security.apply(config, now)
        if replaced:
            self.listeners.use_guard(self.security.guard)
            self.dispatch.security_policy(self.security.policy, "reload")
            for address in ended:
                self.dispatch.ban_ended(address, "reload", now)
            self.security.changed()
            self.transmit()  # the endpoints re-arm their timers on the new guard
        self.listeners.apply(config)
        self.inbound.apply(config)
        self.media.apply(config)
        self.ringing.apply(config)
        self.flows.apply(config, plugins)
        self.queueing.apply(config)

    # -- start and stop ------------------------------------------------------------------------------

    async def start(self) -> tuple[str, int]:
        """The media clock (and workers), then every [[sip.listeners]] entry; the first one's
        address."""
        await self.media.start(self._metrics)
        self.dispatch.security_policy(self.security.policy, "start")
        self.dispatch.bans_restored(self.security.restore())
        return await self.listeners.start()

    def transmit(self) -> None:
        """Flush what the phases queued on the SIP cores (responses, requests) to the wire."""
        self.listeners.transmit()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.listeners.transports:
            self.transmit()
            self.listeners.close()
        await self.security.flush()
        await self.media.close()

    async def drain(self, timeout_s: float) -> None:
        """SIGTERM: refuse new calls (503) and let live ones finish, up to timeout_s."""
        self.draining = True
        self.listeners.set_accepting(False)  # load balancers' probes: 503, send calls elsewhere
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.calls and loop.time() < deadline:  # noqa: ASYNC110 - polling a dict, 10 Hz
            await asyncio.sleep(0.1)

    def cdr_open(self, call: Call) -> None:
        """The live call's row as it stands now (arrived, queued, answered): a crash leaves it,
        and the restarted node closes it (engine.storage.cdr.close_interrupted_calls)."""
        if self.cdr is not None:
            self.cdr.call_open(
                record_of(call, ended_at=None, talk_s=None, node=self.config.runtime.node)
            )

    def spawn(
        self, coro: Coroutine[Any, Any, None], call_id: str | None = None
    ) -> asyncio.Task[None]:
        """A task owned by the service: cancelled and awaited by ``stop``; a failure is logged
        with its call_id and counted, and ends only that task."""
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self.metrics.errors.labels(where="call").inc()
                log.error("call_task_failed", call_id=call_id, error=repr(t.exception()))

        task.add_done_callback(done)
        return task

    # -- what the daemon, the routing service and the API call ---------------------------------------

    def on_offer(self, offer: rc.Offer) -> None:
        self.ringing.on_offer(offer)

    def on_withdraw(self, offer: rc.Offer) -> None:
        self.ringing.on_withdraw(offer)

    def on_queue_empty(self, queue: str) -> None:
        self.queueing.on_queue_empty(queue)

    def attach_webrtc(self, gateway: Any) -> None:
        """Take calls to browser agents through ``gateway`` (engine.webrtc.gateway.WebRtcGateway)."""
        self.softphones.attach_webrtc(gateway)

    def request_transfer(
        self, call_id: str, *, queue: str = "", number: str = "", trunk: str = "", by: str = ""
    ) -> str:
        """See ``Transfers.request_transfer``."""
        return self.transfers.request_transfer(
            call_id, queue=queue, number=number, trunk=trunk, by=by
        )

    def pause_recording(self, call_id: str, paused: bool) -> bool:
        """See ``CallMedia.pause_recording``."""
        return self.media.pause_recording(call_id, paused)

    async def start_recording(self, call_id: str, requested_by: str) -> str:
        """See ``CallMedia.start_recording``."""
        return await self.media.start_recording(call_id, requested_by)

    def live_calls(self) -> list[dict[str, Any]]:
        """Every live call with its phase (and its supervisor monitoring, if any), for
        ``GET /api/v1/calls``."""
        now = time.time()
        out = []
        for call in self.calls.values():
            phase = "flow"
            if call.agent_released_at is not None:
                phase = "survey"  # the agent hung up; the caller is rating the call
            elif call.agent_id is not None:
                phase = "bridged"
            elif call.flow == "callback":
                phase = "callback"  # an agent-first callback ringing the agent or the customer
            elif call.transfer_answered_at is not None:
                phase = "transferred"
            elif any(leg.external and not leg.finished for leg in call.legs.values()):
                phase = "transferring"
            elif call.enqueued_at is not None:
                phase = (
                    "ringing" if any(not leg.finished for leg in call.legs.values()) else "queued"
                )
            position = self.queueing.position(call) if phase in ("queued", "ringing") else None
            monitor = self.monitoring.by_call.get(call.id)
            out.append(
                {
                    "id": call.id, "caller": call.caller, "dialed": call.dialed, "phase": phase,
                    "queue": call.queue or None, "agent_id": call.agent_id,
                    "age_s": round(now - call.arrived_at, 3), "position": position,
                    "recording_id": call.recording_id,
                    "recording_paused": bool(call.recording is not None and call.recording.paused),
                    "monitor": None if monitor is None else monitor.as_dict(),
                }
            )  # fmt: skip
        return out
