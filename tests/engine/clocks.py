"""A clock for engine services that a test advances by hand (engine.runtime.clock.Scheduler)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable


class _Handle:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """``time()`` stands still until ``advance(seconds)``, which runs every timer that falls due,
    in deadline order, each seeing the clock at its own deadline."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, _Handle, Callable[[], object]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object], /) -> _Handle:
        handle = _Handle()
        heapq.heappush(self._timers, (when, next(self._seq), handle, callback))
        return handle

    @property
    def pending(self) -> int:
        return sum(1 for _, _, h, _ in self._timers if not h.cancelled)

    def advance(self, seconds: float) -> None:
        until = self.now + seconds
        while self._timers and self._timers[0][0] <= until:
            when, _, handle, callback = heapq.heappop(self._timers)
            if not handle.cancelled:
                self.now = max(self.now, when)
                callback()
        self.now = until
