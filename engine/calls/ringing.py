"""Offers to agents: ringing their phones, RFC 3263 failover, and what each answer means.

How this works: the routing core's ``Offer`` (agent reserved for this call) becomes an INVITE
with our SDP offer to the agent's registered or static contact (through its trunk for an
extension behind a PBX), located by RFC 3263 with failover to the next target on timeout or
503. A ring timeout, busy or reject goes back to the router (which offers the next agent); the
first 2xx is accepted unless routing says otherwise, resolving the call's ``connected`` future.
Withdrawn ring-all offers are CANCELled, and a 2xx that crossed our CANCEL is hung up.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

import routing_core as rc
from engine.calls.listeners import family
from engine.calls.model import BUSY, DECLINED, AgentLeg, Call, loop_now
from engine.config import AgentConfig, Config, LoginMode, TrunkConfig, outbound_proxy_uri
from engine.config.validate import is_tls_uri
from engine.storage.cdr import QueueEventData
from sip import Uri
from sip.auth import DigestClient
from sip.endpoint import Endpoint, ResponseReceived
from sip.sdp import OfferAnswerError, SdpError, parse_sdp, process_answer
from sip.transport.dns import LocateError, SipResolver

if TYPE_CHECKING:
    from engine.calls.service import CallService

log = structlog.stdlib.get_logger("acd.calls")


@dataclass(frozen=True, slots=True)
class AgentReach:
    """An agent's phone as an INVITE reaches it: the Request-URI, the (listener endpoint,
    address) pairs to try in order, and the credentials for a PBX's 401/407."""

    contact: Uri
    targets: list[tuple[Endpoint, tuple[str, int]]]
    auth: DigestClient | None


class Ringing:
    """Agent legs from offer to answer or refusal."""

    def __init__(self, service: CallService) -> None:
        self._s = service
        # RFC 3263 lookups of outbound destinations (cached for each record's TTL); the random
        # source for RFC 2782's weighted SRV choice.
        self._dns_settings = (service.config.sip.dns_servers, service.config.sip.dns_timeout_s)
        self.resolver = SipResolver(self._dns_settings[0], timeout_s=self._dns_settings[1])
        self._rng = random.Random()

    def apply(self, config: Config) -> None:
        dns = (config.sip.dns_servers, config.sip.dns_timeout_s)
        if dns != self._dns_settings:  # a new resolver (and an empty cache) only when they change
            self._dns_settings = dns
            self.resolver = SipResolver(dns[0], timeout_s=dns[1])

    def on_offer(self, offer: rc.Offer) -> None:
        call = self._s.calls.get(offer.task_id)
        if call is None:
            self._s.routing.abandon(offer.task_id)
            return
        if call.first_offer_at is None:
            call.first_offer_at = time.time()
        if self._s.cdr:
            self._s.cdr.queue_event(
                "offer", call_id=call.id, queue=offer.queue, agent_id=offer.agent_id
            )
        self._s.spawn(self._ring(call, offer), call.id)

    async def _ring(self, call: Call, offer: rc.Offer) -> None:
        agent = self._s.agents.config_of(offer.agent_id)  # a dict: no scan of every agent
        if agent is None:  # removed by a reload since the offer was made
            self.reject(call, offer.agent_id, "no_answer")
            return
        if agent.login is LoginMode.WEBRTC:
            await self._s.softphones.ring_softphone(call, agent.id)
            return
        if not self._s.agents.contacts(agent.id):
            self.reject(call, agent.id, "no_answer")
            return
        try:
            leg = await self._s.media.open_leg(
                call, agent.id, secure=agent.secure, trunk=self.trunk_of(agent)
            )
        except OSError:
            self.reject(call, agent.id, "no_answer")
            return
        rtp = leg.rtp
        reach = await self.reach(agent)
        if reach is None:  # logged and counted: this agent cannot be reached now
            rtp.close()
            self.reject(call, agent.id, "no_answer")
            return
        if call.task is None or call.task.done() or call.agent_id is not None:
            rtp.close()
            return
        self.dial(leg, reach, [("X-ACD-Queue", call.queue), ("X-ACD-Call-ID", call.id)])
        call.legs[agent.id] = leg
        qcfg = next(q for q in self._s.config.queues if q.name == call.queue)
        leg.ring_timer = asyncio.get_running_loop().call_later(
            qcfg.ring_timeout_s, self.ring_timeout, leg
        )
        self._s.transmit()

    def trunk_of(self, agent: AgentConfig) -> TrunkConfig | None:
        """The trunk a static agent behind a PBX is reached through, or None."""
        if agent.login is not LoginMode.STATIC or not agent.trunk:
            return None
        return next(t for t in self._s.config.trunks if t.name == agent.trunk)

    async def reach(self, agent: AgentConfig) -> AgentReach | None:
        """Where an INVITE to ``agent``'s phone goes: its registered (or static) contact, through
        its trunk for an extension behind a PBX, located by RFC 3263. None when it has no
        contact or no target (a failed lookup is logged and counted)."""
        contacts = self._s.agents.contacts(agent.id)
        if not contacts:
            return None
        contact = Uri.parse(contacts[0])
        if agent.secure and not is_tls_uri(contacts[0]):
            # [[agents]] secure: never in the clear, so a phone registered over UDP/TCP is not rung
            log.warning("agent_contact_not_tls", agent_id=agent.id)
            return None
        destination = contact  # RFC 3263 locates this: the contact, or the trunk's proxy
        auth: DigestClient | None = None
        trunk = self.trunk_of(agent)
        if trunk is not None:
            # An extension behind a PBX: send through its trunk, answer its 401/407 with the
            # trunk's outbound credentials.
            contact = with_transport(contact, trunk.transport)
            destination, auth = through_trunk(trunk, contact)
        targets = await self.locate(destination)
        if targets is None:
            return None
        return AgentReach(contact, targets, auth)

    def dial(self, leg: AgentLeg, reach: AgentReach, headers: list[tuple[str, str]]) -> None:
        """Send ``leg``'s INVITE (our SDP offer) to the phone ``reach`` found, with failover to
        its next targets; its answers arrive at ``agent_response``."""
        call, body = leg.call, leg.offer_sdp.to_bytes()

        def send_invite(endpoint: Endpoint, addr: tuple[str, int]) -> int:
            return endpoint.invite(
                reach.contact, addr, now=loop_now(), body=body,
                from_uri=f"sip:{call.caller or 'anonymous'}@{endpoint.config.local_host}",
                headers=headers, auth=reach.auth,
            )  # fmt: skip

        leg.send_invite, leg.next_targets = send_invite, list(reach.targets)
        self.send_invite(leg)

    async def locate(self, uri: Uri) -> list[tuple[Endpoint, tuple[str, int]]] | None:
        """The (listener endpoint, address) pairs a request to ``uri`` goes to, in the order to
        try them (NAPTR/SRV/A/AAAA; a numeric host costs no lookup). None when there is none:
        logged and counted in acd_sip_dns_failures_total, so one call attempt ends, nothing
        raises."""
        kinds = self._s.listeners.by_kind
        families = {family(e) for e in kinds.values()}
        order = [f for f in ("A", "AAAA") if f in families or "any" in families]
        try:
            targets = await self.resolver.locate(
                uri, transports=kinds.keys(), rng=self._rng, families=order
            )
        except LocateError as exc:
            self._s.metrics.dns_failures.labels(reason=exc.reason).inc()
            log.warning("sip_destination_not_found", uri=str(uri), reason=exc.reason,
                        detail=exc.detail)  # fmt: skip
            return None
        out = [
            (kinds[t.transport], t.addr)
            for t in targets
            if family(kinds[t.transport]) in ("any", "AAAA" if ":" in t.address else "A")
        ]
        if not out:  # e.g. only AAAA records and an IPv4-only listener of that transport
            self._s.metrics.dns_failures.labels(reason="address_family").inc()
            log.warning("sip_destination_not_found", uri=str(uri), reason="address_family",
                        detail=f"no listener can send to {[t.address for t in targets]}")  # fmt: skip
            return None
        return out

    def send_invite(self, leg: AgentLeg) -> None:
        """Send the leg's INVITE to its next target (a new transaction: RFC 3263 4.3).

        While other targets are left, a target that sends nothing at all (not even 100 Trying)
        within ``[sip] failover_timeout_s`` is given up for the next one, as Kamailio's fr_timer
        does for dispatcher failover: timer B (64*T1, 32 s) is longer than a caller waits. The
        abandoned transaction runs out on its own; a late 2xx from it is hung up (late_answer)."""
        assert leg.send_invite is not None
        endpoint, addr = leg.next_targets.pop(0)
        self._s.index.legs_by_request.pop((leg.endpoint, leg.request_id), None)
        leg.endpoint = endpoint
        leg.request_id = leg.send_invite(endpoint, addr)
        self._s.index.legs_by_request[(endpoint, leg.request_id)] = leg
        self._cancel_failover_timer(leg)
        timeout = self._s.config.sip.failover_timeout_s
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
        self._s.metrics.sip_failovers.inc()
        self.send_invite(leg)
        self._s.transmit()
        return True

    def leg_timed_out(self, leg: AgentLeg) -> None:
        """Timer B: our INVITE got no final answer (unreachable, or the transport failed)."""
        if leg.answered or leg.finished or leg.softphone is not None:
            return
        if self._fail_over(leg, "timeout"):
            return
        if leg.external:
            self.end_leg(leg)
            if leg.final is not None and not leg.final.done():
                leg.final.set_result(408)
            return
        if leg.ring_timer is not None:
            leg.ring_timer.cancel()
        self.end_leg(leg)
        self.reject(leg.call, leg.agent_id, "no_answer")

    def ring_timeout(self, leg: AgentLeg) -> None:
        if leg.answered or leg.finished:
            return
        if leg.softphone is None:
            leg.endpoint.cancel(leg.request_id, now=loop_now())
            self._s.transmit()
        self.end_leg(leg)
        self.reject(leg.call, leg.agent_id, "no_answer")

    def reject(self, call: Call, agent_id: str, reason: str) -> None:
        with contextlib.suppress(rc.RoutingError):
            self._s.routing.reject(call.id, agent_id, reason)
            self._s.agents.missed(agent_id)
            self._s.metrics.ring_no_answer.labels(queue=call.queue, reason=reason).inc()
            if self._s.cdr:
                self._s.cdr.queue_event(
                    "ring_no_answer", call_id=call.id, queue=call.queue, agent_id=agent_id,
                    data=QueueEventData(reason=reason),
                )  # fmt: skip

    def agent_response(self, leg: AgentLeg, event: ResponseReceived, now: float) -> None:
        self._cancel_failover_timer(leg)  # the target is alive: its answer decides from here
        if event.response.status == 503 and self._fail_over(leg, "503"):
            return  # RFC 3263 4.3: the next target gets a new INVITE
        if leg.external:
            self._s.transfers.transfer_response(leg, event)
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
                self._s.index.legs_by_dialog[event.dialog_id] = leg
            if call.agent_id is not None or call.connected is None or call.connected.done():
                # Ring-all: someone else won (or the caller left): this agent gets BYE at once.
                self.hang_up_leg(leg)
                return
            try:
                audio = process_answer(leg.offer_sdp, parse_sdp(event.response.body))
            except (SdpError, OfferAnswerError):
                self.hang_up_leg(leg)
                self.reject(call, leg.agent_id, "reject")
                return
            leg.rtp.use_srtp(audio.srtp.contexts() if audio.srtp is not None else None)
            leg.rtp.remote_addr = (audio.remote_address, audio.remote_port)
            leg.codec = audio.codec.name
            self.accepted(leg, now)
            return
        if status == 487:
            return  # our CANCEL was answered: already accounted for
        if leg.ring_timer is not None:
            leg.ring_timer.cancel()
        self.end_leg(leg)
        reason = "busy" if status in BUSY else "reject" if status in DECLINED else "no_answer"
        self.reject(call, leg.agent_id, reason)

    def accepted(self, leg: AgentLeg, now: float) -> None:
        """An agent answered (SIP 2xx or the softphone's Answer): it wins the call, unless routing
        says otherwise; the waiting caller task then bridges."""
        call = leg.call
        assert call.connected is not None
        leg.answered = True
        try:
            self._s.routing.accept(call.id, leg.agent_id)
        except rc.RoutingError:
            self.hang_up_leg(leg)
            return
        if leg.softphone is not None:
            leg.softphone.connect_rtp(*leg.rtp.local_address)
        call.agent_id = leg.agent_id
        call.agent_answered_at = time.time()
        self._s.queueing.record_wait(call.queue, call.agent_answered_at - (call.enqueued_at or 0.0))
        if self._s.cdr:
            waited = call.agent_answered_at - (call.enqueued_at or call.agent_answered_at)
            self._s.cdr.queue_event(
                "answer", call_id=call.id, queue=call.queue, agent_id=leg.agent_id,
                data=QueueEventData(wait_s=waited, ring_s=now - leg.rang_at),
            )  # fmt: skip
            self._s.cdr.agent_event(leg.agent_id, "busy", call_id=call.id)
        call.connected.set_result(leg)

    def late_answer(self, endpoint: Endpoint, event: ResponseReceived, now: float) -> None:
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
            and dialog_id not in self._s.index.legs_by_dialog  # never a live leg's re-INVITE answer
            and dialog_id not in self._s.index.by_dialog
            and endpoint.dialog(dialog_id) is not None
        ):
            log.info("late_agent_answer_hung_up", sip_call_id=dialog_id.call_id)
            endpoint.bye(dialog_id, now=now)
            self._s.transmit()

    def on_withdraw(self, offer: rc.Offer) -> None:
        call = self._s.calls.get(offer.task_id)
        leg = call.legs.get(offer.agent_id) if call else None
        if leg is not None and not leg.answered and not leg.finished:
            if leg.ring_timer is not None:
                leg.ring_timer.cancel()
            if leg.softphone is None:
                with contextlib.suppress(KeyError):
                    leg.endpoint.cancel(leg.request_id, now=loop_now())
                self._s.transmit()
            self.end_leg(leg)

    def hang_up_leg(self, leg: AgentLeg) -> None:
        if leg.dialog_id is not None and leg.endpoint.dialog(leg.dialog_id) is not None:
            leg.endpoint.bye(leg.dialog_id, now=loop_now())
            self._s.transmit()
        self.end_leg(leg)

    def end_leg(self, leg: AgentLeg) -> None:
        if leg.softphone is not None and not leg.finished:
            if leg.answered:
                leg.softphone.disconnect_rtp()
            leg.softphone.send_event({"type": "call_ended", "call_id": leg.call.id})
        leg.finished = True
        leg.rtp.close()
        self._cancel_failover_timer(leg)
        self._s.index.legs_by_request.pop((leg.endpoint, leg.request_id), None)
        if leg.dialog_id is not None:
            self._s.index.legs_by_dialog.pop(leg.dialog_id, None)


def with_transport(uri: Uri, transport: str) -> Uri:
    """``uri`` with ;transport= set for a trunk reached over TCP or TLS (UDP: unchanged)."""
    if transport == "udp" or uri.transport:
        return uri
    params = [(k, v) for k, v in uri.params if k != "transport"] + [("transport", transport)]
    return uri.replace(params=params)


def through_trunk(trunk: TrunkConfig, uri: Uri) -> tuple[Uri, DigestClient | None]:
    """Where an INVITE through ``trunk`` goes (the URI RFC 3263 locates: its outbound proxy,
    else ``uri``) and the credentials that answer its 401/407."""
    destination = outbound_proxy_uri(trunk) or uri
    auth = None
    if trunk.outbound_username:
        auth = DigestClient(trunk.outbound_username, trunk.outbound_password)
    return destination, auth
