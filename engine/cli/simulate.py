"""``acd simulate``: the command line around the routing core's discrete-event simulator.

The simulator itself (routing_core.simulate) is pure: it never reads a clock or writes to a
terminal. This module adds what a person at a shell needs: argument parsing, a progress bar on a
terminal, an optional PNG of the wait distribution (matplotlib, an optional extra), text or JSON
output, and the wall-clock time of the run for the performance figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

from routing_core import Strategy
from routing_core.simulate import (
    ANSWERED,
    DEFAULT_BATCHES,
    Scenario,
    ScenarioError,
    SimulationRun,
    _strategy,
    load_scenario,
    simple_scenario,
    simulate_run,
    summarize,
)
from routing_core.stats import SL_DEFINITIONS

# ----------------------------------------------------------------------------------------------
# Command line: acd simulate


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ScenarioError(message)


def _build_parser() -> argparse.ArgumentParser:
    p = _ArgumentParser(
        prog="acd simulate",
        description=(
            "Discrete-event simulation of the routing core. Simple form: one queue of identical "
            "agents (--agents, --calls-per-hour, --aht); or a multi-queue --scenario FILE.toml."
        ),
    )
    p.add_argument("--scenario", help="TOML scenario file (queues, agent groups, skills)")
    p.add_argument("--agents", type=int, help="number of agents")
    p.add_argument("--calls-per-hour", type=float, help="Poisson arrival rate")
    p.add_argument("--aht", type=float, help="mean handling time, seconds")
    p.add_argument("--sl-threshold", type=float, help="service-level threshold T, seconds (20)")
    p.add_argument("--hours", type=float, help="measured simulated hours (scenario: overrides)")
    p.add_argument("--warmup", type=float, help="warm-up seconds before that (10%% of --hours)")
    p.add_argument("--seed", type=int, help="random seed (0)")
    p.add_argument("--patience", type=float, help="mean exponential patience, seconds (none)")
    p.add_argument(
        "--service",
        choices=("exponential", "lognormal", "deterministic"),
        default="exponential",
        help="handling-time distribution",
    )
    p.add_argument("--service-cv", type=float, default=1.0, help="lognormal std/mean (1.0)")
    p.add_argument("--strategy", help="agent strategy, e.g. longest_idle, round_robin, random")
    p.add_argument("--short-abandon", type=float, help="short-abandon threshold, seconds (5)")
    p.add_argument("--batches", type=int, help=f"batch-means batches ({DEFAULT_BATCHES})")
    p.add_argument("--replications", type=int, help="independent replications (1: batch means)")
    p.add_argument("--plot", metavar="PNG", help="write a wait-time histogram (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def _scenario_from_args(args: argparse.Namespace) -> Scenario:
    if args.scenario is not None:
        simple = ("agents", "calls_per_hour", "aht", "patience")
        given = [f"--{k.replace('_', '-')}" for k in simple if getattr(args, k) is not None]
        if given:
            raise ScenarioError(f"{', '.join(given)} cannot be combined with --scenario")
        scenario = load_scenario(args.scenario)
        changes: dict[str, Any] = {}
        if args.hours is not None:
            changes["duration_s"] = args.hours * 3600.0
        for attr, key in (
            ("warmup", "warmup_s"),
            ("seed", "seed"),
            ("sl_threshold", "sl_threshold_s"),
            ("short_abandon", "short_abandon_s"),
            ("batches", "batches"),
            ("replications", "replications"),
        ):
            if getattr(args, attr) is not None:
                changes[key] = getattr(args, attr)
        if args.strategy is not None:
            st = _strategy(args.strategy, "--strategy")
            changes["queues"] = tuple(replace(q, strategy=st) for q in scenario.queues)
        return replace(scenario, **changes) if changes else scenario
    missing = [
        flag
        for flag, value in (
            ("--agents", args.agents),
            ("--calls-per-hour", args.calls_per_hour),
            ("--aht", args.aht),
            ("--hours", args.hours),
        )
        if value is None
    ]
    if missing:
        raise ScenarioError(f"missing {', '.join(missing)} (or give --scenario FILE.toml)")
    if not args.aht > 0:
        raise ScenarioError(f"--aht must be > 0 seconds, got {args.aht}")
    if args.patience is not None and not args.patience > 0:
        raise ScenarioError(f"--patience must be > 0 seconds, got {args.patience}")
    return simple_scenario(
        agents=args.agents,
        calls_per_hour=args.calls_per_hour,
        aht_s=args.aht,
        hours=args.hours,
        seed=0 if args.seed is None else args.seed,
        patience_s=args.patience,
        sl_threshold_s=20.0 if args.sl_threshold is None else args.sl_threshold,
        warmup_s=args.warmup,
        strategy=Strategy.LONGEST_IDLE
        if args.strategy is None
        else _strategy(args.strategy, "--strategy"),
        service=args.service,
        service_cv=args.service_cv,
        batches=DEFAULT_BATCHES if args.batches is None else args.batches,
        replications=1 if args.replications is None else args.replications,
        short_abandon_s=5.0 if args.short_abandon is None else args.short_abandon,
    )


class _ProgressBar:
    """A one-line bar on stderr, redrawn in place; only used when stderr is a terminal."""

    WIDTH: Final = 40

    def __init__(self) -> None:
        self._last = -1

    def __call__(self, fraction: float) -> None:
        pct = int(fraction * 100)
        if pct == self._last:
            return
        self._last = pct
        filled = int(fraction * self.WIDTH)
        sys.stderr.write(f"\rsimulating [{'#' * filled}{'.' * (self.WIDTH - filled)}] {pct:3d}%")
        if fraction >= 1.0:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _plot_waits(run: SimulationRun, path: str) -> None:
    """Histogram of the waits of answered calls (measured period), with the threshold T marked."""
    try:
        import matplotlib  # optional dependency, only for --plot

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ScenarioError("--plot needs matplotlib (pip install matplotlib)") from None
    s = run.scenario
    sel = run.measured & (run.outcome == ANSWERED)
    waits = run.wait_s[sel]
    queued = waits[waits > 0.0]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if queued.size:
        ax.hist(queued, bins=60, color="#4c72b0")
    ax.axvline(
        s.sl_threshold_s, color="#c44e52", linestyle="--", label=f"T = {s.sl_threshold_s:g} s"
    )
    ax.set_xlabel("wait before answer (s), calls that queued")
    ax.set_ylabel("calls")
    share = 100.0 * (waits.size - queued.size) / waits.size if waits.size else 0.0
    ax.set_title(f"{waits.size} answered calls, {share:.1f} % answered without waiting")
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(path, format="png")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot write the plot: {exc.strerror}") from exc
    finally:
        plt.close(fig)


def _format_text(result: Mapping[str, Any]) -> str:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100.0 * x:6.2f} %"

    def ci(v: Sequence[float | None], scale: float = 100.0) -> str:
        lo, hi = v
        if lo is None or hi is None:
            return ""
        return f"  [{scale * lo:.2f}, {scale * hi:.2f}]"

    p = result["parameters"]
    asa = result["asa_s"]
    lines = [
        f"agents {p['agents']}, offered load {p['offered_load_erlangs']:.3f} Erlangs, "
        f"{p['measured_s'] / 3600.0:g} h measured after {p['warmup_s']:g} s warm-up, seed {p['seed']}",
        f"offered {result['offered']}  answered {result['answered']}  "
        f"abandoned {result['abandoned']}  blocked {result['blocked']}",
        f"P(wait)        {pct(result['p_wait'])}{ci(result['p_wait_ci'])}",
        f"service level  {pct(result['service_level'])}{ci(result['service_level_ci'])}"
        f"  (answered within {p['sl_threshold_s']:g} s / answered)",
        "ASA            " + ("-" if asa is None else f"{asa:8.2f} s")
        + ci(result["asa_s_ci"], 1.0),
        f"abandon rate   {pct(result['abandon_rate'])}{ci(result['abandon_rate_ci'])}",
        f"occupancy      {pct(result['occupancy'])}{ci(result['occupancy_ci'])}",
        "service level definitions:",
    ]  # fmt: skip
    for key, value in result["service_level_defs"].items():
        lines.append(f"  ({key}) {pct(value)}  {SL_DEFINITIONS[key]}")
    for name, q in result.get("queues", {}).items():
        lines.append(
            f"queue {name}: offered {q['offered']}, P(wait) {pct(q['p_wait'])}, "
            f"SL {pct(q['service_level'])}, abandon {pct(q['abandon_rate'])}"
        )
    return "\n".join(lines)


def simulate_main(argv: list[str]) -> int:
    """``acd simulate``: 0 on success, 2 on bad input (one line on stderr, no traceback)."""
    try:
        args = _build_parser().parse_args(argv)
        scenario = _scenario_from_args(args)
        progress = _ProgressBar() if sys.stderr.isatty() and not os.environ.get("CI") else None
        run = simulate_run(scenario, progress=progress, clock=time.perf_counter)
        result = summarize(run)
        if args.plot is not None:
            _plot_waits(run, args.plot)
    except ScenarioError as exc:
        print(f"acd simulate: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_format_text(result))
    return 0
