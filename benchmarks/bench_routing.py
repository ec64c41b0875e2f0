"""Routing core benchmark: decisions/s and dispatch latency, next to the naive Python reference.

One decision = one offer produced by `Router.dispatch`. The steady-state scenario is the realistic one:
a large backlog waits, agents become free one at a time (complete), and each `dispatch(now)` must find
the freed agent's best task among all waiting ones; the new task that keeps the backlog constant and
the accept are not timed. The backlog-all-at-once case (every agent free, one dispatch) is reported
separately. The naive reference (tests/routing_core/reference.py: sort every task, test every agent)
is timed on a prefix of the backlog and extrapolated linearly to the full backlog per decision.

Usage:
    .venv/bin/python benchmarks/bench_routing.py --quick     # about a minute
    .venv/bin/python benchmarks/bench_routing.py             # full grid (several minutes)
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "routing_core"))

from reference import reference_dispatch, snapshot  # noqa: E402

from routing_core import Offer, QueueSpec, Requirement, Router, Strategy  # noqa: E402
from routing_core.router import _T_WAITING  # noqa: E402

N_QUEUES = 100  # a large center: 100 queues, each agent a member of 3
QUEUES_PER_AGENT = 3
SKILLS_PER_AGENT = 12
PRIORITIES = 3


def build(
    n_agents: int, n_skills: int, n_waiting: int, strategy: Strategy, seed: int = 1
) -> tuple[Router, np.random.Generator]:
    rng = np.random.default_rng(seed)
    r = Router(
        n_skills=n_skills,
        max_agents=n_agents,
        max_tasks=n_waiting + 2 * n_agents + 16,
        seed=seed,
        max_queues=N_QUEUES,
    )
    queue_skills = [rng.choice(n_skills, size=2, replace=False) for _ in range(N_QUEUES)]
    for q in range(N_QUEUES):
        s0, s1 = (int(x) for x in queue_skills[q])
        r.add_queue(
            QueueSpec(
                f"q{q}", strategy=strategy, requirements=(Requirement(s0, 3), Requirement(s1, 1))
            )
        )
    for a in range(n_agents):
        qs = rng.choice(N_QUEUES, size=QUEUES_PER_AGENT, replace=False)
        skills = {int(s): int(rng.integers(1, 11)) for s in rng.choice(n_skills, SKILLS_PER_AGENT)}
        for q in qs:  # members mostly hold their queues' skills, as configured centers do
            for s in queue_skills[q]:
                skills[int(s)] = int(rng.integers(2, 11))
        r.add_agent(f"a{a}", skills=skills, queues={f"q{q}": int(rng.integers(0, 2)) for q in qs})
    return r, rng


def enqueue_random(r: Router, rng: np.random.Generator, tid: int, now: float) -> None:
    r.enqueue(
        f"t{tid}", f"q{int(rng.integers(N_QUEUES))}", now, priority=int(rng.integers(PRIORITIES))
    )


def accept_first(r: Router, offers: list[Offer], now: float) -> list[str]:
    """Accept the first offer of each task (ring-all withdraws the others); the agents now busy."""
    done: set[str] = set()
    agents = []
    for o in offers:
        if o.task_id not in done:
            done.add(o.task_id)
            r.accept(o.task_id, o.agent_id, now)
            agents.append(o.agent_id)
    return agents


def reference_per_decision_s(r: Router, now: float, n_waiting: int, prefix: int = 100) -> float:
    """Naive reference time for one dispatch with the full backlog, extrapolated from a prefix."""
    snap = snapshot(r)
    snap.tasks = snap.tasks[:prefix]
    t0 = time.perf_counter()
    reference_dispatch(snap, now)
    return (time.perf_counter() - t0) / max(1, len(snap.tasks)) * n_waiting


def steady_state(
    n_agents: int, n_skills: int, n_waiting: int, strategy: Strategy, steps: int
) -> dict[str, float]:
    r, rng = build(n_agents, n_skills, n_waiting, strategy)
    now = 0.0
    for a in range(n_agents):
        r.login(f"a{a}", now)
    tid = 0
    for _ in range(n_waiting + n_agents):
        tid += 1
        enqueue_random(r, rng, tid, now)
    # Backlog all at once: every agent free, one dispatch.
    now = 1.0
    t0 = time.perf_counter()
    offers = r.dispatch(now)
    bulk_s = time.perf_counter() - t0
    n_bulk = len(offers)
    busy = accept_first(r, offers, now)
    refill = len(busy)
    for _ in range(refill):
        tid += 1
        enqueue_random(r, rng, tid, now)
    # The daemon freezes its long-lived objects after start-up the same way: a full collection of
    # 100k task records would otherwise land inside some dispatch and dominate the p99.
    gc.collect()
    gc.freeze()
    queue = collections.deque(busy)
    lat_list = []
    decisions = 0
    for _ in range(steps):
        if not queue:
            break
        now += 0.01
        r.complete(queue.popleft(), now)
        t0 = time.perf_counter_ns()
        out = r.dispatch(now)
        lat_list.append((time.perf_counter_ns() - t0) / 1e3)
        decisions += len(out)
        for agent in accept_first(r, out, now):
            queue.append(agent)
            tid += 1
            enqueue_random(r, rng, tid, now)
    gc.unfreeze()
    lat = np.array(lat_list)
    waiting = int(np.count_nonzero(r._task_state == _T_WAITING))
    ref_s = reference_per_decision_s(r, now, waiting)
    total_us = float(lat.sum())
    return {
        "decisions": decisions,
        "per_s": decisions / (total_us / 1e6) if total_us else 0.0,
        "p50_us": float(np.percentile(lat, 50)),
        "p99_us": float(np.percentile(lat, 99)),
        "bulk_offers": n_bulk,
        "bulk_per_s": n_bulk / bulk_s if bulk_s else 0.0,
        "ref_us": ref_s * 1e6,
        "waiting": waiting,
    }


def compile_times() -> tuple[float, float]:
    """(cold compile, warm cache load) seconds for Router.warmup() in fresh processes."""
    code = (
        "import time; t0 = time.perf_counter(); from routing_core import Router; "
        "Router(n_skills=1).warmup(); print(time.perf_counter() - t0)"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        out = []
        for _ in range(2):
            p = subprocess.run(
                [sys.executable, "-c", code],
                env=env,
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            )
            out.append(float(p.stdout.strip()))
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="headline size and a small grid only")
    ap.add_argument(
        "--steps", type=int, default=0, help="dispatches per scenario (default by mode)"
    )
    args = ap.parse_args()
    cold, warm = compile_times()
    print(f"numba: cold compile + import {cold:.2f} s, warm cache load + import {warm:.2f} s")
    print(
        f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f} (shared boxes skew p99)"
    )
    Router(n_skills=1).warmup()
    main_strategies = [
        Strategy.LONGEST_IDLE,
        Strategy.MOST_SKILLED,
        Strategy.ROUND_ROBIN,
        Strategy.RANDOM,
    ]
    if args.quick:
        grid = [(10_000, 500, 100_000, s) for s in (Strategy.LONGEST_IDLE, Strategy.MOST_SKILLED)]
        grid += [(1_000, 100, 1_000, Strategy.RING_ALL), (1_000, 100, 1_000, Strategy.LONGEST_IDLE)]
        steps = args.steps or 5_000
    else:
        grid = [
            (a, s, w, st)
            for a in (1_000, 10_000, 50_000)
            for s in (100, 500)
            for w in (1_000, 100_000)
            for st in main_strategies
        ]
        steps = args.steps or 20_000
    hdr = (
        f"{'agents':>7} {'skills':>6} {'waiting':>8} {'strategy':<15} {'decisions/s':>12} "
        f"{'p50 us':>8} {'p99 us':>8} {'ref us/dec':>12} {'speedup':>9} {'bulk dec/s':>11}"
    )
    print(hdr)
    for a, s, w, st in grid:
        res = steady_state(a, s, w, st, steps)
        speedup = res["ref_us"] / res["p50_us"] if res["p50_us"] else 0.0
        print(
            f"{a:>7} {s:>6} {w:>8} {st.name:<15} {res['per_s']:>12,.0f} {res['p50_us']:>8.1f} "
            f"{res['p99_us']:>8.1f} {res['ref_us']:>12,.0f} {speedup:>8,.0f}x "
            f"{res['bulk_per_s']:>11,.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
