"""Dialled callbacks: the daemon rings the agent and dials the customer, and bridges them.

How this works: in a queue with ``callback.mode = "agent_first"`` the task service hands each
offer of a ``callback`` task to ``offer`` (wired by the daemon, since calls never import tasks)
instead of the event stream. Each offer is one outbound call here, a ``Call`` with no inbound
INVITE: its far side (``Call.rtp``, the "caller" of the bridge and the recording's left channel)
is the customer's leg, and the agent is an ``AgentLeg`` as for a queued call. The agent's phone
rings for the queue's ``ring_timeout_s``; no answer, busy or reject go back to the router as for
a call (``refused``). On answer the agent hears ``whisper_prompt``, then the customer is INVITEd
at the callback trunk's outbound proxy (``sip:<number>@<proxy host>``, From the number the
caller had dialled) for ``callback.ring_timeout_s``. The agent stays reserved (not busy) until
the customer answers, so an attempt that fails releases the agent without wrap-up; the customer's
answer accepts the task (``answered``), the two are bridged and recorded per the queue's record
policy, and either side's BYE ends the call (the agent then goes to wrap-up as after a call).
Every attempt the agent answered ends in ``ended`` with its outcome: ``connected``, or
``no_answer`` / ``busy`` / ``failed``, after which the task service retries the callback after
``retry_s`` in its original place, up to ``attempts``.

With ``callback.mode = "customer_first"`` the order turns: the agent the router chose is
reserved while the customer is dialled first; a customer not reached is an attempt spent as
above (the agent released without wrap-up). When the customer answers they hear
``whisper_prompt``, then the reserved agent's phone rings; its answer accepts the task and
bridges the two. The customer hanging up before that ends the attempt (``customer_gone``,
disposition ``callback_customer_gone``). An agent's phone that does not take the call after
the customer answered hangs the customer up and sends the offer to the next agent in the
task's place, without spending an attempt (not yet: the customer waiting on hold meanwhile).

Records: each offer is a ``calls`` row of its own (flow ``callback``, disposition ``answered``
once bridged, else ``callback_<outcome>`` for an attempt that failed, ``callback_agent_<reason>``
for an offer the agent's phone refused, ``callback_agent_gone`` when the agent hung up before the
customer answered, ``callback_cancelled`` when the task was gone by then), linked to the original call through
``flow_data.callback_of`` (that call's id) and ``flow_data.callback_task``; the original call's
row names the task in its ``flow_data.callback_task``, and the task's ``data.calls`` lists the
attempts' call ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from engine.calls.model import BUSY, DECLINED, AgentLeg, Call, CallEnded, loop_now
from engine.calls.ringing import through_trunk
from engine.config import CallbackConfig, LoginMode, QueueConfig, outbound_proxy_uri
from sip.endpoint import Endpoint

if TYPE_CHECKING:
    from engine.calls.service import CallService

log = structlog.stdlib.get_logger("acd.calls")


@dataclass(frozen=True, slots=True)
class DialoutOffer:
    """One offer of an agent-first callback task to an agent (from the task service)."""

    task_id: str
    agent_id: str
    queue: str
    number: str  # the customer's number (the original caller id)
    dialed: str  # the number the customer had called: our caller id towards them
    call_id: str  # the original call's id
    attempt: int  # this attempt, from 1


class _Refused(Exception):
    """The agent's phone did not take the offer (reason: busy, reject, no_answer)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _why(status: int) -> str:
    return (
        "busy" if status in BUSY
        else "no_answer" if status in (408, 480, 487)
        else "failed"
    )  # fmt: skip


class Dialout:
    """Agent-first callbacks' outbound calls, one per offer the agent may take."""

    def __init__(self, service: CallService) -> None:
        self._s = service
        # Set by the daemon (the task service's side): the agent's phone refused the offer
        # (task id, agent id, reason) -> back to the router as for a call; the customer
        # answered (task id, agent id, call id) -> the task is accepted; the attempt the agent
        # took ended (task id, agent id, call id, outcome) -> completed, retried or failed.
        self.refused: Callable[[str, str, str], None] | None = None
        self.answered: Callable[[str, str, str], Awaitable[bool]] | None = None
        self.ended: Callable[[str, str, str, str], Awaitable[None]] | None = None
        self._by_offer: dict[tuple[str, str], Call] = {}

    def offer(self, offer: DialoutOffer) -> None:
        """An agent-first callback task was offered to an agent: its outbound call starts."""
        qcfg = next((q for q in self._s.config.queues if q.name == offer.queue), None)
        callback = qcfg.callback if qcfg is not None else None
        if qcfg is None or callback is None or self.refused is None:  # a reload removed it
            if self.refused is not None:  # not from inside the router's dispatch
                asyncio.get_running_loop().call_soon(
                    self.refused, offer.task_id, offer.agent_id, "no_answer"
                )
            return
        trunk = next(t for t in self._s.config.trunks if t.name == callback.trunk)
        call = Call(
            id=uuid.uuid4().hex, sip_call_id="", transaction_id=-1, request=None,  # type: ignore[arg-type]
            source=("", 0), trunk=trunk, flow="callback", arrived_at=time.time(),
            caller=offer.number, dialed=offer.number, queue=offer.queue,
        )  # fmt: skip
        call.answered = True  # no INVITE of ours to answer: teardown sends no 480
        call.flow_data = {
            "callback_task": offer.task_id, "attempt": offer.attempt, "direction": "outbound",
        }  # fmt: skip
        if offer.call_id:  # none for a callback made through the API
            call.flow_data["callback_of"] = offer.call_id
        self._s.calls[call.id] = call
        self._s.metrics.active.inc()
        self._s.cdr_open(call)
        self._by_offer[(offer.task_id, offer.agent_id)] = call
        call.task = self._s.spawn(self._run(call, offer, qcfg, callback), call.id)

    def withdraw(self, task_id: str, agent_id: str) -> None:
        """The offer is over before the customer answered (the task was cancelled, ring-all):
        its outbound call ends."""
        call = self._by_offer.get((task_id, agent_id))
        if call is not None and call.agent_id is None:
            self._s.teardown.caller_gone(call, "offer withdrawn", side="system")

    async def _run(
        self, call: Call, offer: DialoutOffer, qcfg: QueueConfig, callback: CallbackConfig
    ) -> None:
        structlog.contextvars.bind_contextvars(call_id=call.id)
        log.info("callback_dialout", task_id=offer.task_id, agent=offer.agent_id,
                 attempt=offer.attempt)  # fmt: skip
        outcome: str | None = None  # None: the agent did not take it (or the daemon stops)
        taken = False  # the agent answered: from here an error is a failed attempt
        try:
            if callback.mode == "customer_first":
                status, customer = await self._dial_customer(call, offer, callback)
                taken = True  # the agent is reserved: a customer not reached spends an attempt
                if not 200 <= status < 300 or customer is None:
                    outcome = self._not_reached(call, status)
                    return
                await self._prompt(customer, callback)
                agent_leg = await self._ring_agent(call, offer.agent_id, qcfg)
            else:
                agent_leg = await self._ring_agent(call, offer.agent_id, qcfg)
                taken = True
                await self._prompt(agent_leg, callback)
                status, customer = await self._dial_customer(call, offer, callback)
                if not 200 <= status < 300 or customer is None:
                    outcome = self._not_reached(call, status)
                    return
            # Before the await: the accept's state change happens at once, so a BYE that comes
            # while it is written still ends the task as connected.
            outcome = "connected"
            if self.answered is not None and not await self.answered(
                offer.task_id, offer.agent_id, call.id
            ):  # the task was cancelled or taken meanwhile: nobody to bridge the customer to
                outcome = None
                call.disposition = "callback_cancelled"
                call.hangup_side, call.hangup_reason = "system", "callback task gone"
                return
            await self._connect(call, offer, agent_leg, customer)
            await asyncio.Event().wait()  # until a BYE on either leg cancels this task
        except _Refused as refused:
            call.disposition, call.hangup_reason = "callback_agent_" + refused.reason, "agent"
            if self.refused is not None:
                self.refused(offer.task_id, offer.agent_id, refused.reason)
        except asyncio.CancelledError:
            if (
                outcome is None
                and call.agent_id is None
                and not call.hangup_reason.startswith("offer withdrawn")
            ):
                if callback.mode == "customer_first" and taken:
                    # The customer hung up during the prompt or while the agent rang: this
                    # attempt ends (retried, as one not answered, up to attempts).
                    call.disposition, outcome = "callback_customer_gone", "customer_gone"
                else:
                    # The agent hung up during the whisper or while the customer rang: the
                    # offer goes back to the router (the customer was not reached: no attempt
                    # spent).
                    call.disposition = "callback_agent_gone"
                    if self.refused is not None and call.hangup_reason:
                        self.refused(offer.task_id, offer.agent_id, "reject")
        except CallEnded as ended:  # e.g. no codec in common with the customer's answer
            call.disposition, call.hangup_reason = ended.disposition, ended.reason
            outcome = "failed" if taken and outcome is None else outcome
            if not taken and self.refused is not None:
                self.refused(offer.task_id, offer.agent_id, "no_answer")
        except Exception:  # a bug: this attempt ends, the task is not left holding the agent
            log.exception("callback_dialout_failed", task_id=offer.task_id)
            self._s.metrics.errors.labels(where="call").inc()
            call.disposition, call.hangup_side = "failed", "system"
            call.hangup_reason = call.hangup_reason or "internal error"
            outcome = "failed" if taken and outcome is None else outcome
            if not taken and self.refused is not None:
                self.refused(offer.task_id, offer.agent_id, "no_answer")
        finally:
            self._by_offer.pop((offer.task_id, offer.agent_id), None)
            await self._s.teardown.finish(call)
            if outcome is not None and self.ended is not None:
                await self.ended(offer.task_id, offer.agent_id, call.id, outcome)

    def _not_reached(self, call: Call, status: int) -> str:
        """The customer's phone did not answer ``status``: the attempt's outcome."""
        outcome = _why(status)
        call.disposition = f"callback_{outcome}"
        call.hangup_side, call.hangup_reason = "callee", f"customer {outcome} ({status})"
        return outcome

    async def _prompt(self, leg: AgentLeg, callback: CallbackConfig) -> None:
        """``whisper_prompt`` to the side answering first (the agent, or in customer_first the
        customer); a prompt file gone is logged and the call goes on."""
        if not callback.whisper_prompt:
            return
        try:
            await self._s.media.play_on(leg.rtp, leg.codec, [callback.whisper_prompt])
        except CallEnded as missing:
            log.warning("callback_whisper_failed", reason=missing.reason)

    async def _ring_agent(self, call: Call, agent_id: str, qcfg: QueueConfig) -> AgentLeg:
        """The agent's phone rings for the queue's ring_timeout_s: its answered leg, or
        ``_Refused``."""
        agent = self._s.agents.config_of(agent_id)
        if agent is None or agent.login is LoginMode.WEBRTC:
            raise _Refused("no_answer")  # removed by a reload, or a browser softphone
        reach = await self._s.ringing.reach(agent)
        if reach is None:
            raise _Refused("no_answer")
        try:
            leg = await self._s.media.open_leg(
                call, agent_id, secure=agent.secure, trunk=self._s.ringing.trunk_of(agent)
            )
        except OSError:
            raise _Refused("no_answer") from None
        leg.final = asyncio.get_running_loop().create_future()
        call.legs[agent_id] = leg
        self._s.ringing.dial(
            leg, reach,
            [("X-ACD-Queue", call.queue), ("X-ACD-Call-ID", call.id), ("X-ACD-Callback", "1")],
        )  # fmt: skip
        self._s.transmit()
        status = await self._final(leg, qcfg.ring_timeout_s)
        if not 200 <= status < 300:
            raise _Refused(
                "busy" if status in BUSY else "reject" if status in DECLINED else "no_answer"
            )
        return leg

    async def _dial_customer(
        self, call: Call, offer: DialoutOffer, callback: CallbackConfig
    ) -> tuple[int, AgentLeg | None]:
        """INVITE the customer at the trunk's outbound proxy: (final status, the answered leg);
        0 when it could not be sent, 408 when it rang out."""
        trunk = call.trunk
        proxy = outbound_proxy_uri(trunk)
        targets = await self._s.ringing.locate(proxy) if proxy is not None else None
        if proxy is None or targets is None:  # the lookup logged and counted why
            return 0, None
        target = proxy.replace(user=offer.number)
        _, auth = through_trunk(trunk, target)
        try:
            leg = await self._s.media.open_leg(call, f"customer:{offer.number}", trunk=trunk)
        except OSError:
            return 0, None
        leg.final = asyncio.get_running_loop().create_future()
        body = leg.offer_sdp.to_bytes()
        caller_id = offer.dialed or "anonymous"

        def send_invite(endpoint: Endpoint, addr: tuple[str, int]) -> int:
            return endpoint.invite(
                target, addr, now=loop_now(), body=body,
                from_uri=f"sip:{caller_id}@{endpoint.config.local_host}",
                headers=[("X-ACD-Call-ID", call.id)], auth=auth,
            )  # fmt: skip

        leg.send_invite, leg.next_targets = send_invite, targets
        call.legs[leg.agent_id] = leg
        self._s.ringing.send_invite(leg)
        self._s.transmit()
        log.info("callback_customer_ringing", number=offer.number, trunk=trunk.name)
        status = await self._final(leg, callback.ring_timeout_s)
        return status, leg if 200 <= status < 300 else None

    async def _final(self, leg: AgentLeg, timeout_s: float) -> int:
        """The leg's final status; after ``timeout_s`` without one it is CANCELled (408)."""
        assert leg.final is not None
        try:
            return await asyncio.wait_for(asyncio.shield(leg.final), timeout_s)
        except TimeoutError:
            with contextlib.suppress(KeyError):
                leg.endpoint.cancel(leg.request_id, now=loop_now())
            self._s.transmit()
            self._s.ringing.end_leg(leg)
            return 408

    async def _connect(
        self, call: Call, offer: DialoutOffer, agent_leg: AgentLeg, customer: AgentLeg
    ) -> None:
        """The customer answered and the task is the agent's: the two are bridged (the customer
        on the left channel of the recording, the agent on the right)."""
        call.rtp, call.codec = customer.rtp, customer.codec
        call.agent_id, call.agent_answered_at = offer.agent_id, time.time()
        if self._s.cdr:
            self._s.cdr.agent_event(offer.agent_id, "busy", call_id=call.id)
        recording = None
        remote = self._s.media.workers is not None and bool(self._s.media.workers.pool.pids)
        if self._s.recordings is not None:
            recording = await self._s.recordings.start(
                call.id, call.queue, offer.agent_id,
                remote=self._s.media.workers if remote else None,
            )  # fmt: skip
            if recording is not None:
                call.recording = recording
                call.recording_id = str(getattr(recording, "recording_id", "")) or None
        call.bridge = self._s.media.new_bridge(call, agent_leg.rtp, agent_leg.codec, recording)
        call.bridge.start(loop_now())
        self._s.cdr_open(call)
        log.info("callback_connected", task_id=offer.task_id, agent=offer.agent_id)
