"""Scheduled follow-ups: a task created with ``not_before`` enters its queue at that time.

How this works: such a task (a callback to make, a check-in due at a time) is created in state
``scheduled``, stored like any other, with ``not_before`` as its effective enqueue time (its wait
starts then, so among tasks that fell due together the earliest goes first). One timer per
scheduled task, on the service's ``Scheduler``, moves it to ``waiting`` in its queue when due.
After a restart ``arm`` is called again for every scheduled task; one that fell due while the
daemon was down enters its queue at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import routing_core as rc
from engine.runtime.clock import Cancellable
from engine.tasks.model import Task, TaskState

if TYPE_CHECKING:
    from engine.tasks.service import TaskService


class FollowUps:
    def __init__(self, service: TaskService) -> None:
        self._s = service
        self._timers: dict[str, Cancellable] = {}

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def arm(self, task: Task) -> None:
        if task.state is not TaskState.SCHEDULED or task.not_before is None:
            return
        self._timers[task.id] = self._s.call_after(
            task.not_before - self._s.wall(), task.id, lambda: self._fall_due(task.id)
        )

    def cancel(self, task_id: str) -> None:
        timer = self._timers.pop(task_id, None)
        if timer is not None:
            timer.cancel()

    def _fall_due(self, task_id: str) -> None:
        """A scheduled task's time came: it enters its queue (with ``not_before`` as its
        effective enqueue time, so one that fell due while the daemon was down keeps its place)."""
        self._timers.pop(task_id, None)
        task = self._s.tasks.get(task_id)
        if task is None or task.state is not TaskState.SCHEDULED:
            return
        try:
            self._s.enqueue(task)
        except rc.RoutingError as exc:  # e.g. its queue is full: it cannot be routed
            task.state, task.ended_at, task.disposition = (
                TaskState.CANCELLED, self._s.wall(), "not_enqueued",
            )  # fmt: skip
            self._s.sla.forget(task)
            self._s.close_task(task, "cancelled")
            self._s.save(
                task, [self._s.entry(task, "cancelled", "daemon", data={"reason": str(exc)})]
            )
            return
        task.state = TaskState.WAITING
        self._s.save(task, [self._s.entry(task, "due", "daemon")])
