"""The ticket lifecycle: pending, solved, closed, reopened; and the state moves asked for by name.

How this works: ``TRANSITIONS`` is the table of the moves a client may ask for
(``PATCH /api/v1/tasks/{id}`` ``{"state": ...}`` or ``POST .../transitions``), per channel kind
and state; anything not in it is refused with the states that are (``IllegalTransition``, 409).
Tickets (``LIFECYCLE_CHANNELS``) move as in Zendesk, Freshdesk or ServiceNow:

    assigned --pending-->  pending   off the agent's capacity, SLA clock paused (waiting on the
                                     customer or another department)
    pending  --open-->     waiting   the customer replied (a customer message does it): routed
                                     again, to its last agent alone for the queue's
                                     ``reopen_sticky_s`` when that agent is logged in
    assigned, pending --solved--> solved   the resolution; off the agent, SLA clock stopped
    solved   --open-->     waiting   reopened, as from pending
    solved   --closed-->   closed    by hand, or by itself after the queue's
                                     ``close_solved_after_s``; closed is final

Other channels end with ``completed`` (``/complete``); a ticket's ``/complete`` solves it.
Anything not yet taken (scheduled, waiting, offered) may be ``cancelled``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import routing_core as rc
from engine.runtime.clock import Cancellable
from engine.tasks.model import (
    LIFECYCLE_CHANNELS,
    IllegalTransition,
    Task,
    TaskConflict,
    TaskState,
)

if TYPE_CHECKING:
    from engine.tasks.service import TaskService

S = TaskState
_NOT_TAKEN = {S.SCHEDULED: ("cancelled",), S.WAITING: ("cancelled",), S.OFFERED: ("cancelled",)}
# (has the ticket lifecycle, state) -> the states a client may ask for from there.
TRANSITIONS: dict[tuple[bool, TaskState], tuple[str, ...]] = {
    **{(True, state): allowed for state, allowed in _NOT_TAKEN.items()},
    **{(False, state): allowed for state, allowed in _NOT_TAKEN.items()},
    (True, S.ASSIGNED): ("pending", "solved"),
    (True, S.PENDING): ("open", "solved"),
    (True, S.SOLVED): ("open", "closed"),
    (False, S.ASSIGNED): ("completed",),
}


# Every state a client may name (what is allowed depends on the task).
REQUESTABLE = ("pending", "open", "solved", "closed", "cancelled", "completed")


def allowed(task: Task) -> tuple[str, ...]:
    return TRANSITIONS.get((task.channel in LIFECYCLE_CHANNELS, task.state), ())


class Lifecycle:
    """The ticket states beyond routing, with the auto-close timers of solved tickets."""

    def __init__(self, service: TaskService) -> None:
        self._s = service
        self._close_timers: dict[str, Cancellable] = {}

    def close(self) -> None:
        for timer in self._close_timers.values():
            timer.cancel()
        self._close_timers.clear()

    def check(self, task: Task, wanted: str) -> None:
        if wanted not in allowed(task):
            options = allowed(task)
            raise IllegalTransition(
                f"task {task.id!r} is {task.state.value}: it may go to "
                + (", ".join(options) if options else "no other state by request"),
                allowed=list(options),
            )

    async def request(
        self,
        task: Task,
        state: str,
        *,
        by: str,
        disposition: str | None = None,
        notes: str | None = None,
    ) -> Task:
        """The move to ``state`` a client asked for, if the table has it from the task's state."""
        self.check(task, state)
        if state == "pending":
            return await self.pending(task, by=by)
        if state == "solved":
            return await self.solve(task, by=by, disposition=disposition or "solved", notes=notes)
        if state == "open":
            return await self.reopen(task, by=by)
        if state == "closed":
            return await self.close_ticket(task, by=by)
        if state == "cancelled":
            return await self._s.cancel(task.id, by=by)
        return await self._s.complete(  # completed
            task.id, task.agent_id or "", by=by, disposition=disposition or "completed", notes=notes
        )

    def _release(self, task: Task) -> None:
        """An assigned ticket leaves its agent's capacity (the agent keeps it as its last)."""
        if task.state is TaskState.ASSIGNED and task.agent_id is not None:
            self._s.routing.complete(task.agent_id, task.id)
            self._s.agent_log(task, "task_ended", task.agent_id, reason="released")
            if self._s.on_work_done is not None:
                self._s.on_work_done(task.agent_id)

    async def pending(self, task: Task, *, by: str) -> Task:
        self.check(task, "pending")
        self._release(task)
        task.state = TaskState.PENDING
        self._s.sla.responded(task)  # asking the customer is answering them
        self._s.sla.pause(task)
        await self._s.change(task, "pending", by, agent_id=task.agent_id)
        return task

    async def solve(
        self, task: Task, *, by: str, disposition: str = "solved", notes: str | None = None
    ) -> Task:
        self.check(task, "solved")
        self._release(task)
        now = self._s.wall()
        task.state, task.solved_at = TaskState.SOLVED, now
        task.disposition, task.notes = disposition, notes if notes is not None else task.notes
        self._s.sla.resolved(task)
        self._arm_close(task)
        await self._s.change(
            task, "solved", by, agent_id=task.agent_id, data={"disposition": disposition}
        )
        return task

    async def reopen(self, task: Task, *, by: str, why: str = "reopened") -> Task:
        """Pending or solved -> waiting in its queue again, to the last agent first."""
        self.check(task, "open")
        was = task.state
        last = task.agent_id
        qcfg = self._s.queue_config(task.queue)
        sticky_s = 0.0 if qcfg is None else qcfg.reopen_sticky_s
        sticky = last if sticky_s > 0 and last is not None and self._may_have(task, last) else None
        enqueued_at, task.enqueued_at = task.enqueued_at, self._s.wall()  # the reply: new work
        try:
            self._s.enqueue(task, preferred_agent=sticky, preferred_timeout_s=sticky_s)
        except rc.RoutingError as exc:  # full (max_length), or gone from the config
            task.enqueued_at = enqueued_at
            reason = "is full (max_length)" if isinstance(exc, rc.QueueFull) else f"refused: {exc}"
            raise TaskConflict(f"queue {task.queue!r} {reason}", field="queue") from None
        self._cancel_close(task.id)
        task.state, task.agent_id = TaskState.WAITING, None
        task.solved_at, task.ended_at, task.disposition = None, None, None
        self._s.sla.resume(task)
        await self._s.change(
            task,
            why,
            by,
            agent_id=last,
            data={
                "from": was.value,
                "sticky_agent": sticky,
                "sticky_s": sticky_s if sticky else None,
            },
        )
        return task

    def _may_have(self, task: Task, agent_id: str) -> bool:
        """The last agent is still a logged-in member of the queue with capacity for it."""
        acfg = next((a for a in self._s.cfg.agents if a.id == agent_id), None)
        if acfg is None or task.queue not in acfg.queues or acfg.capacity.get(task.channel, 0) < 1:
            return False
        try:
            return self._s.routing.agent_state(agent_id) is not rc.AgentState.LOGGED_OUT
        except rc.UnknownAgent:
            return False

    async def close_ticket(self, task: Task, *, by: str) -> Task:
        self.check(task, "closed")
        self._closed(task)
        await self._s.change(task, "closed", by, agent_id=task.agent_id)
        return task

    def _closed(self, task: Task) -> None:
        self._cancel_close(task.id)
        task.state, task.ended_at = TaskState.CLOSED, self._s.wall()
        self._s.sla.forget(task)
        self._s.close_task(task, "closed")

    # -- closing solved tickets by themselves ----------------------------------------------------

    def _arm_close(self, task: Task) -> None:
        qcfg = self._s.queue_config(task.queue)
        after_s = 0.0 if qcfg is None else qcfg.close_solved_after_s
        if after_s <= 0 or task.solved_at is None:
            return
        self._cancel_close(task.id)
        self._close_timers[task.id] = self._s.call_after(
            task.solved_at + after_s - self._s.wall(), task.id, lambda: self._close_due(task.id)
        )

    def _cancel_close(self, task_id: str) -> None:
        timer = self._close_timers.pop(task_id, None)
        if timer is not None:
            timer.cancel()

    def _close_due(self, task_id: str) -> None:
        self._close_timers.pop(task_id, None)
        task = self._s.tasks.get(task_id)
        if task is None or task.state is not TaskState.SOLVED:
            return
        self._closed(task)
        self._s.save(
            task,
            [
                self._s.entry(
                    task,
                    "closed",
                    "daemon",
                    agent_id=task.agent_id,
                    data={"reason": "solved_timeout"},
                )
            ],
        )

    def recover(self, task: Task) -> None:
        """After a restart: a solved ticket's close timer again (at once if it is overdue)."""
        if task.state is TaskState.SOLVED:
            self._arm_close(task)
