"""The clock a timer-driven engine service is given: an asyncio event loop, or a test's clock.

How this works: services that keep ONE re-armed timer (the agent directory's registration expiry,
for example) need only ``time()`` and ``call_at(when, callback)`` from their loop. Typing them
with this protocol instead of ``asyncio.AbstractEventLoop`` lets a test hand in a clock it
advances by hand (``tests/engine/clocks.py``), so expiries are tested without sleeping, as the
SIP core's timers are. A real event loop satisfies it as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """``time()`` and ``call_at()`` as an asyncio event loop has them."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], object], /) -> Cancellable: ...
