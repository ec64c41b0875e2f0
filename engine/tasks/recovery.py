"""Recovery after a restart: the tasks the daemon had not finished come back as they were.

How this works: the store has every live task's row (``engine.storage.tasks.open_tasks``, in
queue order: priority, then effective enqueue time). Waiting, offered and assigned ones go back
into their queues with their original effective enqueue time (an assigned one offered first to
its agent, for the queue's offer timeout, when that agent is still a member); scheduled ones
back on their ``not_before`` timer; pending and solved tickets back in memory with a solved one's
close timer. SLA timers are armed again, and a due time that passed while the daemon was down is
reported as breached now. A task whose queue is gone, or that its queue no longer takes, is
cancelled with the reason in its history.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

import routing_core as rc
from engine.config import SERVICE_CHANNELS
from engine.storage import Store
from engine.storage import tasks as task_store
from engine.tasks.model import OPEN_STATES, Task, TaskState

if TYPE_CHECKING:
    from engine.tasks.service import TaskService

log = structlog.stdlib.get_logger("acd.tasks")


async def recover_tasks(s: TaskService, store: Store) -> int:
    """Put the tasks the daemon had open when it stopped back in their queues, in their
    original order (priority, then effective enqueue time); scheduled, pending and solved
    ones back on their timers. SLA due times that passed meanwhile are breaches now.
    Returns how many."""
    rows = await task_store.open_tasks(store)
    ids = [r["id"] for r in rows]
    histories = await task_store.history(store, ids) if ids else {}
    transcripts = await task_store.messages(store, ids) if ids else {}
    recovered = 0
    for row in rows:
        task = Task.from_row(row)
        task.history = histories.get(task.id, [])
        task.messages = transcripts.get(task.id, [])
        was, agent = task.state, task.agent_id
        if s.queue_config(task.queue) is None or task.channel not in SERVICE_CHANNELS:
            task.state, task.ended_at, task.disposition = (
                TaskState.CANCELLED, s.wall(), "queue_removed",
            )  # fmt: skip
            s.save(
                task,
                [s.entry(task, "cancelled", "daemon", data={"reason": "queue_removed"})],
            )
            continue
        if was not in OPEN_STATES:  # scheduled, pending, solved: not in a queue
            s.keep(task)
            s.followups.arm(task)  # one due while the daemon was down enters its queue now
            s.lifecycle.recover(task)
            s.sla.recover(task)
            recovered += 1
            continue
        task.state, task.agent_id = TaskState.WAITING, None
        # An assigned task goes first to the agent who had it (for the offer timeout),
        # when that agent is still a member of the queue.
        member = agent is not None and any(
            a.id == agent and task.queue in a.queues for a in s.cfg.agents
        )
        try:
            s.enqueue(task, preferred_agent=agent if was is TaskState.ASSIGNED and member else None)
        except rc.RoutingError as exc:  # e.g. the queue's max_length was lowered meanwhile
            task.state, task.ended_at, task.disposition = (
                TaskState.CANCELLED,
                s.wall(),
                "not_requeued",
            )
            s.save(task, [s.entry(task, "cancelled", "daemon", data={"reason": str(exc)})])
            continue
        s.keep(task)
        s.save(
            task,
            [s.entry(task, "requeued_after_restart", "daemon", data={"was": was.value})],
        )
        s.sla.recover(task)
        recovered += 1
    if recovered:
        log.info("tasks_recovered", tasks=recovered)
    return recovered
