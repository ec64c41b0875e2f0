"""SLA clocks of tasks: first response and resolution due times, pauses, and breaches.

How this works: a queue's ``sla`` names targets per task channel (``first_response_s``,
``resolution_s``). When a task is created its due times are set from its start (arrival, or
``not_before`` for a scheduled one) and stored on the task's row; a timer per due time, through
the service's ``Scheduler`` (the event loop, or a test's ``ManualClock``), reports a breach when
it passes unmet: a history entry ``sla_breached``, the event on the stream and
``acd_task_sla_breaches_total{queue,channel,kind}``. A breach is reported once and changes
nothing else: the task goes on as it was.

The first response is met by the agent side's first message, or by the task being moved to
pending, solved or completed (the agent answered the customer some other way); the resolution by
solved or completed. While a ticket is pending or solved the clock is paused (``sla_paused_at``):
on resuming, the due times still to meet move on by the paused time, as help desks' "business
hours" SLAs do for "on hold". Due times are wall-clock epoch seconds like every time on a task;
the timers convert them to the scheduler's clock when armed. After a restart ``recover`` re-arms
them, and a due time that passed while the daemon was down is reported as breached at once.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from engine.runtime.clock import Cancellable
from engine.tasks.model import Task

if TYPE_CHECKING:
    from engine.tasks.service import TaskService

KINDS = ("first_response", "resolution")


class SlaClock:
    def __init__(self, service: TaskService) -> None:
        self._s = service
        self._timers: dict[tuple[str, str], Cancellable] = {}

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def start(self, task: Task) -> None:
        """A new task: due times from the queue's targets for its channel, timers armed."""
        qcfg = self._s.queue_config(task.queue)
        target = None if qcfg is None else qcfg.sla.get(task.channel)
        if target is None:
            return
        begin = max(task.arrived_at, task.not_before or task.arrived_at)
        if target.first_response_s > 0:
            task.first_response_due_at = begin + target.first_response_s
        if target.resolution_s > 0:
            task.resolution_due_at = begin + target.resolution_s
        self._arm(task)

    def due(self, task: Task, kind: str) -> float | None:
        """The due time of ``kind`` still to meet (None: met, breached or no target)."""
        if kind == "first_response":
            if task.first_response_at is not None or task.first_response_breached:
                return None
            return task.first_response_due_at
        if task.resolution_breached or task.solved_at is not None or task.ended_at is not None:
            return None
        return task.resolution_due_at

    def _arm(self, task: Task) -> None:
        if task.sla_paused_at is not None:
            return
        now_wall = self._s.wall()
        for kind in KINDS:
            due = self.due(task, kind)
            key = (task.id, kind)
            old = self._timers.pop(key, None)
            if old is not None:
                old.cancel()
            if due is not None:
                self._timers[key] = self._s.call_after(
                    due - now_wall, task.id, functools.partial(self._breached, task.id, kind)
                )

    def _cancel(self, task_id: str, kind: str) -> None:
        timer = self._timers.pop((task_id, kind), None)
        if timer is not None:
            timer.cancel()

    def responded(self, task: Task) -> None:
        """The agent's side answered the customer (the first time counts)."""
        if task.first_response_at is None:
            task.first_response_at = self._s.wall()
            self._cancel(task.id, "first_response")

    def resolved(self, task: Task) -> None:
        """Solved or completed: both targets are met (or were breached) and the clock stops."""
        self.responded(task)
        self._cancel(task.id, "resolution")
        self.pause(task)

    def pause(self, task: Task) -> None:
        if task.sla_paused_at is None:
            task.sla_paused_at = self._s.wall()
        for kind in KINDS:
            self._cancel(task.id, kind)

    def resume(self, task: Task) -> None:
        """Back from pending or solved: the due times still to meet move on by the pause."""
        if task.sla_paused_at is None:
            return
        paused_s = max(0.0, self._s.wall() - task.sla_paused_at)
        task.sla_paused_at = None
        if task.first_response_due_at is not None and task.first_response_at is None:
            task.first_response_due_at += paused_s
        if task.resolution_due_at is not None and not task.resolution_breached:
            task.resolution_due_at += paused_s
        self._arm(task)

    def forget(self, task: Task) -> None:
        for kind in KINDS:
            self._cancel(task.id, kind)

    def recover(self, task: Task) -> None:
        """After a restart: due times that passed while the daemon was down are breaches now;
        the others are armed again."""
        if task.sla_paused_at is not None:
            return
        now_wall = self._s.wall()
        for kind in KINDS:
            due = self.due(task, kind)
            if due is not None and due <= now_wall:
                self._breach(task, kind, during_downtime=True)
        self._arm(task)

    def _breached(self, task_id: str, kind: str) -> None:
        self._timers.pop((task_id, kind), None)
        task = self._s.tasks.get(task_id)
        if task is None or task.sla_paused_at is not None or self.due(task, kind) is None:
            return
        self._breach(task, kind)

    def _breach(self, task: Task, kind: str, *, during_downtime: bool = False) -> None:
        due = self.due(task, kind)
        if kind == "first_response":
            task.first_response_breached = True
        else:
            task.resolution_breached = True
        metrics = self._s.metrics
        if metrics is not None:
            metrics.sla_breaches.labels(queue=task.queue, channel=task.channel, kind=kind).inc()
        data: dict[str, object] = {"kind": kind, "due_at": due}
        if during_downtime:
            data["during_downtime"] = True
        self._s.save(
            task, [self._s.entry(task, "sla_breached", "daemon", agent_id=task.agent_id, data=data)]
        )
