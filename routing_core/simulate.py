"""Discrete-event simulation of a contact center, driving the real Router.

How this works
--------------
One replication is a loop over a binary heap of events ``(time_s, seq, kind, index)``:

* ARRIVAL (index = queue): a call arrives; its handling time and patience are drawn now (per call, not
  per agent, so the waits do not depend on which agent answers), ``Router.enqueue`` is called, a
  PATIENCE event is scheduled, ``Router.dispatch`` runs if an agent could be free, and the queue's next
  arrival is scheduled (Poisson, piecewise-constant rate: the cumulative intensity is inverted, so a
  rate change inside a gap is exact).
* SERVICE_END (index = call): ``Router.complete``; ``dispatch`` runs if a call is waiting.
* PATIENCE (index = call): if the call is still waiting, ``Router.abandon``. Expiries of answered calls
  stay in the heap and are skipped when popped (cheaper than deleting them).
* DEADLINE: a Router timer (wrap-up end, relaxation step) is due: ``dispatch``. ``next_deadline`` is
  asked only after operations that can create a timer (``complete`` with wrap-up, ``enqueue`` into a
  queue with relaxation steps).

Every offer from ``dispatch`` is accepted at once (zero ring time). Dispatch is skipped only when no
offer is possible (no call waiting, or every agent busy); that is the one short cut the loop takes and
it cannot change an outcome. All randomness comes from numpy Generators seeded from one
``SeedSequence``: per queue one stream each for inter-arrival gaps, handling times and patience, plus
one for the Router's own RANDOM strategies. Drawing in blocks (``_RNG_BLOCK``) keeps numpy's per-call
overhead out of the loop.

Measurement: calls arriving during ``warmup_s`` are simulated but not counted; arrivals stop at
``warmup_s + duration_s`` and the loop drains the calls still in the system, so every counted call has
an outcome. Occupancy is the busy agent time inside the measured window divided by agents x window.
Confidence intervals use batch means (the measured window cut into ``batches`` equal periods by
arrival time, a ratio of sums per batch) or, with ``replications > 1``, one value per independent
replication; both are Student-t intervals (``routing_core.stats``).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from routing_core.router import Router
from routing_core.stats import (
    SL_DEFINITIONS,
    ConfidenceInterval,
    batch_index,
    batch_ratios,
    mean_ci,
    service_level_defs,
)
from routing_core.types import (
    CapacityExceeded,
    QueueFull,
    QueueSpec,
    RelaxStep,
    Requirement,
    Strategy,
)

__all__ = [
    "AgentGroup",
    "Distribution",
    "QueueConfig",
    "Scenario",
    "ScenarioError",
    "SimulationRun",
    "load_scenario",
    "run_replication",
    "scenario_from_dict",
    "simple_scenario",
    "simulate",
    "simulate_run",
    "summarize",
]

# Random numbers are drawn this many at a time: numpy's per-call overhead (~1 us) would otherwise
# dominate the per-event cost; 4096 doubles are 32 KiB, small enough to stay in cache.
_RNG_BLOCK: Final = 4096
# Batch means with 20 batches: 19 degrees of freedom keep the t factor near 2.09, and long batches keep
# their correlation low (Law & Kelton recommend 10 to 30 batches).
DEFAULT_BATCHES: Final = 20
# Waiting calls the Router can hold; beyond this a call is counted as blocked (CapacityExceeded).
DEFAULT_MAX_WAITING: Final = 16_384
# The progress bar is redrawn every this many events: often enough to move, rarely enough to be free.
_PROGRESS_EVERY: Final = 1 << 15

_ARRIVAL: Final = 0
_SERVICE_END: Final = 1
_PATIENCE: Final = 2
_DEADLINE: Final = 3

# Call outcomes in SimulationRun.outcome
WAITING: Final = 0  # never resolved (no eligible agent until the end)
ANSWERED: Final = 1
ABANDONED: Final = 2
BLOCKED: Final = 3  # refused at enqueue (queue max_length or router capacity)


class ScenarioError(ValueError):
    """A scenario (file or arguments) is invalid; the message names the key and what was expected."""


DistributionKind = Literal["exponential", "lognormal", "deterministic"]


@dataclass(frozen=True, slots=True)
class Distribution:
    """A positive random duration: exponential, lognormal (mean and coefficient of variation) or fixed."""

    kind: DistributionKind
    mean_s: float
    cv: float = 1.0  # std / mean, lognormal only

    def __post_init__(self) -> None:
        if self.kind not in ("exponential", "lognormal", "deterministic"):
            raise ScenarioError(f"unknown distribution {self.kind!r}")
        if not (self.mean_s > 0.0 and math.isfinite(self.mean_s)):
            raise ScenarioError(f"distribution mean must be > 0 seconds, got {self.mean_s!r}")
        if self.kind == "lognormal" and not (self.cv > 0.0 and math.isfinite(self.cv)):
            raise ScenarioError(f"lognormal cv must be > 0, got {self.cv!r}")

    def stream(self, rng: np.random.Generator) -> Iterator[float]:
        """An endless iterator of samples drawn in blocks from ``rng``."""
        if self.kind == "deterministic":
            return itertools.repeat(self.mean_s)
        if self.kind == "exponential":
            mean = self.mean_s
            return _blocks(lambda n: rng.exponential(mean, n))
        sigma2 = math.log1p(self.cv * self.cv)
        mu = math.log(self.mean_s) - sigma2 / 2.0
        sigma = math.sqrt(sigma2)
        return _blocks(lambda n: rng.lognormal(mu, sigma, n))


def _blocks(draw: Callable[[int], npt.NDArray[np.float64]]) -> Iterator[float]:
    while True:
        yield from draw(_RNG_BLOCK).tolist()


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """One queue of the scenario: its arrivals, handling times, patience and routing policy."""

    name: str
    arrivals: tuple[tuple[float, float], ...]  # (duration_s, calls_per_hour), repeated cyclically
    service: Distribution
    patience: Distribution | None = None  # None: callers never hang up
    requirements: tuple[Requirement, ...] = ()
    strategy: Strategy = Strategy.LONGEST_IDLE
    steps: tuple[RelaxStep, ...] = ()
    wrap_up_s: float = 0.0
    max_length: int = 0
    weight: int = 0
    priority: int = 0

    def __post_init__(self) -> None:
        if not self.arrivals:
            raise ScenarioError(f"queue {self.name!r}: arrivals must list at least one period")
        for duration_s, per_hour in self.arrivals:
            if not duration_s > 0.0 or not per_hour >= 0.0 or not math.isfinite(per_hour):
                raise ScenarioError(
                    f"queue {self.name!r}: each arrival period needs duration_s > 0 and "
                    f"calls_per_hour >= 0, got ({duration_s!r}, {per_hour!r})"
                )

    def spec(self) -> QueueSpec:
        return QueueSpec(
            name=self.name,
            strategy=self.strategy,
            requirements=self.requirements,
            steps=self.steps,
            weight=self.weight,
            wrap_up_s=self.wrap_up_s,
            max_length=self.max_length,
        )

    def mean_rate_per_s(self) -> float:
        total_s = sum(d for d, _ in self.arrivals)
        return sum(d * r for d, r in self.arrivals) / 3600.0 / total_s


@dataclass(frozen=True, slots=True)
class AgentGroup:
    """``count`` identical agents. ``queues=None`` makes them members of every queue at penalty 0."""

    name: str
    count: int
    skills: tuple[tuple[int, int], ...] = ()  # (skill index, level 1..255)
    queues: tuple[tuple[str, int], ...] | None = None  # (queue name, penalty)

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ScenarioError(f"agent group {self.name!r}: count must be >= 0")


@dataclass(frozen=True, slots=True)
class Scenario:
    """Everything one simulation needs; ``duration_s`` is the measured period after ``warmup_s``."""

    queues: tuple[QueueConfig, ...]
    groups: tuple[AgentGroup, ...]
    duration_s: float
    warmup_s: float = 0.0
    n_skills: int = 1
    seed: int = 0
    sl_threshold_s: float = 20.0
    short_abandon_s: float = 5.0
    batches: int = DEFAULT_BATCHES
    replications: int = 1
    confidence: float = 0.95
    max_waiting: int = DEFAULT_MAX_WAITING

    def __post_init__(self) -> None:
        if not self.queues:
            raise ScenarioError("a scenario needs at least one queue")
        names = [q.name for q in self.queues]
        if len(set(names)) != len(names):
            raise ScenarioError(f"queue names must be unique, got {names}")
        gnames = [g.name for g in self.groups]
        if len(set(gnames)) != len(gnames):
            raise ScenarioError(f"agent group names must be unique, got {gnames}")
        for g in self.groups:
            for qname, _pen in g.queues or ():
                if qname not in names:
                    raise ScenarioError(f"agent group {g.name!r}: unknown queue {qname!r}")
        if not (self.duration_s > 0.0 and math.isfinite(self.duration_s)):
            raise ScenarioError(f"duration must be > 0 seconds, got {self.duration_s!r}")
        if not self.warmup_s >= 0.0:
            raise ScenarioError(f"warm-up must be >= 0 seconds, got {self.warmup_s!r}")
        if self.batches < 2 and self.replications < 2:
            raise ScenarioError("confidence intervals need batches >= 2 or replications >= 2")
        if self.replications < 1:
            raise ScenarioError("replications must be >= 1")
        if not 0.0 < self.confidence < 1.0:
            raise ScenarioError("confidence must be in (0, 1)")
        if self.sl_threshold_s < 0.0 or self.short_abandon_s < 0.0:
            raise ScenarioError("service-level and short-abandon thresholds must be >= 0")

    @property
    def n_agents(self) -> int:
        return sum(g.count for g in self.groups)


def simple_scenario(
    *,
    agents: int,
    calls_per_hour: float,
    aht_s: float,
    hours: float,
    seed: int = 0,
    patience_s: float | None = None,
    sl_threshold_s: float = 20.0,
    warmup_s: float | None = None,
    strategy: Strategy = Strategy.LONGEST_IDLE,
    service: DistributionKind = "exponential",
    service_cv: float = 1.0,
    batches: int = DEFAULT_BATCHES,
    replications: int = 1,
    short_abandon_s: float = 5.0,
) -> Scenario:
    """One queue, one group of identical agents: the M/M/N (+M) setting of Erlang C and A.

    The default warm-up is 10 % of the measured period, simulated before it.
    """
    if agents < 1:
        raise ScenarioError(f"--agents must be >= 1, got {agents}")
    if not calls_per_hour > 0.0:
        raise ScenarioError(f"--calls-per-hour must be > 0, got {calls_per_hour}")
    if not hours > 0.0:
        raise ScenarioError(f"--hours must be > 0, got {hours}")
    duration_s = hours * 3600.0
    queue = QueueConfig(
        name="default",
        arrivals=((duration_s, calls_per_hour),),
        service=Distribution(service, aht_s, service_cv),
        patience=None if patience_s is None else Distribution("exponential", patience_s),
        strategy=strategy,
    )
    return Scenario(
        queues=(queue,),
        groups=(AgentGroup("agents", agents),),
        duration_s=duration_s,
        warmup_s=0.1 * duration_s if warmup_s is None else warmup_s,
        seed=seed,
        sl_threshold_s=sl_threshold_s,
        short_abandon_s=short_abandon_s,
        batches=batches,
        replications=replications,
    )


def _arrival_times(
    profile: tuple[tuple[float, float], ...], gaps: Iterator[float], end_s: float
) -> Iterator[float]:
    """Arrival times of a Poisson process with a cyclic piecewise-constant rate, up to ``end_s``.

    ``gaps`` are unit-mean exponentials: each is spent against the cumulative intensity, segment by
    segment, which is exact (no thinning, no rounding at segment edges).
    """
    rates = [per_hour / 3600.0 for _, per_hour in profile]
    durations = [d for d, _ in profile]
    if not any(rates):
        return
    t = 0.0
    seg = 0
    seg_end = durations[0]
    while True:
        e = next(gaps)
        while True:
            rate = rates[seg]
            if rate > 0.0:
                dt = e / rate
                if t + dt < seg_end:
                    t += dt
                    break
                e -= (seg_end - t) * rate
            t = seg_end
            seg = (seg + 1) % len(rates)
            seg_end = t + durations[seg]
        if t >= end_s:
            return
        yield t


@dataclass(slots=True)
class SimulationRun:
    """Per-call records of one or more replications (arrays of equal length, one entry per call)."""

    scenario: Scenario
    arrival_s: npt.NDArray[np.float64]
    queue: npt.NDArray[np.int64]
    outcome: npt.NDArray[np.int8]
    wait_s: npt.NDArray[np.float64]  # to answer, or to abandon; NaN while unresolved
    service_s: npt.NDArray[np.float64]  # drawn handling time (also for calls never answered)
    replication: npt.NDArray[np.int64]
    # callers already waiting in the call's queue when it arrived (its place in line is this + 1);
    # what an expected-wait predictor sees (routing_core.predict, benchmarks/bench_predictor.py)
    ahead: npt.NDArray[np.int64]
    events: int = 0
    wall_s: float = 0.0
    router_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def measured(self) -> npt.NDArray[np.bool_]:
        s = self.scenario
        return (self.arrival_s >= s.warmup_s) & (self.arrival_s < s.warmup_s + s.duration_s)


def run_replication(
    scenario: Scenario,
    seed: np.random.SeedSequence,
    *,
    progress: Callable[[float], None] | None = None,
    router_factory: Callable[..., Router] = Router,
    clock: Callable[[], float] | None = None,
) -> SimulationRun:
    """Simulate one replication of ``scenario``; returns every call's record (warm-up included).

    ``clock`` (e.g. time.perf_counter) only measures the wall time the run took, for the performance
    figures; the routing core itself never reads a clock.
    """
    t_wall = clock() if clock is not None else 0.0
    queues = scenario.queues
    nq = len(queues)
    children = seed.spawn(3 * nq + 1)
    router = router_factory(
        n_skills=scenario.n_skills,
        max_agents=max(1, scenario.n_agents),
        # The Router holds a task from enqueue until complete: waiting plus one per busy agent.
        max_tasks=scenario.max_waiting + max(1, scenario.n_agents),
        seed=int(children[-1].generate_state(1)[0]),
    )
    for q in queues:
        router.add_queue(q.spec())
    agent_ids: list[str] = []
    all_queues = tuple((q.name, 0) for q in queues)
    for g in scenario.groups:
        skills = dict(g.skills)
        membership = dict(all_queues if g.queues is None else g.queues)
        for i in range(g.count):
            aid = f"{g.name}-{i}"
            router.add_agent(aid, skills=skills, queues=membership)
            router.login(aid, 0.0)
            agent_ids.append(aid)

    end_s = scenario.warmup_s + scenario.duration_s
    arrivals: list[Iterator[float]] = []
    services: list[Iterator[float]] = []
    patiences: list[Iterator[float] | None] = []
    for k, q in enumerate(queues):
        unit = np.random.default_rng(children[3 * k])
        arrivals.append(_arrival_times(q.arrivals, _blocks(unit.standard_exponential), end_s))
        services.append(q.service.stream(np.random.default_rng(children[3 * k + 1])))
        patiences.append(
            None
            if q.patience is None
            else q.patience.stream(np.random.default_rng(children[3 * k + 2]))
        )
    names = [q.name for q in queues]
    priorities = [q.priority for q in queues]
    # Which operations can create a Router timer: only then is next_deadline worth asking.
    timer_on_enqueue = [bool(q.steps) for q in queues]
    timer_on_complete = any(q.wrap_up_s > 0.0 for q in queues)

    heap: list[tuple[float, int, int, int]] = []
    seq = itertools.count()
    push = heapq.heappush
    pop = heapq.heappop
    for k in range(nq):
        first = next(arrivals[k], None)
        if first is not None:
            push(heap, (first, next(seq), _ARRIVAL, k))

    # Per-call records (lists: appends are the cheapest growable store in the loop).
    arr_t: list[float] = []
    arr_q: list[int] = []
    out: list[int] = []
    wait: list[float] = []
    svc: list[float] = []
    ahead: list[int] = []
    waiting_in = [0] * nq  # per queue: callers waiting now

    enqueue = router.enqueue
    dispatch = router.dispatch
    accept = router.accept
    complete = router.complete
    abandon = router.abandon
    next_deadline = router.next_deadline
    agent_of_call: dict[int, str] = {}
    free_agents = len(agent_ids)
    n_waiting = 0
    pending_deadline = math.inf
    events = 0
    nan = math.nan

    def run_dispatch(now: float) -> int:
        """Dispatch and accept every offer at once; returns how many calls were answered."""
        taken = 0
        again = True
        while again:
            again = False
            for offer in dispatch(now):
                ci = int(offer.task_id)
                if out[ci] != WAITING:  # RING_ALL: the call's other offers were withdrawn
                    continue
                # RING_ALL: agents whose offers were withdrawn are free again; other waiting
                # calls may now reach them, so dispatch once more at the same instant.
                if accept(offer.task_id, offer.agent_id, now):
                    again = True
                out[ci] = ANSWERED
                waiting_in[arr_q[ci]] -= 1
                wait[ci] = now - arr_t[ci]
                agent_of_call[ci] = offer.agent_id
                push(heap, (now + svc[ci], next(seq), _SERVICE_END, ci))
                taken += 1
        return taken

    def check_deadline(now: float) -> float:
        """Schedule a DEADLINE event if the Router's earliest timer is earlier than the one pending.

        A timer already due (e.g. a relaxation step at 0 s) is handled by a DEADLINE event now, so a
        stale earliest timer can never hide the later ones.
        """
        d = next_deadline()
        if d is not None and d < pending_deadline:
            d = max(d, now)
            push(heap, (d, next(seq), _DEADLINE, 0))
            return d
        return pending_deadline

    while heap:
        now, _, kind, idx = pop(heap)
        events += 1
        if kind == _ARRIVAL:
            ci = len(arr_t)
            arr_t.append(now)
            arr_q.append(idx)
            out.append(WAITING)
            wait.append(nan)
            svc.append(next(services[idx]))
            ahead.append(waiting_in[idx])
            try:
                enqueue(str(ci), names[idx], now, priority=priorities[idx])
            except (QueueFull, CapacityExceeded):
                out[ci] = BLOCKED
            else:
                n_waiting += 1
                waiting_in[idx] += 1
                pat = patiences[idx]
                if pat is not None:
                    push(heap, (now + next(pat), next(seq), _PATIENCE, ci))
                if timer_on_enqueue[idx]:
                    pending_deadline = check_deadline(now)
                if free_agents:
                    taken = run_dispatch(now)
                    free_agents -= taken
                    n_waiting -= taken
            nxt = next(arrivals[idx], None)
            if nxt is not None:
                push(heap, (nxt, next(seq), _ARRIVAL, idx))
        elif kind == _SERVICE_END:
            complete(agent_of_call.pop(idx), now, task_id=str(idx))
            free_agents += 1
            if timer_on_complete:
                pending_deadline = check_deadline(now)
            if n_waiting:
                taken = run_dispatch(now)
                free_agents -= taken
                n_waiting -= taken
        elif kind == _PATIENCE:
            if out[idx] == WAITING:
                abandon(str(idx), now)
                out[idx] = ABANDONED
                waiting_in[arr_q[idx]] -= 1
                wait[idx] = now - arr_t[idx]
                n_waiting -= 1
        else:
            taken = run_dispatch(now)
            free_agents -= taken
            n_waiting -= taken
            # Only a timer strictly ahead is scheduled here: dispatch(now) has applied all due ones.
            d = next_deadline()
            pending_deadline = d if d is not None and d > now else math.inf
            if d is not None and d > now:
                push(heap, (d, next(seq), _DEADLINE, 0))
        if progress is not None and events % _PROGRESS_EVERY == 0:
            progress(min(1.0, now / end_s))
    if progress is not None:
        progress(1.0)
    n = len(arr_t)
    return SimulationRun(
        scenario=scenario,
        arrival_s=np.asarray(arr_t, dtype=np.float64),
        queue=np.asarray(arr_q, dtype=np.int64),
        outcome=np.asarray(out, dtype=np.int8),
        wait_s=np.asarray(wait, dtype=np.float64),
        service_s=np.asarray(svc, dtype=np.float64),
        replication=np.zeros(n, dtype=np.int64),
        ahead=np.asarray(ahead, dtype=np.int64),
        events=events,
        wall_s=clock() - t_wall if clock is not None else 0.0,
    )


def _concat(runs: Sequence[SimulationRun]) -> SimulationRun:
    if len(runs) == 1:
        return runs[0]
    return SimulationRun(
        scenario=runs[0].scenario,
        arrival_s=np.concatenate([r.arrival_s for r in runs]),
        queue=np.concatenate([r.queue for r in runs]),
        outcome=np.concatenate([r.outcome for r in runs]),
        wait_s=np.concatenate([r.wait_s for r in runs]),
        service_s=np.concatenate([r.service_s for r in runs]),
        replication=np.concatenate(
            [np.full(r.arrival_s.size, i, dtype=np.int64) for i, r in enumerate(runs)]
        ),
        ahead=np.concatenate([r.ahead for r in runs]),
        events=sum(r.events for r in runs),
        wall_s=sum(r.wall_s for r in runs),
    )


def _group_values(
    run: SimulationRun, numer: npt.NDArray[np.float64], denom: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """One ratio per CI sample: per batch (one replication) or per replication."""
    s = run.scenario
    if s.replications > 1:
        return batch_ratios(numer, denom, run.replication, s.replications)
    batch = batch_index(run.arrival_s, s.warmup_s, s.warmup_s + s.duration_s, s.batches)
    return batch_ratios(numer, denom, batch, s.batches)


def _ci_list(ci: ConfidenceInterval) -> list[float | None]:
    return [_clean(ci.lo), _clean(ci.hi)]


def _clean(x: float) -> float | None:
    """JSON has no NaN: undefined figures (zero denominators) become null."""
    return None if math.isnan(x) else float(x)


def _call_metrics(run: SimulationRun, mask: npt.NDArray[np.bool_]) -> dict[str, Any]:
    s = run.scenario
    ans = (run.outcome == ANSWERED) & mask
    ab = (run.outcome == ABANDONED) & mask
    resolved = ans | ab
    wait = np.where(resolved, run.wait_s, 0.0)
    waited = resolved & (wait > 0.0)
    within = ans & (wait <= s.sl_threshold_s)
    f = np.float64
    n_ans = int(ans.sum())
    n_ab = int(ab.sum())
    n_res = n_ans + n_ab
    metrics: dict[str, Any] = {
        "offered": int(mask.sum()),
        "answered": n_ans,
        "abandoned": n_ab,
        "blocked": int(((run.outcome == BLOCKED) & mask).sum()),
        "unresolved": int(((run.outcome == WAITING) & mask).sum()),
        "p_wait": _clean(waited.sum() / n_res if n_res else math.nan),
        "asa_s": _clean(float(wait[ans].mean()) if n_ans else math.nan),
        "service_level": _clean(within.sum() / n_ans if n_ans else math.nan),
        "abandon_rate": _clean(n_ab / n_res if n_res else math.nan),
        "mean_wait_s": _clean(float(wait[resolved].mean()) if n_res else math.nan),
    }
    for key, numer, denom in (
        ("p_wait", waited, resolved),
        ("asa_s", wait * ans, ans),
        ("service_level", within, ans),
        ("abandon_rate", ab, resolved),
    ):
        ci = mean_ci(_group_values(run, numer.astype(f), denom.astype(f)), s.confidence)
        metrics[f"{key}_ci"] = _ci_list(ci)
    defs = service_level_defs(
        ans[mask], ab[mask], np.where(resolved, run.wait_s, np.inf)[mask], s.sl_threshold_s,
        s.short_abandon_s,
    )  # fmt: skip
    metrics["service_level_defs"] = {k: _clean(v) for k, v in defs.items()}
    return metrics


def _occupancy(run: SimulationRun) -> tuple[float, ConfidenceInterval]:
    """Busy agent time inside the measured window (and per batch / replication) / agent time."""
    s = run.scenario
    agents = s.n_agents
    ans = run.outcome == ANSWERED
    start = (run.arrival_s + run.wait_s)[ans]
    end = start + run.service_s[ans]
    rep = run.replication[ans]
    w0, w1 = s.warmup_s, s.warmup_s + s.duration_s

    def busy(lo: float, hi: float, sel: npt.NDArray[np.bool_] | None = None) -> float:
        a, b = (start, end) if sel is None else (start[sel], end[sel])
        return float(np.clip(np.minimum(b, hi) - np.maximum(a, lo), 0.0, None).sum())

    if agents == 0:
        return math.nan, mean_ci([], s.confidence)
    total = busy(w0, w1) / (agents * s.duration_s * s.replications)
    if s.replications > 1:
        values = [busy(w0, w1, rep == r) / (agents * s.duration_s) for r in range(s.replications)]
    else:
        width = s.duration_s / s.batches
        values = [
            busy(w0 + b * width, w0 + (b + 1) * width) / (agents * width) for b in range(s.batches)
        ]
    return total, mean_ci(values, s.confidence)


def summarize(run: SimulationRun) -> dict[str, Any]:
    """The JSON-serialisable result of a simulation (see simulate())."""
    s = run.scenario
    measured = run.measured
    result = _call_metrics(run, measured)
    occ, occ_ci = _occupancy(run)
    result["occupancy"] = _clean(occ)
    result["occupancy_ci"] = _ci_list(occ_ci)
    result["service_level_definitions"] = dict(SL_DEFINITIONS)
    if len(s.queues) > 1:
        result["queues"] = {
            q.name: _call_metrics(run, measured & (run.queue == k)) for k, q in enumerate(s.queues)
        }
    offered_load = sum(q.mean_rate_per_s() * q.service.mean_s for q in s.queues)
    result["parameters"] = {
        "agents": s.n_agents,
        "offered_load_erlangs": offered_load,
        "sl_threshold_s": s.sl_threshold_s,
        "short_abandon_s": s.short_abandon_s,
        "measured_s": s.duration_s,
        "warmup_s": s.warmup_s,
        "seed": s.seed,
        "confidence": s.confidence,
        "ci_method": "replications" if s.replications > 1 else "batch_means",
        "ci_samples": s.replications if s.replications > 1 else s.batches,
    }
    result["performance"] = {
        "simulated_calls": int(run.arrival_s.size),
        "events": run.events,
        "wall_s": run.wall_s,
        "calls_per_wall_minute": run.arrival_s.size / run.wall_s * 60.0 if run.wall_s else None,
    }
    return result


def _scaled_progress(progress: Callable[[float], None], r: int, n: int, x: float) -> None:
    progress((r + x) / n)


def simulate_run(
    scenario: Scenario,
    *,
    progress: Callable[[float], None] | None = None,
    router_factory: Callable[..., Router] = Router,
    clock: Callable[[], float] | None = None,
) -> SimulationRun:
    """All replications of ``scenario`` as one SimulationRun (records tagged by replication)."""
    seeds = np.random.SeedSequence(scenario.seed).spawn(scenario.replications)
    n = scenario.replications
    runs: list[SimulationRun] = []
    for r, seed in enumerate(seeds):
        rep_progress: Callable[[float], None] | None = None
        if progress is not None:
            rep_progress = functools.partial(_scaled_progress, progress, r, n)
        runs.append(
            run_replication(
                scenario, seed, progress=rep_progress, router_factory=router_factory, clock=clock
            )
        )
    return _concat(runs)


def simulate(
    scenario: Scenario,
    *,
    progress: Callable[[float], None] | None = None,
    router_factory: Callable[..., Router] = Router,
    clock: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Run ``scenario`` and return one JSON-serialisable dict.

    Keys: offered, answered, abandoned, blocked, unresolved, p_wait (share of answered or abandoned
    calls that waited), asa_s (mean wait of answered calls), service_level (answered within T /
    answered), abandon_rate (abandoned / (answered + abandoned)), mean_wait_s, occupancy, the ``*_ci``
    intervals [lo, hi], service_level_defs ("a".."e", see routing_core.stats), queues (per queue, when
    there are several), parameters and performance.
    """
    run = simulate_run(scenario, progress=progress, router_factory=router_factory, clock=clock)
    return summarize(run)


# ----------------------------------------------------------------------------------------------
# Scenario files (TOML)

_SIM_KEYS = {
    "hours", "warmup_s", "seed", "sl_threshold_s", "short_abandon_s", "batches", "replications",
    "confidence", "max_waiting",
}  # fmt: skip
_QUEUE_KEYS = {
    "name", "calls_per_hour", "profile", "aht_s", "service", "service_cv", "patience_s", "requires",
    "strategy", "wrap_up_s", "max_length", "weight", "priority", "steps",
}  # fmt: skip
_GROUP_KEYS = {"name", "count", "skills", "queues"}
_STEP_KEYS = {"after_s", "requires", "max_penalty"}


def _expect(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise ScenarioError(f"{where}: expected {what}")


def _num(table: Mapping[str, Any], key: str, where: str, default: float | None = None) -> float:
    value = table.get(key, default)
    _expect(
        isinstance(value, int | float) and not isinstance(value, bool),
        f"{where}.{key}",
        "a number",
    )
    return float(value)


def _int(table: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
    value = table.get(key, default)
    _expect(isinstance(value, int) and not isinstance(value, bool), f"{where}.{key}", "an integer")
    return int(value)


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _skill_map(
    raw: Any, skills: dict[str, int], where: str, *, add: bool
) -> tuple[tuple[int, int], ...]:
    _expect(isinstance(raw, dict), where, "a table of skill = level")
    out: list[tuple[int, int]] = []
    for name, level in raw.items():
        _expect(
            isinstance(level, int) and not isinstance(level, bool) and 1 <= level <= 255,
            f"{where}.{name}",
            "a level 1..255",
        )
        if name not in skills:
            _expect(add, f"{where}.{name}", "a skill some agent group has")
            skills[name] = len(skills)
        out.append((skills[name], int(level)))
    return tuple(out)


def _strategy(raw: Any, where: str) -> Strategy:
    _expect(isinstance(raw, str), where, "a strategy name")
    try:
        return Strategy[str(raw).upper().replace("-", "_")]
    except KeyError:
        choices = ", ".join(s.name.lower() for s in Strategy)
        raise ScenarioError(f"{where}: unknown strategy {raw!r}; one of {choices}") from None


def scenario_from_dict(doc: Mapping[str, Any], source: str = "<scenario>") -> Scenario:
    """Decode a scenario document (the TOML layout of ``load_scenario``); unknown keys are errors."""
    _check_keys(doc, {"simulation", "queue", "group"}, source)
    sim = doc.get("simulation", {})
    _expect(isinstance(sim, dict), f"{source}: simulation", "a table")
    _check_keys(sim, _SIM_KEYS, f"{source}: simulation")
    where = f"{source}: simulation"
    hours = _num(sim, "hours", where)
    _expect(hours > 0, f"{where}.hours", "> 0")
    duration_s = hours * 3600.0
    raw_groups = doc.get("group", [])
    raw_queues = doc.get("queue", [])
    _expect(
        isinstance(raw_queues, list) and bool(raw_queues), f"{source}: queue", "[[queue]] tables"
    )
    _expect(isinstance(raw_groups, list), f"{source}: group", "[[group]] tables")
    skills: dict[str, int] = {}
    groups_raw: list[tuple[str, int, tuple[tuple[int, int], ...], Any]] = []
    for i, g in enumerate(raw_groups):
        gw = f"{source}: group[{i}]"
        _expect(isinstance(g, dict), gw, "a table")
        _check_keys(g, _GROUP_KEYS, gw)
        name = g.get("name", f"group{i}")
        _expect(isinstance(name, str) and bool(name), f"{gw}.name", "a non-empty string")
        count = _int(g, "count", gw)
        _expect(count >= 0, f"{gw}.count", ">= 0")
        gskills = _skill_map(g.get("skills", {}), skills, f"{gw}.skills", add=True)
        groups_raw.append((name, count, gskills, g.get("queues")))
    queues: list[QueueConfig] = []
    for i, q in enumerate(raw_queues):
        qw = f"{source}: queue[{i}]"
        _expect(isinstance(q, dict), qw, "a table")
        _check_keys(q, _QUEUE_KEYS, qw)
        name = q.get("name", f"queue{i}")
        _expect(isinstance(name, str) and bool(name), f"{qw}.name", "a non-empty string")
        if "profile" in q:
            _expect("calls_per_hour" not in q, qw, "either calls_per_hour or profile, not both")
            prof = q["profile"]
            _expect(
                isinstance(prof, list)
                and bool(prof)
                and all(
                    isinstance(p, list)
                    and len(p) == 2
                    and all(isinstance(v, int | float) and not isinstance(v, bool) for v in p)
                    for p in prof
                ),
                f"{qw}.profile",
                "a list of [duration_s, calls_per_hour] pairs",
            )
            arrivals = tuple((float(p[0]), float(p[1])) for p in prof)
        else:
            arrivals = (
                (duration_s + _num(sim, "warmup_s", where, 0.0), _num(q, "calls_per_hour", qw)),
            )
        kind = q.get("service", "exponential")
        _expect(
            kind in ("exponential", "lognormal", "deterministic"),
            f"{qw}.service",
            "exponential, lognormal or deterministic",
        )
        service = Distribution(kind, _num(q, "aht_s", qw), _num(q, "service_cv", qw, 1.0))
        patience = (
            Distribution("exponential", _num(q, "patience_s", qw)) if "patience_s" in q else None
        )
        requires = tuple(
            Requirement(s, lvl)
            for s, lvl in _skill_map(q.get("requires", {}), skills, f"{qw}.requires", add=False)
        )
        steps: list[RelaxStep] = []
        for j, st in enumerate(q.get("steps", [])):
            sw = f"{qw}.steps[{j}]"
            _expect(isinstance(st, dict), sw, "a table")
            _check_keys(st, _STEP_KEYS, sw)
            sreq = (
                tuple(
                    Requirement(s, lvl)
                    for s, lvl in _skill_map(st["requires"], skills, f"{sw}.requires", add=False)
                )
                if "requires" in st
                else None
            )
            steps.append(
                RelaxStep(
                    after_s=_num(st, "after_s", sw),
                    requirements=sreq,
                    max_penalty=_int(st, "max_penalty", sw) if "max_penalty" in st else None,
                )
            )
        queues.append(
            QueueConfig(
                name=name,
                arrivals=arrivals,
                service=service,
                patience=patience,
                requirements=requires,
                strategy=_strategy(q.get("strategy", "longest_idle"), f"{qw}.strategy"),
                steps=tuple(steps),
                wrap_up_s=_num(q, "wrap_up_s", qw, 0.0),
                max_length=_int(q, "max_length", qw, 0),
                weight=_int(q, "weight", qw, 0),
                priority=_int(q, "priority", qw, 0),
            )
        )
    qnames = {q.name for q in queues}
    groups: list[AgentGroup] = []
    for i, (name, count, gskills, raw_member) in enumerate(groups_raw):
        gw = f"{source}: group[{i}].queues"
        membership: tuple[tuple[str, int], ...] | None
        if raw_member is None:
            membership = None
        elif isinstance(raw_member, list):
            _expect(all(isinstance(x, str) and x in qnames for x in raw_member), gw, "queue names")
            membership = tuple((x, 0) for x in raw_member)
        else:
            _expect(isinstance(raw_member, dict), gw, "a list of queue names or {queue = penalty}")
            for qn, pen in raw_member.items():
                _expect(qn in qnames, f"{gw}.{qn}", "a queue name")
                _expect(
                    isinstance(pen, int) and not isinstance(pen, bool), f"{gw}.{qn}", "a penalty"
                )
            membership = tuple((str(k), int(v)) for k, v in raw_member.items())
        groups.append(AgentGroup(name, count, gskills, membership))
    _expect(sum(g.count for g in groups) >= 1, f"{source}: group", "at least one agent")
    return Scenario(
        queues=tuple(queues),
        groups=tuple(groups),
        duration_s=duration_s,
        warmup_s=_num(sim, "warmup_s", where, 0.1 * duration_s),
        n_skills=max(1, len(skills)),
        seed=_int(sim, "seed", where, 0),
        sl_threshold_s=_num(sim, "sl_threshold_s", where, 20.0),
        short_abandon_s=_num(sim, "short_abandon_s", where, 5.0),
        batches=_int(sim, "batches", where, DEFAULT_BATCHES),
        replications=_int(sim, "replications", where, 1),
        confidence=_num(sim, "confidence", where, 0.95),
        max_waiting=_int(sim, "max_waiting", where, DEFAULT_MAX_WAITING),
    )


def load_scenario(path: str) -> Scenario:
    """Read a scenario TOML file::

    [simulation]           # hours (measured), warmup_s, seed, sl_threshold_s, short_abandon_s,
    hours = 8              # batches, replications, confidence, max_waiting
    [[queue]]
    name = "sales"
    calls_per_hour = 120   # or profile = [[3600, 100], [3600, 180]] (seconds, calls/hour), cycled
    aht_s = 240
    service = "lognormal"  # exponential (default), lognormal (service_cv), deterministic
    patience_s = 300       # exponential patience; omit for none
    requires = { spanish = 2 }
    strategy = "longest_idle"
    [[group]]
    name = "bilingual"
    count = 5
    skills = { spanish = 4, english = 5 }
    queues = ["sales"]     # or { sales = 0, support = 1 } (penalties); omit for every queue
    """
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from exc
    return scenario_from_dict(doc, path)
