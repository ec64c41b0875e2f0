"""Calls: the B2BUA that takes a trunk call through its flow and queue to an agent and bridges them.

How this works (DESIGN.md section 3): one SIP endpoint per listener (sip.endpoint with
sip.transport.udp or .tcp, TLS included) feeds ``CallService.on_event``; a call and each of its
legs remember the endpoint they use. A new INVITE from an allowed trunk whose dialled number matches a route
becomes a ``Call`` run by one task in the service's TaskGroup: the flow runs against the call (it is
the flow's ``CallIO``: prompts through the shared media clock, DTMF from RFC 4733 or SIP INFO), and
an ``enqueue`` outcome hands the call to the routing service with music on hold playing. Offers from
the routing core ring agents (INVITE to their registered or static contact with our SDP offer);
ring timeout, busy and reject go back to the router, which offers the next agent. The first agent
to answer is accepted (ring-all withdrawals are cancelled) and the two RTP legs are bridged, with
the recording tap when the queue records. A BYE on either leg ends the other; the agent goes to
wrap-up; the CDR row, queue events and metrics are written. Re-INVITEs are answered from each leg's
own offer/answer state (hold gives the caller music); an agent may blind-transfer the caller to a
queue or a number; browser agents (engine.webrtc.gateway) ring, answer and hang up over their softphone.

Every way a caller can leave (CANCEL before answer, BYE during the flow, while queued or while an
agent rings) cancels the call's task; its ``finally`` releases everything: routing (abandon or
complete), ringing legs (CANCEL), RTP ports, recording, and writes the CDR. An exception inside one
call ends that call (logged with its call_id and counted), never the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import random
import re
import ssl
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

import routing_core as rc
from engine.calls.announcements import SHIPPED_PROMPTS, expected_wait_prompts, position_prompts
from engine.calls.flows import FlowOutcome, FlowRunner
from engine.config import Config, LoginMode, TrunkConfig, outbound_proxy_uri
from engine.media.offload import MediaWorkers, RemoteBridge, RemoteRecording
from engine.recording.service import RecordingRefused, RecordingService
from engine.routing.agents import AgentDirectory
from engine.routing.service import RoutingService
from engine.runtime.metrics import WAIT_BUCKETS, Metrics
from engine.runtime.workers import worker_args
from engine.storage.cdr import CallRecord, CdrWriter, QueueEventData
from recordings import OnDemandRecording
from sip import Request, Uri
from sip.auth import DigestAlgorithm, DigestAuthenticator, DigestClient, Password
from sip.dialog import DialogId
from sip.endpoint import (
    AckReceived,
    ByeReceived,
    CancelReceived,
    DialogTerminated,
    Endpoint,
    EndpointConfig,
    EndpointEvent,
    InfoReceived,
    InternalErrorOccurred,
    RegistrationChanged,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
)
from sip.media import (
    Bridge,
    DtmfReceived,
    LegPlayer,
    MediaClock,
    MediaEvent,
    MediaStats,
    MediaTimedOut,
    PlaybackFinished,
    PortAllocator,
    RtpEndpoint,
    open_endpoint,
)
from sip.rtp.dtmf import DtmfError, parse_sip_info
from sip.rtp.playback import Playlist, PromptCache
from sip.sdp import (
    PCMA,
    PCMU,
    AudioCapabilities,
    OfferAnswerError,
    SdpError,
    make_offer,
    negotiate_answer,
    parse_sdp,
    process_answer,
)
from sip.session_timer import SessionTimerPolicy
from sip.transport.dns import LocateError, SipResolver
from sip.transport.tcp import TcpTransport, serve_tcp
from sip.transport.udp import UdpTransport, serve_udp

log = structlog.stdlib.get_logger("acd.calls")

# How long a caller's INVITE may wait for the flow's `answer` step before we answer 480 for it.
_ANSWER_GRACE_S = 30.0
_CODECS = {"PCMU": PCMU, "PCMA": PCMA}
# PRACK and UPDATE (RFC 3262, 3311) on top of the core's methods: trunks that require 100rel or
# refresh sessions by UPDATE (RFC 4028) keep their calls.
_ALLOW = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "REGISTER", "PRACK", "UPDATE")
_BUSY = {486, 600}
_DECLINED = {603}


@dataclass(eq=False)
class AgentLeg:
    call: Call
    agent_id: str
    rtp: RtpEndpoint
    offer_sdp: Any
    endpoint: Any = None  # the SIP endpoint (UDP, TCP or TLS listener) the leg's INVITE left on
    request_id: int = -1
    dialog_id: DialogId | None = None
    ring_timer: asyncio.TimerHandle | None = None
    rang_at: float = 0.0
    answered: bool = False
    finished: bool = False
    codec: str = "PCMU"
    # A transfer target reached through a trunk (not an agent): its final status lands here.
    final: asyncio.Future[int] | None = None
    # The SDP we last sent on this leg (first our offer, then our answers to its re-INVITEs) and
    # the last offer it sent us (None until its first re-INVITE).
    local_sdp: Any = None
    last_offer_in: Any = None
    # A browser agent's softphone (engine.webrtc.gateway.Session): the leg's far end is its loopback
    # RTP port, ringing and answering happen over its WebSocket instead of SIP.
    softphone: Any = None
    # RFC 3263 4.3: the targets (listener endpoint, address) still to try if the current one
    # times out or answers 503, and how to send this leg's INVITE to one of them (request id).
    next_targets: list[tuple[Any, tuple[str, int]]] = field(default_factory=list)
    send_invite: Callable[[Any, tuple[str, int]], int] | None = None
    # Armed while the current target has not answered at all and another target is left.
    failover_timer: asyncio.TimerHandle | None = None

    @property
    def external(self) -> bool:
        return self.final is not None


@dataclass(frozen=True, slots=True)
class TransferTarget:
    """Where an agent sends its caller: a queue, or a number through a trunk."""

    queue: str = ""
    number: str = ""
    trunk: str = ""
    by: str = ""  # who asked (agent id or API token name), for the CDR's flow data


#: How long a new bridge waits for a media worker to hand a leg back (a reply takes a millisecond;
#: a worker that died is noticed at once, and the leg is then taken back without it).
MEDIA_HOME_TIMEOUT_S = 2.0


@dataclass(eq=False)
class Call:
    id: str
    sip_call_id: str
    transaction_id: int
    request: Request
    source: tuple[str, int]
    trunk: TrunkConfig
    flow: str
    arrived_at: float
    caller: str
    dialed: str
    endpoint: Any = None  # the SIP endpoint (listener) the caller's INVITE came in on
    rtp: RtpEndpoint | None = None
    codec: str = "PCMU"
    dialog_id: DialogId | None = None
    answered: bool = False
    digits: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    player: LegPlayer | None = None
    playback_done: asyncio.Future[bool] | None = None
    legs: dict[str, AgentLeg] = field(default_factory=dict)
    connected: asyncio.Future[AgentLeg] | None = None
    # Set while bridged to an agent: the agent's blind transfer (to a queue or a number) lands here.
    transfer_request: asyncio.Future[TransferTarget] | None = None
    task: asyncio.Task[None] | None = None
    queue: str = ""
    enqueued_at: float | None = None
    first_offer_at: float | None = None
    agent_answered_at: float | None = None
    agent_id: str | None = None
    hangup_side: str = "system"
    hangup_reason: str = ""
    disposition: str = "flow_ended"
    flow_data: dict[str, Any] = field(default_factory=dict)
    recording_id: str | None = None
    recording: Any = None  # recordings.Recording while the bridge feeds it
    recording_on_demand: bool = False  # started through the API mid-call
    priority: int = 0
    overflows: int = 0
    bridge: Bridge | RemoteBridge | None = None
    transfer_answered_at: float | None = None
    # The caller's last SDP offer and our last answer (re-INVITEs are answered from these).
    remote_sdp: Any = None
    local_sdp: Any = None
    held_by: set[str] = field(default_factory=set)  # "caller" / "agent": who put the other on hold
    # The last media-worker bridge's "legs are back" future: the next bridge waits for it.
    media_home: asyncio.Future[None] | None = None


class CallMetrics:
    def __init__(self, metrics: Metrics) -> None:
        r = metrics.registry
        self.active = Gauge("acd_calls_active", "Calls in progress (any phase).", registry=r)
        self.total = Counter(
            "acd_calls_total", "Finished calls by outcome.", ["outcome"], registry=r
        )
        self.wait = Histogram(
            "acd_queue_wait_seconds",
            "Time callers waited in queue until answered or abandoned.",
            ["queue", "outcome"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.ring_no_answer = Counter(
            "acd_ring_no_answer_total",
            "Agent rings that ended without answer (timeout, busy, declined).",
            ["queue", "reason"],
            registry=r,
        )
        self.sip_requests = Counter(
            "acd_sip_requests_total", "SIP requests received by method.", ["method"], registry=r
        )
        self.sip_responses = Counter(
            "acd_sip_responses_total",
            "SIP responses received to our requests, by status class.",
            ["code"],
            registry=r,
        )
        self.announcements = Counter(
            "acd_queue_announcements_total",
            "Position / expected-wait announcements played to waiting callers.",
            ["queue"],
            registry=r,
        )
        self.dns_failures = Counter(
            "acd_sip_dns_failures_total",
            "RFC 3263 lookups of an outbound INVITE's destination that gave no target, by reason "
            "(nxdomain, no_records, timeout, servfail, error, unsupported_transport, address_family).",
            ["reason"],
            registry=r,
        )
        self.sip_failovers = Counter(
            "acd_sip_failovers_total",
            "Outbound INVITEs sent to the next RFC 3263 target after a timeout or 503.",
            registry=r,
        )
        self.errors = metrics.unexpected_errors


class _CallIO:
    """The flow's view of a call (engine.calls.flows.CallIO)."""

    def __init__(self, service: CallService, call: Call) -> None:
        self._service = service
        self._call = call

    async def answer(self) -> None:
        await self._service.answer_caller(self._call)

    async def play(self, prompts: Sequence[str], *, barge_in: bool) -> str | None:
        return await self._service.play(self._call, prompts, barge_in=barge_in)

    async def read_digits(
        self, *, max_digits: int, terminator: str, timeout_s: float, first: str = ""
    ) -> str:
        digits = first
        while len(digits) < max_digits:
            try:
                digit = await asyncio.wait_for(self._call.digits.get(), timeout_s)
            except TimeoutError:
                break
            if terminator and digit == terminator:
                break
            digits += digit
        return digits

    async def transfer(self, trunk: str, number: str, *, timeout_s: float) -> str:
        return await self._service.transfer(self._call, trunk, number, timeout_s=timeout_s)


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
    ) -> None:
        self.config = config
        self.routing = routing
        self.agents = agents
        self.cdr = cdr
        self.recordings = recordings
        self.flows = flows
        self.webrtc: Any = (
            None  # engine.webrtc.gateway.WebRtcGateway, when attached (browser agents)
        )
        self.metrics = CallMetrics(metrics)
        self._metrics = metrics
        self.media_stats = MediaStats()
        # [media] workers > 0: bridged calls' media in worker processes (engine/media/offload.py)
        self.media_workers: MediaWorkers | None = None
        self.ports = PortAllocator(config.media.rtp_port_min, config.media.rtp_port_max)
        self.prompts = PromptCache(("PCMU", "PCMA"))
        self.clock: MediaClock | None = None
        self.transport: UdpTransport | TcpTransport | None = None  # the first listener's
        # Every listener's transport, and the first endpoint of each kind ("udp", "tcp", "tls"):
        # where an INVITE to a contact with ;transport=... leaves from.
        self.transports: list[UdpTransport | TcpTransport] = []
        self._endpoint_by_kind: dict[str, Endpoint] = {}
        self.listening: list[tuple[str, tuple[str, int]]] = []  # (kind, address) per listener
        self.calls: dict[str, Call] = {}
        # Transaction and request ids are per endpoint: keyed with it (one per listener).
        self._by_transaction: dict[tuple[Endpoint, int], Call] = {}
        self._by_dialog: dict[DialogId, Call] = {}
        self._legs_by_request: dict[tuple[Endpoint, int], AgentLeg] = {}
        self._legs_by_dialog: dict[DialogId, AgentLeg] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.draining = False
        self._passwords = {a.id: a.password for a in config.agents if a.password}
        self._agent_ids = frozenset(a.id for a in config.agents)
        # Per queue: moving average of recent answered waits, for expected-wait announcements.
        self.average_wait_s: dict[str, float] = {}
        # Prompt name -> loaded prompt: the file lookup (a stat per directory) happens once per
        # name, not on every play; a reload (prompts_dir may change) starts over.
        self._prompt_by_name: dict[str, Any] = {}
        # RFC 3263 lookups of outbound destinations (cached for each record's TTL); the random
        # source for RFC 2782's weighted SRV choice.
        self._dns_settings = (config.sip.dns_servers, config.sip.dns_timeout_s)
        self.resolver = SipResolver(config.sip.dns_servers, timeout_s=config.sip.dns_timeout_s)
        self._rng = random.Random()
        metrics.registry.register(_SipMediaCollector(self))

    def apply(self, config: Config) -> None:
        """A reloaded config: trunks, routes, flows, prompts and agent passwords apply to new calls
        and registrations at once; calls in progress keep what they started with."""
        self.config = config
        self._passwords = {a.id: a.password for a in config.agents if a.password}
        self._agent_ids = frozenset(a.id for a in config.agents)
        self._prompt_by_name = {}
        dns = (config.sip.dns_servers, config.sip.dns_timeout_s)
        if dns != self._dns_settings:  # a new resolver (and an empty cache) only when they change
            self._dns_settings = dns
            self.resolver = SipResolver(dns[0], timeout_s=dns[1])
        self.flows.apply(config)

    # -- live calls (API) ----------------------------------------------------------------------------

    def live_calls(self) -> list[dict[str, Any]]:
        now = time.time()
        out = []
        for call in self.calls.values():
            phase = "flow"
            if call.agent_id is not None:
                phase = "bridged"
            elif call.transfer_answered_at is not None:
                phase = "transferred"
            elif any(leg.external and not leg.finished for leg in call.legs.values()):
                phase = "transferring"
            elif call.enqueued_at is not None:
                phase = (
                    "ringing" if any(not leg.finished for leg in call.legs.values()) else "queued"
                )
            out.append(
                {
                    "id": call.id, "caller": call.caller, "dialed": call.dialed, "phase": phase,
                    "queue": call.queue or None, "agent_id": call.agent_id,
                    "age_s": round(now - call.arrived_at, 3),
                    "position": self.position(call) if phase in ("queued", "ringing") else None,
                    "recording_id": call.recording_id,
                    "recording_paused": bool(call.recording is not None and call.recording.paused),
                }
            )  # fmt: skip
        return out

    def pause_recording(self, call_id: str, paused: bool) -> bool:
        """PCI: stop (or resume) writing a bridged call's recording; False if nothing to pause."""
        call = self.calls.get(call_id)
        if call is None or call.bridge is None or call.recording is None:
            return False
        now = _now()
        position = call.bridge.position(now)
        if paused:
            call.recording.pause(
                position
            )  # (a worker's recording: paused at its own position)  # the span is written as silence and listed in the index
            call.bridge.pause_recording(now, "paused")
        else:
            call.bridge.resume_recording(now)
            call.recording.resume(position)
        return True

    async def start_recording(self, call_id: str, requested_by: str) -> str:
        """On demand (API): record a bridged call from now until it ends; the new recording's id.

        The tap is attached to the live bridge with the bridge's current position as the file's
        position 0, so the file lasts from the request to the hang-up. Raises ``RecordingRefused``
        (not bridged, already recorded, the queue's policy is ``never``, the call ended meanwhile)
        or ``KeyError`` for a call that is not live."""
        call = self.calls[call_id]
        bridge = call.bridge
        if bridge is None or bridge.stopped_at is not None:
            raise RecordingRefused("the call is not bridged to an agent")
        if call.recording is not None:
            raise RecordingRefused("the call is already being recorded")
        if self.recordings is None:
            raise RecordingRefused("recording is unavailable: the recording service did not start")
        remote = isinstance(bridge, RemoteBridge) and bridge.carried_by is not None
        recording = await self.recordings.start_on_demand(
            call.id, call.queue, call.agent_id, requested_by=requested_by,
            remote=self.media_workers if remote else None,
        )  # fmt: skip
        if bridge.stopped_at is not None:  # hung up while the index row was written
            recording.close(0)
            raise RecordingRefused("the call ended before the recording could start")
        if isinstance(bridge, RemoteBridge):
            if not isinstance(recording, RemoteRecording):  # taken back meanwhile: not recorded
                recording.close(0)
                raise RecordingRefused("the call's media moved while the recording was started")
            call.recording, call.recording_id = recording, recording.recording_id
            call.recording_on_demand = True
            bridge.start_recording(recording)  # the worker's position 0 is now
            log.info(
                "recording_started_on_demand", recording_id=recording.recording_id, by=requested_by
            )
            return recording.recording_id
        sink = OnDemandRecording(recording, bridge.position(_now()))
        call.recording, call.recording_id = sink, sink.recording_id
        call.recording_on_demand = True
        bridge.sink = sink  # the tap rebases on the next packet of each leg
        log.info("recording_started_on_demand", recording_id=sink.recording_id, by=requested_by)
        return sink.recording_id

    # -- start and stop ------------------------------------------------------------------------------

    @property
    def endpoint(self) -> Endpoint:
        assert self.transport is not None
        return self.transport.endpoint

    async def start(self) -> tuple[str, int]:
        """Open every [[sip.listeners]] entry (UDP, TCP, TLS); the first one's address."""
        loop = asyncio.get_running_loop()
        self.clock = MediaClock(loop, self.media_stats)
        self.clock.start()
        if self.config.media.workers > 0 and self.media_workers is None:
            self.media_workers = MediaWorkers(
                self.config.media.workers,
                self._metrics.registry,
                self.media_stats,
                args=worker_args(self.config),
                on_unexpected=self._metrics.unexpected_errors.inc,
            )
            await self.media_workers.start()
            if self.recordings is not None:
                self.recordings.remote_writer_error = self.media_workers.writer_error
        sip_cfg = self.config.sip
        authenticator = DigestAuthenticator(
            sip_cfg.realm,
            algorithms=tuple(DigestAlgorithm(a) for a in sip_cfg.digest_algorithms),
        )

        def lookup(username: str) -> Password | None:
            secret = self._passwords.get(username)
            return Password(secret) if secret else None

        def make_endpoint(addr: tuple[str, int], kind: str) -> Endpoint:
            return Endpoint(
                EndpointConfig(
                    local_host=addr[0],
                    local_port=addr[1],
                    transport=kind.upper(),
                    t1_s=sip_cfg.t1_ms / 1000,
                    t2_s=sip_cfg.t2_ms / 1000,
                    t4_s=sip_cfg.t4_ms / 1000,
                    user_agent=sip_cfg.user_agent,
                    relayed_methods=("INVITE",),
                    force_rport=True,
                    allow=_ALLOW,
                    supported=("100rel",),
                    session_timer=SessionTimerPolicy(
                        sip_cfg.session_timers, sip_cfg.session_expires_s, sip_cfg.min_se_s
                    ),
                ),
                registrar=self.agents.registrar,
                authenticator=authenticator,
                user_lookup=lookup,
            )

        addresses: list[tuple[str, int]] = []
        try:
            for listener in self.config.sip.listeners:
                kind = listener.transport.lower()
                factory = functools.partial(_make, make_endpoint, kind)
                transport: UdpTransport | TcpTransport
                if kind == "udp":
                    transport = await serve_udp(
                        factory, self.on_event, listener.bind, listener.port
                    )
                    addresses.append(transport.local_addr)
                else:
                    server_ssl, client_ssl = (
                        _tls_contexts(listener) if kind == "tls" else (None, None)
                    )
                    transport = await serve_tcp(
                        factory, self.on_event, listener.bind, listener.port,
                        server_ssl=server_ssl, client_ssl=client_ssl,
                    )  # fmt: skip
                    config = transport.endpoint.config
                    addresses.append((config.local_host, config.local_port))
                self.transports.append(transport)
                self._endpoint_by_kind.setdefault(kind, transport.endpoint)
        except BaseException:
            for opened in self.transports:
                opened.close()
            self.transports.clear()
            raise
        if not self.transports:
            raise OSError("no SIP listener configured ([[sip.listeners]])")
        self.transport = self.transports[0]
        self.listening = [
            (listener.transport.lower(), addr)
            for listener, addr in zip(self.config.sip.listeners, addresses, strict=True)
        ]
        return addresses[0]

    def endpoint_for(self, uri: Uri | None) -> Endpoint:
        """The endpoint an outbound INVITE to ``uri`` leaves on: its ;transport= (sips: is TLS),
        if we listen on that kind, else the first listener's."""
        kind = "udp"
        if uri is not None:
            kind = "tls" if uri.scheme == "sips" else (uri.transport or "udp")
        return self._endpoint_by_kind.get(kind.lower(), self.endpoint)

    def transmit(self) -> None:
        for transport in self.transports:
            transport.transmit()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.transports:
            self.transmit()
            for transport in self.transports:
                transport.close()
        if self.media_workers is not None:
            await self.media_workers.close()
        if self.clock is not None:
            self.clock.stop()

    async def drain(self, timeout_s: float) -> None:
        """SIGTERM: refuse new calls (503) and let live ones finish, up to timeout_s."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.calls and loop.time() < deadline:  # noqa: ASYNC110 - polling a dict, 10 Hz
            await asyncio.sleep(0.1)

    def _spawn(self, coro: Any, call_id: str | None = None) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self.metrics.errors.labels(where="call").inc()
                log.error("call_task_failed", call_id=call_id, error=repr(t.exception()))

        task.add_done_callback(done)
        return task

    # -- SIP events ----------------------------------------------------------------------------------

    def on_event(self, endpoint: Endpoint, event: EndpointEvent) -> None:
        try:
            self._on_event(endpoint, event)
        except Exception:
            # One misbehaving event must not take the SIP transport down with it.
            self.metrics.errors.labels(where="sip_event").inc()
            log.exception("sip_event_failed", sip_event=type(event).__name__)

    def _on_event(self, endpoint: Endpoint, event: EndpointEvent) -> None:
        now = asyncio.get_running_loop().time()
        if isinstance(event, RequestReceived):
            self.metrics.sip_requests.labels(method=event.request.method).inc()
            if event.request.method == "INVITE" and event.dialog_id is None:
                self._new_invite(endpoint, event, now)
            elif event.request.method in ("INVITE", "UPDATE") and event.dialog_id is not None:
                self._reinvite(endpoint, event, now)  # an UPDATE here carries an offer
            else:
                endpoint.send_response(event.transaction_id, 405, now=now)
        elif isinstance(event, ResponseReceived):
            self.metrics.sip_responses.labels(code=f"{event.response.status // 100}xx").inc()
            leg = self._legs_by_request.get((endpoint, event.request_id))
            if leg is not None:
                self._agent_response(leg, event, now)
            else:
                self._late_answer(endpoint, event, now)
        elif isinstance(event, AckReceived):
            pass
        elif isinstance(event, CancelReceived):
            call = self._by_transaction.get((endpoint, event.transaction_id))
            if call is not None:
                self._caller_gone(call, "cancel")
        elif isinstance(event, ByeReceived):
            call = self._by_dialog.get(event.dialog_id)
            if call is not None:
                self._caller_gone(call, "bye")
            leg = self._legs_by_dialog.get(event.dialog_id)
            if leg is not None:
                self._agent_gone(leg, "bye")
        elif isinstance(event, InfoReceived):
            call = self._by_dialog.get(event.dialog_id)
            if call is not None:
                ctype = event.request.content_type
                with contextlib.suppress(DtmfError):
                    info = parse_sip_info(ctype.mime if ctype else "", event.request.body)
                    self._digit(call, info.digit, "info")
        elif isinstance(event, DialogTerminated):
            if event.reason in ("timed_out", "session_expired"):
                # The core has given the dialog up (no ACK, 408/481 inside it, or RFC 4028: the
                # session was not refreshed): the call or the agent's leg ends with it.
                why = "ack timeout" if event.reason == "timed_out" else "session expired"
                call = self._by_dialog.get(event.dialog_id)
                if call is not None:
                    self._caller_gone(call, why)
                leg = self._legs_by_dialog.get(event.dialog_id)
                if leg is not None:
                    self._agent_gone(leg, why)
        elif isinstance(event, TransactionTimedOut):
            if not event.is_server and event.method == "INVITE":
                leg = self._legs_by_request.get((endpoint, event.transaction_id))
                if leg is not None:
                    self._leg_timed_out(leg)
        elif isinstance(event, RegistrationChanged):
            self.agents.registration_changed(event.aor)
        elif isinstance(event, InternalErrorOccurred):
            self.metrics.errors.labels(where="sip_core").inc()
            log.error("sip_internal_error", call_id=event.call_id, error=event.error)

    # -- inbound calls -------------------------------------------------------------------------------

    def _trunk_for(self, source: tuple[str, int]) -> TrunkConfig | None:
        address = ipaddress.ip_address(source[0])
        for trunk in self.config.trunks:
            if any(address in ipaddress.ip_network(n, strict=False) for n in trunk.allow):
                return trunk
        return None

    def _route(self, trunk: TrunkConfig, dialed: str) -> str | None:
        for route in self.config.routes:
            if route.trunk not in ("*", trunk.name):
                continue
            if (route.number and route.number == dialed) or (
                route.pattern and re.fullmatch(route.pattern, dialed)
            ):
                return route.flow
        return None

    def _new_invite(self, endpoint: Endpoint, event: RequestReceived, now: float) -> None:
        request = event.request
        dialed = request.uri.user or "" if isinstance(request.uri, Uri) else ""
        caller_uri = request.from_.uri if request.from_ else None
        caller = (caller_uri.user or "") if isinstance(caller_uri, Uri) else ""
        # An agent's phone dialling a feature code (*1 ready, ...).
        if dialed.startswith("*") and caller in self._agent_ids:
            # Answered with a final status whose reason phrase the phone shows ("Agent ready");
            # no media session is set up for a feature code.
            action = self.agents.feature_code(caller, dialed)
            if action is None:
                endpoint.send_response(event.transaction_id, 404, "Unknown feature code", now=now)
            elif action.prompt == "invalid":
                endpoint.send_response(event.transaction_id, 403, "Not allowed now", now=now)
            else:
                phrase = {"ready": "Agent ready", "not_ready": "Agent not ready"}.get(
                    action.state, "Agent logged out"
                )
                endpoint.send_response(event.transaction_id, 480, phrase, now=now)
            return

        def refuse(status: int, reason: str, trunk: str | None, **headers: str) -> None:
            endpoint.send_response(
                event.transaction_id, status, reason, now=now, headers=list(headers.items())
            )
            self.metrics.total.labels(outcome="rejected").inc()
            if self.cdr:  # an attempt that never became a call still gets its row
                wall = time.time()
                self.cdr.call_ended(
                    CallRecord(
                        id=uuid.uuid4().hex, sip_call_id=request.call_id or "", arrived_at=wall,
                        trunk=trunk, caller=caller, dialed=dialed, ended_at=wall,
                        disposition="rejected", hangup_side="system",
                        hangup_reason=f"{status} {reason}",
                    )
                )  # fmt: skip

        if self.draining:
            refuse(503, "Shutting down", None, **{"Retry-After": "60"})
            return
        trunk = self._trunk_for(event.source)
        if trunk is None:
            refuse(403, "Source not allowed", None)
            return
        flow = self._route(trunk, dialed)
        if flow is None:
            refuse(404, "No route for this number", trunk.name)
            return
        call = Call(
            id=uuid.uuid4().hex,
            sip_call_id=request.call_id or "",
            transaction_id=event.transaction_id,
            request=request,
            source=event.source,
            trunk=trunk,
            flow=flow,
            arrived_at=time.time(),
            caller=caller,
            dialed=dialed,
            endpoint=endpoint,
        )
        self.calls[call.id] = call
        self._by_transaction[(endpoint, event.transaction_id)] = call
        self.metrics.active.inc()
        endpoint.send_response(event.transaction_id, 180, now=now)
        call.task = self._spawn(self._run_call(call), call.id)

    def _answer_sdp(self, call: Call, rtp: RtpEndpoint) -> tuple[bytes, Any]:
        offer = parse_sdp(call.request.body)
        host = rtp.local_address[0]
        caps = AudioCapabilities(address=host, port=rtp.port, codecs=(PCMU, PCMA))
        answer = negotiate_answer(offer, caps)
        call.remote_sdp, call.local_sdp = offer, answer.sdp
        return answer.sdp.to_bytes(), answer.audio

    # -- re-INVITE: session refresh, hold and resume (RFC 3264 8) ----------------------------------

    def _reinvite(self, endpoint: Endpoint, event: RequestReceived, now: float) -> None:
        """Answer a re-INVITE (or an UPDATE with an offer, RFC 3311) from the caller or an agent
        leg from that leg's own offer/answer state (same o= session, version up when our answer
        changes), and act on hold/resume. Session timers ride on these answers (sip.endpoint).

        A re-offer that would change the codec mid-call gets 488: RFC 3264 keeps the session
        as it was, and the bridge (and recording) keep their codec."""
        dialog_id = event.dialog_id
        call = self._by_dialog.get(dialog_id) if dialog_id else None
        leg = None if call is not None or not dialog_id else self._legs_by_dialog.get(dialog_id)
        owner = call if call is not None else leg.call if leg is not None else None
        rtp = call.rtp if call is not None else leg.rtp if leg is not None else None
        local = call.local_sdp if call is not None else leg.local_sdp if leg is not None else None
        if owner is None or rtp is None or local is None:
            endpoint.send_response(event.transaction_id, 488, now=now)
            return
        if not event.request.body:  # an offerless re-INVITE: our current SDP is the offer
            endpoint.answer(event.transaction_id, local.to_bytes(), now=now)
            return
        codec = owner.codec if call is not None else leg.codec  # type: ignore[union-attr]
        previous = call.remote_sdp if call is not None else leg.last_offer_in  # type: ignore[union-attr]
        try:
            offer = parse_sdp(event.request.body)
            ours = _CODECS.get(codec, PCMU)
            caps = AudioCapabilities(
                address=rtp.local_address[0], port=rtp.port,
                codecs=(ours, *(c for c in (PCMU, PCMA) if c.name != ours.name)),
            )  # fmt: skip
            answer = negotiate_answer(
                offer, caps, previous_offer=previous if previous is not None else None,
                previous_answer=local,
            )  # fmt: skip
        except (SdpError, OfferAnswerError):
            endpoint.send_response(event.transaction_id, 488, now=now)
            return
        audio = answer.audio
        if audio.codec.name != codec:
            endpoint.send_response(event.transaction_id, 488, now=now)
            return
        if call is not None:
            call.remote_sdp, call.local_sdp = offer, answer.sdp
        else:
            assert leg is not None
            leg.last_offer_in, leg.local_sdp = offer, answer.sdp
        if not _unspecified(audio.remote_address):  # c=0.0.0.0 (RFC 2543 hold): keep the old one
            rtp.remote_addr = (audio.remote_address, audio.remote_port)
        endpoint.answer(event.transaction_id, answer.sdp.to_bytes(), now=now)
        side = "caller" if call is not None else "agent"
        if audio.remote_hold != (side in owner.held_by):
            self._hold_changed(owner, side, audio.remote_hold)

    def _hold_changed(self, call: Call, side: str, held: bool) -> None:
        """``side`` put the other on hold, or took it off. An agent's hold gives the caller the
        queue's music (as Asterisk does); a caller's hold (its PBX may play its own music, which
        the agent then hears) only stops our audio towards it. The recording is paused as
        "hold" while anyone holds, unless it is already paused for another reason (PCI)."""
        now = _now()
        rtp = call.rtp if side == "caller" else self._leg_of(call)
        if isinstance(call.bridge, RemoteBridge) and call.bridge.stopped_at is None:
            call.bridge.set_held(0 if side == "caller" else 1, held, now)
        elif rtp is not None:
            rtp.set_held(held, now)
        if held:
            call.held_by.add(side)
        else:
            call.held_by.discard(side)
        log.info("call_hold" if held else "call_resume", by=side, call_id=call.id)
        bridge = call.bridge
        if bridge is None or bridge.stopped_at is not None:
            return
        agent_holds, caller_holds = "agent" in call.held_by, "caller" in call.held_by
        if agent_holds and not caller_holds:
            if call.player is None and not (isinstance(bridge, RemoteBridge) and bridge.playing[0]):
                self._music_on_hold(call, call.queue)
        else:
            self._stop_player(call)
        bridge.set_relay(now, caller_to_agent=not agent_holds, agent_to_caller=not call.held_by)
        if call.held_by and bridge.recording_paused_for is None:
            bridge.pause_recording(now, "hold")
        elif not call.held_by and bridge.recording_paused_for == "hold":
            bridge.resume_recording(now)

    def _new_bridge(
        self, call: Call, other: RtpEndpoint, other_codec: str, recording: Any
    ) -> Bridge | RemoteBridge:
        """The caller bridged to ``other`` (an agent or a transfer target): in a media worker
        when [media] workers > 0 (``recording`` is then a RemoteRecording, or None), else here."""
        assert call.rtp is not None
        assert self.clock is not None
        if self.media_workers is not None and (
            recording is None or isinstance(recording, RemoteRecording)
        ):
            bridge = RemoteBridge(
                self.media_workers, call.rtp, other, stats=self.media_stats, clock=self.clock,
                prompts=self.prompts, call_id=call.id, caller_codec=call.codec,
                agent_codec=other_codec, sink=recording,
            )  # fmt: skip
            call.media_home = bridge.home
            bridge.on_recording_lost = lambda lost, why: self._spawn(
                self._continue_recording(call, bridge, lost, why), call.id
            )
            return bridge
        return Bridge(
            call.rtp, other, stats=self.media_stats, caller_codec=call.codec,
            agent_codec=other_codec, sink=recording,
        )  # fmt: skip

    async def _continue_recording(
        self, call: Call, bridge: RemoteBridge, lost: RemoteRecording, why: str
    ) -> None:
        """The worker writing this call's recording died (or refused the call): the file so far
        is repaired by the recording service, and the rest of the call is recorded here in a new
        file whose index row ``continues`` the lost one, paused if the call's recording is
        (PCI). Nothing is recorded twice and nothing after the loss goes unrecorded, bar the
        moments the new row takes to write."""
        if self.recordings is None:
            return
        try:
            recording = await self.recordings.start(
                call.id, call.queue, call.agent_id, continues=lost.recording_id
            )
        except sa.exc.SQLAlchemyError as exc:
            self.recordings.index_errors += 1
            log.error("recording_continue_failed", call_id=call.id, reason=str(exc))
            return
        if recording is None:  # the queue is no longer configured
            return
        sink = OnDemandRecording(recording, bridge.position(_now()))
        if lost.paused:
            sink.pause(0)
        if call.bridge is bridge and call.recording is lost:
            call.recording = sink  # call.recording_id stays the first file's (the CDR's link)
        bridge.record_here(sink)  # closed at once if the call ended meanwhile
        log.warning(
            "recording_continued",
            call_id=call.id,
            recording_id=sink.recording_id,
            continues=lost.recording_id,
            why=why,
        )

    async def _media_home(self, call: Call) -> None:
        """Wait (briefly) until a media worker has handed the caller's leg back from the last
        bridge (a transferred caller bridged again): a leg is carried by one process at a time."""
        home = call.media_home
        if home is not None and not home.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(home), MEDIA_HOME_TIMEOUT_S)

    def _leg_of(self, call: Call) -> RtpEndpoint | None:
        """The bridged far leg's RTP endpoint (the agent's, or a transfer target's)."""
        bridge = call.bridge
        return None if bridge is None else bridge.legs[1]

    async def _open_rtp(self, call: Call) -> RtpEndpoint:
        def on_media(event: MediaEvent) -> None:
            if isinstance(event, DtmfReceived):
                self._digit(call, event.digit, event.method)
            elif isinstance(event, MediaTimedOut):
                self._caller_gone(call, f"media timeout ({event.reason})")

        timeout = self.config.media.inactivity_timeout_s or None
        return await open_endpoint(
            self.ports,
            self.media_stats,
            host=self.endpoint.config.local_host,
            clock=self.clock,
            inactivity_timeout_s=timeout,
            on_event=on_media,
        )

    async def answer_caller(self, call: Call) -> None:
        if call.answered:
            return
        call.rtp = await self._open_rtp(call)
        try:
            body, audio = self._answer_sdp(call, call.rtp)
        except (SdpError, OfferAnswerError) as exc:
            call.endpoint.send_response(call.transaction_id, 488, now=_now())
            self.transmit()
            raise _CallEnded("no common codec", "failed") from exc
        call.codec = audio.codec.name
        call.rtp.remote_addr = (audio.remote_address, audio.remote_port)
        call.rtp.dtmf_payload_type = audio.telephone_event_pt  # as negotiated, not assumed 101
        response = call.endpoint.answer(call.transaction_id, body, now=_now())
        self.transmit()
        to, frm = response.to, response.from_
        if to is not None and frm is not None and to.tag and frm.tag:
            call.dialog_id = DialogId(call.sip_call_id, to.tag, frm.tag)
            self._by_dialog[call.dialog_id] = call
        call.answered = True

    def _prompt(self, name: str) -> Any:
        prompt = self._prompt_by_name.get(name)
        if prompt is not None:
            return prompt
        prompt = self._prompt_by_name[name] = self.prompts.get(self._prompt_path(name))
        return prompt

    def _prompt_path(self, name: str) -> Path:
        extra = self.config.media.prompts_dir
        for base in ([Path(extra)] if extra else []) + [SHIPPED_PROMPTS]:
            path = base / f"{name}.wav"
            if path.exists():
                return path
        raise _CallEnded(f"prompt {name!r} not found", "failed")

    async def play(self, call: Call, prompts: Sequence[str], *, barge_in: bool) -> str | None:
        if call.rtp is None or self.clock is None:
            return None
        playlist = Playlist(call.codec, [self._prompt(p) for p in prompts], barge_in=barge_in)
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def finished(event: PlaybackFinished) -> None:
            if not done.done():
                done.set_result(event.interrupted_by_dtmf)

        self._stop_player(call)
        call.player = LegPlayer(call.rtp, playlist, self.clock, on_finished=finished)
        call.playback_done = done
        call.player.start(_now())
        barged = await done
        call.player = None
        if barged and not call.digits.empty():
            return call.digits.get_nowait()
        return None

    def _stop_player(self, call: Call) -> None:
        if isinstance(call.bridge, RemoteBridge) and call.bridge.stopped_at is None:
            call.bridge.stop_play(0)
        if call.player is not None:
            call.player.stop()
            call.player = None
        if call.playback_done is not None and not call.playback_done.done():
            call.playback_done.set_result(False)

    def _music_on_hold(self, call: Call, queue: str) -> None:
        if call.rtp is None or self.clock is None:
            return
        qcfg = next((q for q in self.config.queues if q.name == queue), None)
        music = qcfg.music_on_hold if qcfg is not None else "moh"  # a transferred call: no queue
        if isinstance(call.bridge, RemoteBridge) and call.bridge.stopped_at is None:
            # the caller's socket is the worker's while bridged: the music is played there
            call.bridge.play(0, call.codec, [], [str(self._prompt_path(music))])
            return
        playlist = Playlist(call.codec, [], loop=[self._prompt(music)])
        self._stop_player(call)
        call.player = LegPlayer(call.rtp, playlist, self.clock)
        call.player.start(_now())

    def _digit(self, call: Call, digit: str, method: str) -> None:
        if method != "rfc4733":  # the RTP endpoint counts its own RFC 4733 digits
            self.media_stats.dtmf_digits[method] = self.media_stats.dtmf_digits.get(method, 0) + 1
        call.digits.put_nowait(digit)
        barged = call.player is not None and call.player.on_dtmf()
        if barged and call.playback_done is not None and not call.playback_done.done():
            call.playback_done.set_result(True)

    # -- the life of one call ------------------------------------------------------------------------

    async def _run_call(self, call: Call) -> None:
        structlog.contextvars.bind_contextvars(call_id=call.id)
        log.info("call_arrived", trunk=call.trunk.name, dialed=call.dialed, caller=call.caller)
        try:
            call.flow_data.update(caller=call.caller, dialed=call.dialed)
            outcome = await self.flows.run(call.flow, _CallIO(self, call), call.flow_data)
            call.flow_data = outcome.data
            await self._after_flow(call, outcome)
        except _CallEnded as ended:
            call.hangup_reason = call.hangup_reason or ended.reason
            call.disposition = ended.disposition
        except asyncio.CancelledError:
            pass  # the caller (or the agent) hung up: _caller_gone/_agent_gone set the reason
        finally:
            await self._finish(call)

    async def _overflow(self, call: Call, reason: str, *, waited_s: float) -> None:
        """The queue is full, or the caller waited max_wait_s: run its overflow flow (which may
        enqueue elsewhere), or play all-busy and end the call."""
        self._stop_player(call)
        queue = call.queue
        qcfg = next(q for q in self.config.queues if q.name == queue)
        call.overflows += 1
        self.metrics.wait.labels(queue=queue, outcome="overflowed").observe(waited_s)
        if self.cdr:
            self.cdr.queue_event(
                "overflow", call_id=call.id, queue=queue,
                data=QueueEventData(wait_s=waited_s, reason=reason, target=qcfg.overflow or None),
            )  # fmt: skip
        # A chain of overflows longer than this is a configuration loop (a -> b -> a ...).
        if qcfg.overflow and call.overflows <= 5:
            log.info("queue_overflow", queue=queue, reason=reason, flow=qcfg.overflow)
            outcome = await self.flows.run(qcfg.overflow, _CallIO(self, call), call.flow_data)
            call.flow_data = outcome.data
            await self._after_flow(call, outcome)
            return
        if call.answered:
            await self.play(call, ["all-busy"], barge_in=False)
        raise _CallEnded(f"queue {reason}", "overflowed")

    async def _after_flow(self, call: Call, outcome: FlowOutcome) -> None:
        if outcome.kind == "enqueue":
            await self._queue_and_bridge(call, outcome)
            return
        if outcome.kind == "hangup" and outcome.hangup_prompt and call.answered:
            await self.play(call, [outcome.hangup_prompt], barge_in=False)
        call.hangup_side = "system"
        call.hangup_reason = outcome.reason or outcome.kind
        call.disposition = "flow_ended"

    async def _queue_and_bridge(self, call: Call, outcome: FlowOutcome) -> None:
        if not call.answered:
            await self.answer_caller(call)
        call.queue = outcome.queue
        call.priority = outcome.priority
        qcfg = next(q for q in self.config.queues if q.name == outcome.queue)
        if not qcfg.join_empty and self.routing.members_logged_in(outcome.queue) == 0:
            await self._overflow(call, "join_empty", waited_s=0.0)
            return
        loop = asyncio.get_running_loop()
        call.connected = loop.create_future()
        try:
            self.routing.enqueue(
                call.id, outcome.queue, priority=outcome.priority, requirements=outcome.requirements
            )
        except rc.QueueFull:
            await self._overflow(call, "full", waited_s=0.0)
            return
        call.enqueued_at = time.time()
        position = self.position(call)
        if self.cdr:
            self.cdr.queue_event(
                "enter", call_id=call.id, queue=call.queue,
                data=QueueEventData(caller=call.caller, position=position, orig_position=position),
            )  # fmt: skip
        self._music_on_hold(call, outcome.queue)
        waiting = self._wait_for_agent(call, qcfg.announce_every_s)
        try:
            if qcfg.max_wait_s > 0:
                leg = await asyncio.wait_for(waiting, qcfg.max_wait_s)
            else:
                leg = await waiting
        except (TimeoutError, _QueueEmptied) as exc:
            waited = time.time() - (call.enqueued_at or time.time())
            with contextlib.suppress(rc.RoutingError):
                self.routing.abandon(call.id)  # withdraws any ringing offer
            call.enqueued_at = None
            reason = "empty" if isinstance(exc, _QueueEmptied) else "timeout"
            await self._overflow(call, reason, waited_s=waited)
            return
        self._stop_player(call)
        assert call.rtp is not None
        recording = None
        remote = self.media_workers is not None and bool(self.media_workers.pool.pids)
        if self.recordings is not None:
            recording = await self.recordings.start(
                call.id, call.queue, leg.agent_id, remote=self.media_workers if remote else None
            )
            if recording is not None:
                call.recording = recording
                call.recording_id = str(getattr(recording, "recording_id", "")) or None
        await self._media_home(call)
        call.bridge = self._new_bridge(call, leg.rtp, leg.codec, recording)
        call.bridge.start(_now())
        log.info("call_bridged", agent=leg.agent_id)
        # Until a BYE on either leg cancels this task, or the agent transfers the caller.
        call.transfer_request = asyncio.get_running_loop().create_future()
        target = await call.transfer_request
        await self._agent_transfer(call, leg, target)

    # -- blind transfer by the agent ---------------------------------------------------------------

    def request_transfer(
        self, call_id: str, *, queue: str = "", number: str = "", trunk: str = "", by: str = ""
    ) -> str:
        """The agent (or a supervisor) sends a bridged caller to ``queue`` or to ``number``
        through ``trunk`` (default: the one trunk with an outbound_proxy). Returns where to;
        raises KeyError for a call that is not live, ValueError (why) when it cannot be done."""
        call = self.calls[call_id]
        waiting = call.transfer_request
        if call.agent_id is None or waiting is None or waiting.done():
            raise ValueError("the call is not bridged to an agent")
        if bool(queue) == bool(number):
            raise ValueError("give a queue or a number")
        if queue and not any(q.name == queue for q in self.config.queues):
            raise ValueError(f"no queue {queue!r}")
        if number:
            if not re.fullmatch(r"[0-9A-Za-z*#+._-]{1,64}", number):
                raise ValueError(f"not a dialable number: {number!r}")
            outbound = [t.name for t in self.config.trunks if t.outbound_proxy]
            if not trunk and len(outbound) == 1:
                trunk = outbound[0]
            if trunk not in outbound:
                raise ValueError(
                    f"name a trunk with an outbound_proxy ({', '.join(outbound) or 'none'})"
                )
        waiting.set_result(TransferTarget(queue, number, trunk, by))
        return queue or number

    async def _agent_transfer(self, call: Call, leg: AgentLeg, target: TransferTarget) -> None:
        """The agent's part ends (BLINDTRANSFER in the queue_log, then wrap-up) and the caller,
        who stays on our side of the B2BUA, goes to the new queue or number. A number that does
        not answer puts the caller back in the queue it came from: a transfer never loses a call."""
        now_wall = time.time()
        agent_id = call.agent_id
        assert agent_id is not None
        assert call.bridge is not None
        call.bridge.stop(_now())
        talk_s = now_wall - (call.agent_answered_at or now_wall)
        self._hang_up_leg(leg)
        with contextlib.suppress(rc.RoutingError):
            self.routing.complete(agent_id, call.id)
        self.agents.call_completed(agent_id)
        where = target.queue or target.number
        log.info("agent_transfer", agent=agent_id, to=where)
        if self.cdr:
            self.cdr.agent_event(agent_id, "wrap_up", call_id=call.id)
            self.cdr.queue_event(
                "transfer", call_id=call.id, queue=call.queue, agent_id=agent_id,
                data=QueueEventData(
                    target=where, talk_s=talk_s,
                    wait_s=(call.agent_answered_at or now_wall) - (call.enqueued_at or now_wall),
                ),
            )  # fmt: skip
        call.flow_data.update(transferred_by=target.by or agent_id, transferred_to=where)
        origin = call.queue
        call.bridge = call.recording = call.connected = call.transfer_request = None
        call.recording_on_demand = False
        call.agent_id = call.agent_answered_at = call.enqueued_at = None
        call.legs = {}
        call.held_by.clear()
        queue = target.queue
        if target.number:
            status = await self.transfer(
                call, target.trunk, target.number, timeout_s=30.0, queue_event=False
            )
            call.flow_data["transfer_status"] = status  # reached only if it failed
            queue = origin
        outcome = FlowOutcome("enqueue", queue=queue, priority=call.priority, data=call.flow_data)
        await self._queue_and_bridge(call, outcome)

    def position(self, call: Call) -> int:
        """1-based place of a waiting call in its queue: higher priority first, then older."""
        key = (-call.priority, call.enqueued_at or 0.0)
        ahead = sum(
            1
            for other in self.calls.values()
            if other is not call
            and other.queue == call.queue
            and other.enqueued_at is not None
            and other.agent_id is None
            and (-other.priority, other.enqueued_at) < key
        )
        return ahead + 1

    async def _wait_for_agent(self, call: Call, every_s: float) -> AgentLeg:
        """Music on hold until an agent answers, with an announcement every ``every_s`` seconds."""
        connected = call.connected
        assert connected is not None
        if every_s <= 0:
            return await connected
        while not connected.done():
            done, _ = await asyncio.wait({connected}, timeout=every_s)
            if done:
                break
            prompts = position_prompts(self.position(call))
            if call.queue in self.average_wait_s:
                prompts += expected_wait_prompts(self.average_wait_s[call.queue])
            self.metrics.announcements.labels(queue=call.queue).inc()
            announce = asyncio.ensure_future(self.play(call, prompts, barge_in=False))
            racing: set[asyncio.Future[Any]] = {announce, connected}
            try:
                await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not announce.done():  # the agent answered mid-sentence: stop talking
                    self._stop_player(call)
                    await asyncio.gather(announce, return_exceptions=True)
            if not connected.done():
                self._music_on_hold(call, call.queue)
        return connected.result()

    def on_queue_empty(self, queue: str) -> None:
        """The last logged-in member of ``queue`` left: with ``leave_empty`` its waiting callers
        (not those already ringing an agent or talking) go to the queue's overflow."""
        qcfg = next((q for q in self.config.queues if q.name == queue), None)
        if qcfg is None or not qcfg.leave_empty:
            return
        for call in list(self.calls.values()):
            waiting = call.connected
            if call.queue == queue and waiting is not None and not waiting.done():
                ringing = any(not leg.finished for leg in call.legs.values())
                if call.enqueued_at is not None and not ringing:
                    log.info("queue_left_empty", call_id=call.id, queue=queue)
                    waiting.set_exception(_QueueEmptied())

    def _record_wait(self, queue: str, wait_s: float) -> None:
        # An exponential moving average over roughly the last ten answered calls.
        previous = self.average_wait_s.get(queue)
        self.average_wait_s[queue] = wait_s if previous is None else 0.8 * previous + 0.2 * wait_s

    # -- agents --------------------------------------------------------------------------------------

    def on_offer(self, offer: rc.Offer) -> None:
        call = self.calls.get(offer.task_id)
        if call is None:
            self.routing.abandon(offer.task_id)
            return
        if call.first_offer_at is None:
            call.first_offer_at = time.time()
        if self.cdr:
            self.cdr.queue_event(
                "offer", call_id=call.id, queue=offer.queue, agent_id=offer.agent_id
            )
        self._spawn(self._ring(call, offer), call.id)

    async def _ring(self, call: Call, offer: rc.Offer) -> None:
        agent = next(a for a in self.config.agents if a.id == offer.agent_id)
        if agent.login is LoginMode.WEBRTC:
            await self._ring_softphone(call, agent.id)
            return
        contacts = self.agents.contacts(agent.id)
        if not contacts:
            self._reject(call, agent.id, "no_answer")
            return
        try:
            leg = await self._open_leg(call, agent.id)
        except OSError:
            self._reject(call, agent.id, "no_answer")
            return
        rtp, sdp = leg.rtp, leg.offer_sdp
        contact = Uri.parse(contacts[0])
        destination = contact  # RFC 3263 locates this: the contact, or the trunk's proxy
        auth: DigestClient | None = None
        if agent.login is LoginMode.STATIC and agent.trunk:
            # An extension behind a PBX: send through its trunk, answer its 401/407 with the
            # trunk's outbound credentials.
            trunk = next(t for t in self.config.trunks if t.name == agent.trunk)
            contact = _with_transport(contact, trunk.transport)
            destination, auth = _through_trunk(trunk, contact)
        targets = await self._locate(destination)
        if targets is None:  # logged and counted: this agent cannot be reached now
            rtp.close()
            self._reject(call, agent.id, "no_answer")
            return
        if call.task is None or call.task.done() or call.agent_id is not None:
            rtp.close()
            return

        def send_invite(endpoint: Endpoint, addr: tuple[str, int]) -> int:
            return endpoint.invite(
                contact, addr, now=_now(), body=sdp.to_bytes(),
                from_uri=f"sip:{call.caller or 'anonymous'}@{endpoint.config.local_host}",
                headers=[("X-ACD-Queue", call.queue), ("X-ACD-Call-ID", call.id)], auth=auth,
            )  # fmt: skip

        leg.send_invite, leg.next_targets = send_invite, targets
        self._send_invite(leg)
        call.legs[agent.id] = leg
        qcfg = next(q for q in self.config.queues if q.name == call.queue)
        leg.ring_timer = asyncio.get_running_loop().call_later(
            qcfg.ring_timeout_s, self._ring_timeout, leg
        )
        self.transmit()

    async def _open_leg(self, call: Call, name: str) -> AgentLeg:
        """An outbound leg's RTP endpoint and SDP offer (in the caller's codec: no transcoding
        unless the far end insists). Raises OSError when no port can be had."""
        rtp = await open_endpoint(
            self.ports, self.media_stats, host=self.endpoint.config.local_host, clock=self.clock,
            inactivity_timeout_s=self.config.media.inactivity_timeout_s or None,
            on_event=lambda e: self._agent_media(call, e),
        )  # fmt: skip
        sdp = make_offer(rtp.local_address[0], rtp.port, (_CODECS.get(call.codec, PCMU),))
        return AgentLeg(call, name, rtp, sdp, rang_at=_now(), codec=call.codec, local_sdp=sdp)

    # -- browser agents (engine.webrtc.gateway) -------------------------------------------------------------

    def attach_webrtc(self, gateway: Any) -> None:
        """Take calls to browser agents through ``gateway`` (an engine.webrtc.gateway.WebRtcGateway)."""
        self.webrtc = gateway
        gateway.on_message = self._softphone_message
        gateway.on_session_closed = self._softphone_closed
        gateway.on_media_ready = lambda session: self.agents.softphone_up(session.agent_id)

    async def _ring_softphone(self, call: Call, agent_id: str) -> None:
        """Offer the call to a browser agent: our leg's far end is its session's loopback RTP
        port; the page shows the alert with the call's data (the screen-pop) and answers over
        its WebSocket. Ring timeout, withdrawal and hang-ups work as for a SIP phone."""
        session = None if self.webrtc is None else self.webrtc.session(agent_id)
        if session is None:
            self._reject(call, agent_id, "no_answer")
            return
        try:
            leg = await self._open_leg(call, agent_id)
        except OSError:
            self._reject(call, agent_id, "no_answer")
            return
        if call.task is None or call.task.done() or call.agent_id is not None:
            leg.rtp.close()
            return
        history: list[dict[str, Any]] = []
        if self.cdr is not None:
            with contextlib.suppress(TimeoutError):  # a slow store must not hold up the ringing
                history = await asyncio.wait_for(self.cdr.previous_contacts(call.caller), 0.5)
        if call.task is None or call.task.done() or call.agent_id is not None:
            leg.rtp.close()
            return
        leg.softphone = session
        leg.codec = "PCMU"  # what the gateway speaks on its RTP side
        leg.rtp.remote_addr = session.rtp_address
        call.legs[agent_id] = leg
        qcfg = next(q for q in self.config.queues if q.name == call.queue)
        leg.ring_timer = asyncio.get_running_loop().call_later(
            qcfg.ring_timeout_s, self._ring_timeout, leg
        )
        session.send_event(
            {
                "type": "incoming", "call_id": call.id, "caller": call.caller,
                "queue": call.queue, "data": _screen_pop(call.flow_data),
                "history": history, "ring_timeout_s": qcfg.ring_timeout_s,
            }
        )  # fmt: skip

    def _softphone_message(self, session: Any, message: dict[str, Any]) -> None:
        """A click on the agent page: answer, reject, hangup, hold or unhold a call of its own."""
        kind, call_id = message.get("type"), message.get("call_id")
        call = self.calls.get(call_id) if isinstance(call_id, str) else None
        leg = None if call is None else call.legs.get(session.agent_id)
        if call is None or leg is None or leg.softphone is not session or leg.finished:
            session.send_event({"type": "error", "reason": f"no call {call_id!r} for you now"})
            return
        if kind == "answer" and not leg.answered:
            if leg.ring_timer is not None:
                leg.ring_timer.cancel()
            if call.agent_id is not None or call.connected is None or call.connected.done():
                self._end_leg(leg)  # another agent won, or the caller left
                return
            self._accepted(leg, _now())
        elif kind == "reject" and not leg.answered:
            if leg.ring_timer is not None:
                leg.ring_timer.cancel()
            self._end_leg(leg)
            self._reject(call, leg.agent_id, "reject")
        elif kind == "hangup" and leg.answered:
            self._agent_gone(leg, "hangup")
        elif kind == "transfer" and leg.answered:
            # "target": a queue's name, else a number (through the one outbound trunk).
            target = str(message.get("target") or "").strip()
            is_queue = any(q.name == target for q in self.config.queues)
            try:
                where = self.request_transfer(
                    call.id, queue=target if is_queue else "",
                    number="" if is_queue else target, by=session.agent_id,
                )  # fmt: skip
            except ValueError as exc:
                session.send_event({"type": "error", "reason": f"transfer refused: {exc}"})
                return
            session.send_event({"type": "transferred", "call_id": call.id, "to": where})
        elif kind in ("hold", "unhold") and leg.answered:
            held = kind == "hold"
            if held != ("agent" in call.held_by):
                if not isinstance(call.bridge, RemoteBridge):  # else _hold_changed tells its worker
                    leg.rtp.set_held(held, _now())
                self._hold_changed(call, "agent", held)
        else:
            session.send_event({"type": "error", "reason": f"cannot {kind!r} this call now"})

    def _softphone_closed(self, session: Any, reason: str) -> None:
        """The page went away: a ringing offer is a no-answer, a connected call ends."""
        self.agents.softphone_gone(session.agent_id, f"softphone closed: {reason}")
        for call in list(self.calls.values()):
            leg = call.legs.get(session.agent_id)
            if leg is None or leg.softphone is not session or leg.finished:
                continue
            if leg.answered:
                self._agent_gone(leg, "softphone closed")
            else:
                if leg.ring_timer is not None:
                    leg.ring_timer.cancel()
                self._end_leg(leg)
                self._reject(call, leg.agent_id, "no_answer")

    def _agent_media(self, call: Call, event: MediaEvent) -> None:
        if not isinstance(event, MediaTimedOut):
            return
        if call.agent_id is not None:
            self._caller_gone(call, f"agent media timeout ({event.reason})", side="agent")
        elif call.transfer_answered_at is not None:
            self._caller_gone(call, f"transfer media timeout ({event.reason})", side="callee")

    # -- blind transfer through a trunk ------------------------------------------------------------

    async def transfer(
        self, call: Call, trunk_name: str, number: str, *, timeout_s: float,
        queue_event: bool = True,
    ) -> str:  # fmt: skip
        """engine.calls.flows.CallIO.transfer: INVITE ``number`` at the trunk's outbound proxy, bridge
        the caller on answer and stay bridged; or return why not (the flow goes on).

        The caller is answered first, as an IVR that says "transferring you" has already done;
        the B2BUA stays in the media path (carriers rarely honour REFER), so the transferred
        call is still counted, timed and ended cleanly."""
        trunk = next(t for t in self.config.trunks if t.name == trunk_name)
        await self.answer_caller(call)
        self._stop_player(call)
        proxy = outbound_proxy_uri(trunk)
        target = proxy.replace(user=number) if proxy is not None else None
        targets = await self._locate(proxy) if proxy is not None else None
        if target is None or targets is None:  # the lookup logged and counted why
            log.warning("transfer_failed", target=number, reason="outbound proxy not found")
            return "failed"
        _, auth = _through_trunk(trunk, target)
        try:
            leg = await self._open_leg(call, f"transfer:{number}")
        except OSError:
            log.warning("transfer_failed", target=number, reason="no RTP port")
            return "failed"
        leg.final = asyncio.get_running_loop().create_future()
        body = leg.offer_sdp.to_bytes()

        def send_invite(endpoint: Endpoint, addr: tuple[str, int]) -> int:
            return endpoint.invite(
                target, addr, now=_now(), body=body,
                from_uri=f"sip:{call.caller or 'anonymous'}@{endpoint.config.local_host}",
                headers=[("X-ACD-Call-ID", call.id)], auth=auth,
            )  # fmt: skip

        leg.send_invite, leg.next_targets = send_invite, targets
        self._send_invite(leg)
        call.legs[leg.agent_id] = leg
        self.transmit()
        log.info("transfer_ringing", target=number, trunk=trunk.name)
        try:
            status = await asyncio.wait_for(asyncio.shield(leg.final), timeout_s)
        except TimeoutError:
            with contextlib.suppress(KeyError):
                leg.endpoint.cancel(leg.request_id, now=_now())
            self.transmit()
            self._end_leg(leg)
            call.legs.pop(leg.agent_id, None)
            log.info("transfer_failed", target=number, reason="no answer")
            return "no_answer"
        if not 200 <= status < 300:
            call.legs.pop(leg.agent_id, None)
            why = (
                "busy" if status in _BUSY
                else "no_answer" if status in (408, 480)
                else "failed" if status == 0
                else "rejected"
            )  # fmt: skip
            log.info("transfer_failed", target=number, status=status, reason=why)
            return why
        assert call.rtp is not None
        call.transfer_answered_at = time.time()
        call.disposition = "transferred"
        if self.cdr and call.queue and queue_event:
            self.cdr.queue_event(
                "transfer", call_id=call.id, queue=call.queue,
                data=QueueEventData(target=number),
            )  # fmt: skip
        await self._media_home(call)
        call.bridge = self._new_bridge(call, leg.rtp, leg.codec, None)
        call.bridge.start(_now())
        log.info("call_transferred", target=number, trunk=trunk.name)
        await asyncio.Event().wait()  # until a BYE on either leg cancels this task
        raise AssertionError("unreachable")

    def _transfer_response(self, leg: AgentLeg, event: ResponseReceived) -> None:
        status = event.response.status
        assert leg.final is not None
        if status < 200 or leg.finished or leg.final.done():
            return
        if 200 <= status < 300:
            leg.dialog_id = event.dialog_id
            if event.dialog_id is not None:
                self._legs_by_dialog[event.dialog_id] = leg
            try:
                audio = process_answer(leg.offer_sdp, parse_sdp(event.response.body))
            except (SdpError, OfferAnswerError):
                self._hang_up_leg(leg)
                leg.final.set_result(0)
                return
            leg.rtp.remote_addr = (audio.remote_address, audio.remote_port)
            leg.codec = audio.codec.name
            leg.answered = True
        else:
            self._end_leg(leg)
        leg.final.set_result(status)

    # -- RFC 3263: where an outbound INVITE goes, and the next target when one fails ------------

    async def _locate(self, uri: Uri) -> list[tuple[Endpoint, tuple[str, int]]] | None:
        """The (listener endpoint, address) pairs a request to ``uri`` goes to, in the order to
        try them (NAPTR/SRV/A/AAAA; a numeric host costs no lookup). None when there is none:
        logged and counted in acd_sip_dns_failures_total, so one call attempt ends, nothing
        raises."""
        kinds = self._endpoint_by_kind
        families = {_family(e) for e in kinds.values()}
        order = [f for f in ("A", "AAAA") if f in families or "any" in families]
        try:
            targets = await self.resolver.locate(
                uri, transports=kinds.keys(), rng=self._rng, families=order
            )
        except LocateError as exc:
            self.metrics.dns_failures.labels(reason=exc.reason).inc()
            log.warning("sip_destination_not_found", uri=str(uri), reason=exc.reason,
                        detail=exc.detail)  # fmt: skip
            return None
        out = [
            (kinds[t.transport], t.addr)
            for t in targets
            if _family(kinds[t.transport]) in ("any", "AAAA" if ":" in t.address else "A")
        ]
        if not out:  # e.g. only AAAA records and an IPv4-only listener of that transport
            self.metrics.dns_failures.labels(reason="address_family").inc()
            log.warning("sip_destination_not_found", uri=str(uri), reason="address_family",
                        detail=f"no listener can send to {[t.address for t in targets]}")  # fmt: skip
            return None
        return out

    def _send_invite(self, leg: AgentLeg) -> None:
        """Send the leg's INVITE to its next target (a new transaction: RFC 3263 4.3).

        While other targets are left, a target that sends nothing at all (not even 100 Trying)
        within ``[sip] failover_timeout_s`` is given up for the next one, as Kamailio's fr_timer
        does for dispatcher failover: timer B (64*T1, 32 s) is longer than a caller waits. The
        abandoned transaction runs out on its own; a late 2xx from it is hung up (_late_answer)."""
        assert leg.send_invite is not None
        endpoint, addr = leg.next_targets.pop(0)
        self._legs_by_request.pop((leg.endpoint, leg.request_id), None)
        leg.endpoint = endpoint
        leg.request_id = leg.send_invite(endpoint, addr)
        self._legs_by_request[(endpoint, leg.request_id)] = leg
        self._cancel_failover_timer(leg)
        timeout = self.config.sip.failover_timeout_s
        if leg.next_targets and timeout > 0:
            leg.failover_timer = asyncio.get_running_loop().call_later(
                timeout, self._no_response, leg, leg.request_id
            )

    @staticmethod
    def _cancel_failover_timer(leg: AgentLeg) -> None:
        if leg.failover_timer is not None:
            leg.failover_timer.cancel()
            leg.failover_timer = None

    def _no_response(self, leg: AgentLeg, request_id: int) -> None:
        leg.failover_timer = None
        if leg.request_id == request_id:
            self._fail_over(leg, "no_response")

    def _fail_over(self, leg: AgentLeg, why: str) -> bool:
        """The current target timed out or answered 503: try the next one, if any is left."""
        if leg.answered or leg.finished or not leg.next_targets or leg.send_invite is None:
            return False
        log.info("sip_failover", leg=leg.agent_id, why=why, to=leg.next_targets[0][1])
        self.metrics.sip_failovers.inc()
        self._send_invite(leg)
        self.transmit()
        return True

    def _leg_timed_out(self, leg: AgentLeg) -> None:
        """Timer B: our INVITE got no final answer (unreachable, or the transport failed)."""
        if leg.answered or leg.finished or leg.softphone is not None:
            return
        if self._fail_over(leg, "timeout"):
            return
        if leg.external:
            self._end_leg(leg)
            if leg.final is not None and not leg.final.done():
                leg.final.set_result(408)
            return
        if leg.ring_timer is not None:
            leg.ring_timer.cancel()
        self._end_leg(leg)
        self._reject(leg.call, leg.agent_id, "no_answer")

    def _ring_timeout(self, leg: AgentLeg) -> None:
        if leg.answered or leg.finished:
            return
        if leg.softphone is None:
            leg.endpoint.cancel(leg.request_id, now=_now())
            self.transmit()
        self._end_leg(leg)
        self._reject(leg.call, leg.agent_id, "no_answer")

    def _reject(self, call: Call, agent_id: str, reason: str) -> None:
        with contextlib.suppress(rc.RoutingError):
            self.routing.reject(call.id, agent_id, reason)
            self.metrics.ring_no_answer.labels(queue=call.queue, reason=reason).inc()
            if self.cdr:
                self.cdr.queue_event(
                    "ring_no_answer", call_id=call.id, queue=call.queue, agent_id=agent_id,
                    data=QueueEventData(reason=reason),
                )  # fmt: skip

    def _agent_response(self, leg: AgentLeg, event: ResponseReceived, now: float) -> None:
        self._cancel_failover_timer(leg)  # the target is alive: its answer decides from here
        if event.response.status == 503 and self._fail_over(leg, "503"):
            return  # RFC 3263 4.3: the next target gets a new INVITE
        if leg.external:
            self._transfer_response(leg, event)
            return
        status = event.response.status
        call = leg.call
        if status < 200 or leg.finished:
            return
        if 200 <= status < 300:
            if leg.ring_timer is not None:
                leg.ring_timer.cancel()
            leg.dialog_id = event.dialog_id
            if event.dialog_id is not None:
                self._legs_by_dialog[event.dialog_id] = leg
            if call.agent_id is not None or call.connected is None or call.connected.done():
                # Ring-all: someone else won (or the caller left): this agent gets BYE at once.
                self._hang_up_leg(leg)
                return
            try:
                audio = process_answer(leg.offer_sdp, parse_sdp(event.response.body))
            except (SdpError, OfferAnswerError):
                self._hang_up_leg(leg)
                self._reject(call, leg.agent_id, "reject")
                return
            leg.rtp.remote_addr = (audio.remote_address, audio.remote_port)
            leg.codec = audio.codec.name
            self._accepted(leg, now)
            return
        if status == 487:
            return  # our CANCEL was answered: already accounted for
        if leg.ring_timer is not None:
            leg.ring_timer.cancel()
        self._end_leg(leg)
        reason = "busy" if status in _BUSY else "reject" if status in _DECLINED else "no_answer"
        self._reject(call, leg.agent_id, reason)

    def _accepted(self, leg: AgentLeg, now: float) -> None:
        """An agent answered (SIP 2xx or the softphone's Answer): it wins the call, unless routing
        says otherwise; the waiting caller task then bridges."""
        call = leg.call
        assert call.connected is not None
        leg.answered = True
        try:
            self.routing.accept(call.id, leg.agent_id)
        except rc.RoutingError:
            self._hang_up_leg(leg)
            return
        if leg.softphone is not None:
            leg.softphone.connect_rtp(*leg.rtp.local_address)
        call.agent_id = leg.agent_id
        call.agent_answered_at = time.time()
        self._record_wait(call.queue, call.agent_answered_at - (call.enqueued_at or 0.0))
        if self.cdr:
            waited = call.agent_answered_at - (call.enqueued_at or call.agent_answered_at)
            self.cdr.queue_event(
                "answer", call_id=call.id, queue=call.queue, agent_id=leg.agent_id,
                data=QueueEventData(wait_s=waited, ring_s=now - leg.rang_at),
            )  # fmt: skip
            self.cdr.agent_event(leg.agent_id, "busy", call_id=call.id)
        call.connected.set_result(leg)

    def _late_answer(self, endpoint: Endpoint, event: ResponseReceived, now: float) -> None:
        """A 2xx to an agent INVITE we had already given up on (ring-all withdrawal, ring timeout,
        caller gone): the phone's 200 crossed our CANCEL on the wire. A CANCEL cannot undo an
        answered INVITE (RFC 3261 9.1); the core has ACKed the 2xx, so the UAC must send BYE
        (15), or the agent's phone stays in a call nobody is on while routing thinks it is free.
        Seen with two SIPp agents answering a ring-all offer at once."""
        cseq = event.response.cseq
        dialog_id = event.dialog_id
        if (
            200 <= event.response.status < 300
            and cseq is not None
            and cseq.method == "INVITE"
            and dialog_id is not None
            and dialog_id not in self._legs_by_dialog  # never a live leg's re-INVITE answer
            and dialog_id not in self._by_dialog
            and endpoint.dialog(dialog_id) is not None
        ):
            log.info("late_agent_answer_hung_up", sip_call_id=dialog_id.call_id)
            endpoint.bye(dialog_id, now=now)
            self.transmit()

    def on_withdraw(self, offer: rc.Offer) -> None:
        call = self.calls.get(offer.task_id)
        leg = call.legs.get(offer.agent_id) if call else None
        if leg is not None and not leg.answered and not leg.finished:
            if leg.ring_timer is not None:
                leg.ring_timer.cancel()
            if leg.softphone is None:
                with contextlib.suppress(KeyError):
                    leg.endpoint.cancel(leg.request_id, now=_now())
                self.transmit()
            self._end_leg(leg)

    def _hang_up_leg(self, leg: AgentLeg) -> None:
        if leg.dialog_id is not None and leg.endpoint.dialog(leg.dialog_id) is not None:
            leg.endpoint.bye(leg.dialog_id, now=_now())
            self.transmit()
        self._end_leg(leg)

    def _end_leg(self, leg: AgentLeg) -> None:
        if leg.softphone is not None and not leg.finished:
            if leg.answered:
                leg.softphone.disconnect_rtp()
            leg.softphone.send_event({"type": "call_ended", "call_id": leg.call.id})
        leg.finished = True
        leg.rtp.close()
        self._cancel_failover_timer(leg)
        self._legs_by_request.pop((leg.endpoint, leg.request_id), None)
        if leg.dialog_id is not None:
            self._legs_by_dialog.pop(leg.dialog_id, None)

    # -- hang-ups ------------------------------------------------------------------------------------

    def _caller_gone(self, call: Call, reason: str, *, side: str = "caller") -> None:
        if call.hangup_reason:
            return
        call.hangup_side, call.hangup_reason = side, reason
        if call.task is not None:
            call.task.cancel()

    def _agent_gone(self, leg: AgentLeg, reason: str) -> None:
        """The agent's side hung up (BYE, the softphone's Hang up, the page closing): its leg is
        released here (RTP port, maps, the page told), then the call ends if it was bridged."""
        call = leg.call
        self._end_leg(leg)
        if call.agent_id == leg.agent_id:
            self._caller_gone(call, f"agent {reason}", side="agent")
        elif leg.external and leg.answered:
            self._caller_gone(call, f"transfer target {reason}", side="callee")

    async def _finish(self, call: Call) -> None:
        now_wall = time.time()
        self._stop_player(call)
        talk_s = None
        if call.bridge is not None:
            call.bridge.stop(_now())
            talk_s = now_wall - (call.agent_answered_at or call.transfer_answered_at or now_wall)
        # The other side of the bridge, or ringing legs, or the caller's dialog.
        for leg in list(call.legs.values()):
            if leg.answered and not leg.finished:
                self._hang_up_leg(leg)
            elif not leg.finished:
                if leg.ring_timer is not None:
                    leg.ring_timer.cancel()
                if leg.softphone is None:
                    with contextlib.suppress(KeyError):
                        leg.endpoint.cancel(leg.request_id, now=_now())
                self._end_leg(leg)
        if call.hangup_side != "caller" and call.dialog_id is not None:
            with contextlib.suppress(KeyError):
                call.endpoint.bye(call.dialog_id, now=_now())
        elif not call.answered and call.hangup_reason != "cancel":
            with contextlib.suppress(KeyError, Exception):
                call.endpoint.send_response(call.transaction_id, 480, now=_now())
        self.transmit()
        # Routing: complete the answered call, abandon the waiting one.
        if call.agent_id is not None:
            with contextlib.suppress(rc.RoutingError):
                self.routing.complete(call.agent_id, call.id)
            self.agents.call_completed(call.agent_id)
            call.disposition = "answered"
            if self.cdr:
                self.cdr.agent_event(call.agent_id, "wrap_up", call_id=call.id)
                self.cdr.queue_event(
                    "complete", call_id=call.id, queue=call.queue, agent_id=call.agent_id,
                    data=QueueEventData(
                        wait_s=(call.agent_answered_at or now_wall) - (call.enqueued_at or now_wall),
                        talk_s=talk_s, hangup_side=call.hangup_side,
                    ),
                )  # fmt: skip
        elif call.enqueued_at is not None:
            with contextlib.suppress(rc.RoutingError):
                self.routing.abandon(call.id)
            waited = now_wall - call.enqueued_at
            if call.disposition != "overflowed":
                call.disposition = "abandoned"
            self.metrics.wait.labels(queue=call.queue, outcome=call.disposition).observe(waited)
            if self.cdr:
                self.cdr.queue_event(
                    "abandon" if call.disposition == "abandoned" else "overflow",
                    call_id=call.id, queue=call.queue, data=QueueEventData(wait_s=waited),
                )  # fmt: skip
        if call.agent_answered_at is not None and call.enqueued_at is not None:
            self.metrics.wait.labels(queue=call.queue, outcome="answered").observe(
                call.agent_answered_at - call.enqueued_at
            )
        if call.rtp is not None:
            call.rtp.close()
        self.calls.pop(call.id, None)
        self._by_transaction.pop((call.endpoint, call.transaction_id), None)
        if call.dialog_id is not None:
            self._by_dialog.pop(call.dialog_id, None)
        self.metrics.active.dec()
        self.metrics.total.labels(outcome=call.disposition).inc()
        if self.cdr:
            wait_s = None
            if call.enqueued_at is not None:
                wait_s = (call.agent_answered_at or now_wall) - call.enqueued_at
            self.cdr.call_ended(
                CallRecord(
                    id=call.id, sip_call_id=call.sip_call_id, arrived_at=call.arrived_at,
                    trunk=call.trunk.name, caller=call.caller, dialed=call.dialed, flow=call.flow,
                    queue=call.queue or None, agent_id=call.agent_id,
                    enqueued_at=call.enqueued_at, first_offer_at=call.first_offer_at,
                    agent_answered_at=call.agent_answered_at, ended_at=now_wall,
                    disposition=call.disposition, hangup_side=call.hangup_side,
                    hangup_reason=call.hangup_reason or None, wait_s=wait_s, talk_s=talk_s,
                    flow_data=call.flow_data or None, recording_id=call.recording_id,
                )
            )  # fmt: skip
        log.info("call_ended", disposition=call.disposition, side=call.hangup_side,
                 reason=call.hangup_reason, agent=call.agent_id)  # fmt: skip


class _QueueEmptied(Exception):
    """Set on a waiting call's ``connected`` future when its queue has no member left."""


class _CallEnded(Exception):
    """The call cannot go on (no codec, queue full, max wait): ends it with a disposition."""

    def __init__(self, reason: str, disposition: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.disposition = disposition


def _make(
    make_endpoint: Callable[[tuple[str, int], str], Endpoint], kind: str, addr: tuple[str, int]
) -> Endpoint:
    return make_endpoint(addr, kind)


def _with_transport(uri: Uri, transport: str) -> Uri:
    """``uri`` with ;transport= set for a trunk reached over TCP or TLS (UDP: unchanged)."""
    if transport == "udp" or uri.transport:
        return uri
    params = [(k, v) for k, v in uri.params if k != "transport"] + [("transport", transport)]
    return uri.replace(params=params)


def _tls_contexts(listener: Any) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Server context from the listener's certificate and key; client context for our outbound
    TLS connections (verifying peers against ``ca_file``, or the system store)."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(listener.cert_file, listener.key_file)
    client = ssl.create_default_context(cafile=listener.ca_file or None)
    return server, client


def _through_trunk(trunk: TrunkConfig, uri: Uri) -> tuple[Uri, DigestClient | None]:
    """Where an INVITE through ``trunk`` goes (the URI RFC 3263 locates: its outbound proxy,
    else ``uri``) and the credentials that answer its 401/407."""
    destination = outbound_proxy_uri(trunk) or uri
    auth = None
    if trunk.outbound_username:
        auth = DigestClient(trunk.outbound_username, trunk.outbound_password)
    return destination, auth


def _screen_pop(data: dict[str, Any]) -> dict[str, Any]:
    """What the flow gathered, for the agent's alert (values are already bounded scalars)."""
    return {k: v for k, v in data.items() if isinstance(v, str | int | float | bool) or v is None}


def _family(endpoint: Endpoint) -> str:
    """Which addresses ("A", "AAAA" or "any") a listener can send to: a UDP listener sends from
    its own socket, bound to one address family; TCP and TLS open a new connection per peer."""
    if endpoint.config.transport != "UDP":
        return "any"
    try:
        ip = ipaddress.ip_address(endpoint.config.local_host.strip("[]"))
    except ValueError:
        return "any"
    return "A" if ip.version == 4 else "AAAA"


def _unspecified(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:  # a host name: a real address
        return False


def _now() -> float:
    return asyncio.get_running_loop().time()


class _SipMediaCollector(Collector):
    """SIP rejections and RTP figures, read from the stack's plain counters at scrape time."""

    def __init__(self, service: CallService) -> None:
        self._service = service

    def collect(self) -> Any:
        s = self._service
        parse = CounterMetricFamily(
            "acd_sip_parse_errors",
            "SIP messages rejected or dropped, by reason.",
            labels=["reason"],
        )
        totals: dict[str, int] = {}
        for transport in s.transports:  # every listener's core: UDP, TCP and TLS
            for reason, n in transport.endpoint.rejections.items():
                totals[reason] = totals.get(reason, 0) + n
        for reason, n in sorted(totals.items()):
            parse.add_metric([reason], n)
        yield parse
        m = s.media_stats
        yield GaugeMetricFamily(
            "acd_rtp_sessions_active", "RTP legs open.", value=m.sessions_active
        )
        packets = CounterMetricFamily(
            "acd_rtp_packets", "RTP packets by direction.", labels=["direction"]
        )
        packets.add_metric(["in"], m.packets_received)
        packets.add_metric(["out"], m.packets_sent)
        yield packets
        yield CounterMetricFamily(
            "acd_rtp_packets_lost", "RTP packets lost (RFC 3550 A.3).", value=m.packets_lost
        )
        dtmf = CounterMetricFamily(
            "acd_dtmf_digits", "DTMF digits received by method.", labels=["method"]
        )
        for method, n in sorted(m.dtmf_digits.items()):
            dtmf.add_metric([method], n)
        yield dtmf

    def describe(self) -> Any:
        return iter(())
