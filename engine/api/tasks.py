"""The tasks API: ``/api/v1/tasks`` (chats, e-mails, social messages, tickets).

Who may do what:

- create (``POST /api/v1/tasks``), cancel: an integration token, a supervisor or an admin;
- read: integrations, supervisors and admins every task; an agent the tasks offered or assigned
  to it, and the ones it handled;
- accept, reject: the agent the task is offered to, with its own token;
- complete, transfer: the agent holding the task, or a supervisor;
- messages: the customer side through an integration token, the agent side through the holding
  agent's token (or a supervisor's);
- state changes (``PATCH /api/v1/tasks/{id}`` or ``POST .../transitions``, ``{"state": ...}``:
  a ticket's pending / open / solved / closed, any task's cancelled, a chat's completed): an
  integration (the customer replied, or the help desk's own automation), a supervisor, or the
  agent holding (or who last held) the task. A move the lifecycle does not have from the task's
  state answers 409 with ``allowed``, the states it may go to (engine.tasks.lifecycle).

Every write, allowed or refused, is in the audit log (``object_type`` "task"). A create with an
``external_id`` seen before answers 200 with the task made the first time and ``"created":
false``: nothing new was made, so 201 would misreport it, and a client retrying after a lost
answer needs to learn only the id.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

import msgspec
from aiohttp import web

from engine.api.app import json_response
from engine.api.auth import Principal, audit, principal_of
from engine.api.context import CONTEXT_KEY, ApiContext, int_arg
from engine.config import SERVICE_CHANNELS, Role
from engine.storage import StorageError, customers
from engine.storage import tasks as task_store
from engine.tasks import IllegalTransition, Task, TaskError, TaskService, TaskState
from engine.tasks.lifecycle import REQUESTABLE

MAX_TASK_ROWS = 500
CLOSED_STATES = ("completed", "closed", "cancelled")
BREACH_FILTERS = {
    "first_response": ("first_response",),
    "resolution": ("resolution",),
    "any": ("first_response", "resolution"),
}


class Customer(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    id: str | None = None
    name: str | None = None
    email: str | None = None
    phone: str | None = None


class NewTask(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    channel: str
    queue: str
    requirements: dict[str, int] | None = None  # skill -> minimum level; absent: the queue's
    priority: int = 0
    customer: Customer | None = None
    subject: str | None = None
    data: dict[str, Any] | None = None
    external_id: str | None = None
    # epoch seconds: a follow-up (a callback, a check-in) that enters its queue only then
    not_before: float | None = None


class NewCallback(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A callback to make (``POST /api/v1/callbacks``), in a queue with ``callback`` config."""

    queue: str
    number: str  # the customer's number: digits, an optional leading +
    at: datetime | None = None  # ISO-8601 with a zone (UTC): scheduled until then; absent: now
    priority: int = 0
    data: dict[str, Any] | None = None  # kept on the task as data.data


class CallbackCreated(msgspec.Struct, frozen=True):
    id: str
    state: str


# A number the trunk is asked to dial: sip:<number>@proxy, so nothing a SIP URI user part
# would need escaped.
_NUMBER = re.compile(r"\+?[0-9]{2,32}")


class TaskCreated(msgspec.Struct, frozen=True):
    id: str
    created: bool
    state: str


class TaskCompletion(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    disposition: str = "completed"
    notes: str | None = None


class TaskTransfer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    queue: str | None = None
    agent: str | None = None
    note: str | None = None  # why, for the next department or agent: kept in the history


class TaskMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    text: str


class TaskStateChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    state: str  # pending, open, solved, closed, cancelled, completed
    disposition: str | None = None  # for solved / completed
    notes: str | None = None


class TransitionRefused(msgspec.Struct, frozen=True):
    """409 of a state change: RFC 9457 problem details with the states the task may go to."""

    title: str
    status: int
    detail: str
    allowed: list[str]


def _service(ctx: ApiContext) -> TaskService:
    if ctx.tasks is None:
        raise web.HTTPServiceUnavailable(text="the task service is not running")
    service: TaskService = ctx.tasks
    return service


def _decode(raw: bytes, kind: type[Any]) -> Any:
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.ValidationError as exc:  # names the field: "... - at `$.channel`"
        raise web.HTTPUnprocessableEntity(text=str(exc)) from None
    except msgspec.DecodeError as exc:
        raise web.HTTPBadRequest(text=f"expected a JSON object: {exc}") from None


def _refuse(exc: TaskError) -> web.HTTPException:
    text = f"{exc.field}: {exc}" if exc.field else str(exc)
    kinds: dict[int, type[web.HTTPException]] = {
        404: web.HTTPNotFound,
        409: web.HTTPConflict,
        422: web.HTTPUnprocessableEntity,
        503: web.HTTPServiceUnavailable,
    }
    return kinds.get(exc.status, web.HTTPConflict)(text=text)


async def task_contacts(request: web.Request) -> web.Response:
    """The task's customer's contacts on every channel (engine.storage.customers), for whoever
    may read the task: the agent working it sees the customer's earlier calls and tasks."""
    ctx = request.app[CONTEXT_KEY]
    task = await _task(ctx, request.match_info["task_id"])
    if not _may_read(principal_of(request), task):
        raise web.HTTPForbidden(text="agents see only their own tasks")
    customer = task.customer or {}
    if ctx.store is None or not any(customer.get(k) for k in ("phone", "email", "id")):
        return json_response([])
    limit = int_arg(request, "limit", 20, minimum=1, maximum=customers.MAX_CONTACTS)
    rows = await customers.contacts(
        ctx.store, phone=customer.get("phone"), email=customer.get("email"),
        ref=customer.get("id"), limit=limit + 1,
    )  # fmt: skip
    rows = [r for r in rows if not (r["kind"] == "task" and r["id"] == task.id)][:limit]
    await audit(ctx, request, action="customer_contacts", outcome="allowed",
                object_type="task", object_id=task.id, detail={"rows": len(rows)})  # fmt: skip
    return json_response(rows)


def _may_read(principal: Principal, task: Task) -> bool:
    if principal.role is Role.INTEGRATION or principal.at_least(Role.SUPERVISOR):
        return True
    aid = principal.agent_id
    return aid is not None and (
        task.agent_id == aid
        or aid in task.offered_to
        or any(e.get("agent_id") == aid for e in task.history)
    )


class _Write:
    """One audited write on one task: ``allowed`` / ``refused`` / ``failed`` rows."""

    def __init__(self, request: web.Request, action: str, task_id: str | None) -> None:
        self.request, self.action, self.task_id = request, action, task_id
        self.ctx = request.app[CONTEXT_KEY]

    async def log(self, outcome: str, **detail: Any) -> None:
        await audit(
            self.ctx,
            self.request,
            action=self.action,
            outcome=outcome,
            object_type="task",
            object_id=self.task_id,
            detail={k: v for k, v in detail.items() if v is not None} or None,
        )

    async def deny(self, why: str) -> web.HTTPForbidden:
        await self.log("denied", reason=why)
        return web.HTTPForbidden(text=why)

    async def refused(self, exc: TaskError) -> web.HTTPException:
        await self.log("refused", reason=str(exc), field=exc.field)
        return _refuse(exc)


async def create_task(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    principal = principal_of(request)
    act = _Write(request, "task.create", None)
    if principal.role is not Role.INTEGRATION and not principal.at_least(Role.SUPERVISOR):
        raise await act.deny("creating tasks needs an integration, supervisor or admin token")
    service = _service(ctx)
    body: NewTask = _decode(await request.read(), NewTask)
    try:
        task, created = await service.create(
            channel=body.channel,
            queue=body.queue,
            created_by=principal.name,
            requirements=body.requirements,
            priority=body.priority,
            customer=None if body.customer is None else msgspec.structs.asdict(body.customer),
            subject=body.subject,
            data=body.data,
            external_id=body.external_id,
            not_before=body.not_before,
        )
    except TaskError as exc:
        raise await act.refused(exc) from None
    except StorageError as exc:
        await act.log("failed", reason=str(exc))
        raise web.HTTPServiceUnavailable(text=f"the task could not be stored: {exc}") from None
    act.task_id = task.id
    await act.log(
        "allowed" if created else "replayed",
        channel=task.channel,
        queue=task.queue,
        external_id=task.external_id,
    )
    return json_response(
        TaskCreated(id=task.id, created=created, state=task.state.value),
        status=201 if created else 200,
    )


async def create_callback(request: web.Request) -> web.Response:
    """A callback task made through the API (a CRM's "call me at 3 pm"): channel "callback" in
    a queue with ``callback`` config, ``scheduled`` until ``at`` (its effective enqueue time:
    it queues behind callers waiting since before then), then delivered by the queue's
    ``callback.mode`` as a caller's callback is (engine.calls.dialout)."""
    ctx = request.app[CONTEXT_KEY]
    principal = principal_of(request)
    act = _Write(request, "callback.create", None)
    if principal.role is not Role.INTEGRATION and not principal.at_least(Role.SUPERVISOR):
        raise await act.deny("creating callbacks needs an integration, supervisor or admin token")
    service = _service(ctx)
    body: NewCallback = _decode(await request.read(), NewCallback)

    async def refuse(field: str, why: str) -> web.HTTPException:
        await act.log("refused", reason=why, field=field)
        return web.HTTPUnprocessableEntity(text=f"{field}: {why}")

    qcfg = next((q for q in ctx.get_config().queues if q.name == body.queue), None)
    if qcfg is None:
        raise await refuse("queue", f"no queue {body.queue!r}")
    if qcfg.callback is None:
        raise await refuse("queue", f"queue {body.queue!r} has no callback config")
    if not _NUMBER.fullmatch(body.number):
        raise await refuse("number", "expected digits with an optional leading +")
    not_before: float | None = None
    if body.at is not None:
        if body.at.tzinfo is None:
            raise await refuse("at", "expected a time with its zone (e.g. ...Z)")
        not_before = body.at.timestamp()
        if not_before < time.time():
            raise await refuse("at", f"{body.at.isoformat()} is in the past")
    data: dict[str, Any] = {
        "number": body.number, "trunk": qcfg.callback.trunk, "dialed": "", "call_id": "",
        "source": "api",
    }  # fmt: skip
    if body.data is not None:
        data["data"] = body.data
    try:
        task, _ = await service.create(
            channel="callback", queue=body.queue, created_by=principal.name,
            priority=body.priority, customer={"number": body.number}, data=data,
            not_before=not_before, channels=("callback",),
        )  # fmt: skip
    except TaskError as exc:
        raise await act.refused(exc) from None
    except StorageError as exc:
        await act.log("failed", reason=str(exc))
        raise web.HTTPServiceUnavailable(text=f"the callback could not be stored: {exc}") from None
    act.task_id = task.id
    await act.log("allowed", queue=task.queue, at=not_before, state=task.state.value)
    return json_response(CallbackCreated(id=task.id, state=task.state.value), status=201)


async def _task(ctx: ApiContext, task_id: str) -> Task:
    service = _service(ctx)
    task = service.get(task_id)
    if task is None:
        try:
            task = await service.stored(task_id)
        except StorageError as exc:
            raise web.HTTPServiceUnavailable(text=str(exc)) from None
    if task is None:
        raise web.HTTPNotFound(text=f"no task {task_id!r}")
    return task


async def get_task(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    task = await _task(ctx, request.match_info["task_id"])
    if not _may_read(principal_of(request), task):
        raise web.HTTPForbidden(text="agents see only their own tasks")
    return json_response(task.view())


async def list_tasks(request: web.Request) -> web.Response:
    """Open tasks from the service (the live truth), closed ones from the store."""
    ctx = request.app[CONTEXT_KEY]
    principal = principal_of(request)
    service = _service(ctx)
    q = request.query
    states = [s for s in q.get("state", "").split(",") if s]
    known = {s.value for s in TaskState}
    if any(s not in known for s in states):
        raise web.HTTPUnprocessableEntity(text=f"state: expected some of {sorted(known)}")
    channel = q.get("channel")
    if channel is not None and channel not in SERVICE_CHANNELS:
        raise web.HTTPUnprocessableEntity(text=f"channel: expected one of {list(SERVICE_CHANNELS)}")
    queue, agent = q.get("queue"), q.get("agent")
    if principal.role is Role.AGENT:
        if agent not in (None, principal.agent_id):
            raise web.HTTPForbidden(text="agents see only their own tasks")
        agent = principal.agent_id
    try:
        limit = max(1, min(int(q.get("limit", "100")), MAX_TASK_ROWS))
    except ValueError:
        raise web.HTTPBadRequest(text="limit must be an integer") from None
    breached = q.get("breached")  # the SLA's: which kind, or any
    if breached is not None and breached not in BREACH_FILTERS:
        raise web.HTTPUnprocessableEntity(text=f"breached: expected one of {list(BREACH_FILTERS)}")
    kinds = () if breached is None else BREACH_FILTERS[breached]
    wanted = set(states) or known
    rows: list[dict[str, Any]] = []
    for task in sorted(service.tasks.values(), key=lambda t: (t.arrived_at, t.id)):
        if task.state.value not in wanted:
            continue
        if (queue and task.queue != queue) or (channel and task.channel != channel):
            continue
        if agent is not None and task.agent_id != agent and agent not in task.offered_to:
            continue
        if kinds and not any(getattr(task, f"{kind}_breached") for kind in kinds):
            continue
        rows.append({**task.row(), "status": task.status, "offered_to": sorted(task.offered_to)})
    closed = [s for s in CLOSED_STATES if s in wanted]
    if closed and len(rows) < limit and ctx.store is not None:
        try:
            stored = await task_store.search_tasks(
                ctx.store,
                states=closed,
                queue=queue,
                channel=channel,
                agent=agent,
                breached=kinds,
                limit=limit,
            )
            rows += [
                {**row, "status": Task.from_row(row).status, "offered_to": []} for row in stored
            ]
        except StorageError as exc:
            raise web.HTTPServiceUnavailable(text=str(exc)) from None
    return json_response(rows[:limit])


async def _agent_action(request: web.Request, action: str) -> web.Response:
    """accept / reject: the agent the task is offered to, with its own token."""
    ctx = request.app[CONTEXT_KEY]
    principal = principal_of(request)
    task_id = request.match_info["task_id"]
    act = _Write(request, f"task.{action}", task_id)
    if principal.agent_id is None:
        raise await act.deny(f"only the agent offered the task may {action} it")
    service = _service(ctx)
    try:
        if action == "accept":
            task = await service.accept(task_id, principal.agent_id, by=principal.name)
        else:
            task = await service.reject(task_id, principal.agent_id, by=principal.name)
    except TaskError as exc:
        raise await act.refused(exc) from None
    await act.log("allowed", agent=principal.agent_id)
    return json_response(task.view())


async def accept_task(request: web.Request) -> web.Response:
    return await _agent_action(request, "accept")


async def reject_task(request: web.Request) -> web.Response:
    return await _agent_action(request, "reject")


async def _holder(act: _Write, principal: Principal, task: Task | None) -> str:
    """The agent who holds the task, if the principal may act for it (itself or supervisor)."""
    if task is None:
        raise web.HTTPNotFound(text=f"no open task {act.task_id!r}")
    if principal.at_least(Role.SUPERVISOR):
        return task.agent_id or ""
    if principal.agent_id is not None and principal.agent_id == task.agent_id:
        return principal.agent_id
    raise await act.deny("only the agent holding the task, or a supervisor")


async def complete_task(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    principal = principal_of(request)
    task_id = request.match_info["task_id"]
    act = _Write(request, "task.complete", task_id)
    service = _service(ctx)
    agent = await _holder(act, principal, service.get(task_id))
    body: TaskCompletion = _decode(await request.read(), TaskCompletion)
    try:
        task = await service.complete(
            task_id, agent, by=principal.name, disposition=body.disposition, notes=body.notes
        )
    except TaskError as exc:
        raise await act.refused(exc) from None
    await act.log("allowed", agent=agent, disposition=body.disposition)
    return json_response(task.view())


async def transfer_task(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    principal = principal_of(request)
    task_id = request.match_info["task_id"]
    act = _Write(request, "task.transfer", task_id)
    service = _service(ctx)
    task = service.get(task_id)
    if task is not None and task.state not in (TaskState.ASSIGNED, TaskState.PENDING):
        if not principal.at_least(Role.SUPERVISOR):
            raise await act.deny("a task not yet accepted is transferred by a supervisor")
    else:  # held, or pending with the agent who last held it
        await _holder(act, principal, task)
    body: TaskTransfer = _decode(await request.read(), TaskTransfer)
    try:
        task = await service.transfer(
            task_id, by=principal.name, queue=body.queue, agent=body.agent, note=body.note
        )
    except TaskError as exc:
        raise await act.refused(exc) from None
    await act.log("allowed", queue=body.queue, agent=body.agent)
    return json_response(task.view())


async def cancel_task(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    principal = principal_of(request)
    task_id = request.match_info["task_id"]
    act = _Write(request, "task.cancel", task_id)
    if principal.role is not Role.INTEGRATION and not principal.at_least(Role.SUPERVISOR):
        raise await act.deny("cancelling needs an integration, supervisor or admin token")
    try:
        task = await _service(ctx).cancel(task_id, by=principal.name)
    except TaskError as exc:
        raise await act.refused(exc) from None
    await act.log("allowed")
    return json_response(task.view())


async def post_message(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    principal = principal_of(request)
    task_id = request.match_info["task_id"]
    act = _Write(request, "task.message", task_id)
    service = _service(ctx)
    if principal.role is Role.INTEGRATION:
        sender = "customer"
    else:
        await _holder(act, principal, service.get(task_id))
        sender = "agent"
    body: TaskMessage = _decode(await request.read(), TaskMessage)
    try:
        message = await service.post_message(
            task_id, sender=sender, author=principal.name, text=body.text
        )
    except TaskError as exc:
        raise await act.refused(exc) from None
    await act.log("allowed", sender=sender)  # the text itself is in the task, not the audit log
    return json_response(message, status=201)


async def change_state(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    principal = principal_of(request)
    task_id = request.match_info["task_id"]
    act = _Write(request, "task.state", task_id)
    service = _service(ctx)
    body: TaskStateChange = _decode(await request.read(), TaskStateChange)
    task = service.get(task_id)
    if task is None:  # ended (completed, closed, cancelled): no move is left, or no such task
        ended = await _task(ctx, task_id)
        await act.log("refused", reason=f"task is {ended.state.value}", state=body.state)
        return json_response(
            TransitionRefused(
                title="Conflict",
                status=409,
                detail=f"task {task_id!r} is {ended.state.value}: it may go to no other state",
                allowed=[],
            ),
            status=409,
        )
    if body.state not in REQUESTABLE:
        raise await act.refused(
            InvalidState(f"expected one of {', '.join(REQUESTABLE)}, found {body.state!r}")
        )
    if principal.role is not Role.INTEGRATION and not principal.at_least(Role.SUPERVISOR):
        if principal.agent_id is None or principal.agent_id != task.agent_id:
            raise await act.deny("only the task's agent, an integration or a supervisor")
        if body.state == "cancelled":
            raise await act.deny(
                "a task not yet taken is cancelled by an integration or supervisor"
            )
    was = task.state.value
    try:
        task = await service.transition(
            task_id, body.state, by=principal.name, disposition=body.disposition, notes=body.notes
        )
    except IllegalTransition as exc:
        await act.log("refused", reason=str(exc), state=body.state)
        return json_response(
            TransitionRefused(title="Conflict", status=409, detail=str(exc), allowed=exc.allowed),
            status=409,
        )
    except TaskError as exc:
        raise await act.refused(exc) from None
    await act.log("allowed", state=body.state, was=was)
    return json_response(task.view())


class InvalidState(TaskError):
    status = 422

    def __init__(self, message: str) -> None:
        super().__init__(message, field="state")


def add_task_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/tasks", create_task)
    app.router.add_post("/api/v1/callbacks", create_callback)
    app.router.add_get("/api/v1/tasks", list_tasks)
    app.router.add_get("/api/v1/tasks/{task_id}", get_task)
    app.router.add_get("/api/v1/tasks/{task_id}/contacts", task_contacts)
    app.router.add_patch("/api/v1/tasks/{task_id}", change_state)
    app.router.add_post("/api/v1/tasks/{task_id}/transitions", change_state)
    app.router.add_post("/api/v1/tasks/{task_id}/accept", accept_task)
    app.router.add_post("/api/v1/tasks/{task_id}/reject", reject_task)
    app.router.add_post("/api/v1/tasks/{task_id}/complete", complete_task)
    app.router.add_post("/api/v1/tasks/{task_id}/transfer", transfer_task)
    app.router.add_post("/api/v1/tasks/{task_id}/cancel", cancel_task)
    app.router.add_post("/api/v1/tasks/{task_id}/messages", post_message)
