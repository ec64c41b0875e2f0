"""Public value types of the routing core: strategies, states, requirements, queue specs, offers, errors.

How this works: everything here is an immutable description. The `Router` turns these descriptions into
dense numpy arrays (skills, requirement sets, relaxation steps) that the numba kernels read; the kernels
never see these objects. Enum values are the integers stored in those arrays, so they are part of the
kernel ABI and must not be renumbered.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Strategy(enum.IntEnum):
    """How a queue orders its eligible free agents (after the lowest queue penalty tier, see router)."""

    LONGEST_IDLE = (
        0  # earliest last-idle time first (Asterisk leastrecent, FreeSWITCH longest-idle-agent)
    )
    FEWEST_CALLS = 1  # fewest calls taken (Asterisk fewestcalls)
    LEAST_TALK_TIME = 2  # least accumulated talk time (FreeSWITCH least-talk-time)
    MOST_SKILLED = 3  # highest proficiency sum over the task's required skills
    ROUND_ROBIN = 4  # next member position after the last agent offered (Asterisk rrmemory)
    LINEAR = 5  # lowest queue membership position (Asterisk linear)
    RANDOM = 6  # uniform among eligible, from the Router's seeded generator
    WEIGHTED_RANDOM = 7  # proportional to 1 + proficiency sum over the required skills
    RING_ALL = 8  # offer to every eligible agent; first accept wins, the rest are withdrawn


class AgentState(enum.IntEnum):
    """Agent presence as the routing core sees it. Allowed transitions live in `routing_core.states`."""

    LOGGED_OUT = 0
    AVAILABLE = 1
    RESERVED = 2  # at least one offer is ringing
    BUSY = 3  # at least one accepted task, no offer ringing
    WRAP_UP = 4  # after-call work; AVAILABLE again when the queue's wrap_up_s has passed
    NOT_READY = 5  # paused, with a reason (e.g. "auto-paused")


@dataclass(frozen=True, slots=True)
class Requirement:
    """The task needs `skill` at proficiency >= `min_level` (1..255; 0 in the matrix means lacks)."""

    skill: int
    min_level: int = 1


@dataclass(frozen=True, slots=True)
class RelaxStep:
    """From `after_s` seconds of waiting on, route with these requirements and this penalty bound.

    `requirements=None` keeps the task's own requirements; `max_penalty=None` means no penalty bound.
    Before the first step applies the task uses its own requirements and every penalty is eligible.
    """

    after_s: float
    requirements: tuple[Requirement, ...] | None = None
    max_penalty: int | None = None


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """One queue: its agent-ordering strategy, default requirements, relaxation steps and policies."""

    name: str
    strategy: Strategy = Strategy.LONGEST_IDLE
    requirements: tuple[Requirement, ...] = ()
    steps: tuple[RelaxStep, ...] = ()
    weight: int = 0
    wrap_up_s: float = 0.0
    max_length: int = 0
    reject_delay_s: float = 0.0
    busy_delay_s: float = 0.0
    no_answer_delay_s: float = 0.0
    auto_pause_after: int = 0
    # Asterisk `retry`: after a ring that ended unanswered (any reject reason) with nobody else
    # ringing, the task is offered to nobody for this long. Per task, where the delays above are
    # per agent.
    retry_delay_s: float = 0.0
    # Priority aging: a waiting task's priority grows by one point per 1 / this many minutes of
    # its wait (from its effective enqueue time), so a long wait can overtake a higher priority.
    priority_aging_per_min: float = 0.0


@dataclass(frozen=True, slots=True)
class Offer:
    """The routing core reserved `agent_id` for `task_id`; the engine now rings the agent."""

    task_id: str
    agent_id: str
    queue: str


class RoutingError(Exception):
    """Base of every error the Router raises; always a misuse of the API, never a peer's fault."""


class UnknownAgent(RoutingError, KeyError):
    """The agent id was never added. Not raised for a known agent in the wrong state (InvalidTransition)."""


class UnknownTask(RoutingError, KeyError):
    """The task id is not in the router: never enqueued, or already completed or abandoned."""


class UnknownQueue(RoutingError, KeyError):
    """The queue name was never added with `add_queue`."""


class CapacityExceeded(RoutingError):
    """A fixed-size array is full (max_agents, max_tasks, skills, channels). Not a queue limit: QueueFull."""


class QueueFull(RoutingError):
    """The queue already holds `max_length` tasks (waiting or offered); the engine should overflow it."""


class InvalidTransition(RoutingError):
    """The call is not allowed in the current agent or task state (e.g. accept without an offer)."""


class InvalidArgument(RoutingError, ValueError):
    """An argument is out of range (skill index, level, negative time span, duplicate id)."""
