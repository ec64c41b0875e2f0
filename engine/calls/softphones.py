"""Browser agents (engine.webrtc): ringing, answering and hanging up over their softphone.

How this works: ``attach_webrtc`` takes the gateway's callbacks. An offer to a ``login =
"webrtc"`` agent opens our leg with its far end on the session's loopback RTP port and sends the
page an ``incoming`` event with the call's data (the screen-pop) and the caller's recent
contacts; the page's answer, reject, hangup, hold and transfer clicks arrive as messages and go
to the same phases a SIP phone's answers reach. A page that goes away is a no-answer while
ringing and a hang-up while connected.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import structlog

from engine.calls.model import Call, loop_now
from engine.media.offload import RemoteBridge

if TYPE_CHECKING:
    from engine.calls.service import CallService

log = structlog.stdlib.get_logger("acd.calls")


class Softphones:
    """The call layer's side of the WebRTC gateway."""

    def __init__(self, service: CallService) -> None:
        self._s = service
        self.gateway: Any = None  # engine.webrtc.gateway.WebRtcGateway, when attached

    def attach_webrtc(self, gateway: Any) -> None:
        """Take calls to browser agents through ``gateway`` (an engine.webrtc.gateway.WebRtcGateway)."""
        self.gateway = gateway
        gateway.on_message = self._softphone_message
        gateway.on_session_closed = self._softphone_closed
        gateway.on_media_ready = lambda session: self._s.agents.softphone_up(session.agent_id)

    async def ring_softphone(self, call: Call, agent_id: str) -> None:
        """Offer the call to a browser agent: our leg's far end is its session's loopback RTP
        port; the page shows the alert with the call's data (the screen-pop) and answers over
        its WebSocket. Ring timeout, withdrawal and hang-ups work as for a SIP phone."""
        session = None if self.gateway is None else self.gateway.session(agent_id)
        if session is None:
            self._s.ringing.reject(call, agent_id, "no_answer")
            return
        try:
            leg = await self._s.media.open_leg(call, agent_id)
        except OSError:
            self._s.ringing.reject(call, agent_id, "no_answer")
            return
        if call.task is None or call.task.done() or call.agent_id is not None:
            leg.rtp.close()
            return
        history: list[dict[str, Any]] = []
        if self._s.cdr is not None:
            with contextlib.suppress(TimeoutError):  # a slow store must not hold up the ringing
                history = await asyncio.wait_for(self._s.cdr.previous_contacts(call.caller), 0.5)
        if call.task is None or call.task.done() or call.agent_id is not None:
            leg.rtp.close()
            return
        leg.softphone = session
        leg.codec = "PCMU"  # what the gateway speaks on its RTP side
        leg.rtp.remote_addr = session.rtp_address
        call.legs[agent_id] = leg
        qcfg = next(q for q in self._s.config.queues if q.name == call.queue)
        leg.ring_timer = asyncio.get_running_loop().call_later(
            qcfg.ring_timeout_s, self._s.ringing.ring_timeout, leg
        )
        session.send_event(
            {
                "type": "incoming", "call_id": call.id, "caller": call.caller,
                "queue": call.queue, "data": screen_pop(call.flow_data),
                "history": history, "ring_timeout_s": qcfg.ring_timeout_s,
            }
        )  # fmt: skip

    def _softphone_message(self, session: Any, message: dict[str, Any]) -> None:
        """A click on the agent page: answer, reject, hangup, hold or unhold a call of its own."""
        kind, call_id = message.get("type"), message.get("call_id")
        call = self._s.calls.get(call_id) if isinstance(call_id, str) else None
        leg = None if call is None else call.legs.get(session.agent_id)
        if call is None or leg is None or leg.softphone is not session or leg.finished:
            session.send_event({"type": "error", "reason": f"no call {call_id!r} for you now"})
            return
        if kind == "answer" and not leg.answered:
            if leg.ring_timer is not None:
                leg.ring_timer.cancel()
            if call.agent_id is not None or call.connected is None or call.connected.done():
                self._s.ringing.end_leg(leg)  # another agent won, or the caller left
                return
            self._s.ringing.accepted(leg, loop_now())
        elif kind == "reject" and not leg.answered:
            if leg.ring_timer is not None:
                leg.ring_timer.cancel()
            self._s.ringing.end_leg(leg)
            self._s.ringing.reject(call, leg.agent_id, "reject")
        elif kind == "hangup" and leg.answered:
            self._s.teardown.agent_gone(leg, "hangup")
        elif kind == "transfer" and leg.answered:
            # "target": a queue's name, else a number (through the one outbound trunk).
            target = str(message.get("target") or "").strip()
            is_queue = any(q.name == target for q in self._s.config.queues)
            try:
                where = self._s.transfers.request_transfer(
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
                    leg.rtp.set_held(held, loop_now())
                self._s.session.hold_changed(call, "agent", held)
        else:
            session.send_event({"type": "error", "reason": f"cannot {kind!r} this call now"})

    def _softphone_closed(self, session: Any, reason: str) -> None:
        """The page went away: a ringing offer is a no-answer, a connected call ends."""
        self._s.agents.softphone_gone(session.agent_id, f"softphone closed: {reason}")
        for call in list(self._s.calls.values()):
            leg = call.legs.get(session.agent_id)
            if leg is None or leg.softphone is not session or leg.finished:
                continue
            if leg.answered:
                self._s.teardown.agent_gone(leg, "softphone closed")
            else:
                if leg.ring_timer is not None:
                    leg.ring_timer.cancel()
                self._s.ringing.end_leg(leg)
                self._s.ringing.reject(call, leg.agent_id, "no_answer")


def screen_pop(data: dict[str, Any]) -> dict[str, Any]:
    """What the flow gathered, for the agent's alert (values are already bounded scalars)."""
    return {k: v for k, v in data.items() if isinstance(v, str | int | float | bool) or v is None}
