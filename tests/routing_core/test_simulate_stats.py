"""routing_core.stats: service-level definitions, t quantiles, batch means."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing_core.stats import (
    _t_two_sided_cdf,
    batch_index,
    batch_ratios,
    mean_ci,
    service_level_defs,
    t_quantile,
)

# Two-sided 95 % and 99 % Student-t critical values from printed tables (e.g. NIST/SEMATECH
# e-Handbook, table 1.3.6.7.2), three or four decimals as printed there.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 19: 2.093,
         29: 2.045, 30: 2.042, 60: 2.000, 100: 1.984}  # fmt: skip
T_995 = {1: 63.657, 2: 9.925, 5: 4.032, 10: 3.169, 19: 2.861, 30: 2.750, 100: 2.626}


@pytest.mark.parametrize(("df", "value"), sorted(T_975.items()))
def test_t_quantile_975(df: int, value: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(value, abs=6e-4)


@pytest.mark.parametrize(("df", "value"), sorted(T_995.items()))
def test_t_quantile_995(df: int, value: float) -> None:
    assert t_quantile(0.995, df) == pytest.approx(value, abs=6e-4)


def test_t_quantile_symmetry_and_large_df() -> None:
    assert t_quantile(0.025, 7) == pytest.approx(-t_quantile(0.975, 7))
    assert t_quantile(0.5, 3) == 0.0
    # Above the switch, the Cornish-Fisher quantile is where the exact CDF says it should be.
    for df in (201, 500, 5000):
        for p in (0.9, 0.975, 0.995):
            assert _t_two_sided_cdf(t_quantile(p, df), df) == pytest.approx(2 * p - 1, abs=1e-8)
    assert t_quantile(0.975, 10**6) == pytest.approx(1.959964, abs=1e-5)  # normal quantile
    with pytest.raises(ValueError, match="p must be"):
        t_quantile(1.0, 5)
    with pytest.raises(ValueError, match="df"):
        t_quantile(0.9, 0)


def test_service_level_definitions_by_hand() -> None:
    # 6 answered (4 within 20 s), 4 abandoned: at 2 s (short), 10 s (within T), 30 s and 60 s.
    answered = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    abandoned = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
    wait = [0, 5, 20, 12, 21, 40, 2, 10, 30, 60]
    d = service_level_defs(answered, abandoned, wait, threshold_s=20.0, short_abandon_s=5.0)
    assert d["a"] == pytest.approx(4 / 6)
    assert d["b"] == pytest.approx((4 + 2) / 10)
    assert d["c"] == pytest.approx(4 / 10)
    assert d["d"] == pytest.approx(4 / (6 + 2))
    assert d["e"] == pytest.approx(4 / (10 - 1))


def test_service_level_definitions_edge_cases() -> None:
    d = service_level_defs([], [], [], 20.0)
    assert all(math.isnan(v) for v in d.values())
    # Blocked calls (neither flag) are in no denominator.
    d = service_level_defs([1, 0], [0, 0], [3.0, 0.0], 20.0)
    assert d["c"] == 1.0
    with pytest.raises(ValueError, match="both"):
        service_level_defs([1], [1], [0.0], 20.0)
    with pytest.raises(ValueError, match="shape"):
        service_level_defs([1, 0], [0], [0.0], 20.0)


def test_mean_ci_by_hand() -> None:
    ci = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0], 0.95)
    half = 2.776445 * math.sqrt(2.5) / math.sqrt(5)
    assert ci.mean == 3.0
    assert ci.lo == pytest.approx(3.0 - half, rel=1e-6)
    assert ci.hi == pytest.approx(3.0 + half, rel=1e-6)
    assert ci.n == 5
    assert ci.contains(3.0)
    assert not ci.contains(5.0)
    nan_dropped = mean_ci([1.0, float("nan"), 3.0])
    assert nan_dropped.n == 2
    assert nan_dropped.mean == 2.0
    single = mean_ci([4.0])
    assert single.mean == 4.0
    assert math.isnan(single.lo)


def test_mean_ci_covers_true_mean_about_95_percent() -> None:
    rng = np.random.default_rng(7)
    samples = rng.normal(10.0, 3.0, size=(2000, 8))
    covered = sum(mean_ci(row).contains(10.0) for row in samples)
    # Binomial(2000, .95): mean 1900, sd 9.7; a wrong t factor (e.g. 1.96) would give ~1830.
    assert 1860 <= covered <= 1940


def test_batch_index_and_ratios() -> None:
    t = np.array([5.0, 10.0, 19.9, 20.0, 35.0, 109.99, 110.0, 200.0])
    idx = batch_index(t, 10.0, 110.0, 4)
    assert idx.tolist() == [-1, 0, 0, 0, 1, 3, -1, -1]
    r = batch_ratios([1, 1, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1], idx, 4)
    assert r[0] == pytest.approx(2 / 3)
    assert r[1] == 1.0
    assert math.isnan(r[2])
    assert r[3] == 1.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 100.0), min_size=1, max_size=50), st.integers(1, 10))
def test_batch_ratios_pool_to_the_total(times: list[float], n_batches: int) -> None:
    t = np.array(times)
    idx = batch_index(t, 0.0, 100.0, n_batches)
    ones = np.ones_like(t)
    counts = batch_ratios(ones, ones, idx, n_batches)
    inside = int((idx >= 0).sum())
    assert inside == int((t < 100.0).sum())
    assert all(math.isnan(c) or c == 1.0 for c in counts)
