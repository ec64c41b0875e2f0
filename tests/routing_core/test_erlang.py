"""Erlang B/C/A and staffing against published figures and naive references."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing_core.erlang import (
    ErlangError,
    erlang_a,
    erlang_b,
    erlang_c,
    erlang_main,
    offered_load,
    staffing,
)

# The textbook example: 100 calls per 30 minutes, AHT 180 s (10 Erlangs), T = 20 s.
CALLS_PER_HOUR = 200.0
AHT_S = 180.0
PUBLISHED_P_WAIT = {11: 0.6821, 12: 0.4494, 13: 0.2853, 14: 0.1741, 15: 0.1020, 16: 0.0573}
PUBLISHED_SL_20S = {11: 0.3896, 12: 0.6402, 13: 0.7956, 14: 0.8884, 15: 0.9415, 16: 0.9706}
# Erlang A, same load, exponential patience of mean 5 minutes, 14 agents.
PUBLISHED_P_ABANDON_14 = 0.013984


def naive_erlang_b(n: int, load: Fraction) -> Fraction:
    """Exact rational A^N/N! / sum_k A^k/k!."""
    terms = [load**k / math.factorial(k) for k in range(n + 1)]
    return terms[-1] / sum(terms)


def naive_erlang_c(n: int, load: Fraction) -> Fraction:
    top = load**n / math.factorial(n) * n / (n - load)
    return top / (sum(load**k / math.factorial(k) for k in range(n)) + top)


@pytest.mark.parametrize("agents", sorted(PUBLISHED_P_WAIT))
def test_erlang_c_matches_published_table(agents: int) -> None:
    r = erlang_c(agents, CALLS_PER_HOUR, AHT_S, 20.0)
    assert round(r.p_wait, 4) == PUBLISHED_P_WAIT[agents]
    assert round(r.service_level, 4) == PUBLISHED_SL_20S[agents]
    assert r.occupancy == pytest.approx(10.0 / agents)
    assert r.load_erlangs == pytest.approx(10.0)


def test_erlang_c_asa_and_sl_formula() -> None:
    r = erlang_c(14, CALLS_PER_HOUR, AHT_S, 20.0)
    c = float(naive_erlang_c(14, Fraction(10)))
    assert r.asa_s == pytest.approx(c * AHT_S / 4.0, rel=1e-12)
    assert r.service_level == pytest.approx(1.0 - c * math.exp(-4.0 * 20.0 / AHT_S), rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 60), st.fractions(Fraction(1, 10), Fraction(80)))
def test_erlang_b_and_c_match_exact_rationals(agents: int, load: Fraction) -> None:
    assert erlang_b(agents, float(load)) == pytest.approx(
        float(naive_erlang_b(agents, load)), rel=1e-9, abs=1e-300
    )
    if agents > load:
        cph = float(load) * 3600.0 / 100.0
        r = erlang_c(agents, cph, 100.0)
        assert r.p_wait == pytest.approx(float(naive_erlang_c(agents, load)), rel=1e-9, abs=1e-300)


def test_large_n_is_finite_and_monotone() -> None:
    # 20 000 agents at 95 % load: the factorial form overflows long before this.
    cph = 19_000 * 3600.0 / 180.0  # 19 000 Erlangs
    values = [erlang_c(n, cph, 180.0).p_wait for n in (19_050, 19_100, 19_200)]
    assert all(0.0 < v < 1.0 for v in values)
    assert values[0] > values[1] > values[2]
    assert 0.0 < erlang_b(20_000, 19_000.0) < 1e-3
    assert erlang_b(2_000, 10.0) == 0.0  # underflows cleanly to zero, no NaN


def test_erlang_c_rejects_unstable_and_bad_input() -> None:
    with pytest.raises(ErlangError, match="more agents than Erlangs"):
        erlang_c(10, CALLS_PER_HOUR, AHT_S)
    with pytest.raises(ErlangError, match="aht_s"):
        erlang_c(12, CALLS_PER_HOUR, -1.0)
    with pytest.raises(ErlangError, match="agents"):
        erlang_c(0, CALLS_PER_HOUR, AHT_S)


def test_erlang_a_published_abandon_probability() -> None:
    r = erlang_a(14, CALLS_PER_HOUR, AHT_S, 300.0, 20.0)
    assert abs(r.p_abandon - PUBLISHED_P_ABANDON_14) < 5e-7
    assert round(r.p_abandon, 4) == round(PUBLISHED_P_ABANDON_14, 4)


def naive_erlang_a_states(n: int, lam: float, mu: float, theta: float) -> np.ndarray:
    """Stationary distribution of the birth-death chain, truncated at 400 states, plain floats."""
    p = [1.0]
    for k in range(1, 400):
        death = min(k, n) * mu + max(0, k - n) * theta
        p.append(p[-1] * lam / death)
    arr = np.array(p)
    out: np.ndarray = arr / arr.sum()
    return out


@pytest.mark.parametrize(("agents", "patience_s"), [(14, 300.0), (8, 120.0), (11, 30.0)])
def test_erlang_a_against_naive_birth_death(agents: int, patience_s: float) -> None:
    lam, mu, theta = CALLS_PER_HOUR / 3600.0, 1.0 / AHT_S, 1.0 / patience_s
    pi = naive_erlang_a_states(agents, lam, mu, theta)
    queue = np.maximum(np.arange(pi.size) - agents, 0)
    r = erlang_a(agents, CALLS_PER_HOUR, AHT_S, patience_s, 20.0)
    assert r.p_wait == pytest.approx(pi[agents:].sum(), rel=1e-9)
    # Abandonment rate theta * E[queue] over the arrival rate: a different route than the code's.
    assert r.p_abandon == pytest.approx(theta * float((queue * pi).sum()) / lam, rel=1e-9)
    assert r.mean_queue_length == pytest.approx(float((queue * pi).sum()), rel=1e-9)
    busy = float((np.minimum(np.arange(pi.size), agents) * pi).sum())
    assert r.occupancy == pytest.approx(busy / agents, rel=1e-9)


def rk4_answered_within(agents: int, patience_s: float, t_s: float) -> tuple[float, float]:
    """P(answered within T) and P(answered) by integrating the tagged caller's ODE with RK4."""
    lam, mu, theta = CALLS_PER_HOUR / 3600.0, 1.0 / AHT_S, 1.0 / patience_s
    pi = naive_erlang_a_states(agents, lam, mu, theta)
    ahead = pi[agents:]  # arrivals finding k = 0, 1, ... queued ahead
    n_mu = agents * mu
    k = np.arange(ahead.size)
    out_rate = n_mu + k * theta + theta

    def deriv(y: np.ndarray) -> tuple[np.ndarray, float]:
        dy = -out_rate * y
        dy[:-1] += (n_mu + k[1:] * theta) * y[1:]
        return dy, n_mu * y[0]

    y = ahead.copy()
    served = 0.0
    steps = 4000
    h = t_s / steps
    for _ in range(steps):
        k1, s1 = deriv(y)
        k2, s2 = deriv(y + h / 2 * k1)
        k3, s3 = deriv(y + h / 2 * k2)
        k4, s4 = deriv(y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        served += h / 6 * (s1 + 2 * s2 + 2 * s3 + s4)
    served_eventually = float((ahead * n_mu / (n_mu + (k + 1) * theta)).sum())
    return float(pi[:agents].sum()) + served, float(pi[:agents].sum()) + served_eventually


@pytest.mark.parametrize(("agents", "patience_s"), [(14, 300.0), (9, 60.0)])
def test_erlang_a_service_level_against_ode(agents: int, patience_s: float) -> None:
    within, answered = rk4_answered_within(agents, patience_s, 20.0)
    r = erlang_a(agents, CALLS_PER_HOUR, AHT_S, patience_s, 20.0)
    assert r.service_level_offered == pytest.approx(within, rel=1e-7)
    assert r.service_level == pytest.approx(within / answered, rel=1e-7)
    assert 1.0 - r.p_abandon == pytest.approx(answered, rel=1e-9)


@pytest.mark.parametrize("agents", [12, 14, 16])
def test_erlang_a_with_endless_patience_is_erlang_c(agents: int) -> None:
    a = erlang_a(agents, CALLS_PER_HOUR, AHT_S, 1e10, 20.0)
    assert a.p_wait == pytest.approx(PUBLISHED_P_WAIT[agents], abs=5e-5)
    assert a.service_level == pytest.approx(PUBLISHED_SL_20S[agents], abs=5e-5)
    c = erlang_c(agents, CALLS_PER_HOUR, AHT_S, 20.0)
    assert a.asa_s == pytest.approx(c.asa_s, rel=1e-5)
    assert a.p_abandon < 1e-6


def test_erlang_a_handles_overload_and_large_n() -> None:
    over = erlang_a(5, CALLS_PER_HOUR, AHT_S, 300.0)  # twice the load the agents can take
    assert 0.45 < over.p_abandon < 0.55  # about half the callers must leave
    assert over.occupancy <= 1.0
    big = erlang_a(2_000, 2_000 * 3600.0 / 180.0, 180.0, 60.0)  # 2000 Erlangs on 2000 agents
    assert 0.0 < big.p_abandon < 0.05
    assert 0.0 < big.service_level <= 1.0
    assert math.isfinite(big.asa_s)


def test_staffing_smallest_meeting_target() -> None:
    r = staffing(CALLS_PER_HOUR, AHT_S, target_sl=0.8, sl_threshold_s=20.0)
    assert r.agents == 14  # 13 agents give .7956, 14 give .8884
    assert r.model == "erlang_c"
    assert staffing(CALLS_PER_HOUR, AHT_S, target_asa_s=20.0).agents == 13  # ASA 17.1 s at 13
    assert staffing(CALLS_PER_HOUR, AHT_S, target_sl=0.95).agents == 16
    assert staffing(CALLS_PER_HOUR, AHT_S, max_occupancy=0.85).agents == 12


@settings(max_examples=25, deadline=None)
@given(
    st.floats(10.0, 2000.0),
    st.floats(30.0, 600.0),
    st.floats(0.5, 0.95),
    st.one_of(st.none(), st.floats(30.0, 900.0)),
)
def test_staffing_is_minimal(
    cph: float, aht_s: float, target: float, patience: float | None
) -> None:
    r = staffing(cph, aht_s, target_sl=target, sl_threshold_s=20.0, patience_s=patience)
    assert r.service_level >= target

    def sl(n: int) -> float:
        if patience is not None:
            return erlang_a(n, cph, aht_s, patience, 20.0).service_level
        if n <= offered_load(cph, aht_s):
            return 0.0
        return erlang_c(n, cph, aht_s, 20.0).service_level

    if r.agents > 1:
        assert sl(r.agents - 1) < target


def test_staffing_with_abandonment_needs_fewer_agents() -> None:
    with_ab = staffing(CALLS_PER_HOUR, AHT_S, target_sl=0.8, patience_s=300.0)
    assert with_ab.model == "erlang_a"
    assert with_ab.p_abandon is not None
    assert with_ab.p_abandon > 0
    assert with_ab.agents <= 14


def test_staffing_needs_a_target() -> None:
    with pytest.raises(ErlangError, match="at least one target"):
        staffing(CALLS_PER_HOUR, AHT_S)


def test_cli_erlang_c_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc = erlang_main(
        ["c", "--calls-per-hour", "200", "--aht", "180", "--agents", "11-16", "--json"]
    )
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["agents"] for r in rows] == list(range(11, 17))
    assert [round(r["p_wait"], 4) for r in rows] == [PUBLISHED_P_WAIT[n] for n in range(11, 17)]
    assert [round(r["service_level"], 4) for r in rows] == [
        PUBLISHED_SL_20S[n] for n in range(11, 17)
    ]


def test_cli_erlang_a_b_and_staff(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--calls-per-hour", "200", "--aht", "180"]
    assert erlang_main(["a", *base, "--agents", "14", "--patience", "300", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert round(out["p_abandon"], 6) == PUBLISHED_P_ABANDON_14
    assert erlang_main(["b", *base, "--agents", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["p_block"] == pytest.approx(float(naive_erlang_b(3, Fraction(10))))
    assert erlang_main(["staff", *base, "--target-sl", "80", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["agents"] == 14
    assert erlang_main(["c", *base, "--agents", "13,14"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[0] == "agents"
    assert table[2].split()[0] == "14"
    assert "0.1741" in table[2]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["c", "--calls-per-hour", "200", "--aht", "180", "--agents", "9"], "more agents"),
        (["c", "--calls-per-hour", "x", "--aht", "180", "--agents", "9"], "invalid float"),
        (["c", "--calls-per-hour", "200", "--aht", "180"], "--agents"),
        (["a", "--calls-per-hour", "200", "--aht", "180", "--agents", "5"], "--patience"),
        (["staff", "--calls-per-hour", "200", "--aht", "180"], "at least one target"),
        (["q"], "invalid choice"),
        ([], "required"),
    ],
)
def test_cli_bad_input_exits_2_without_traceback(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert erlang_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert err.startswith("acd erlang: error:")


def test_staffing_abandon_cap_is_minimal() -> None:
    r = staffing(CALLS_PER_HOUR, AHT_S, patience_s=300.0, max_abandon=0.01)
    assert r.p_abandon is not None
    assert r.p_abandon <= 0.01
    assert erlang_a(r.agents - 1, CALLS_PER_HOUR, AHT_S, 300.0).p_abandon > 0.01
    # 14 agents abandon 1.3984 %, so the cap needs at least 15.
    assert r.agents >= 15
    with pytest.raises(ErlangError, match="needs a patience"):
        staffing(CALLS_PER_HOUR, AHT_S, max_abandon=0.01)


def test_staffing_large_center_with_abandonment_is_quick() -> None:
    # 1800 Erlangs: a scan from one agent would take seconds; the search needs a few dozen steps.
    r = staffing(36_000.0, 180.0, target_sl=0.8, patience_s=300.0, max_abandon=0.02)
    assert erlang_a(r.agents, 36_000.0, 180.0, 300.0).p_abandon <= 0.02
    below = erlang_a(r.agents - 1, 36_000.0, 180.0, 300.0)
    assert below.p_abandon > 0.02 or below.service_level < 0.8
