"""Skill-based routing core: struct-of-arrays state, numba kernels, policies, simulator.

Pure computation. No asyncio, no sockets, no clock: time is always an argument.
"""

from routing_core.router import Router
from routing_core.states import AGENT_TRANSITIONS
from routing_core.types import (
    AgentState,
    CapacityExceeded,
    InvalidArgument,
    InvalidTransition,
    Offer,
    QueueFull,
    QueueSpec,
    RelaxStep,
    Requirement,
    RoutingError,
    Strategy,
    UnknownAgent,
    UnknownQueue,
    UnknownTask,
)

__all__ = [
    "AGENT_TRANSITIONS",
    "AgentState",
    "CapacityExceeded",
    "InvalidArgument",
    "InvalidTransition",
    "Offer",
    "QueueFull",
    "QueueSpec",
    "RelaxStep",
    "Requirement",
    "Router",
    "RoutingError",
    "Strategy",
    "UnknownAgent",
    "UnknownQueue",
    "UnknownTask",
]
