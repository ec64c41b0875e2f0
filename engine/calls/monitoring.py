"""Supervisor monitoring: listen to, whisper into or barge in on a bridged call.

How this works: ``start`` (the API's POST .../monitor) checks the request and opens a
``MonitorSession``, one per call and per supervisor. The supervisor is an ``[[agents]]`` entry
with a SIP phone (registered, or static); its leg is an outbound INVITE like an agent's ring and
goes the same way (``CallMedia.open_leg``, ``Ringing.reach`` and ``Ringing.dial``: RFC 3263
failover, a PBX trunk's credentials; the answer is read by ``Transfers.transfer_response``, as for
any leg waiting on its final status). It rings for the call's queue's ``ring_timeout_s``. When
it answers, a ``sip.media.Monitor`` joins the call's bridge on the shared media clock in the
requested mode; ``set_mode`` switches it, ``stop`` (DELETE) ends it. The supervisor's BYE (or a
media timeout on their leg) ends the monitoring, never the call; the call's bridge ending (hang-up,
transfer) ends the monitoring and sends the supervisor BYE. The recording holds what the caller
heard: caller and agent, and a barging supervisor on the agent's channel (``sip.media.monitor``);
listening and whispering are not recorded.

With ``[media] workers > 0`` the call's bridge is a ``RemoteBridge``: its ``add_monitor`` hands
the supervisor's leg to the worker carrying the call, which mixes it there (and the daemon does,
if the call comes back here, e.g. its worker died).

Every change is one ``monitor_*`` log line and one ``monitor`` event on the event stream (only
supervisors and admins see them); the API writes the audit rows of the requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from engine.calls.model import BUSY, DECLINED, AgentLeg, Call, loop_now
from engine.config import AgentConfig, LoginMode
from engine.media.offload import RemoteBridge, RemoteMonitor
from engine.runtime.events import Event
from sip.media import MediaEvent, MediaTimedOut, Monitor
from sip.rtp.mix import MONITOR_MODES

if TYPE_CHECKING:
    from engine.calls.service import CallService

log = structlog.stdlib.get_logger("acd.calls")

#: The modes, in the order the API documents them.
MODES = tuple(MONITOR_MODES)


class MonitorRefused(Exception):
    """The request is well-formed but cannot be done on this call now (the API's 409): the call
    is not bridged, is already monitored, the supervisor is busy or has no phone. Not raised for an unknown call (KeyError) or bad input
    (ValueError)."""


@dataclass(eq=False)
class MonitorSession:
    id: str
    call: Call
    supervisor: str
    mode: str
    requested_by: str
    requested_at: float
    state: str = "ringing"  # ringing -> active -> ended
    leg: AgentLeg | None = None
    monitor: Monitor | RemoteMonitor | None = None
    answered_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "monitor_id": self.id, "call_id": self.call.id, "supervisor": self.supervisor,
            "mode": self.mode, "state": self.state, "requested_by": self.requested_by,
            "requested_at": self.requested_at, "answered_at": self.answered_at,
        }  # fmt: skip


class Monitoring:
    """The supervisor sessions of the live calls, by call id."""

    def __init__(self, service: CallService) -> None:
        self._s = service
        self.by_call: dict[str, MonitorSession] = {}

    # -- what the API asks -------------------------------------------------------------------------

    def start(self, call_id: str, supervisor: str, mode: str, by: str) -> MonitorSession:
        """Ring ``supervisor``'s phone to monitor the bridged call ``call_id`` in ``mode``; the
        session (ringing). KeyError: no such live call; ValueError: a bad mode or a supervisor
        not in [[agents]]; MonitorRefused: not possible on this call now."""
        if mode not in MONITOR_MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, found {mode!r}")
        call = self._s.calls[call_id]
        agent = next((a for a in self._s.config.agents if a.id == supervisor), None)
        if agent is None:
            raise ValueError(f"no supervisor {supervisor!r}: supervisors are [[agents]] entries")
        bridge = call.bridge
        if call.agent_id is None or bridge is None or bridge.stopped_at is not None:
            raise MonitorRefused("the call is not bridged to an agent")
        current = self.by_call.get(call.id)
        if current is not None:
            raise MonitorRefused(f"the call is already monitored by {current.supervisor}")
        if supervisor == call.agent_id:
            raise MonitorRefused(f"{supervisor} is the call's agent")
        busy = next((s for s in self.by_call.values() if s.supervisor == supervisor), None)
        if busy is not None:
            raise MonitorRefused(f"{supervisor} is already monitoring call {busy.call.id}")
        if agent.login is LoginMode.WEBRTC:
            raise MonitorRefused(f"{supervisor} logs in with WebRTC; monitoring needs a SIP phone")
        if not self._s.agents.contacts(supervisor):
            raise MonitorRefused(f"{supervisor} has no registered phone")
        session = MonitorSession(uuid.uuid4().hex, call, supervisor, mode, by, time.time())
        self.by_call[call.id] = session
        log.info("monitor_ringing", call_id=call.id, monitor_id=session.id,
                 supervisor=supervisor, mode=mode, by=by)  # fmt: skip
        self._publish(session, "ringing")
        self._s.spawn(self._ring(session, agent), call.id)  # owned by the service
        return session

    def set_mode(self, call_id: str, mode: str, by: str) -> MonitorSession:
        """Switch the call's monitoring to ``mode`` (while ringing: the mode it joins in).
        KeyError: no monitoring on that call; ValueError: a bad mode."""
        if mode not in MONITOR_MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, found {mode!r}")
        session = self.by_call[call_id]
        if mode != session.mode:
            session.mode = mode
            if session.monitor is not None:
                session.monitor.set_mode(mode, loop_now())
            log.info("monitor_mode_changed", call_id=call_id, monitor_id=session.id,
                     supervisor=session.supervisor, mode=mode, by=by)  # fmt: skip
            self._publish(session, "mode_changed", by=by)
        return session

    def stop(self, call_id: str, by: str) -> MonitorSession:
        """End the call's monitoring (the supervisor's phone is hung up or the ringing
        CANCELled); the call goes on. KeyError: no monitoring on that call."""
        session = self.by_call[call_id]
        self._end(session, f"stopped by {by}")
        return session

    # -- what the other phases tell ----------------------------------------------------------------

    def bridge_ended(self, call: Call, reason: str) -> None:
        """The call's bridge stopped (hang-up, transfer): its monitoring ends with it."""
        session = self.by_call.get(call.id)
        if session is not None:
            self._end(session, reason)

    def leg_gone(self, leg: AgentLeg, reason: str) -> bool:
        """The far end of ``leg`` hung up (BYE, dialog gone): if it is a supervisor's, the
        monitoring ends and the call goes on (True); False for any other leg."""
        session = self.by_call.get(leg.call.id)
        if session is None or session.leg is not leg:
            return False
        self._end(session, f"supervisor {reason}")
        return True

    # -- the supervisor's leg ----------------------------------------------------------------------

    async def _ring(self, session: MonitorSession, agent: AgentConfig) -> None:
        call = session.call

        def on_media(event: MediaEvent) -> None:
            if isinstance(event, MediaTimedOut):
                self._end(session, f"supervisor media timeout ({event.reason})")

        try:
            leg = await self._s.media.open_leg(
                call, f"monitor:{session.supervisor}", on_media, secure=agent.secure
            )
        except OSError:
            self._end(session, "no RTP port")
            return
        if session.state == "ended":  # stopped (or the call ended) meanwhile
            leg.rtp.close()
            return
        session.leg = leg
        reach = await self._s.ringing.reach(agent)
        if session.state == "ended":
            return  # _end closed the leg
        if reach is None:
            self._end(session, "supervisor unreachable")
            return
        leg.final = asyncio.get_running_loop().create_future()
        self._s.ringing.dial(leg, reach, [("X-ACD-Call-ID", call.id), ("X-ACD-Monitor", "1")])
        self._s.transmit()
        qcfg = next((q for q in self._s.config.queues if q.name == call.queue), None)
        timeout_s = qcfg.ring_timeout_s if qcfg is not None else 20.0
        try:
            status = await asyncio.wait_for(asyncio.shield(leg.final), timeout_s)
        except TimeoutError:
            self._end(session, "no_answer")
            return
        if session.state == "ended":
            return
        if not 200 <= status < 300:
            why = "busy" if status in BUSY else "declined" if status in DECLINED else "no_answer"
            self._end(session, f"{why} ({status})" if status else "bad answer")
            return
        self._join(session, leg)

    def _join(self, session: MonitorSession, leg: AgentLeg) -> None:
        """The supervisor answered: the mixer joins the bridge, if the call is still bridged."""
        call = session.call
        bridge, clock = call.bridge, self._s.media.clock
        agent_leg = call.legs.get(call.agent_id or "")
        if bridge is None or bridge.stopped_at is not None or agent_leg is None or clock is None:
            self._end(session, "the call's bridge ended")
            return
        monitor: Monitor | RemoteMonitor
        if isinstance(bridge, RemoteBridge):
            monitor = bridge.add_monitor(leg.rtp, leg.codec, session.mode)
        else:
            monitor = Monitor(
                bridge, leg.rtp, clock, mode=session.mode, caller_codec=call.codec,
                agent_codec=agent_leg.codec, supervisor_codec=leg.codec,
            )  # fmt: skip
            monitor.start(loop_now())
        session.monitor, session.state, session.answered_at = monitor, "active", time.time()
        self._s.metrics.monitor_sessions.labels(mode=session.mode).inc()
        self._s.metrics.monitors_active.inc()
        log.info("monitor_started", call_id=call.id, monitor_id=session.id,
                 supervisor=session.supervisor, mode=session.mode)  # fmt: skip
        self._publish(session, "started")

    def _end(self, session: MonitorSession, reason: str) -> None:
        if session.state == "ended":
            return
        joined = session.monitor is not None
        session.state = "ended"
        call = session.call
        if self.by_call.get(call.id) is session:
            del self.by_call[call.id]
        if session.monitor is not None:
            session.monitor.stop(loop_now())  # the bridge relays both ways again
            self._s.metrics.monitors_active.dec()
        leg = session.leg
        if leg is not None and not leg.finished:
            if leg.answered:
                self._s.ringing.hang_up_leg(leg)  # BYE
            else:
                if leg.send_invite is not None:  # ringing: CANCEL
                    with contextlib.suppress(KeyError):
                        leg.endpoint.cancel(leg.request_id, now=loop_now())
                    self._s.transmit()
                self._s.ringing.end_leg(leg)
        if leg is not None and leg.final is not None and not leg.final.done():
            leg.final.set_result(0)  # the ringing task wakes up, sees the end, and is done
        duration = None if session.answered_at is None else time.time() - session.answered_at
        log.info("monitor_ended", call_id=call.id, monitor_id=session.id,
                 supervisor=session.supervisor, reason=reason, joined=joined,
                 monitored_s=None if duration is None else round(duration, 3))  # fmt: skip
        self._publish(session, "ended", reason=reason)

    def _publish(self, session: MonitorSession, event: str, **data: Any) -> None:
        bus = self._s.bus
        if bus is None:
            return
        call = session.call
        bus.publish(
            Event(
                type="monitor", at=time.time(), event=event, call_id=call.id, queue=call.queue,
                agent_id=call.agent_id, reason=data.pop("reason", None),
                data={"monitor_id": session.id, "supervisor": session.supervisor,
                      "mode": session.mode, "requested_by": session.requested_by, **data},
            )
        )  # fmt: skip
