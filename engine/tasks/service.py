"""The task service: non-voice tasks from creation to completion, routed with the calls.

How this works: every open task is a routing task of its channel in the daemon's one
``RoutingService`` (DESIGN.md section 9), so an agent's capacity is counted across calls, chats,
e-mails, social messages and tickets, and every strategy and relaxation step applies to tasks as
to calls. The routing service hands this service the offers and withdrawals of the non-voice
channels (``handlers()``); an offer is shown to the agent on the event stream and waits for the
agent's accept for the queue's ``offer_timeout_s``. A rejected or timed-out offer goes back to the
router with that agent excluded (``reason`` reject / no_answer, so the queue's reject and
no-answer delays and auto-pause apply as for a ringing phone) and the next agent is offered.

State lives in two places with one owner each: the task's place in a queue and the agents'
capacity in the Router; the task's record (fields, state, history, messages) here, written
through to the store (``engine.storage.tasks.TaskWriter``) on every change. Requests from the API
await their write, so what a client was told is on disk; a daemon that stops leaves its open tasks
in the store, and ``recover()`` puts them back in their queues with their original effective
enqueue time (an assigned task goes back offered first to the agent that had it).

Every change is one history entry (who, when, what) and one event on the bus (``type`` "task",
``agent_id`` the agent it concerns, ``data.task_id``); a change of state is also a
``task_states`` row. Offers, accepts and ends of a task are rows of the agent event log
(``agent_events`` with the task's channel), so occupancy per channel comes from the same log as
the calls'. The ticket states beyond routing (pending, solved, closed, reopened) are
``lifecycle``'s, the SLA clocks ``sla``'s; a task created with ``not_before`` is ``scheduled``
until then, on a timer of the service's scheduler, and enters its queue when it falls due.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import structlog

import routing_core as rc
from engine.config import SERVICE_CHANNELS, TASK_CHANNELS, Config, QueueConfig
from engine.routing.service import OfferHandlers, RoutingService
from engine.runtime.clock import Cancellable, Scheduler
from engine.runtime.events import Event, EventBus
from engine.storage import StorageError, Store
from engine.storage import tasks as task_store
from engine.storage.cdr import CdrWriter
from engine.storage.tasks import TaskWrite, TaskWriter
from engine.tasks.followups import FollowUps
from engine.tasks.lifecycle import Lifecycle
from engine.tasks.metrics import TaskMetrics
from engine.tasks.model import (
    LIFECYCLE_CHANNELS,
    LIVE_STATES,
    OPEN_STATES,
    InvalidTask,
    Task,
    TaskConflict,
    TaskError,
    TaskState,
    TaskUnavailable,
    UnknownTask,
)
from engine.tasks.recovery import recover_tasks
from engine.tasks.sla import SlaClock

log = structlog.stdlib.get_logger("acd.tasks")

MAX_LEVEL = 255  # as the routing core's proficiency
MAX_PRIORITY = 2**31 - 1
MAX_MESSAGE_CHARS = 8000
SENDERS = ("customer", "agent")


class TaskService:
    """Owns the open tasks; only the event loop's thread calls it."""

    def __init__(
        self,
        config: Config,
        routing: RoutingService,
        *,
        writer: TaskWriter | None = None,
        bus: EventBus | None = None,
        metrics: TaskMetrics | None = None,
        scheduler: Scheduler | None = None,
        wall: Callable[[], float] = time.time,
        on_work_done: Callable[[str], None] | None = None,
        cdr: CdrWriter | None = None,
    ) -> None:
        self.cfg = config
        self.routing = routing
        self.writer = writer
        self.bus = bus
        self.metrics = metrics
        self.scheduler: Scheduler = scheduler or asyncio.get_running_loop()
        self.wall = wall
        self.tasks: dict[str, Task] = {}  # live tasks only (LIVE_STATES)
        self._by_external: dict[str, str] = {}
        self._offer_timers: dict[tuple[str, str], Cancellable] = {}
        self._cdr = cdr
        self._closed = False
        self.sla = SlaClock(self)
        self.lifecycle = Lifecycle(self)
        self.followups = FollowUps(self)
        # Told an agent's id when one of its tasks ended (the agent directory applies a logout
        # it deferred while the agent was busy).
        self.on_work_done = on_work_done
        # Set by the daemon: offers a phone rings for (an agent-first callback,
        # queues[].callback.mode) go to ``ring`` (True: it took the offer, so no offer timer:
        # the phone's ring timeout applies) and their withdrawals to ``unring``; the phone's
        # answers come back through ``phone_refused`` / ``phone_answered`` / ``dial_ended``.
        self.ring: Callable[[Task, str], bool] | None = None
        self.unring: Callable[[str, str], None] | None = None
        self._rung: set[tuple[str, str]] = set()

    def handlers(self) -> OfferHandlers:
        return OfferHandlers(on_offer=self.on_offer, on_withdraw=self.on_withdraw)

    def apply(self, config: Config) -> None:
        self.cfg = config

    def close(self) -> None:
        """The daemon stops: timers off; the agents' offers and held tasks end in the agent event
        log (``daemon_stopped``), so the time they held them is not counted through the
        downtime (the tasks themselves stay live in the store for ``recover``)."""
        for task in self.tasks.values() if not self._closed else ():
            held = [task.agent_id] if task.state is TaskState.ASSIGNED and task.agent_id else []
            for agent_id in sorted(task.offered_to) + held:
                self.agent_log(task, "task_ended", agent_id, reason="daemon_stopped")
        self._closed = True
        for timer in self._offer_timers.values():
            timer.cancel()
        self._offer_timers.clear()
        self.followups.close()
        self.sla.close()
        self.lifecycle.close()

    # -- lookups ---------------------------------------------------------------------------------

    def queue_config(self, name: str) -> QueueConfig | None:
        return next((q for q in self.cfg.queues if q.name == name), None)

    def get(self, task_id: str) -> Task | None:
        """A live task (completed, closed and cancelled ones are read from the store)."""
        return self.tasks.get(task_id)

    def queue_figures(self) -> Iterator[tuple[str, str, int, float]]:
        """(queue, channel, waiting, oldest wait seconds) for every queue and task channel."""
        for channel in TASK_CHANNELS:
            for queue, n, wait_s in self.routing.queue_figures(channel):
                yield queue, channel, n, wait_s

    def open_counts(self) -> dict[tuple[str, str], int]:
        counts = {(ch, st.value): 0 for ch in SERVICE_CHANNELS for st in LIVE_STATES}
        for task in self.tasks.values():
            counts[(task.channel, task.state.value)] += 1
        return counts

    # -- creation and recovery -------------------------------------------------------------------

    def validate(
        self,
        *,
        channel: str,
        queue: str,
        requirements: Mapping[str, int] | None,
        priority: int,
        not_before: float | None = None,
        channels: Sequence[str] = TASK_CHANNELS,
    ) -> None:
        """Raises ``InvalidTask`` naming the first field that does not fit."""
        if channel not in channels:
            raise InvalidTask(
                f"expected one of {', '.join(channels)}, found {channel!r}"
                + (" (calls come in over SIP)" if channel == "voice" else ""),
                field="channel",
            )
        if self.queue_config(queue) is None:
            raise InvalidTask(f"no queue {queue!r}", field="queue")
        for skill, level in (requirements or {}).items():
            if skill not in self.routing.skills.index:
                raise InvalidTask(
                    f"no agent or queue has skill {skill!r}", field=f"requirements.{skill}"
                )
            if not 1 <= level <= MAX_LEVEL:
                raise InvalidTask(
                    f"expected a level 1-{MAX_LEVEL}, found {level}", field=f"requirements.{skill}"
                )
        if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
            raise InvalidTask("out of the int32 range", field="priority")
        if not_before is not None and not (math.isfinite(not_before) and not_before >= 0):
            raise InvalidTask(f"expected epoch seconds, found {not_before}", field="not_before")

    async def create(
        self,
        *,
        channel: str,
        queue: str,
        created_by: str,
        requirements: Mapping[str, int] | None = None,
        priority: int = 0,
        customer: dict[str, Any] | None = None,
        subject: str | None = None,
        data: dict[str, Any] | None = None,
        external_id: str | None = None,
        not_before: float | None = None,
        enqueued_at: float | None = None,
        channels: Sequence[str] = TASK_CHANNELS,
    ) -> tuple[Task, bool]:
        """A new waiting task (scheduled, with a ``not_before`` still to come), stored before
        this returns; or, for an ``external_id`` seen before, the task made the first time (and
        False). ``enqueued_at`` (wall time) is an earlier place in line the task keeps (a
        caller's callback: its call's); ``channels`` are those the caller may create (the API:
        TASK_CHANNELS; the call layer also "callback")."""
        self.validate(
            channel=channel,
            queue=queue,
            requirements=requirements,
            priority=priority,
            not_before=not_before,
            channels=channels,
        )
        if external_id is not None:
            existing = await self._existing(external_id)
            if existing is not None:
                return existing, False
            # A create with the same id may have registered while the store was asked: from
            # here to the registration below nothing awaits, so this check closes the race.
            if external_id in self._by_external:
                return self.tasks[self._by_external[external_id]], False
        now = self.wall()
        task = Task(
            id=uuid.uuid4().hex,
            channel=channel,
            queue=queue,
            priority=priority,
            arrived_at=now,
            enqueued_at=now if enqueued_at is None else min(now, enqueued_at),
            created_by=created_by,
            requirements=None if requirements is None else dict(requirements),
            customer=customer,
            subject=subject,
            data=data,
            external_id=external_id,
            not_before=not_before,
        )
        if not_before is not None and not_before > now:
            task.state, task.enqueued_at = TaskState.SCHEDULED, not_before  # its wait starts then
        else:
            try:
                self.enqueue(task)
            except rc.QueueFull:
                raise TaskConflict(f"queue {queue!r} is full (max_length)", field="queue") from None
            except rc.CapacityExceeded as exc:  # the Router's arrays, not the request, are full
                raise TaskUnavailable(f"the router holds all it can ({exc}): retry later") from None
        self.tasks[task.id] = task
        self.sla.start(task)
        self.followups.arm(task)
        if external_id is not None:
            self._by_external[external_id] = task.id
        try:
            await self.change(task, "created", created_by, insert=True)
        except StorageError:
            # Not on disk, so not accepted: the client hears 503 and the task must not be routed.
            self.tasks.pop(task.id, None)
            if external_id is not None:
                self._by_external.pop(external_id, None)
            for agent_id in sorted(task.offered_to):
                self._end_offer(task.id, agent_id)
            self.sla.forget(task)
            self.followups.cancel(task.id)
            if task.state is TaskState.ASSIGNED and task.agent_id is not None:
                self.routing.complete(task.agent_id, task.id)
            elif task.state is not TaskState.SCHEDULED:
                self.routing.abandon(task.id)
            raise
        if self.metrics is not None:
            self.metrics.created.labels(channel=channel).inc()
        return task, True

    async def _existing(self, external_id: str) -> Task | None:
        task_id = self._by_external.get(external_id)
        if task_id is None and self.writer is not None:
            task_id = await task_store.task_id_for_external(self.writer.store, external_id)
        if task_id is None:
            return None
        open_task = self.tasks.get(task_id)
        if open_task is not None:
            return open_task
        return await self.stored(task_id)

    async def stored(self, task_id: str) -> Task | None:
        """A task read back from the store, with its history and messages."""
        if self.writer is None:
            return None
        row = await task_store.task_row(self.writer.store, task_id)
        if row is None:
            return None
        task = Task.from_row(row)
        task.history = (await task_store.history(self.writer.store, [task_id]))[task_id]
        task.messages = (await task_store.messages(self.writer.store, [task_id]))[task_id]
        return task

    def enqueue(
        self,
        task: Task,
        *,
        preferred_agent: str | None = None,
        preferred_timeout_s: float | None = None,
    ) -> None:
        """Into the Router; a preferred agent has it alone for ``preferred_timeout_s`` (by
        default the queue's offer timeout)."""
        # The Router's clock is the loop's: the effective enqueue time moves over by the same
        # distance from now, so a recovered task keeps its place (and its wait) in the queue.
        enqueue_time = self.routing.now - max(0.0, self.wall() - task.enqueued_at)
        qcfg = self.queue_config(task.queue)
        self.routing.enqueue(
            task.id,
            task.queue,
            priority=task.priority,
            requirements=task.requirements,
            enqueue_time=enqueue_time,
            preferred_agent=preferred_agent,
            preferred_timeout_s=0.0
            if qcfg is None or preferred_agent is None
            else qcfg.offer_timeout_s
            if preferred_timeout_s is None
            else preferred_timeout_s,
            channel=task.channel,
        )

    async def recover(self, store: Store) -> int:
        """Put the tasks the daemon had open when it stopped back (``engine.tasks.recovery``).
        Returns how many."""
        return await recover_tasks(self, store)

    def call_after(
        self, delay_s: float, task_id: str, callback: Callable[[], object]
    ) -> Cancellable:
        """One timer of one task on the scheduler (at once for a delay <= 0). An unexpected
        exception in it is logged with the task's id and leaves the task as it was: it never
        reaches the event loop."""

        def run() -> None:
            try:
                callback()
            except Exception:
                log.exception("task_timer_failed", task_id=task_id)

        return self.scheduler.call_at(self.scheduler.time() + max(0.0, delay_s), run)

    def keep(self, task: Task) -> None:
        self.tasks[task.id] = task
        if task.external_id is not None:
            self._by_external[task.external_id] = task.id

    # -- the router's side -----------------------------------------------------------------------

    def on_offer(self, offer: rc.Offer) -> None:
        task = self.tasks.get(offer.task_id)
        if task is None:  # cannot happen: a task leaves the Router when it leaves this service
            self.routing.abandon(offer.task_id)
            return
        now = self.wall()
        task.state = TaskState.OFFERED
        task.offered_to.add(offer.agent_id)
        task.agent_id = offer.agent_id
        if task.first_offer_at is None:
            task.first_offer_at = now
        qcfg = self.queue_config(task.queue)
        timeout_s = 30.0 if qcfg is None else qcfg.offer_timeout_s
        key = (task.id, offer.agent_id)
        if self.ring is not None and self.ring(task, offer.agent_id):
            self._rung.add(key)  # the agent's phone rings: its ring timeout applies
            timeout_s = 0.0 if qcfg is None else qcfg.ring_timeout_s
        else:
            self._offer_timers[key] = self.call_after(
                timeout_s, task.id, lambda: self._offer_timed_out(*key)
            )
        self.agent_log(task, "task_offered", offer.agent_id)
        self.save(
            task,
            [self.entry(task, "offered", "router", agent_id=offer.agent_id)],
            publish_data={
                "subject": task.subject,
                "customer": task.customer,
                "data": task.data,
                "offer_timeout_s": timeout_s,
            },
        )

    def on_withdraw(self, offer: rc.Offer) -> None:
        """Another agent accepted (ring-all), or the task left: the offer is over."""
        task = self.tasks.get(offer.task_id)
        was_offered = task is not None and offer.agent_id in task.offered_to
        rung = (offer.task_id, offer.agent_id) in self._rung
        self._end_offer(offer.task_id, offer.agent_id)
        if rung and self.unring is not None:
            self.unring(offer.task_id, offer.agent_id)
        if task is not None:
            if was_offered:
                self.agent_log(task, "task_ended", offer.agent_id, reason="withdrawn")
            if self.metrics is not None:
                self.metrics.offers.labels(channel=task.channel, outcome="withdrawn").inc()
            self.publish(task, "offer_withdrawn", agent_id=offer.agent_id)

    def _end_offer(self, task_id: str, agent_id: str) -> None:
        self._rung.discard((task_id, agent_id))
        timer = self._offer_timers.pop((task_id, agent_id), None)
        if timer is not None:
            timer.cancel()
        task = self.tasks.get(task_id)
        if task is not None:
            task.offered_to.discard(agent_id)

    def _offer_timed_out(self, task_id: str, agent_id: str) -> None:
        self._offer_timers.pop((task_id, agent_id), None)
        task = self.tasks.get(task_id)
        if task is None or agent_id not in task.offered_to:
            return
        self._back_to_queue(task, agent_id, "no_answer", "offer_timeout", "router")
        if self.metrics is not None:
            self.metrics.offers.labels(channel=task.channel, outcome="timeout").inc()

    def _back_to_queue(
        self, task: Task, agent_id: str, reason: str, event: str, by: str
    ) -> asyncio.Future[None] | None:
        self._end_offer(task.id, agent_id)
        self.agent_log(task, "task_ended", agent_id, reason=event)
        if not task.offered_to:
            task.state, task.agent_id = TaskState.WAITING, None
        written = self.save(
            task, [self.entry(task, event, by, agent_id=agent_id)], agent_id=agent_id
        )
        # Last: the Router offers the task again (to another agent) in its next dispatch, a
        # change that comes after this entry.
        self.routing.reject(task.id, agent_id, reason)
        return written

    # -- offers a phone rings for (agent-first callbacks) ----------------------------------------

    def phone_refused(self, task_id: str, agent_id: str, reason: str) -> None:
        """The agent's phone did not take the offer (``reason`` busy, reject or no_answer): back
        to the router with that agent excluded, as for a ringing call."""
        task = self.tasks.get(task_id)
        if task is None or agent_id not in task.offered_to:
            return
        event = "offer_timeout" if reason == "no_answer" else "rejected"
        self._back_to_queue(task, agent_id, reason, event, agent_id)
        if self.metrics is not None:
            outcome = "timeout" if reason == "no_answer" else "rejected"
            self.metrics.offers.labels(channel=task.channel, outcome=outcome).inc()

    def _attempt(self, task: Task, call_id: str, outcome: str) -> int:
        """One more dial-out attempt in the task's data (count, calls, last outcome)."""
        data = dict(task.data or {})
        data["attempts"] = int(data.get("attempts", 0)) + 1
        data["calls"] = [*data.get("calls", []), call_id]
        data["last_outcome"] = outcome
        task.data = data
        return int(data["attempts"])

    async def phone_answered(self, task_id: str, agent_id: str, call_id: str) -> None:
        """The customer answered the call the agent was rung for: the task is the agent's."""
        task = await self.accept(task_id, agent_id, by=agent_id, phone=True)
        self._attempt(task, call_id, "connected")

    async def dial_ended(
        self,
        task_id: str,
        agent_id: str,
        call_id: str,
        outcome: str,
        *,
        attempts: int,
        retry_s: float,
    ) -> str | None:
        """The attempt the agent took ended: ``connected`` completes the task (the agent goes
        to wrap-up); ``no_answer`` / ``busy`` / ``failed`` release the agent without wrap-up
        and schedule the task again after ``retry_s`` in its original place, or, after
        ``attempts``, end it ``failed``. Returns connected, retry or failed (None: the task or
        its offer had ended already, e.g. cancelled through the API)."""
        task = self.tasks.get(task_id)
        if task is None:
            return None
        if outcome == "connected":
            if task.state is TaskState.ASSIGNED and task.agent_id == agent_id:
                await self.complete(task_id, agent_id, by="daemon", disposition="connected")
            return "connected"
        if agent_id not in task.offered_to:
            return None
        n = self._attempt(task, call_id, outcome)
        self._end_offer(task.id, agent_id)
        self.agent_log(task, "task_ended", agent_id, reason=f"customer_{outcome}")
        self.routing.abandon(task.id)  # reserved, never accepted: the agent is free at once
        task.agent_id = None
        detail = {"attempt": n, "outcome": outcome, "call_id": call_id}
        if n >= attempts:
            task.state, task.ended_at, task.disposition = TaskState.COMPLETED, self.wall(), "failed"
            # acd_tasks_total counts it completed; its disposition says how
            self.close_task(task, "completed")
            if self.on_work_done is not None:
                self.on_work_done(agent_id)
            await self.change(task, "failed", "daemon", agent_id=agent_id, data=detail)
            return "failed"
        task.state, task.not_before = TaskState.SCHEDULED, self.wall() + retry_s
        self.followups.arm(task)  # enqueued again with its enqueued_at: its place is kept
        if self.on_work_done is not None:
            self.on_work_done(agent_id)
        await self.change(
            task, "retry", "daemon", agent_id=agent_id,
            data={**detail, "not_before": task.not_before},
        )  # fmt: skip
        return "retry"

    # -- agents' actions -------------------------------------------------------------------------

    def open_task(self, task_id: str) -> Task:
        task = self.tasks.get(task_id)
        if task is None:
            raise UnknownTask(f"no open task {task_id!r}")
        return task

    async def accept(self, task_id: str, agent_id: str, *, by: str, phone: bool = False) -> Task:
        """The agent takes the offer (``phone``: the daemon, once the phone call it rang the
        agent for is through; the API cannot take or refuse such an offer)."""
        task = self.open_task(task_id)
        if agent_id not in task.offered_to:
            raise TaskConflict(f"task {task_id!r} is not offered to agent {agent_id!r}")
        if not phone and (task.id, agent_id) in self._rung:
            raise TaskConflict(f"task {task_id!r} rings agent {agent_id!r}'s phone: answer it")
        self._end_offer(task.id, agent_id)
        now = self.wall()
        task.state, task.agent_id, task.accepted_at = TaskState.ASSIGNED, agent_id, now
        self.routing.accept(task.id, agent_id)  # withdraws other ring-all offers
        self.agent_log(task, "task_accepted", agent_id)
        if self.metrics is not None:
            self.metrics.offers.labels(channel=task.channel, outcome="accepted").inc()
            # From its effective enqueue time: the arrival, or when a scheduled task fell due,
            # or when the customer's reply reopened a ticket (not the days it was pending).
            self.metrics.wait.labels(queue=task.queue, channel=task.channel).observe(
                max(0.0, now - task.enqueued_at)
            )
        await self.change(task, "accepted", by, agent_id=agent_id)
        return task

    async def reject(self, task_id: str, agent_id: str, *, by: str) -> Task:
        task = self.open_task(task_id)
        if agent_id not in task.offered_to:
            raise TaskConflict(f"task {task_id!r} is not offered to agent {agent_id!r}")
        if (task.id, agent_id) in self._rung:
            raise TaskConflict(f"task {task_id!r} rings agent {agent_id!r}'s phone: decline it")
        written = self._back_to_queue(task, agent_id, "reject", "rejected", by)
        if self.metrics is not None:
            self.metrics.offers.labels(channel=task.channel, outcome="rejected").inc()
        if written is not None:
            await written
        return task

    async def complete(
        self,
        task_id: str,
        agent_id: str,
        *,
        by: str,
        disposition: str = "completed",
        notes: str | None = None,
    ) -> Task:
        task = self.open_task(task_id)
        if task.state is not TaskState.ASSIGNED or task.agent_id != agent_id:
            raise TaskConflict(f"task {task_id!r} is not assigned to agent {agent_id!r}")
        if task.channel in LIFECYCLE_CHANNELS:  # a ticket's work ends solved, not closed
            return await self.lifecycle.solve(task, by=by, disposition=disposition, notes=notes)
        self.routing.complete(agent_id, task.id)
        self.agent_log(task, "task_ended", agent_id, reason="completed")
        task.state, task.ended_at = TaskState.COMPLETED, self.wall()
        task.disposition, task.notes = disposition, notes
        self.sla.resolved(task)
        self.close_task(task, "completed")
        if self.on_work_done is not None:
            self.on_work_done(agent_id)
        await self.change(
            task, "completed", by, agent_id=agent_id, data={"disposition": disposition}
        )
        return task

    async def cancel(self, task_id: str, *, by: str, reason: str = "cancelled") -> Task:
        """The customer left (or the integration withdrew it) before an agent accepted it."""
        task = self.open_task(task_id)
        if task.state not in (TaskState.SCHEDULED, TaskState.WAITING, TaskState.OFFERED):
            raise TaskConflict(
                f"task {task_id!r} is {task.state.value}: only one not yet taken is cancelled"
            )
        offered = sorted(task.offered_to)
        for agent_id in offered:
            self._end_offer(task.id, agent_id)
            self.agent_log(task, "task_ended", agent_id, reason="cancelled")
        if task.state is TaskState.SCHEDULED:
            self.followups.cancel(task.id)
        else:
            self.routing.abandon(task.id)  # withdraws the offers (on_withdraw publishes them)
        self.sla.forget(task)
        task.state, task.ended_at, task.disposition = TaskState.CANCELLED, self.wall(), reason
        self.close_task(task, "cancelled")
        await self.change(task, "cancelled", by, data={"reason": reason})
        return task

    async def transfer(
        self,
        task_id: str,
        *,
        by: str,
        queue: str | None = None,
        agent: str | None = None,
        note: str | None = None,
    ) -> Task:
        """To another queue (its requirements become that queue's), or to one agent of the
        task's queue (offered to that agent alone for the queue's offer timeout, then to
        anyone). The effective enqueue time and the history stay, with the ``note``. A pending
        ticket moves to the other queue (department) and stays pending there: the customer's
        reply is routed in that queue."""
        task = self.open_task(task_id)
        if task.state not in OPEN_STATES and task.state is not TaskState.PENDING:
            raise TaskConflict(
                f"task {task_id!r} is {task.state.value}: only a task in a queue, with an "
                "agent or pending is transferred"
            )
        if (queue is None) == (agent is None):
            raise InvalidTask("expected a queue or an agent, one of the two", field="queue")
        if note is not None and len(note) > MAX_MESSAGE_CHARS:
            raise InvalidTask(f"expected at most {MAX_MESSAGE_CHARS} characters", field="note")
        target_queue = task.queue if queue is None else queue
        if self.queue_config(target_queue) is None:
            raise InvalidTask(f"no queue {target_queue!r}", field="queue")
        moved = {
            "from_queue": task.queue,
            "to_queue": target_queue,
            "to_agent": agent,
            "note": note,
        }
        if task.state is TaskState.PENDING:
            if agent is not None:
                raise InvalidTask(
                    "a pending ticket moves to a queue, not to an agent", field="agent"
                )
            if target_queue != task.queue:
                task.queue, task.requirements = target_queue, None
            await self.change(task, "transferred", by, agent_id=task.agent_id, data=moved)
            return task
        if agent is not None:
            acfg = next((a for a in self.cfg.agents if a.id == agent), None)
            if acfg is None:
                raise InvalidTask(f"no agent {agent!r}", field="agent")
            if task.queue not in acfg.queues:
                raise InvalidTask(
                    f"agent {agent!r} is not a member of queue {task.queue!r}", field="agent"
                )
            if acfg.capacity.get(task.channel, 0) < 1:
                raise InvalidTask(f"agent {agent!r} has no {task.channel} capacity", field="agent")
        previous = task.agent_id if task.state is TaskState.ASSIGNED else None
        qcfg = self.queue_config(target_queue)
        try:  # first: a full queue refuses the transfer before anything changed
            self.routing.requeue(
                task.id,
                target_queue,
                preferred_agent=agent,
                preferred_timeout_s=0.0 if agent is None or qcfg is None else qcfg.offer_timeout_s,
            )
        except rc.QueueFull:
            raise TaskConflict(
                f"queue {target_queue!r} is full (max_length)", field="queue"
            ) from None
        for offered in sorted(task.offered_to):  # withdrawn by the requeue
            self._end_offer(task.id, offered)
            self.agent_log(task, "task_ended", offered, reason="transferred")
        if previous is not None:
            self.agent_log(task, "task_ended", previous, reason="transferred")
        if target_queue != task.queue:
            task.requirements = None
        task.queue, task.state, task.agent_id = target_queue, TaskState.WAITING, None
        entry = self.entry(task, "transferred", by, agent_id=previous, data=moved)
        written = self.save(task, [entry], agent_id=previous)
        if previous is not None and self.on_work_done is not None:
            self.on_work_done(previous)
        if written is not None:
            await written
        return task

    async def post_message(
        self, task_id: str, *, sender: str, author: str, text: str
    ) -> dict[str, Any]:
        task = self.open_task(task_id)
        if sender not in SENDERS:
            raise InvalidTask(f"expected one of {SENDERS}", field="sender")
        if not text or len(text) > MAX_MESSAGE_CHARS:
            raise InvalidTask(f"expected 1-{MAX_MESSAGE_CHARS} characters", field="text")
        message = {"at": self.wall(), "sender": sender, "author": author, "text": text}
        task.messages.append(message)
        if sender == "agent":
            self.sla.responded(task)
        if self.metrics is not None:
            self.metrics.messages.labels(channel=task.channel, sender=sender).inc()
        self.publish(task, "message", agent_id=task.agent_id, data=message)
        written = self.submit(TaskWrite(task.row(), messages=[{"task_id": task.id, **message}]))
        if written is not None:
            await written
        if sender == "customer" and task.state in (TaskState.PENDING, TaskState.SOLVED):
            # The customer answered: the ticket is theirs to wait on no more (Zendesk reopens
            # a pending or solved ticket on a customer reply in the same way).
            await self.lifecycle.reopen(task, by=author, why="customer_replied")
        return message

    async def transition(
        self,
        task_id: str,
        state: str,
        *,
        by: str,
        disposition: str | None = None,
        notes: str | None = None,
    ) -> Task:
        """A state asked for by name (``lifecycle.TRANSITIONS``); the API checks who may."""
        task = self.open_task(task_id)
        return await self.lifecycle.request(
            task, state, by=by, disposition=disposition, notes=notes
        )

    # -- history, events, the store --------------------------------------------------------------

    def close_task(self, task: Task, outcome: str) -> None:
        self.sla.forget(task)
        self.tasks.pop(task.id, None)
        if task.external_id is not None:
            self._by_external.pop(task.external_id, None)
        if self.metrics is not None:
            self.metrics.ended.labels(channel=task.channel, outcome=outcome).inc()

    def entry(
        self,
        task: Task,
        event: str,
        actor: str,
        *,
        agent_id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        entry = {
            "at": self.wall(),
            "event": event,
            "actor": actor,
            "agent_id": agent_id,
            "queue": task.queue,
            "data": data,
        }
        task.history.append(entry)
        return entry

    def publish(
        self, task: Task, event: str, *, agent_id: str | None, data: dict[str, Any] | None = None
    ) -> None:
        if self.bus is None:
            return
        self.bus.publish(
            Event(
                type="task",
                at=self.wall(),
                event=event,
                queue=task.queue,
                agent_id=agent_id,
                data={
                    "task_id": task.id,
                    "channel": task.channel,
                    "state": task.state.value,
                    **(data or {}),
                },
            )
        )

    def save(
        self,
        task: Task,
        entries: list[dict[str, Any]],
        *,
        insert: bool = False,
        agent_id: str | None = None,
        publish_data: dict[str, Any] | None = None,
    ) -> asyncio.Future[None] | None:
        for entry in entries:
            who = entry["agent_id"] if agent_id is None else agent_id
            extra = {**(entry["data"] or {}), **(publish_data or {})}
            self.publish(task, entry["event"], agent_id=who, data=extra or None)
        states = []
        if task.state is not task.stored_state:
            last = entries[-1] if entries else {}
            states.append(
                {
                    "task_id": task.id,
                    "at": self.wall(),
                    "to_state": task.state.value,
                    "from_state": None if task.stored_state is None else task.stored_state.value,
                    "actor": last.get("actor"),
                    "agent_id": last.get("agent_id"),
                    "queue": task.queue,
                }
            )
            task.stored_state = task.state
            if self.metrics is not None:
                self.metrics.states.labels(channel=task.channel, state=task.state.value).inc()
        return self.submit(
            TaskWrite(
                task.row(),
                insert=insert,
                events=[{"task_id": task.id, **e} for e in entries],
                states=states,
            )
        )

    def agent_log(
        self, task: Task, state: str, agent_id: str, *, reason: str | None = None
    ) -> None:
        """A task row of the agent event log (offer, accept, end), for occupancy per channel."""
        if self._cdr is not None:
            self._cdr.task_agent_event(
                agent_id,
                state,
                channel=task.channel,
                task_id=task.id,
                reason=reason,
                at=self.wall(),
            )

    def submit(self, write: TaskWrite) -> asyncio.Future[None] | None:
        return None if self.writer is None else self.writer.submit(write)

    async def change(
        self,
        task: Task,
        event: str,
        by: str,
        *,
        insert: bool = False,
        agent_id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """One change an API request made: its history entry and event, awaited on disk."""
        written = self.save(
            task, [self.entry(task, event, by, agent_id=agent_id, data=data)], insert=insert
        )
        if written is not None:
            await written


class PluginTasks:
    """``TaskService`` as plugin steps see it (``engine.plugins.TaskControls``): a plugin gets
    a task's id, and a refusal as a ValueError naming the field, not the service's types."""

    def __init__(self, service: TaskService) -> None:
        self._service = service

    async def create_task(
        self,
        *,
        channel: str,
        queue: str,
        created_by: str,
        subject: str | None = None,
        data: dict[str, Any] | None = None,
        customer: dict[str, Any] | None = None,
        priority: int = 0,
        requirements: Mapping[str, int] | None = None,
        external_id: str | None = None,
        not_before: float | None = None,
    ) -> str:
        try:
            task, _new = await self._service.create(
                channel=channel, queue=queue, created_by=created_by, subject=subject, data=data,
                customer=customer, priority=priority, requirements=requirements,
                external_id=external_id,
                not_before=not_before,
            )  # fmt: skip
        except TaskError as exc:
            raise ValueError(f"{exc.field}: {exc}" if exc.field else str(exc)) from exc
        return task.id
