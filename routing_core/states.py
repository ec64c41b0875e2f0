"""Agent state table, kept in one place in the style of h11's `_state.py`.

How this works: `AGENT_TRANSITIONS` maps each state to the states it may move to. The Router changes an
agent's state only through one function that checks this table, so a transition missing here is a bug that
surfaces as `InvalidTransition` instead of a silently corrupted agent. `EVENT_ALLOWED_FROM` lists, per API
call that an agent (or the engine on its behalf) makes, the states in which the call is legal.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from routing_core.types import AgentState

_S = AgentState

AGENT_TRANSITIONS: Final = MappingProxyType(
    {
        _S.LOGGED_OUT: frozenset({_S.AVAILABLE}),  # login
        _S.AVAILABLE: frozenset(
            {
                _S.RESERVED,  # dispatch offered a task
                _S.NOT_READY,  # set_not_ready
                _S.LOGGED_OUT,  # logout
            }
        ),
        _S.RESERVED: frozenset(
            {
                _S.RESERVED,  # another offer on a multi-capacity channel, or one of two offers accepted
                _S.BUSY,  # accept (no other offer ringing)
                _S.AVAILABLE,  # reject / timeout / abandon / ring-all withdrawal
                _S.NOT_READY,  # auto-pause after N consecutive misses
            }
        ),
        _S.BUSY: frozenset(
            {
                _S.RESERVED,  # offered another task on a channel with spare capacity
                _S.WRAP_UP,  # complete, queue has wrap_up_s > 0
                _S.AVAILABLE,  # complete, no wrap-up
                _S.NOT_READY,  # complete while a pause (auto-pause or requested) is pending
            }
        ),
        _S.WRAP_UP: frozenset({_S.AVAILABLE, _S.NOT_READY, _S.LOGGED_OUT}),
        _S.NOT_READY: frozenset({_S.AVAILABLE, _S.NOT_READY, _S.LOGGED_OUT}),
    }
)

EVENT_ALLOWED_FROM: Final = MappingProxyType(
    {
        "login": frozenset({_S.LOGGED_OUT}),
        "logout": frozenset({_S.AVAILABLE, _S.NOT_READY, _S.WRAP_UP, _S.LOGGED_OUT}),
        "set_ready": frozenset({_S.AVAILABLE, _S.NOT_READY, _S.WRAP_UP}),
        # From RESERVED or BUSY the pause is pending and applies when the agent's last task completes.
        "set_not_ready": frozenset({_S.AVAILABLE, _S.NOT_READY, _S.WRAP_UP, _S.RESERVED, _S.BUSY}),
    }
)

# States in which an agent can be offered work (when it also has spare capacity on the task's channel).
ROUTABLE_STATES: Final = frozenset({_S.AVAILABLE, _S.RESERVED, _S.BUSY})


def transition_allowed(old: AgentState, new: AgentState) -> bool:
    """True if the table allows `old` -> `new`."""
    return new in AGENT_TRANSITIONS[old]
