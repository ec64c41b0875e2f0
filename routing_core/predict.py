"""Expected wait of a caller by its place in line: Whitt's queue-length predictor, with abandonment.

How this works
--------------
A caller at position ``k`` (1 = next to be served) of a queue staffed by ``s`` agents has ``k - 1``
callers ahead. While ``j`` are ahead, the line in front of it shortens at rate ``s * mu + j * theta``
(an agent finishes, mean handling time ``1 / mu``, or one of them gives up, each at rate ``theta``),
and once nobody is ahead the caller waits for the next agent to finish, rate ``s * mu``. Its expected
wait is therefore ``sum(1 / (s * mu + j * theta) for j in 0..k-1)``: ``k * h / s`` with no
abandonment (the QL predictor of Whitt, "Predicting queueing delays", Management Science 1999), and
the QL_m form with exponential patience of Ibrahim and Whitt ("Real-time delay estimation based on
delay history", 2009). It uses the queue's state now (position, staffed agents) rather than the
waits of calls that were answered earlier, which lag whenever the load changes.

``WaitPredictor`` keeps the two things it needs from history, per queue: the mean handling time
(talk plus wrap-up, an exponentially weighted mean over recent answered calls) and the abandonment
rate, estimated as abandonments per second of waiting (the maximum-likelihood estimate for
exponential patience with answered calls as censored observations), both discounted so that the
last ``memory`` calls weigh most. ``naive`` is the estimate it replaces (a moving average of recent
answered waits) so that benchmarks can compare the two on the same calls.

Pure and clock-free: callers pass waits and handling times in seconds; nothing here raises on odd
input (a non-positive or missing figure gives ``None``: no estimate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def ql_wait_s(
    position: int, agents: int, handle_s: float, abandon_rate_per_s: float = 0.0
) -> float:
    """Expected wait of the caller at ``position`` (1-based) with ``agents`` serving, mean handling
    time ``handle_s`` and per-caller abandonment rate ``abandon_rate_per_s``; NaN if it cannot be
    told (no agent, no handling time)."""
    if position < 1 or agents < 1 or not handle_s > 0.0:
        return math.nan
    service_rate = agents / handle_s
    theta = abandon_rate_per_s if abandon_rate_per_s > 0.0 else 0.0
    if theta == 0.0:
        return position / service_rate
    return sum(1.0 / (service_rate + j * theta) for j in range(position))


@dataclass(slots=True)
class WaitPredictor:
    """One queue's history for ``ql_wait_s``: handling time and abandonment rate, discounted.

    ``memory`` is about how many recent calls the estimates follow (each new call's weight is
    ``1 / memory`` of the total)."""

    memory: float = 50.0
    handle_s: float | None = None  # weighted mean handling time of answered calls
    _abandons: float = 0.0  # discounted count of abandoned calls
    _waited_s: float = 0.0  # discounted seconds waited by every resolved call
    naive_s: float | None = None  # the old estimate: moving average of answered waits

    def _discount(self) -> float:
        keep = 1.0 - 1.0 / max(self.memory, 1.0)
        self._abandons *= keep
        self._waited_s *= keep
        return keep

    def answered(self, wait_s: float, handle_s: float | None = None) -> None:
        """A caller reached an agent after ``wait_s``; ``handle_s`` once its handling time is known
        (call ``handled`` later otherwise)."""
        if not (wait_s >= 0.0 and math.isfinite(wait_s)):
            return
        self._discount()
        self._waited_s += wait_s
        self.naive_s = wait_s if self.naive_s is None else 0.8 * self.naive_s + 0.2 * wait_s
        if handle_s is not None:
            self.handled(handle_s)

    def handled(self, handle_s: float) -> None:
        """An answered call's handling time (talk plus wrap-up) became known."""
        if not (handle_s > 0.0 and math.isfinite(handle_s)):
            return
        if self.handle_s is None:
            self.handle_s = handle_s
        else:
            self.handle_s += (handle_s - self.handle_s) / max(self.memory, 1.0)

    def abandoned(self, wait_s: float) -> None:
        """A caller gave up after ``wait_s``."""
        if not (wait_s >= 0.0 and math.isfinite(wait_s)):
            return
        self._discount()
        self._abandons += 1.0
        self._waited_s += wait_s

    @property
    def abandon_rate_per_s(self) -> float:
        """Abandonments per second of waiting (0 until anyone waited)."""
        return self._abandons / self._waited_s if self._waited_s > 0.0 else 0.0

    def expected_wait_s(self, position: int, agents: int) -> float | None:
        """The expected wait of the caller at ``position`` with ``agents`` staffed, or None while
        there is no handling time to go by or nobody is staffed."""
        if self.handle_s is None:
            return None
        wait = ql_wait_s(position, agents, self.handle_s, self.abandon_rate_per_s)
        return None if math.isnan(wait) else wait
