"""A task: one non-voice interaction (chat, e-mail, social message, ticket) and its life.

A task is created through the API, waits in a queue as a routing task of its channel (the same
Router as the calls), is offered to an agent, accepted (assigned) and completed; an offer that is
rejected or times out sends it back with that agent excluded. States and the moves between them:

    scheduled --not_before-->      waiting (a follow-up created for later enters routing then)
    waiting  --offer-->            offered
    offered  --accept-->           assigned
    offered  --reject/timeout-->   waiting (or offered again at once, to the next agent)
    waiting, offered, assigned --transfer-->  waiting (in the new queue, or for the named agent)
    assigned --complete-->         completed
    waiting, offered, scheduled --cancel-->   cancelled (the customer left before an agent took it)

Tickets have the lifecycle help desks have (Zendesk, Freshdesk, ServiceNow), in
``engine.tasks.lifecycle``: assigned -> pending (waiting on the customer: off the agent, SLA
clock paused) -> waiting again on the customer's reply (to the last agent first) -> ... -> solved
(instead of completed) -> closed (after the queue's ``close_solved_after_s``, or by hand), and
solved -> waiting again (reopened). ``status`` in the API view gives the help-desk word: new,
open, pending, solved, closed.

Times are wall-clock epoch seconds, as in the CDR store; the routing core's monotonic times are
derived from them when a task is (re)enqueued.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from engine.storage.customers import customer_keys


class TaskState(StrEnum):
    SCHEDULED = "scheduled"
    WAITING = "waiting"
    OFFERED = "offered"
    ASSIGNED = "assigned"
    PENDING = "pending"
    SOLVED = "solved"
    COMPLETED = "completed"
    CLOSED = "closed"
    CANCELLED = "cancelled"


# In the Router (waiting in a queue, offered, or holding an agent's capacity).
OPEN_STATES = frozenset({TaskState.WAITING, TaskState.OFFERED, TaskState.ASSIGNED})
# Kept by the service (and recovered after a restart): the open ones and those that wait for a
# time or for the customer.
LIVE_STATES = OPEN_STATES | {TaskState.SCHEDULED, TaskState.PENDING, TaskState.SOLVED}
# The channels with the ticket lifecycle (pending, solved, closed, reopen).
LIFECYCLE_CHANNELS = frozenset({"ticket"})


class TaskError(Exception):
    """A task request the service refused; ``status`` is the HTTP status to answer with."""

    status = 409

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownTask(TaskError):
    """No task with that id, open or stored."""

    status = 404


class TaskConflict(TaskError):
    """The task is not in a state that allows this (accepting a task not offered to you,
    completing one you do not hold, cancelling one already assigned)."""

    status = 409


class IllegalTransition(TaskConflict):
    """A state change the task's lifecycle does not have from its state; ``allowed`` names the
    states it may go to from there (empty: none by request)."""

    def __init__(self, message: str, *, allowed: list[str]) -> None:
        super().__init__(message, field="state")
        self.allowed = allowed


class TaskUnavailable(TaskError):
    """The daemon cannot take the task now, through no fault of the request: the Router holds
    as many calls and tasks as its arrays have room for (``routing_core.CapacityExceeded``).
    Retrying once tasks have ended succeeds; a full *queue* (its ``max_length``) is a
    ``TaskConflict`` instead."""

    status = 503


class InvalidTask(TaskError):
    """A field of the request names what does not exist (a queue, a channel, a skill, an agent)
    or is out of range; ``field`` is its path, e.g. ``requirements.billing``."""

    status = 422


@dataclass(slots=True)
class Task:
    id: str
    channel: str
    queue: str
    priority: int
    arrived_at: float
    enqueued_at: float  # effective: a transferred or recovered task keeps it
    created_by: str
    requirements: dict[str, int] | None = None  # None: the queue's
    customer: dict[str, Any] | None = None
    subject: str | None = None
    data: dict[str, Any] | None = None
    external_id: str | None = None
    state: TaskState = TaskState.WAITING
    agent_id: str | None = None  # offered to, then assigned to
    offered_to: set[str] = field(default_factory=set)
    first_offer_at: float | None = None
    accepted_at: float | None = None
    ended_at: float | None = None
    disposition: str | None = None
    notes: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    # SLA (engine.tasks.sla): due times are effective, moved on by the time the clock was paused
    first_response_at: float | None = None
    first_response_due_at: float | None = None
    resolution_due_at: float | None = None
    sla_paused_at: float | None = None
    first_response_breached: bool = False
    resolution_breached: bool = False
    solved_at: float | None = None
    not_before: float | None = None  # scheduled: enters routing at this time
    stored_state: TaskState | None = None  # as last written: a change is a task_states row

    def row(self) -> dict[str, Any]:
        """The ``tasks`` row (engine.storage.schema.tasks)."""
        # a scheduled task waits from when it fell due, not from when it was made
        start = max(self.arrived_at, self.not_before or self.arrived_at)
        wait = None if self.accepted_at is None else max(0.0, self.accepted_at - start)
        done_at = self.solved_at or self.ended_at  # a ticket's work ends when it is solved
        handle = (
            None
            if self.accepted_at is None or done_at is None or self.disposition is None
            else max(0.0, done_at - self.accepted_at)
        )
        return {
            "id": self.id,
            "external_id": self.external_id,
            "channel": self.channel,
            "queue": self.queue,
            "state": self.state.value,
            "priority": self.priority,
            "requirements": self.requirements,
            "customer": self.customer,
            "subject": self.subject,
            "data": self.data,
            "agent_id": self.agent_id,
            "created_by": self.created_by,
            "arrived_at": self.arrived_at,
            "enqueued_at": self.enqueued_at,
            "first_offer_at": self.first_offer_at,
            "accepted_at": self.accepted_at,
            "ended_at": self.ended_at,
            "disposition": self.disposition,
            "notes": self.notes,
            "wait_s": wait,
            "handle_s": handle,
            "first_response_at": self.first_response_at,
            "first_response_due_at": self.first_response_due_at,
            "resolution_due_at": self.resolution_due_at,
            "sla_paused_at": self.sla_paused_at,
            "first_response_breached": self.first_response_breached,
            "resolution_breached": self.resolution_breached,
            "solved_at": self.solved_at,
            "not_before": self.not_before,
            **customer_keys(self.customer),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Task:
        return cls(
            id=row["id"],
            channel=row["channel"],
            queue=row["queue"],
            priority=row["priority"],
            arrived_at=row["arrived_at"],
            enqueued_at=row["enqueued_at"],
            created_by=row["created_by"] or "",
            requirements=row["requirements"],
            customer=row["customer"],
            subject=row["subject"],
            data=row["data"],
            external_id=row["external_id"],
            state=TaskState(row["state"]),
            agent_id=row["agent_id"],
            first_offer_at=row["first_offer_at"],
            accepted_at=row["accepted_at"],
            ended_at=row["ended_at"],
            disposition=row["disposition"],
            notes=row["notes"],
            first_response_at=row["first_response_at"],
            first_response_due_at=row["first_response_due_at"],
            resolution_due_at=row["resolution_due_at"],
            sla_paused_at=row["sla_paused_at"],
            first_response_breached=bool(row["first_response_breached"]),
            resolution_breached=bool(row["resolution_breached"]),
            solved_at=row["solved_at"],
            not_before=row["not_before"],
            stored_state=TaskState(row["state"]),
        )

    @property
    def status(self) -> str:
        """The help-desk word for the state: new (not yet taken), open (taken, or back from the
        customer), pending, solved, closed; scheduled, completed, cancelled as they are."""
        if self.state in (TaskState.WAITING, TaskState.OFFERED):
            return "new" if self.accepted_at is None else "open"
        if self.state is TaskState.ASSIGNED:
            return "open"
        return self.state.value

    def view(self) -> dict[str, Any]:
        """What the API shows: the row, who it is offered to, its history and messages."""
        out = self.row()
        out["status"] = self.status
        out["offered_to"] = sorted(self.offered_to)
        out["history"] = self.history
        out["messages"] = self.messages
        return out
