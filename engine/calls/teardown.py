"""Hang-ups and the call's end: what is released, and the record that is written.

How this works: every way a call can end (CANCEL, BYE on either leg, media timeout, session
expiry, a flow's end) sets the reason once (``caller_gone``) and cancels the call's task; its
``finally`` runs ``finish``: the bridge stops, ringing legs are CANCELled and answered ones get
BYE, routing completes the answered call (the agent goes to wrap-up) or abandons the waiting
one, RTP ports are closed, the indexes forget the call, and the CDR row and queue events are
written (``engine.calls.record``).
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import structlog

import routing_core as rc
from engine.calls.model import AgentLeg, Call, loop_now
from engine.calls.record import record_of
from engine.storage.cdr import QueueEventData

if TYPE_CHECKING:
    from engine.calls.service import CallService

log = structlog.stdlib.get_logger("acd.calls")


class Teardown:
    """Ending calls and agent legs."""

    def __init__(self, service: CallService) -> None:
        self._s = service

    def caller_gone(self, call: Call, reason: str, *, side: str = "caller") -> None:
        if call.hangup_reason:
            return
        call.hangup_side, call.hangup_reason = side, reason
        if call.task is not None:
            call.task.cancel()

    def agent_gone(self, leg: AgentLeg, reason: str) -> None:
        """The agent's side hung up (BYE, the softphone's Hang up, the page closing): its leg is
        released here (RTP port, maps, the page told), then the call ends if it was bridged."""
        call = leg.call
        self._s.ringing.end_leg(leg)
        if self._s.monitoring.leg_gone(leg, reason):
            return  # a supervisor left: the call goes on
        if call.agent_id == leg.agent_id:
            if self._s.surveys.agent_left(call, reason):
                return  # the caller stays on for the queue's post-call survey
            self.caller_gone(call, f"agent {reason}", side="agent")
        elif leg.external and leg.answered:
            # a transfer's target, or an agent-first callback's customer (or its agent before
            # the customer answered: engine.calls.dialout)
            who = "callback" if call.flow == "callback" else "transfer target"
            self.caller_gone(call, f"{who} {reason}", side="callee")

    def release_agent(self, call: Call, now_wall: float, talk_s: float | None) -> None:
        """The answered call's agent is done with it: routing completes it (the agent goes to
        wrap-up) and the ``complete`` queue event is written with who hung up."""
        agent_id = call.agent_id
        assert agent_id is not None
        with contextlib.suppress(rc.RoutingError):
            self._s.routing.complete(agent_id, call.id)
        self._s.agents.call_completed(agent_id)
        call.disposition = "answered"
        if talk_s is not None and call.queue is not None:
            self._s.queueing.record_handled(call.queue, talk_s)  # for the expected wait
        if self._s.cdr:
            self._s.cdr.agent_event(agent_id, "wrap_up", call_id=call.id)
            self._s.cdr.queue_event(
                "complete", call_id=call.id, queue=call.queue, agent_id=agent_id,
                data=QueueEventData(
                    wait_s=(call.agent_answered_at or now_wall) - (call.enqueued_at or now_wall),
                    talk_s=talk_s, hangup_side=call.hangup_side,
                ),
            )  # fmt: skip

    async def finish(self, call: Call) -> None:
        now_wall = time.time()
        self._s.media.stop_player(call)
        talk_s = None
        if call.bridge is not None:
            call.bridge.stop(loop_now())
            ended = call.agent_released_at or now_wall  # a survey after the agent left: not talk
            talk_s = ended - (call.agent_answered_at or call.transfer_answered_at or now_wall)
        self._s.monitoring.bridge_ended(call, "call ended")  # BYE to a supervisor on the call
        # The other side of the bridge, or ringing legs, or the caller's dialog.
        for leg in list(call.legs.values()):
            if leg.answered and not leg.finished:
                self._s.ringing.hang_up_leg(leg)
            elif not leg.finished:
                if leg.ring_timer is not None:
                    leg.ring_timer.cancel()
                if leg.softphone is None:
                    with contextlib.suppress(KeyError):
                        leg.endpoint.cancel(leg.request_id, now=loop_now())
                self._s.ringing.end_leg(leg)
        if call.hangup_side != "caller" and call.dialog_id is not None:
            with contextlib.suppress(KeyError):
                call.endpoint.bye(call.dialog_id, now=loop_now())
        elif not call.answered and call.hangup_reason != "cancel":
            with contextlib.suppress(KeyError, Exception):
                call.endpoint.send_response(call.transaction_id, 480, now=loop_now())
        self._s.transmit()
        # Routing: complete the answered call, abandon the waiting one.
        if call.agent_id is not None:
            if call.agent_released_at is None:  # else done when the agent left for the survey
                self.release_agent(call, now_wall, talk_s)
        elif call.enqueued_at is not None and call.disposition != "callback_requested":
            with contextlib.suppress(rc.RoutingError):
                self._s.routing.abandon(call.id)
            waited = now_wall - call.enqueued_at
            if call.disposition != "overflowed":
                call.disposition = "abandoned"
                if call.queue is not None:
                    self._s.queueing.record_abandon(call.queue, waited)
            self._s.metrics.wait.labels(queue=call.queue, outcome=call.disposition).observe(waited)
            if self._s.cdr:
                self._s.cdr.queue_event(
                    "abandon" if call.disposition == "abandoned" else "overflow",
                    call_id=call.id, queue=call.queue, data=QueueEventData(wait_s=waited),
                )  # fmt: skip
        if call.agent_answered_at is not None and call.enqueued_at is not None:
            self._s.metrics.wait.labels(queue=call.queue, outcome="answered").observe(
                call.agent_answered_at - call.enqueued_at
            )
        if call.rtp is not None:
            call.rtp.close()
        self._s.calls.pop(call.id, None)
        self._s.index.by_transaction.pop((call.endpoint, call.transaction_id), None)
        if call.dialog_id is not None:
            self._s.index.by_dialog.pop(call.dialog_id, None)
        self._s.metrics.active.dec()
        self._s.metrics.total.labels(outcome=call.disposition).inc()
        if self._s.cdr:
            self._s.cdr.call_ended(
                record_of(call, ended_at=now_wall, talk_s=talk_s, node=self._s.config.runtime.node)
            )
        log.info("call_ended", disposition=call.disposition, side=call.hangup_side,
                 reason=call.hangup_reason, agent=call.agent_id)  # fmt: skip
