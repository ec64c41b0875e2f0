"""Simulator benchmark: throughput in simulated calls per wall minute, where the time goes, and the
Erlang C agreement table (simulation with its 95 % CI next to the closed forms) for N = 11..16.

Run:  .venv/bin/python benchmarks/bench_simulate.py [--hours 500] [--throughput-hours 2000] [--json]

Prints numbers only; never gates anything on wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from routing_core.erlang import erlang_c
from routing_core.router import Router
from routing_core.simulate import (
    AgentGroup,
    Distribution,
    QueueConfig,
    Scenario,
    run_replication,
    simple_scenario,
    simulate,
)
from routing_core.types import Requirement

CPH = 200.0
AHT_S = 180.0
T_S = 20.0
TIMED_METHODS = ("enqueue", "dispatch", "accept", "complete", "abandon", "next_deadline")


def timing_router(totals: dict[str, list[float]]) -> Callable[..., Router]:
    """A Router factory whose instances add the wall time and count of each API call to ``totals``."""
    clock = time.perf_counter

    def make(**kwargs: Any) -> Router:
        router = Router(**kwargs)
        for name in TIMED_METHODS:
            inner = getattr(router, name)
            cell = totals.setdefault(name, [0.0, 0.0])

            def timed(*a: Any, _inner: Any = inner, _cell: list[float] = cell, **k: Any) -> Any:
                t0 = clock()
                try:
                    return _inner(*a, **k)
                finally:
                    _cell[0] += clock() - t0
                    _cell[1] += 1

            setattr(router, name, timed)
        return router

    return make


def throughput(label: str, scenario: Scenario) -> dict[str, Any]:
    """Plain run for calls/minute, then a timed run that splits the time by Router method."""
    seed = np.random.SeedSequence(scenario.seed)
    run = run_replication(scenario, seed, clock=time.perf_counter)
    calls = int(run.arrival_s.size)
    totals: dict[str, list[float]] = {}
    timed_run = run_replication(
        scenario, seed, router_factory=timing_router(totals), clock=time.perf_counter
    )
    router_s = sum(v[0] for v in totals.values())
    # The wrapper's own cost (two clock reads and a Python frame per call) is measured on a no-op.
    n_calls = int(sum(v[1] for v in totals.values()))
    wrapper_s = _wrapper_overhead_s(n_calls)
    return {
        "scenario": label,
        "agents": scenario.n_agents,
        "simulated_calls": calls,
        "events": run.events,
        "wall_s": run.wall_s,
        "calls_per_wall_minute": calls / run.wall_s * 60.0,
        "router_share": min(1.0, max(0.0, (router_s - wrapper_s) / timed_run.wall_s)),
        "router_us_per_call": {
            name: {
                "calls": int(n),
                "us_each": 1e6 * s / n if n else 0.0,
                "us_per_sim_call": 1e6 * s / calls,
            }
            for name, (s, n) in sorted(totals.items())
        },
    }


def _wrapper_overhead_s(n: int) -> float:
    clock = time.perf_counter

    def noop() -> None:
        return None

    def timed(_inner: Callable[[], None] = noop) -> None:
        t0 = clock()
        try:
            return _inner()
        finally:
            _ = clock() - t0

    reps = 200_000
    t0 = clock()
    for _ in range(reps):
        timed()
    return (clock() - t0) / reps * n


def multi_skill_center(hours: float) -> Scenario:
    """Three queues, skills with levels, 130 agents in four groups, patience, ~2000 calls per hour."""
    queues = (
        QueueConfig("sales", ((3600.0, 900.0),), Distribution("lognormal", 240.0, 0.8),
                    Distribution("exponential", 240.0), (Requirement(0, 2),)),
        QueueConfig("support", ((3600.0, 700.0),), Distribution("exponential", 300.0),
                    Distribution("exponential", 300.0), (Requirement(1, 1),)),
        QueueConfig("spanish", ((3600.0, 400.0),), Distribution("exponential", 270.0),
                    Distribution("exponential", 200.0), (Requirement(2, 1),)),
    )  # fmt: skip
    groups = (
        AgentGroup("sales", 50, ((0, 4),), (("sales", 0),)),
        AgentGroup("support", 45, ((1, 4),), (("support", 0),)),
        AgentGroup("es", 25, ((2, 5), (1, 2)), (("spanish", 0), ("support", 1))),
        AgentGroup("float", 20, ((0, 2), (1, 2), (2, 1)), None),
    )
    return Scenario(queues, groups, duration_s=hours * 3600.0, n_skills=3, seed=1)


def agreement_table(hours: float) -> list[dict[str, Any]]:
    rows = []
    for n in range(11, 17):
        exact = erlang_c(n, CPH, AHT_S, T_S)
        r = simulate(
            simple_scenario(agents=n, calls_per_hour=CPH, aht_s=AHT_S, hours=hours, seed=n)
        )
        rows.append(
            {
                "agents": n,
                "erlang_p_wait": exact.p_wait,
                "sim_p_wait": r["p_wait"],
                "sim_p_wait_ci": r["p_wait_ci"],
                "p_wait_in_ci": r["p_wait_ci"][0] <= exact.p_wait <= r["p_wait_ci"][1],
                "erlang_sl": exact.service_level,
                "sim_sl": r["service_level"],
                "sim_sl_ci": r["service_level_ci"],
                "sl_in_ci": r["service_level_ci"][0]
                <= exact.service_level
                <= r["service_level_ci"][1],
                "erlang_asa_s": exact.asa_s,
                "sim_asa_s": r["asa_s"],
                "sim_asa_s_ci": r["asa_s_ci"],
                "asa_in_ci": r["asa_s_ci"][0] <= exact.asa_s <= r["asa_s_ci"][1],
                "calls": r["offered"],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=500.0, help="simulated hours per Erlang row")
    parser.add_argument("--throughput-hours", type=float, default=2000.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    Router(n_skills=1).warmup()  # compile / load the numba cache outside the timings
    th = args.throughput_hours
    results = {
        "throughput": [
            throughput(
                "M/M/14, 200 calls/h",
                simple_scenario(agents=14, calls_per_hour=CPH, aht_s=AHT_S, hours=th, seed=1),
            ),
            throughput(
                "M/M/14+M, patience 300 s",
                simple_scenario(
                    agents=14, calls_per_hour=CPH, aht_s=AHT_S, hours=th, seed=1, patience_s=300.0
                ),
            ),
            throughput(
                "M/M/200, 3800 calls/h",
                simple_scenario(
                    agents=200, calls_per_hour=3800.0, aht_s=AHT_S, hours=th / 20, seed=1
                ),
            ),
            throughput("3 queues, 3 skills, 140 agents", multi_skill_center(th / 20)),
        ],
        "erlang_c_agreement": agreement_table(args.hours),
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print("Throughput (simulated calls per wall minute; Router share of the wall time)")
    for t in results["throughput"]:
        print(
            f"  {t['scenario']:<34} {t['simulated_calls']:>9} calls  {t['wall_s']:6.2f} s  "
            f"{t['calls_per_wall_minute'] / 1e6:5.2f} M/min  router {100 * t['router_share']:4.1f} %"
        )
        for name, v in t["router_us_per_call"].items():
            print(
                f"      {name:<14} {v['calls']:>9} calls  {v['us_each']:7.2f} us each  "
                f"{v['us_per_sim_call']:7.2f} us per simulated call"
            )
    print(
        f"\nErlang C agreement: {CPH:g} calls/h, AHT {AHT_S:g} s, T = {T_S:g} s, {args.hours:g} h per row"
    )
    print(
        "  N   P(wait) Erlang  sim [95% CI]               SL Erlang  sim [95% CI]               ASA Erlang  sim [95% CI]"
    )
    for r in results["erlang_c_agreement"]:

        def cell(exact: float, sim: float, ci: list[float], ok: bool, fmt: str) -> str:
            mark = " " if ok else "!"
            return f"{exact:{fmt}}  {sim:{fmt}} [{ci[0]:{fmt}}, {ci[1]:{fmt}}]{mark}"

        print(
            f"  {r['agents']:<3} "
            f"{cell(r['erlang_p_wait'], r['sim_p_wait'], r['sim_p_wait_ci'], r['p_wait_in_ci'], '.4f')}   "
            f"{cell(r['erlang_sl'], r['sim_sl'], r['sim_sl_ci'], r['sl_in_ci'], '.4f')}   "
            f"{cell(r['erlang_asa_s'], r['sim_asa_s'], r['sim_asa_s_ci'], r['asa_in_ci'], '7.2f')}"
        )
    print("  (! marks an Erlang value outside the simulation's CI; about 1 in 20 is expected)")


if __name__ == "__main__":
    main()
