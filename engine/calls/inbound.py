"""Inbound calls: a trunk's INVITE is admitted (trunk by source, route by dialled number) and
becomes a ``Call`` whose task runs its flow, then what the flow's outcome says.

How this works: ``new_invite`` answers agents' feature codes (*1 ready ...) at once, refuses
what cannot become a call (draining: 503, unknown source: 403, no route: 404, no room: 503 with
Retry-After when the RTP port range or the router's ``runtime.max_tasks`` would be used up by the
calls already admitted; each gets a CDR row), and otherwise sends 180, indexes the call and spawns ``_run_call``: the flow runs against
``CallIO`` (prompts, DTMF, transfer through the other phases); an ``enqueue`` outcome goes to
``queueing``; a ``CallEnded`` or a cancellation (the caller hung up) ends in ``teardown.finish``.

A source that no trunk's ``allow`` matches may still be a trunk with ``username``/``password``
(a PBX or carrier that authenticates rather than having a fixed address): its INVITE is
challenged (407 Proxy-Authenticate, answered by the endpoint: RFC 3261 22.3) and admitted as the
trunk whose credentials come back; wrong ones get 403 and a CDR row.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog

from engine.calls.flows import FlowOutcome
from engine.calls.model import Call, CallEnded
from engine.calls.record import rejected_attempt
from engine.config import Config, TrunkConfig
from sip import Uri
from sip.auth import AuthOutcome, Password
from sip.endpoint import Endpoint, RequestReceived

if TYPE_CHECKING:
    from engine.calls.service import CallService

log = structlog.stdlib.get_logger("acd.calls")

#: Retry-After (s) of the 503 a trunk call gets when the daemon has no room (RFC 3261 21.5.4):
#: room comes back as calls end, so a trunk (or Kamailio's dispatcher, which then sends the call
#: to another node at once) may try this node again soon.
NO_ROOM_RETRY_AFTER_S = 10


def refuse_no_room(
    service: CallService, endpoint: Endpoint, transaction_id: int, reason: str, now: float
) -> None:
    """The 503 of a call the daemon has no room for (``reason`` rtp_ports or router_full):
    answered, counted in ``acd_calls_rejected_total`` and logged as one warning."""
    endpoint.send_response(
        transaction_id, 503, "Service Unavailable", now=now, headers=[("Retry-After", str(NO_ROOM_RETRY_AFTER_S))],
    )  # fmt: skip
    service.metrics.rejected.labels(reason=reason).inc()
    log.warning("call_rejected_no_room", reason=reason, retry_after_s=NO_ROOM_RETRY_AFTER_S)


class Inbound:
    """Admission of trunk INVITEs and the task that runs each call."""

    def __init__(self, service: CallService) -> None:
        self._s = service
        self.apply(service.config)

    def apply(self, config: Config) -> None:
        self.agent_ids = frozenset(a.id for a in config.agents)
        # Trunks that may authenticate instead of (or besides) coming from an allowed address.
        self.trunks_by_username = {t.username: t for t in config.trunks if t.username}

    def _trunk_secret(self, username: str) -> Password | None:
        trunk = self.trunks_by_username.get(username)
        return Password(trunk.password) if trunk is not None else None

    def _trunk_for(self, source: tuple[str, int]) -> TrunkConfig | None:
        address = ipaddress.ip_address(source[0])
        for trunk in self._s.config.trunks:
            if any(address in ipaddress.ip_network(n, strict=False) for n in trunk.allow):
                return trunk
        return None

    def _route(self, trunk: TrunkConfig, dialed: str) -> str | None:
        for route in self._s.config.routes:
            if route.trunk not in ("*", trunk.name):
                continue
            if (route.number and route.number == dialed) or (
                route.pattern and re.fullmatch(route.pattern, dialed)
            ):
                return route.flow
        return None

    def _no_room(self) -> str | None:
        """Why a new call cannot be taken now, or None. Calls admitted but not yet answered each
        still need an RTP port pair, and calls not yet in a queue a router slot, so those are
        counted against what is free (a full count only when room is short: O(1) otherwise)."""
        calls = self._s.calls
        free_ports = self._s.media.ports.free
        if free_ports <= len(calls) and free_ports <= sum(c.rtp is None for c in calls.values()):
            return "rtp_ports"
        free_slots = self._s.routing.router.free_task_slots
        if free_slots <= len(calls) and free_slots <= sum(
            c.enqueued_at is None and c.agent_id is None for c in calls.values()
        ):
            return "router_full"
        return None

    def new_invite(self, endpoint: Endpoint, event: RequestReceived, now: float) -> None:
        request = event.request
        dialed = request.uri.user or "" if isinstance(request.uri, Uri) else ""
        caller_uri = request.from_.uri if request.from_ else None
        caller = (caller_uri.user or "") if isinstance(caller_uri, Uri) else ""
        # An agent's phone dialling a feature code (*1 ready, ...).
        if dialed.startswith("*") and caller in self.agent_ids:
            # Answered with a final status whose reason phrase the phone shows ("Agent ready");
            # no media session is set up for a feature code.
            action = self._s.agents.feature_code(caller, dialed)
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

        def count_refusal(status: int, reason: str, trunk: str | None) -> None:
            self._s.metrics.total.labels(outcome="rejected").inc()
            if self._s.cdr:  # an attempt that never became a call still gets its row
                self._s.cdr.call_ended(
                    rejected_attempt(
                        sip_call_id=request.call_id or "", trunk=trunk, caller=caller,
                        dialed=dialed, status=status, reason=reason,
                        node=self._s.config.runtime.node,
                    )
                )  # fmt: skip

        def refuse(status: int, reason: str, trunk: str | None, **headers: str) -> None:
            endpoint.send_response(
                event.transaction_id, status, reason, now=now, headers=list(headers.items())
            )
            count_refusal(status, reason, trunk)

        if self._s.draining:
            refuse(503, "Shutting down", None, **{"Retry-After": "60"})
            return
        no_room = self._no_room()
        if no_room is not None:
            refuse_no_room(self._s, endpoint, event.transaction_id, no_room, now)
            count_refusal(503, f"no room ({no_room})", None)
            return
        trunk = self._trunk_for(event.source)
        if trunk is None and self.trunks_by_username:
            # The endpoint answers everything but success itself: 407 (a first INVITE, a
            # stale nonce) is part of admission, not a refusal; 403 is, and gets its row.
            result = endpoint.authenticate(event.transaction_id, self._trunk_secret, now=now)
            if result.outcome is AuthOutcome.BAD_CREDENTIALS:
                count_refusal(403, "Authentication failed", None)
            if not result.ok or result.username is None:
                return
            trunk = self.trunks_by_username[result.username]
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
        self._s.calls[call.id] = call
        self._s.index.by_transaction[(endpoint, event.transaction_id)] = call
        self._s.metrics.active.inc()
        self._s.cdr_open(call)
        endpoint.send_response(event.transaction_id, 180, now=now)
        call.task = self._s.spawn(self._run_call(call), call.id)

    async def _run_call(self, call: Call) -> None:
        structlog.contextvars.bind_contextvars(call_id=call.id)
        log.info("call_arrived", trunk=call.trunk.name, dialed=call.dialed, caller=call.caller)
        if self._s.cdr:  # for the event bus's consumers (webhooks, plugins)
            self._s.cdr.call_started(
                call.id,
                {"sip_call_id": call.sip_call_id, "trunk": call.trunk.name, "caller": call.caller,
                 "dialed": call.dialed, "flow": call.flow, "arrived_at": call.arrived_at},
            )  # fmt: skip
        try:
            call.flow_data.update(caller=call.caller, dialed=call.dialed)
            outcome = await self._s.flows.run(
                call.flow, CallIO(self._s, call), call.flow_data, call_id=call.id
            )
            call.flow_data = outcome.data
            await self.after_flow(call, outcome)
        except CallEnded as ended:
            call.hangup_reason = call.hangup_reason or ended.reason
            call.disposition = ended.disposition
        except asyncio.CancelledError:
            pass  # the caller (or the agent) hung up: _caller_gone/_agent_gone set the reason
        finally:
            await self._s.teardown.finish(call)

    async def after_flow(self, call: Call, outcome: FlowOutcome) -> None:
        if outcome.kind == "enqueue":
            await self._s.queueing.queue_and_bridge(call, outcome)
            return
        if outcome.kind == "hangup" and outcome.hangup_prompt and call.answered:
            await self._s.media.play(call, [outcome.hangup_prompt], barge_in=False)
        call.hangup_side = "system"
        call.hangup_reason = outcome.reason or outcome.kind
        call.disposition = "flow_ended"


class CallIO:
    """The flow's view of a call (engine.calls.flows.CallIO)."""

    def __init__(self, service: CallService, call: Call) -> None:
        self._service = service
        self._call = call

    async def answer(self) -> None:
        await self._service.session.answer_caller(self._call)

    async def play(self, prompts: Sequence[str], *, barge_in: bool) -> str | None:
        return await self._service.media.play(self._call, prompts, barge_in=barge_in)

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
        return await self._service.transfers.transfer(
            self._call, trunk, number, timeout_s=timeout_s
        )
