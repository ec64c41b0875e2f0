"""routing_core.predict: the queue-length wait predictor, checked against closed forms and against
the simulator's callers (the real Router) at each place in line."""

from __future__ import annotations

import math

import numpy as np

from routing_core.predict import WaitPredictor, ql_wait_s
from routing_core.simulate import ANSWERED, run_replication, simple_scenario
from routing_core.stats import mean_ci


def test_closed_forms() -> None:
    assert ql_wait_s(1, 10, 200.0) == 20.0  # the next agent of ten to finish a 200 s call
    assert ql_wait_s(4, 10, 200.0) == 80.0  # four finishes: k h / s
    # With abandonment the line in front shortens faster: 1/(s mu) + 1/(s mu + theta) + ...
    s_mu, theta = 10 / 200.0, 1 / 60.0
    expected = 1 / s_mu + 1 / (s_mu + theta) + 1 / (s_mu + 2 * theta)
    assert math.isclose(ql_wait_s(3, 10, 200.0, theta), expected)
    assert ql_wait_s(3, 10, 200.0, theta) < ql_wait_s(3, 10, 200.0)
    for bad in ((0, 10, 200.0), (1, 0, 200.0), (1, 10, 0.0), (1, 10, math.nan)):
        assert math.isnan(ql_wait_s(*bad))  # no estimate, never an exception


def test_the_predictor_learns_handle_time_and_abandonment_from_history() -> None:
    p = WaitPredictor(memory=10)
    assert p.expected_wait_s(1, 5) is None  # nothing to go by yet
    p.answered(30.0, handle_s=100.0)
    assert p.expected_wait_s(2, 5) == 40.0  # 2 x 100 / 5, nobody gave up
    assert p.naive_s == 30.0
    p.abandoned(90.0)
    assert math.isclose(p.abandon_rate_per_s, 1.0 / (30.0 * 0.9 + 90.0))  # 1 per 117 s waited
    assert p.expected_wait_s(2, 5) == ql_wait_s(2, 5, 100.0, p.abandon_rate_per_s)
    for _ in range(200):
        p.handled(300.0)
    assert p.handle_s is not None
    assert abs(p.handle_s - 300.0) < 1.0  # follows the recent calls
    assert p.expected_wait_s(1, 0) is None  # nobody staffed
    for junk in (-1.0, math.nan, math.inf):
        p.answered(junk)
        p.abandoned(junk)
        p.handled(junk)
    assert p.handle_s is not None
    assert abs(p.handle_s - 300.0) < 1.0


def test_mm_n_callers_wait_what_their_place_predicts() -> None:
    """In M/M/N served first come first served, the caller who finds k-1 ahead and every agent busy
    waits k h / N on average: the simulator's callers agree position by position (95 % CI)."""
    agents, aht_s = 10, 180.0
    scenario = simple_scenario(agents=agents, calls_per_hour=190.0, aht_s=aht_s, hours=30, seed=3)
    run = run_replication(scenario, np.random.SeedSequence(3))
    waited = run.measured & (run.outcome == ANSWERED) & (run.wait_s > 0.0)
    for position in (1, 3, 6):
        sel = waited & (run.ahead + 1 == position)
        assert sel.sum() > 100
        ci = mean_ci(run.wait_s[sel])
        predicted = ql_wait_s(position, agents, aht_s)
        assert ci.contains(predicted), (position, predicted, ci)
