"""Expected-wait predictor benchmark: the error of the queue-length predictor (routing_core.predict,
what the daemon announces and the API shows) next to the moving average of answered waits it
replaced, on the same simulated calls, by the caller's place in line.

How it works: each scenario runs through the simulator (the real Router). Its calls are then
replayed in time order through a ``WaitPredictor`` fed what the daemon would know at that moment
(answered waits when answered, handling times when the call ends, abandonments when they happen);
at each arrival that finds every agent busy (the callers who hear an announcement) both estimates
are taken and, for the callers who were answered, compared with the wait they really had. Errors
are mean absolute errors in seconds, by position (1 = next in line).

Run:  .venv/bin/python benchmarks/bench_predictor.py [--hours 40] [--json]

Prints numbers only; never gates anything.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from routing_core.predict import WaitPredictor
from routing_core.simulate import (
    ABANDONED,
    ANSWERED,
    AgentGroup,
    Distribution,
    QueueConfig,
    Scenario,
    run_replication,
)

BUCKETS = ((1, 1), (2, 3), (4, 6), (7, 10), (11, 20), (21, 10**9))


@dataclass(frozen=True)
class Case:
    name: str
    agents: int
    arrivals: tuple[tuple[float, float], ...]  # (duration_s, calls_per_hour), cyclic
    service: Distribution
    patience: Distribution | None


def cases() -> list[Case]:
    exp180 = Distribution("exponential", 180.0)
    patience = {s: Distribution("exponential", s) for s in (120.0, 180.0, 300.0)}
    lognormal = Distribution("lognormal", 180.0, 0.6)
    return [
        Case("M/M/20 at 95 %, no abandonment", 20, ((3600.0, 380.0),), exp180, None),
        Case("M/M/20+M at 110 %, patience 120 s", 20, ((3600.0, 440.0),), exp180, patience[120.0]),
        Case(
            "lognormal cv 0.6, 50 agents at 97 %, patience 300 s",
            50,
            ((3600.0, 970.0),),
            lognormal,
            patience[300.0],
        ),
        Case(
            "load 75 % <-> 115 % every 30 min, 20 agents, patience 180 s",
            20,
            ((1800.0, 300.0), (1800.0, 460.0)),
            exp180,
            patience[180.0],
        ),
    ]


def scenario(case: Case, hours: float, seed: int) -> Scenario:
    queue = QueueConfig(
        name="q", arrivals=case.arrivals, service=case.service, patience=case.patience
    )
    return Scenario(
        queues=(queue,),
        groups=(AgentGroup("agents", case.agents),),
        duration_s=hours * 3600.0,
        warmup_s=3600.0,
        seed=seed,
        max_waiting=100_000,
    )


def replay(run: Any, agents: int) -> tuple[npt.NDArray[np.float64], ...]:
    """(position, QL estimate, moving-average estimate, real wait) of each measured caller who
    arrived to find every agent busy and was answered."""
    arrival, wait, service, outcome = run.arrival_s, run.wait_s, run.service_s, run.outcome
    events: list[
        tuple[float, int, int]
    ] = []  # (time, order, call); order: 0 end, 1 resolve, 2 arrive
    for i in range(arrival.size):
        events.append((float(arrival[i]), 2, i))
        if outcome[i] in (ANSWERED, ABANDONED):
            events.append((float(arrival[i] + wait[i]), 1, i))
        if outcome[i] == ANSWERED:
            events.append((float(arrival[i] + wait[i] + service[i]), 0, i))
    events.sort()
    predictor = WaitPredictor()
    measured = run.measured
    rows: list[tuple[float, float, float, float]] = []
    for _t, kind, i in events:
        if kind == 0:
            predictor.handled(float(service[i]))
        elif kind == 1:
            if outcome[i] == ANSWERED:
                predictor.answered(float(wait[i]))
            else:
                predictor.abandoned(float(wait[i]))
        elif measured[i] and outcome[i] == ANSWERED and wait[i] > 0.0:
            position = int(run.ahead[i]) + 1
            ql = predictor.expected_wait_s(position, agents)
            naive = predictor.naive_s
            if ql is not None and naive is not None:
                rows.append((position, ql, naive, float(wait[i])))
    table = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    return table[:, 0], table[:, 1], table[:, 2], table[:, 3]


def evaluate(case: Case, hours: float, seed: int) -> dict[str, Any]:
    run = run_replication(scenario(case, hours, seed), np.random.SeedSequence(seed))
    position, ql, naive, real = replay(run, case.agents)
    out: dict[str, Any] = {"case": case.name, "callers": int(real.size), "buckets": []}
    for lo, hi in BUCKETS:
        sel = (position >= lo) & (position <= hi)
        if not sel.any():
            continue
        out["buckets"].append(
            {
                "positions": f"{lo}" if lo == hi else (f"{lo}-{hi}" if hi < 10**9 else f"{lo}+"),
                "callers": int(sel.sum()),
                "mean_wait_s": float(real[sel].mean()),
                "mae_ql_s": float(np.abs(ql[sel] - real[sel]).mean()),
                "mae_average_s": float(np.abs(naive[sel] - real[sel]).mean()),
            }
        )
    out["mae_ql_s"] = float(np.abs(ql - real).mean())
    out["mae_average_s"] = float(np.abs(naive - real).mean())
    out["bias_ql_s"] = float((ql - real).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=40.0, help="measured hours per scenario")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args()
    results = [evaluate(case, args.hours, args.seed) for case in cases()]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(f"\n{r['case']}: {r['callers']} callers who waited")
        print(
            f"  {'position':>9} {'callers':>8} {'mean wait':>10} {'MAE QL':>8} {'MAE avg':>8} {'ratio':>6}"
        )
        for b in r["buckets"]:
            ratio = b["mae_average_s"] / b["mae_ql_s"] if b["mae_ql_s"] else float("inf")
            print(
                f"  {b['positions']:>9} {b['callers']:>8} {b['mean_wait_s']:>9.1f}s "
                f"{b['mae_ql_s']:>7.1f}s {b['mae_average_s']:>7.1f}s {ratio:>5.2f}x"
            )
        print(
            f"  {'all':>9} {r['callers']:>8} {'':>10} {r['mae_ql_s']:>7.1f}s "
            f"{r['mae_average_s']:>7.1f}s {r['mae_average_s'] / r['mae_ql_s']:>5.2f}x"
            f"   (QL bias {r['bias_ql_s']:+.1f} s)"
        )


if __name__ == "__main__":
    main()
