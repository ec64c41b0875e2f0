"""The simulator drives the real Router and must reproduce Erlang C and Erlang A within its own CIs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.cli.simulate import _ProgressBar, simulate_main
from routing_core.erlang import erlang_a, erlang_c
from routing_core.router import Router
from routing_core.simulate import (
    ABANDONED,
    ANSWERED,
    AgentGroup,
    Distribution,
    QueueConfig,
    Scenario,
    SimulationRun,
    _arrival_times,
    load_scenario,
    run_replication,
    simple_scenario,
    simulate,
    simulate_run,
    summarize,
)
from routing_core.types import RelaxStep, Requirement, Strategy

# 100 calls per 30 minutes, AHT 180 s, T = 20 s: the published Erlang C table (see test_erlang).
CPH = 200.0
AHT_S = 180.0
PUBLISHED = {  # agents: (P(wait), SL(20 s))
    12: (0.4494, 0.6402),
    14: (0.1741, 0.8884),
}
# Enough simulated time that the batch-means CIs are a few points wide, small enough for ~2 s a run.
HOURS = 150.0


def within(ci: list[float], value: float) -> bool:
    return ci[0] <= value <= ci[1]


@pytest.fixture(scope="module")
def erlang_c_runs() -> dict[int, dict[str, Any]]:
    return {
        n: simulate(
            simple_scenario(agents=n, calls_per_hour=CPH, aht_s=AHT_S, hours=HOURS, seed=13)
        )
        for n in PUBLISHED
    }


@pytest.mark.parametrize("agents", sorted(PUBLISHED))
def test_reproduces_erlang_c(agents: int, erlang_c_runs: dict[int, dict[str, Any]]) -> None:
    r = erlang_c_runs[agents]
    p_wait, sl = PUBLISHED[agents]
    assert within(r["p_wait_ci"], p_wait), (r["p_wait_ci"], p_wait)
    assert within(r["service_level_ci"], sl), (r["service_level_ci"], sl)
    exact = erlang_c(agents, CPH, AHT_S, 20.0)
    assert within(r["asa_s_ci"], exact.asa_s), (r["asa_s_ci"], exact.asa_s)
    assert within(r["occupancy_ci"], exact.occupancy), (r["occupancy_ci"], exact.occupancy)
    # The intervals are informative, not just wide enough to contain anything.
    assert r["p_wait_ci"][1] - r["p_wait_ci"][0] < 0.12
    assert r["service_level_ci"][1] - r["service_level_ci"][0] < 0.12
    assert r["abandoned"] == 0
    assert r["blocked"] == 0
    assert r["unresolved"] == 0
    assert r["answered"] == r["offered"]
    # ~200 calls per hour measured: Poisson count within 5 sigma.
    assert abs(r["offered"] - CPH * HOURS) < 5 * math.sqrt(CPH * HOURS)
    # Without abandonment all five service-level definitions coincide.
    assert all(v == pytest.approx(r["service_level"]) for v in r["service_level_defs"].values())


def test_more_agents_wait_less(erlang_c_runs: dict[int, dict[str, Any]]) -> None:
    assert erlang_c_runs[14]["p_wait_ci"][1] < erlang_c_runs[12]["p_wait_ci"][0]


def test_reproduces_erlang_a_abandonment() -> None:
    r = simulate(
        simple_scenario(
            agents=14, calls_per_hour=CPH, aht_s=AHT_S, hours=200.0, seed=1, patience_s=300.0
        )
    )
    exact = erlang_a(14, CPH, AHT_S, 300.0, 20.0)
    assert round(exact.p_abandon, 6) == 0.013984
    assert within(r["abandon_rate_ci"], 0.013984), r["abandon_rate_ci"]
    assert within(r["p_wait_ci"], exact.p_wait), (r["p_wait_ci"], exact.p_wait)
    assert within(r["service_level_ci"], exact.service_level)
    assert r["abandoned"] > 0
    assert r["answered"] + r["abandoned"] == r["offered"]
    assert r["abandon_rate_ci"][1] - r["abandon_rate_ci"][0] < 0.01


def test_strategies_give_the_same_waits_with_identical_agents() -> None:
    """Handling times belong to calls, so with identical agents and FIFO the waits cannot depend on
    which free agent is chosen: the runs must agree call for call, hence also within their CIs."""
    runs = {}
    for strategy in (Strategy.LONGEST_IDLE, Strategy.ROUND_ROBIN, Strategy.RANDOM):
        scenario = simple_scenario(
            agents=12, calls_per_hour=CPH, aht_s=AHT_S, hours=20.0, seed=3, strategy=strategy
        )
        runs[strategy] = simulate_run(scenario)
    base = runs[Strategy.LONGEST_IDLE]
    for run in runs.values():
        assert np.array_equal(run.outcome, base.outcome)
        np.testing.assert_allclose(run.wait_s, base.wait_s, rtol=0, atol=1e-9)
    results = [summarize(run) for run in runs.values()]
    for a in results:
        for b in results:
            for key in ("p_wait_ci", "asa_s_ci", "service_level_ci"):
                assert a[key][0] <= b[key][1]
                assert b[key][0] <= a[key][1]


def strategy_run(strategy: Strategy) -> SimulationRun:
    return simulate_run(
        simple_scenario(
            agents=11, calls_per_hour=CPH, aht_s=AHT_S, hours=8.0, seed=21, strategy=strategy,
            patience_s=200.0,
        )
    )  # fmt: skip


@pytest.fixture(scope="module")
def longest_idle_run() -> SimulationRun:
    return strategy_run(Strategy.LONGEST_IDLE)


@pytest.mark.parametrize("strategy", list(Strategy), ids=lambda s: s.name)
def test_every_strategy_gives_identical_waits_with_identical_agents(
    strategy: Strategy, longest_idle_run: SimulationRun
) -> None:
    base, other = longest_idle_run, strategy_run(strategy)
    assert np.array_equal(other.outcome, base.outcome)
    np.testing.assert_allclose(other.wait_s, base.wait_s, rtol=0, atol=1e-9)
    assert (base.outcome == ABANDONED).any()


def test_same_seed_same_result_other_seed_other_result() -> None:
    def run(seed: int) -> dict[str, Any]:
        r = simulate(
            simple_scenario(agents=12, calls_per_hour=CPH, aht_s=AHT_S, hours=5, seed=seed)
        )
        del r["performance"]
        return r

    assert run(1) == run(1)
    assert run(1) != run(2)


@pytest.mark.parametrize("service", ["deterministic", "lognormal"])
def test_occupancy_is_load_over_agents_for_any_service_distribution(service: str) -> None:
    r = simulate(
        simple_scenario(
            agents=12,
            calls_per_hour=CPH,
            aht_s=AHT_S,
            hours=40.0,
            seed=2,
            service=service,  # type: ignore[arg-type]
            service_cv=0.5,
        )
    )
    assert within(r["occupancy_ci"], 10.0 / 12.0), r["occupancy_ci"]


@pytest.mark.parametrize(
    ("service", "cv"), [("deterministic", 0.0), ("lognormal", 0.5), ("lognormal", 2.0)]
)
def test_handling_time_distributions(service: str, cv: float) -> None:
    scenario = simple_scenario(
        agents=12, calls_per_hour=CPH, aht_s=AHT_S, hours=30.0, seed=1,
        service=service, service_cv=max(cv, 1.0) if service == "deterministic" else cv,  # type: ignore[arg-type]
    )  # fmt: skip
    s = simulate_run(scenario).service_s
    assert s.min() > 0.0
    assert abs(s.mean() - AHT_S) < 5 * AHT_S * cv / math.sqrt(s.size) + 1e-9
    assert s.std() / s.mean() == pytest.approx(cv, abs=0.15 * cv + 1e-12)
    if service == "lognormal":
        logs = np.log(s)
        assert (
            abs(float(((logs - logs.mean()) ** 3).mean())) < 0.2 * logs.std() ** 3
        )  # log is symmetric


def test_piecewise_arrival_rates() -> None:
    gaps = iter(np.random.default_rng(9).standard_exponential(200_000).tolist())
    profile = ((3600.0, 100.0), (1800.0, 1000.0), (1800.0, 0.0))
    times = np.array(list(_arrival_times(profile, gaps, 20 * 7200.0)))
    phase = np.mod(times, 7200.0)
    quiet = int((phase < 3600.0).sum())
    busy = int(((phase >= 3600.0) & (phase < 5400.0)).sum())
    closed = int((phase >= 5400.0).sum())
    assert closed == 0
    assert abs(quiet - 20 * 100) < 5 * math.sqrt(20 * 100)
    assert abs(busy - 20 * 500) < 5 * math.sqrt(20 * 500)
    assert times.max() < 20 * 7200.0
    assert np.all(np.diff(times) > 0)


def two_skill_scenario(**changes: Any) -> Scenario:
    sales = QueueConfig(
        name="sales",
        arrivals=((3600.0, 60.0),),
        service=Distribution("exponential", 180.0),
        requirements=(Requirement(0, 1),),
    )
    support = QueueConfig(
        name="support",
        arrivals=((3600.0, 40.0),),
        service=Distribution("exponential", 300.0),
        patience=Distribution("exponential", 120.0),
        requirements=(Requirement(1, 1),),
        strategy=Strategy.MOST_SKILLED,
    )
    groups = (
        AgentGroup("sellers", 3, skills=((0, 5),), queues=(("sales", 0),)),
        AgentGroup("helpers", 2, skills=((1, 5),), queues=(("support", 0),)),
        AgentGroup("both", 2, skills=((0, 3), (1, 3)), queues=None),
    )
    base: dict[str, Any] = {
        "queues": (sales, support),
        "groups": groups,
        "duration_s": 20 * 3600.0,
        "warmup_s": 3600.0,
        "n_skills": 2,
        "seed": 8,
    }
    base.update(changes)
    return Scenario(**base)


def test_multi_queue_breakdown() -> None:
    r = simulate(two_skill_scenario())
    q = r["queues"]
    assert set(q) == {"sales", "support"}
    assert q["sales"]["offered"] + q["support"]["offered"] == r["offered"]
    assert q["sales"]["abandoned"] == 0  # no patience configured for sales
    assert q["support"]["abandoned"] > 0
    assert r["abandoned"] == q["support"]["abandoned"]
    assert abs(q["sales"]["offered"] - 60 * 20) < 5 * math.sqrt(60 * 20)
    assert 0.0 < r["occupancy"] < 1.0
    json.dumps(r, allow_nan=False)


def test_calls_nobody_can_take_are_never_answered() -> None:
    nobody = QueueConfig(
        name="nobody",
        arrivals=((3600.0, 30.0),),
        service=Distribution("exponential", 60.0),
        patience=Distribution("exponential", 60.0),
        requirements=(Requirement(1, 9),),  # skill 1 at level 9: no agent has it
    )
    scenario = two_skill_scenario(queues=(*two_skill_scenario().queues, nobody))
    r = simulate(scenario)
    q = r["queues"]["nobody"]
    assert q["offered"] > 0
    assert q["answered"] == 0
    assert q["abandoned"] == q["offered"]
    assert q["service_level"] is None  # no answered call: undefined, JSON null
    json.dumps(r, allow_nan=False)


def test_relaxation_step_fires_through_router_deadlines() -> None:
    """Nobody has level 9; after 30 s the step relaxes to level 1. Only Router timers (deadline events)
    can make these calls answerable, so every answer happens at or after 30 s of waiting."""
    queue = QueueConfig(
        name="relaxed",
        arrivals=((3600.0, 40.0),),
        service=Distribution("exponential", 60.0),
        requirements=(Requirement(0, 9),),
        steps=(RelaxStep(after_s=30.0, requirements=(Requirement(0, 1),)),),
    )
    scenario = Scenario(
        queues=(queue,),
        groups=(AgentGroup("a", 4, skills=((0, 2),)),),
        duration_s=10 * 3600.0,
        seed=1,
    )
    run = simulate_run(scenario)
    answered = run.outcome == ANSWERED
    assert answered.all()
    assert run.wait_s.min() == pytest.approx(30.0, abs=1e-6)
    r = simulate(scenario)
    assert r["service_level"] == 0.0  # T = 20 s < 30 s


def test_wrap_up_holds_agents_through_router_timers() -> None:
    def scenario(wrap_up_s: float) -> Scenario:
        q = QueueConfig(
            name="q",
            arrivals=((3600.0, CPH),),
            service=Distribution("exponential", AHT_S),
            wrap_up_s=wrap_up_s,
        )
        return Scenario(queues=(q,), groups=(AgentGroup("a", 14),), duration_s=20 * 3600.0, seed=6)

    plain = simulate(scenario(0.0))
    wrapped = simulate(scenario(30.0))
    # 30 s of wrap-up adds 1/6 to each agent's hold: like 11.7 Erlangs on 14 agents.
    assert wrapped["p_wait_ci"][0] > plain["p_wait_ci"][1]
    assert wrapped["answered"] == wrapped["offered"]


def test_warmup_calls_are_not_counted() -> None:
    scenario = simple_scenario(
        agents=12, calls_per_hour=CPH, aht_s=AHT_S, hours=10, seed=2, warmup_s=5 * 3600.0
    )
    run = simulate_run(scenario)
    r = simulate(scenario)
    assert run.arrival_s.size > 1.3 * r["offered"]  # 15 h simulated, 10 h counted
    assert r["offered"] == int((run.arrival_s >= 5 * 3600.0).sum())
    assert abs(r["offered"] - 2000) < 5 * math.sqrt(2000)


def test_replications_ci() -> None:
    r = simulate(
        simple_scenario(
            agents=14, calls_per_hour=CPH, aht_s=AHT_S, hours=10, seed=3, replications=6
        )
    )
    assert r["parameters"]["ci_method"] == "replications"
    assert r["parameters"]["ci_samples"] == 6
    assert within(r["p_wait_ci"], PUBLISHED[14][0])
    assert r["p_wait_ci"][0] <= r["p_wait"] <= r["p_wait_ci"][1]


def test_router_sees_every_call_through_its_api() -> None:
    """A Router subclass counts the API calls: the simulator has no side door."""
    counts: dict[str, int] = {}

    class CountingRouter(Router):
        def enqueue(self, *args: Any, **kwargs: Any) -> None:
            counts["enqueue"] = counts.get("enqueue", 0) + 1
            super().enqueue(*args, **kwargs)

        def abandon(self, *args: Any, **kwargs: Any) -> Any:
            counts["abandon"] = counts.get("abandon", 0) + 1
            return super().abandon(*args, **kwargs)

        def accept(self, *args: Any, **kwargs: Any) -> Any:
            counts["accept"] = counts.get("accept", 0) + 1
            return super().accept(*args, **kwargs)

    scenario = simple_scenario(
        agents=10, calls_per_hour=CPH, aht_s=AHT_S, hours=5, seed=2, patience_s=120.0
    )
    run = run_replication(scenario, np.random.SeedSequence(0), router_factory=CountingRouter)
    assert counts["enqueue"] == run.arrival_s.size
    assert counts["accept"] == int((run.outcome == ANSWERED).sum())
    assert counts["abandon"] == int((run.outcome == ABANDONED).sum()) > 0


def test_progress_reaches_one() -> None:
    seen: list[float] = []
    scenario = simple_scenario(agents=12, calls_per_hour=CPH, aht_s=AHT_S, hours=1, seed=1)
    simulate(scenario, progress=seen.append)
    assert seen[-1] == 1.0
    assert all(0.0 <= x <= 1.0 for x in seen)


# ---------------------------------------------------------------- command line


def test_cli_simple_form_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--agents", "14", "--calls-per-hour", "200", "--aht", "180", "--sl-threshold", "20",
            "--hours", "20", "--seed", "7", "--patience", "300", "--json"]  # fmt: skip
    assert simulate_main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("offered", "answered", "abandoned", "p_wait", "asa_s", "service_level",
                "occupancy", "abandon_rate", "p_wait_ci", "service_level_ci", "service_level_defs"):  # fmt: skip
        assert key in out
    assert out["service_level"] == out["service_level_defs"]["a"]
    assert out["parameters"]["agents"] == 14
    assert out["parameters"]["seed"] == 7
    assert out["answered"] + out["abandoned"] == out["offered"]
    assert out["abandoned"] > 0
    assert simulate_main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["service_level"] == out["service_level"]  # same seed, same run


def test_cli_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--agents", "12", "--calls-per-hour", "200", "--aht", "180", "--hours", "2"]
    assert simulate_main(argv) == 0
    text = capsys.readouterr().out
    assert "P(wait)" in text
    assert "service level" in text
    assert "(e)" in text


SCENARIO_TOML = """
[simulation]
hours = 10
warmup_s = 1800
seed = 4
sl_threshold_s = 30

[[queue]]
name = "sales"
calls_per_hour = 60
aht_s = 200
requires = { spanish = 1 }
strategy = "round_robin"

[[queue]]
name = "support"
profile = [[1800, 20], [1800, 60]]
aht_s = 240
service = "lognormal"
service_cv = 0.8
patience_s = 180

[[group]]
name = "es"
count = 3
skills = { spanish = 4 }
queues = ["sales"]

[[group]]
name = "all"
count = 4
queues = { sales = 1, support = 0 }
skills = { spanish = 1 }
"""


def test_cli_scenario_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "center.toml"
    path.write_text(SCENARIO_TOML)
    scenario = load_scenario(str(path))
    assert [q.name for q in scenario.queues] == ["sales", "support"]
    assert scenario.queues[0].strategy == Strategy.ROUND_ROBIN
    assert scenario.queues[1].arrivals == ((1800.0, 20.0), (1800.0, 60.0))
    assert scenario.groups[1].queues == (("sales", 1), ("support", 0))
    assert scenario.n_agents == 7
    assert scenario.sl_threshold_s == 30.0
    assert simulate_main(["--scenario", str(path), "--json", "--strategy", "random"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["queues"]) == {"sales", "support"}
    assert out["queues"]["support"]["abandoned"] > 0
    assert out["parameters"]["sl_threshold_s"] == 30.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[simulation]\nhours = 1\ncolour = 3\n", "unknown key(s) ['colour']"),
        ("[simulation]\nhours = 1\n[[queue]]\nname='q'\naht_s=10\n", "queue[0].calls_per_hour"),
        (
            "[simulation]\nhours = 1\n[[queue]]\ncalls_per_hour=1\naht_s=10\nrequires={x=1}\n"
            "[[group]]\ncount=1\n",
            "queue[0].requires.x",
        ),
        (
            "[simulation]\nhours = 1\n[[queue]]\ncalls_per_hour=1\naht_s=10\nstrategy='best'\n"
            "[[group]]\ncount=1\n",
            "unknown strategy 'best'",
        ),
        ("[simulation\n", "not valid TOML"),
    ],
)
def test_cli_bad_scenario_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert simulate_main(["--scenario", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert str(path) in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--agents", "3"], "missing --calls-per-hour, --aht, --hours"),
        (["--agents", "x"], "invalid int"),
        (["--agents", "0", "--calls-per-hour", "1", "--aht", "1", "--hours", "1"], "--agents"),
        (["--agents", "2", "--calls-per-hour", "1", "--aht", "-1", "--hours", "1"], "--aht"),
        (
            [
                "--agents",
                "2",
                "--calls-per-hour",
                "1",
                "--aht",
                "1",
                "--hours",
                "1",
                "--strategy",
                "fastest",
            ],
            "unknown strategy",
        ),
        (["--scenario", "/nonexistent/x.toml"], "cannot read"),
        (["--scenario", "/nonexistent/x.toml", "--agents", "3"], "cannot be combined"),
    ],
)
def test_cli_bad_arguments_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert simulate_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert err.startswith("acd simulate: error:")


def test_cli_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "wait.png"
    argv = ["--agents", "12", "--calls-per-hour", "200", "--aht", "180", "--hours", "5",
            "--plot", str(png), "--json"]  # fmt: skip
    rc = simulate_main(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        # The plot is optional: without matplotlib the CLI says what is missing, nothing else.
        assert rc == 2
        assert "--plot needs matplotlib" in capsys.readouterr().err
        return
    assert rc == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(capsys.readouterr().out)["offered"] > 0


def test_progress_bar_draws_in_place(capsys: pytest.CaptureFixture[str]) -> None:
    bar = _ProgressBar()
    bar(0.5)
    bar(0.501)  # same percent: not redrawn
    bar(1.0)
    err = capsys.readouterr().err
    assert err.count("\r") == 2
    assert " 50%" in err
    assert err.endswith("100%\n")
    assert "#" * _ProgressBar.WIDTH in err


def test_full_queue_blocks_calls() -> None:
    """Two agents and at most two calls waiting: M/M/2/4, blocking as in the finite chain."""
    q = QueueConfig(
        name="small",
        arrivals=((3600.0, 120.0),),
        service=Distribution("exponential", 60.0),
        max_length=2,
    )
    scenario = Scenario(queues=(q,), groups=(AgentGroup("a", 2),), duration_s=100 * 3600.0, seed=4)
    r = simulate(scenario)
    assert r["blocked"] > 0
    assert r["answered"] + r["blocked"] == r["offered"]
    # M/M/2/4 with A = 2 Erlangs: p_n proportional to 1, 2, 2, 2, 2, so P(block) = p_4 = 2/9.
    assert abs(r["blocked"] / r["offered"] - 2 / 9) < 0.02
