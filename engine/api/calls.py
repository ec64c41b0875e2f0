"""Live calls: list them, pause/resume or start their recording, transfer them, monitor them.

How this works: these handlers act on the call service's live calls (``ApiContext.calls``). An
action on a call is allowed to the call's agent and to supervisors, and ``_CallAction`` audits
every attempt, refused (with why) or done. Recording control is pause/resume (PCI: card data is not
recorded) or starting an on-demand recording from now to the hang-up; a recording is never stopped
mid-call. A transfer is blind: to a queue, or to a number through a trunk. Monitoring (listen,
whisper, barge: ``engine.calls.monitoring``) is for supervisors and admins only, audited the same
way; the call's agent cannot start, change or see it.
"""

from __future__ import annotations

from typing import Any, NoReturn

import msgspec
import sqlalchemy as sa
import structlog
from aiohttp import web

from engine.api.app import json_response
from engine.api.auth import Principal, audit, principal_of, require_role
from engine.api.context import CONTEXT_KEY
from engine.calls.monitoring import MonitorRefused
from engine.config import Role
from engine.recording.service import RecordingRefused

log = structlog.stdlib.get_logger("acd.api")


async def live_calls(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    require_role(request, Role.SUPERVISOR)
    return json_response([] if ctx.calls is None else ctx.calls.live_calls())


class CallTransfer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """POST /api/v1/calls/{call_id}/transfer: a blind transfer of the bridged caller to a queue,
    or to a number through a trunk (default: the one trunk with an outbound_proxy)."""

    queue: str = ""
    number: str = ""
    trunk: str = ""


async def transfer_call(request: web.Request) -> web.Response:
    """The call's agent or a supervisor sends the caller elsewhere; the agent's part ends."""
    ctx = request.app[CONTEXT_KEY]
    principal = principal_of(request)
    call_id = request.match_info["call_id"]
    try:
        body = msgspec.json.decode(await request.read(), type=CallTransfer)
    except msgspec.DecodeError as exc:
        raise web.HTTPBadRequest(
            text=f'expected {{"queue": ...}} or {{"number": ...}}: {exc}'
        ) from None
    detail: dict[str, Any] = {k: v for k, v in msgspec.structs.asdict(body).items() if v}
    act = _CallAction(request, "transfer", call_id, detail)
    await act.own_call(principal)
    try:
        where = ctx.calls.request_transfer(
            call_id, queue=body.queue, number=body.number, trunk=body.trunk, by=principal.name
        )
    except (KeyError, ValueError) as exc:
        await act.refuse(web.HTTPConflict, "refused", str(exc.args[0] if exc.args else exc))
    await act.done()
    return json_response({"call_id": call_id, "transferred_to": where})


class _CallAction:
    """An audited action on a live call, allowed to the call's agent and to supervisors: every
    attempt lands in the audit log, refused (with why) or done."""

    def __init__(
        self, request: web.Request, action: str, call_id: str, detail: dict[str, Any] | None = None
    ) -> None:
        self.request, self.action, self.call_id = request, action, call_id
        self.detail = detail or {}
        self.ctx = request.app[CONTEXT_KEY]

    async def refuse(self, error: type[web.HTTPException], outcome: str, text: str) -> NoReturn:
        await audit(self.ctx, self.request, action=self.action, outcome=outcome,
                    object_type="call", object_id=self.call_id,
                    detail={**self.detail, "why": text})  # fmt: skip
        raise error(text=text)

    async def own_call(self, principal: Principal) -> Any:
        """The live call, if ``principal`` may act on it (404 / 403 otherwise, audited)."""
        calls = self.ctx.calls
        call = None if calls is None else calls.calls.get(self.call_id)
        if call is None:
            await self.refuse(web.HTTPNotFound, "refused", f"no live call {self.call_id!r}")
        if not principal.at_least(Role.SUPERVISOR) and principal.agent_id != call.agent_id:
            await self.refuse(web.HTTPForbidden, "denied", "only the call's agent or a supervisor")
        return call

    async def done(self, detail: dict[str, Any] | None = None) -> None:
        await audit(self.ctx, self.request, action=self.action, outcome="done",
                    object_type="call", object_id=self.call_id,
                    detail=self.detail if detail is None else detail)  # fmt: skip


class CallRecordingChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """PUT /api/v1/calls/{call_id}/recording: exactly one of ``paused`` (PCI pause/resume) or
    ``record: true`` (start recording now, for queues recorded on demand)."""

    paused: bool | None = None
    record: bool | None = None


class CallRecordingState(msgspec.Struct, frozen=True):
    call_id: str
    recording_id: str | None
    recording_paused: bool
    on_demand: bool = False


_RECORDING_BODY = 'expected {"paused": true|false} or {"record": true}'


async def change_call_recording(request: web.Request) -> web.Response:
    """The call's agent or a supervisor: pause/resume (PCI: card data is not recorded) or start
    recording now (on demand). Every attempt that names an action is audited, refused or not."""
    ctx = request.app[CONTEXT_KEY]
    principal = principal_of(request)
    call_id = request.match_info["call_id"]
    try:
        body = msgspec.json.decode(await request.read(), type=CallRecordingChange)
    except msgspec.DecodeError as exc:
        raise web.HTTPBadRequest(text=f"{_RECORDING_BODY}: {exc}") from None
    if (body.paused is None) == (body.record is None):
        raise web.HTTPBadRequest(text=f"{_RECORDING_BODY}, one of the two")
    if body.record is False:
        raise web.HTTPBadRequest(
            text='a recording cannot be stopped mid-call; {"paused": true} stops writing audio'
        )
    if body.record:
        action = "recording_start"
    else:
        action = "recording_pause" if body.paused else "recording_resume"

    act = _CallAction(request, action, call_id)
    refuse = act.refuse
    call = await act.own_call(principal)
    if body.paused is not None:
        if not ctx.calls.pause_recording(call_id, body.paused):
            await refuse(web.HTTPConflict, "refused", "the call is not being recorded")
        await act.done({"recording_id": call.recording_id})
        return json_response(
            CallRecordingState(call_id, call.recording_id, body.paused, _on_demand(call))
        )
    try:
        recording_id = await ctx.calls.start_recording(call_id, principal.name)
    except KeyError:
        await refuse(web.HTTPNotFound, "refused", f"the call {call_id!r} ended")
    except RecordingRefused as exc:
        await refuse(web.HTTPConflict, "refused", str(exc))
    except sa.exc.SQLAlchemyError as exc:
        log.error("recording_start_failed", call_id=call_id, reason=str(exc))
        await refuse(web.HTTPServiceUnavailable, "failed", "the recordings index is unavailable")
    await act.done({"recording_id": recording_id, "on_demand": True})
    return json_response(CallRecordingState(call_id, recording_id, False, True))


def _on_demand(call: Any) -> bool:
    return bool(call.recording_on_demand)


class MonitorStart(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """POST /api/v1/calls/{call_id}/monitor: ring ``supervisor``'s phone (an [[agents]] entry
    with a SIP phone) to join the bridged call in ``mode``."""

    mode: str
    supervisor: str


class MonitorChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """PATCH /api/v1/calls/{call_id}/monitor: switch the call's monitoring to ``mode``."""

    mode: str


_MONITOR_BODY = '{"mode": "listen"|"whisper"|"barge", "supervisor": ID}'


async def _monitor_action(
    request: web.Request, action: str, body_type: type[Any] | None
) -> tuple[_CallAction, Any, Any]:
    """Decode the body (400), audit and refuse a role below supervisor (403) and a daemon
    without calls (404): the action, the body and the call service."""
    principal = principal_of(request)
    call_id = request.match_info["call_id"]
    body = None
    if body_type is not None:
        try:
            body = msgspec.json.decode(await request.read(), type=body_type)
        except msgspec.DecodeError as exc:
            shape = _MONITOR_BODY if body_type is MonitorStart else '{"mode": ...}'
            raise web.HTTPBadRequest(text=f"expected {shape}: {exc}") from None
    detail = {} if body is None else msgspec.structs.asdict(body)
    act = _CallAction(request, action, call_id, detail)
    if not principal.at_least(Role.SUPERVISOR):
        await act.refuse(web.HTTPForbidden, "denied", "needs the supervisor role")
    calls = act.ctx.calls
    if calls is None or call_id not in calls.calls:
        await act.refuse(web.HTTPNotFound, "refused", f"no live call {call_id!r}")
    return act, body, calls


async def start_monitor(request: web.Request) -> web.Response:
    """A supervisor listens to, whispers into or barges in on a bridged call: their phone rings
    now (202); the session's progress is on the event stream (type ``monitor``)."""
    act, body, calls = await _monitor_action(request, "monitor_start", MonitorStart)
    try:
        session = calls.monitoring.start(
            act.call_id, body.supervisor, body.mode, principal_of(request).name
        )
    except KeyError:
        await act.refuse(web.HTTPNotFound, "refused", f"no live call {act.call_id!r}")
    except ValueError as exc:
        await act.refuse(web.HTTPBadRequest, "refused", str(exc))
    except MonitorRefused as exc:
        await act.refuse(web.HTTPConflict, "refused", str(exc))
    await act.done({**act.detail, "monitor_id": session.id})
    return json_response(session.as_dict(), status=202)


async def change_monitor(request: web.Request) -> web.Response:
    """Switch the call's monitoring (ringing or joined) to another mode."""
    act, body, calls = await _monitor_action(request, "monitor_mode", MonitorChange)
    try:
        session = calls.monitoring.set_mode(act.call_id, body.mode, principal_of(request).name)
    except KeyError:
        await act.refuse(web.HTTPNotFound, "refused", "the call is not monitored")
    except ValueError as exc:
        await act.refuse(web.HTTPBadRequest, "refused", str(exc))
    await act.done({**act.detail, "monitor_id": session.id})
    return json_response(session.as_dict())


async def stop_monitor(request: web.Request) -> web.Response:
    """End the call's monitoring: the supervisor's phone is hung up; the call goes on."""
    act, _, calls = await _monitor_action(request, "monitor_stop", None)
    try:
        session = calls.monitoring.stop(act.call_id, principal_of(request).name)
    except KeyError:
        await act.refuse(web.HTTPNotFound, "refused", "the call is not monitored")
    await act.done({"monitor_id": session.id, "supervisor": session.supervisor})
    return json_response(session.as_dict())
