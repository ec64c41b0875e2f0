"""A task: one non-voice interaction (chat, e-mail, social message, ticket) and its life.

A task is created through the API, waits in a queue as a routing task of its channel (the same
Router as the calls), is offered to an agent, accepted (assigned) and completed; an offer that is
rejected or times out sends it back with that agent excluded. States and the moves between them:

    waiting  --offer-->            offered
    offered  --accept-->           assigned
    offered  --reject/timeout-->   waiting (or offered again at once, to the next agent)
    waiting, offered, assigned --transfer-->  waiting (in the new queue, or for the named agent)
    assigned --complete-->         completed
    waiting, offered --cancel-->   cancelled (the customer left before an agent took it)

Times are wall-clock epoch seconds, as in the CDR store; the routing core's monotonic times are
derived from them when a task is (re)enqueued.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class TaskState(StrEnum):
    WAITING = "waiting"
    OFFERED = "offered"
    ASSIGNED = "assigned"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


OPEN_STATES = frozenset({TaskState.WAITING, TaskState.OFFERED, TaskState.ASSIGNED})


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

    def row(self) -> dict[str, Any]:
        """The ``tasks`` row (engine.storage.schema.tasks)."""
        wait = None if self.accepted_at is None else max(0.0, self.accepted_at - self.arrived_at)
        handle = (
            None
            if self.accepted_at is None or self.ended_at is None or self.disposition is None
            else max(0.0, self.ended_at - self.accepted_at)
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
        )

    def view(self) -> dict[str, Any]:
        """What the API shows: the row, who it is offered to, its history and messages."""
        out = self.row()
        out["offered_to"] = sorted(self.offered_to)
        out["history"] = self.history
        out["messages"] = self.messages
        return out
