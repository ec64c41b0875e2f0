"""Blind transfers: by the agent (to a queue or a number) and by a flow step (to a number).

How this works: ``request_transfer`` (API, softphone) validates the target and resolves the
bridged call's ``transfer_request``; ``agent_transfer`` then ends the agent's part (wrap-up, a
``transfer`` queue event) and puts the caller in the new queue, or dials the number: a number
that does not answer puts the caller back in the queue it came from. ``transfer`` INVITEs a
number at a trunk's outbound proxy and stays in the media path (a B2BUA; carriers rarely honour
REFER), so the transferred call is still counted, timed and ended cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import TYPE_CHECKING

import structlog

import routing_core as rc
from engine.calls.flows import FlowOutcome
from engine.calls.model import BUSY, AgentLeg, Call, TransferTarget, loop_now
from engine.calls.ringing import through_trunk
from engine.config import outbound_proxy_uri
from engine.storage.cdr import QueueEventData
from sip.endpoint import Endpoint, ResponseReceived
from sip.sdp import OfferAnswerError, SdpError, parse_sdp, process_answer

if TYPE_CHECKING:
    from engine.calls.service import CallService

log = structlog.stdlib.get_logger("acd.calls")


class Transfers:
    """Blind transfer of a caller to a queue or a number."""

    def __init__(self, service: CallService) -> None:
        self._s = service

    def request_transfer(
        self, call_id: str, *, queue: str = "", number: str = "", trunk: str = "", by: str = ""
    ) -> str:
        """The agent (or a supervisor) sends a bridged caller to ``queue`` or to ``number``
        through ``trunk`` (default: the one trunk with an outbound_proxy). Returns where to;
        raises KeyError for a call that is not live, ValueError (why) when it cannot be done."""
        call = self._s.calls[call_id]
        waiting = call.transfer_request
        if call.agent_id is None or waiting is None or waiting.done():
            raise ValueError("the call is not bridged to an agent")
        if bool(queue) == bool(number):
            raise ValueError("give a queue or a number")
        if queue and not any(q.name == queue for q in self._s.config.queues):
            raise ValueError(f"no queue {queue!r}")
        if number:
            if not re.fullmatch(r"[0-9A-Za-z*#+._-]{1,64}", number):
                raise ValueError(f"not a dialable number: {number!r}")
            outbound = [t.name for t in self._s.config.trunks if t.outbound_proxy]
            if not trunk and len(outbound) == 1:
                trunk = outbound[0]
            if trunk not in outbound:
                raise ValueError(
                    f"name a trunk with an outbound_proxy ({', '.join(outbound) or 'none'})"
                )
        waiting.set_result(TransferTarget(queue, number, trunk, by))
        return queue or number

    async def agent_transfer(self, call: Call, leg: AgentLeg, target: TransferTarget) -> None:
        """The agent's part ends (BLINDTRANSFER in the queue_log, then wrap-up) and the caller,
        who stays on our side of the B2BUA, goes to the new queue or number. A number that does
        not answer puts the caller back in the queue it came from: a transfer never loses a call."""
        now_wall = time.time()
        agent_id = call.agent_id
        assert agent_id is not None
        assert call.bridge is not None
        call.bridge.stop(loop_now())
        self._s.monitoring.bridge_ended(call, "transferred")
        talk_s = now_wall - (call.agent_answered_at or now_wall)
        self._s.ringing.hang_up_leg(leg)
        with contextlib.suppress(rc.RoutingError):
            self._s.routing.complete(agent_id, call.id)
        self._s.agents.call_completed(agent_id)
        where = target.queue or target.number
        log.info("agent_transfer", agent=agent_id, to=where)
        if self._s.cdr:
            self._s.cdr.agent_event(agent_id, "wrap_up", call_id=call.id)
            self._s.cdr.queue_event(
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
        await self._s.queueing.queue_and_bridge(call, outcome)

    async def transfer(
        self, call: Call, trunk_name: str, number: str, *, timeout_s: float,
        queue_event: bool = True,
    ) -> str:  # fmt: skip
        """engine.calls.flows.CallIO.transfer: INVITE ``number`` at the trunk's outbound proxy, bridge
        the caller on answer and stay bridged; or return why not (the flow goes on).

        The caller is answered first, as an IVR that says "transferring you" has already done;
        the B2BUA stays in the media path (carriers rarely honour REFER), so the transferred
        call is still counted, timed and ended cleanly."""
        trunk = next(t for t in self._s.config.trunks if t.name == trunk_name)
        await self._s.session.answer_caller(call)
        self._s.media.stop_player(call)
        proxy = outbound_proxy_uri(trunk)
        target = proxy.replace(user=number) if proxy is not None else None
        targets = await self._s.ringing.locate(proxy) if proxy is not None else None
        if target is None or targets is None:  # the lookup logged and counted why
            log.warning("transfer_failed", target=number, reason="outbound proxy not found")
            return "failed"
        _, auth = through_trunk(trunk, target)
        try:
            leg = await self._s.media.open_leg(call, f"transfer:{number}", trunk=trunk)
        except OSError:
            log.warning("transfer_failed", target=number, reason="no RTP port")
            return "failed"
        leg.final = asyncio.get_running_loop().create_future()
        body = leg.offer_sdp.to_bytes()

        def send_invite(endpoint: Endpoint, addr: tuple[str, int]) -> int:
            return endpoint.invite(
                target, addr, now=loop_now(), body=body,
                from_uri=f"sip:{call.caller or 'anonymous'}@{endpoint.config.local_host}",
                headers=[("X-ACD-Call-ID", call.id)], auth=auth,
            )  # fmt: skip

        leg.send_invite, leg.next_targets = send_invite, targets
        self._s.ringing.send_invite(leg)
        call.legs[leg.agent_id] = leg
        self._s.transmit()
        log.info("transfer_ringing", target=number, trunk=trunk.name)
        try:
            status = await asyncio.wait_for(asyncio.shield(leg.final), timeout_s)
        except TimeoutError:
            with contextlib.suppress(KeyError):
                leg.endpoint.cancel(leg.request_id, now=loop_now())
            self._s.transmit()
            self._s.ringing.end_leg(leg)
            call.legs.pop(leg.agent_id, None)
            log.info("transfer_failed", target=number, reason="no answer")
            return "no_answer"
        if not 200 <= status < 300:
            call.legs.pop(leg.agent_id, None)
            why = (
                "busy" if status in BUSY
                else "no_answer" if status in (408, 480)
                else "failed" if status == 0
                else "rejected"
            )  # fmt: skip
            log.info("transfer_failed", target=number, status=status, reason=why)
            return why
        assert call.rtp is not None
        call.transfer_answered_at = time.time()
        call.disposition = "transferred"
        if self._s.cdr and call.queue and queue_event:
            self._s.cdr.queue_event(
                "transfer", call_id=call.id, queue=call.queue,
                data=QueueEventData(target=number),
            )  # fmt: skip
        await self._s.media.media_home(call)
        call.bridge = self._s.media.new_bridge(call, leg.rtp, leg.codec, None)
        call.bridge.start(loop_now())
        log.info("call_transferred", target=number, trunk=trunk.name)
        await asyncio.Event().wait()  # until a BYE on either leg cancels this task
        raise AssertionError("unreachable")

    def transfer_response(self, leg: AgentLeg, event: ResponseReceived) -> None:
        status = event.response.status
        assert leg.final is not None
        if status < 200 or leg.finished or leg.final.done():
            return
        if 200 <= status < 300:
            leg.dialog_id = event.dialog_id
            if event.dialog_id is not None:
                self._s.index.legs_by_dialog[event.dialog_id] = leg
            try:
                audio = process_answer(leg.offer_sdp, parse_sdp(event.response.body))
            except (SdpError, OfferAnswerError):
                self._s.ringing.hang_up_leg(leg)
                leg.final.set_result(0)
                return
            leg.rtp.use_srtp(audio.srtp.contexts() if audio.srtp is not None else None)
            leg.rtp.remote_addr = (audio.remote_address, audio.remote_port)
            leg.codec = audio.codec.name
            leg.answered = True
        else:
            self._s.ringing.end_leg(leg)
        leg.final.set_result(status)
