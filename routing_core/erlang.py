"""Erlang B, C and A: queueing formulas for staffing a contact center.

How this works
--------------
All three models share Poisson arrivals (rate ``lam`` per second) and exponential handling times
(mean ``aht_s``), so the offered load is ``A = lam * aht_s`` Erlangs, and ``N`` agents serve one FIFO queue.

* Erlang B (M/M/N/N, blocked calls lost) is computed with the recursion
  ``1/B(n) = 1 + (n/A) / B(n-1)`` carried in log space (``log1p``/``exp``), so it neither overflows
  for N >> A nor loses precision for large N: O(N), stable for N in the tens of thousands.
* Erlang C (M/M/N, infinite patience) follows from B: ``1/C = (N-A)/N * 1/B + A/N``. Service level is
  ``P(W <= T) = 1 - C * exp(-(N-A) * T / AHT)``, ASA is ``C * AHT / (N-A)``, occupancy ``A/N``.
* Erlang A (M/M/N+M, exponential patience of mean ``1/theta``) is the birth-death chain with death rate
  ``n*mu`` for ``n <= N`` and ``N*mu + (n-N)*theta`` above. Relative to ``pi_N`` the states below N sum to
  ``1/B(N, A)`` and the queue states to ``sum_k prod_{j<=k} lam / (N*mu + j*theta)``; that tail is summed in
  log space and truncated once a term falls below 1e-18 of the largest (the products decay faster than
  geometrically past their peak, so the truncation error is below that bound). An arriving caller who
  finds ``k`` callers queued ahead (PASTA) is served with probability ``N*mu / (N*mu + (k+1)*theta)`` (the
  ratios telescope), and the mean wait of those served follows a first-step recursion. The service level
  ``P(answered within T)`` is the transient absorption probability of the pure-death chain "callers
  ahead of me", computed by uniformization (a Poisson-weighted sum of powers of a stochastic matrix with
  only positive terms, so no cancellation; weights in log space). This is the careful birth-death method,
  not the incomplete-gamma closed form: it needs no special functions and stays positive everywhere.

Staffing scans N upward (incremental Erlang B recursion for Erlang C) and returns the first N that meets
the target service level and/or ASA (and optionally a maximum occupancy).

``erlang_main(argv)`` is the ``acd erlang`` command line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "ErlangAResult",
    "ErlangCResult",
    "ErlangError",
    "StaffingResult",
    "erlang_a",
    "erlang_b",
    "erlang_c",
    "erlang_main",
    "offered_load",
    "staffing",
]

# A queue term smaller than this fraction of the largest one cannot move any result in the 15th digit.
TAIL_REL_EPS = 1e-18
# Hard stop for the Erlang A queue tail: a tail this long means patience is effectively infinite
# compared with the overload (lam/theta above ten million callers); refuse rather than loop for minutes.
MAX_TAIL_TERMS = 10_000_000
# Poisson weights of uniformization are kept until the remaining mass is below this bound.
UNIFORMIZATION_EPS = 1e-14
# Staffing never searches beyond this many agents: no single queue is staffed with more.
MAX_STAFF = 100_000


class ErlangError(ValueError):
    """Inputs outside a model's domain (negative rates, N <= A for Erlang C, unreachable targets)."""


def offered_load(calls_per_hour: float, aht_s: float) -> float:
    """Offered load in Erlangs for an hourly call volume and an average handling time."""
    return calls_per_hour * aht_s / 3600.0


def _check_positive(name: str, value: float) -> None:
    if not (value > 0.0 and math.isfinite(value)):
        raise ErlangError(f"{name} must be a positive finite number, got {value!r}")


def _check_agents(agents: int) -> None:
    if isinstance(agents, bool) or not isinstance(agents, int) or agents < 1:
        raise ErlangError(f"agents must be an integer >= 1, got {agents!r}")


def _log_inv_erlang_b(agents: int, load: float) -> float:
    """log(1/B(agents, load)) by the log-space recursion (see module docstring)."""
    log_inv = 0.0  # 1/B(0) = 1
    log_load = math.log(load)
    for n in range(1, agents + 1):
        x = math.log(n) - log_load + log_inv
        # log(1 + e^x) without overflow
        log_inv = x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))
    return log_inv


def _next_log_inv_b(n: int, log_load: float, log_inv_prev: float) -> float:
    x = math.log(n) - log_load + log_inv_prev
    return x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))


def erlang_b(agents: int, load: float) -> float:
    """Blocking probability of M/M/N/N with ``load`` Erlangs offered to ``agents`` servers."""
    _check_agents(agents)
    _check_positive("load", load)
    return math.exp(-_log_inv_erlang_b(agents, load))


@dataclass(frozen=True, slots=True)
class ErlangCResult:
    """Erlang C (M/M/N) figures for one staffing level."""

    agents: int
    load_erlangs: float
    p_wait: float
    asa_s: float
    service_level: float
    sl_threshold_s: float
    occupancy: float


def _p_wait_c(agents: int, load: float, log_inv_b: float) -> float:
    # 1/C = (N-A)/N * 1/B + A/N, combined in log space because 1/B may be astronomically large.
    a = math.log((agents - load) / agents) + log_inv_b
    b = math.log(load / agents)
    hi, lo = (a, b) if a > b else (b, a)
    return math.exp(-(hi + math.log1p(math.exp(lo - hi))))


def _c_result(
    agents: int, load: float, aht_s: float, sl_threshold_s: float, log_inv_b: float
) -> ErlangCResult:
    p_wait = _p_wait_c(agents, load, log_inv_b)
    gap = agents - load
    return ErlangCResult(
        agents=agents,
        load_erlangs=load,
        p_wait=p_wait,
        asa_s=p_wait * aht_s / gap,
        service_level=1.0 - p_wait * math.exp(-gap * sl_threshold_s / aht_s),
        sl_threshold_s=sl_threshold_s,
        occupancy=load / agents,
    )


def erlang_c(
    agents: int, calls_per_hour: float, aht_s: float, sl_threshold_s: float = 20.0
) -> ErlangCResult:
    """Erlang C for ``agents`` agents; raises ErlangError when the queue is unstable (N <= A)."""
    _check_agents(agents)
    _check_positive("calls_per_hour", calls_per_hour)
    _check_positive("aht_s", aht_s)
    if not (sl_threshold_s >= 0.0 and math.isfinite(sl_threshold_s)):
        raise ErlangError(f"sl_threshold_s must be >= 0, got {sl_threshold_s!r}")
    load = offered_load(calls_per_hour, aht_s)
    if agents <= load:
        raise ErlangError(
            f"Erlang C needs more agents than Erlangs: {agents} agents for {load:.4g} Erlangs "
            "never empties the queue (use Erlang A with patience)"
        )
    return _c_result(agents, load, aht_s, sl_threshold_s, _log_inv_erlang_b(agents, load))


@dataclass(frozen=True, slots=True)
class ErlangAResult:
    """Erlang A (M/M/N+M) figures for one staffing level.

    ``service_level`` is answered within T / answered (definition (a) of ``routing_core.stats``);
    ``service_level_offered`` is answered within T / offered (definition (c)). ``asa_s`` is the mean
    wait of answered calls; ``mean_wait_s`` the mean time in queue of all callers (answered or not).
    """

    agents: int
    load_erlangs: float
    patience_s: float
    p_wait: float
    p_abandon: float
    service_level: float
    service_level_offered: float
    sl_threshold_s: float
    asa_s: float
    mean_wait_s: float
    mean_queue_length: float
    occupancy: float


def _queue_tail_log_terms(lam: float, n_mu: float, theta: float) -> np.ndarray:
    """log of prod_{j=1..k} lam/(n_mu + j*theta) for k = 1..K, truncated (module docstring)."""
    # The products grow while lam > n_mu + j*theta, so the peak is near j* and the tail decays after.
    peak = max(0.0, (lam - n_mu) / theta)
    chunk = max(1024, int(peak * 1.5) + 1024)
    logs: list[np.ndarray] = []
    start = 1
    offset = 0.0
    top = -math.inf
    while True:
        j = np.arange(start, start + chunk, dtype=np.float64)
        part = offset + np.cumsum(math.log(lam) - np.log(n_mu + j * theta))
        logs.append(part)
        top = max(top, float(part.max()))
        offset = float(part[-1])
        start += chunk
        if start > peak and offset < top + math.log(TAIL_REL_EPS):
            break
        if start > MAX_TAIL_TERMS:
            raise ErlangError(
                "patience is too long for this overload: the Erlang A queue tail does not converge"
            )
    out = np.concatenate(logs)
    keep = int(np.nonzero(out >= top + math.log(TAIL_REL_EPS))[0][-1]) + 1
    return out[:keep]


def _served_within(
    weights: np.ndarray, n_mu: float, theta: float, threshold_s: float
) -> tuple[float, float]:
    """P(served within T) and P(abandoned within T) for a tagged caller.

    ``weights[k]`` is the probability that the caller arrives with k callers queued ahead (all agents
    busy). The caller's state is "number ahead"; it drops at rate n_mu + k*theta, the caller is served
    from state 0 at rate n_mu, and leaves at rate theta from any state. Uniformization at rate ``rate``.
    """
    if threshold_s <= 0.0 or weights.size == 0:
        return 0.0, 0.0
    k = np.arange(weights.size, dtype=np.float64)
    down = n_mu + k * theta  # leaves state k towards k-1 (or service from k = 0)
    rate = float(down[-1] + theta)
    stay = 1.0 - (down + theta) / rate
    down_p = down / rate
    lt = rate * threshold_s
    # Poisson(lt) weights in log space, from 0 up to where the remaining mass is negligible.
    n_max = int(lt + 12.0 * math.sqrt(lt) + 40.0)
    p = weights.astype(np.float64).copy()
    served_cum = 0.0  # absorbed in "served" after n steps
    aband_cum = 0.0
    served_t = 0.0
    aband_t = 0.0
    log_lt = math.log(lt) if lt > 0 else -math.inf
    tail = 1.0
    for n in range(n_max + 1):
        w = math.exp(-lt + n * log_lt - math.lgamma(n + 1)) if lt > 0 else float(n == 0)
        served_t += w * served_cum
        aband_t += w * aband_cum
        tail -= w
        if n > lt and tail < UNIFORMIZATION_EPS:
            break
        served_cum += float(p[0] * down_p[0])
        aband_cum += float(p.sum() * (theta / rate))
        nxt = p * stay
        nxt[:-1] += p[1:] * down_p[1:]
        p = nxt
    return served_t, aband_t


def erlang_a(
    agents: int,
    calls_per_hour: float,
    aht_s: float,
    patience_s: float,
    sl_threshold_s: float = 20.0,
) -> ErlangAResult:
    """Erlang A (exponential patience of mean ``patience_s``); stable for any N, including N <= A."""
    _check_agents(agents)
    _check_positive("calls_per_hour", calls_per_hour)
    _check_positive("aht_s", aht_s)
    _check_positive("patience_s", patience_s)
    if not (sl_threshold_s >= 0.0 and math.isfinite(sl_threshold_s)):
        raise ErlangError(f"sl_threshold_s must be >= 0, got {sl_threshold_s!r}")
    lam = calls_per_hour / 3600.0
    mu = 1.0 / aht_s
    theta = 1.0 / patience_s
    n_mu = agents * mu
    load = lam / mu
    log_inv_b = _log_inv_erlang_b(agents, load)
    tail_logs = _queue_tail_log_terms(lam, n_mu, theta)  # k = 1..K, relative to pi_N
    # Everything relative to the largest log term so that neither 1/B nor the tail overflows.
    all_logs = np.concatenate(([log_inv_b, 0.0], tail_logs))
    top = float(all_logs.max())
    scaled = np.exp(all_logs - top)
    # 1/B already counts pi_N itself (relative weight 1), so the normaliser skips scaled[1].
    total = float(scaled[0]) + float(scaled[2:].sum())
    below_n = float(scaled[0]) / total  # P(n <= N): 1/B relative to pi_N
    # Arrivals that find k queued ahead, k = 0 (n = N), 1, ..., K.
    ahead = scaled[1:] / total
    p_n_equals_n = float(ahead[0])
    p_wait = float(ahead.sum())
    p_below = below_n - p_n_equals_n  # states 0..N-1: answered at once
    k = np.arange(ahead.size, dtype=np.float64)
    mean_queue = float((k * ahead).sum())
    served_prob = n_mu / (n_mu + (k + 1.0) * theta)
    p_abandon = float((ahead * (1.0 - served_prob)).sum())
    # E[wait * 1{served} | k ahead] by first-step analysis: m_k = s_k/r_k + (n_mu + k theta)/r_k m_{k-1}.
    r = n_mu + k * theta + theta
    m = np.empty_like(k)
    prev = 0.0
    for i in range(k.size):
        prev = served_prob[i] / r[i] + (n_mu + k[i] * theta) / r[i] * prev
        m[i] = prev
    p_answered = 1.0 - p_abandon
    asa_s = float((ahead * m).sum()) / p_answered
    served_t, _aband_t = _served_within(ahead, n_mu, theta, sl_threshold_s)
    answered_within = p_below + served_t
    return ErlangAResult(
        agents=agents,
        load_erlangs=load,
        patience_s=patience_s,
        p_wait=p_wait,
        p_abandon=p_abandon,
        # The two probabilities come from different sums; clamp the last-digit rounding at 1.
        service_level=min(1.0, answered_within / p_answered),
        service_level_offered=min(1.0, answered_within),
        sl_threshold_s=sl_threshold_s,
        asa_s=asa_s,
        mean_wait_s=mean_queue / lam,  # Little's law on the queue
        mean_queue_length=mean_queue,
        occupancy=load * p_answered / agents,
    )


@dataclass(frozen=True, slots=True)
class StaffingResult:
    """The smallest staffing that meets the targets, with the figures at that level."""

    agents: int
    model: str  # "erlang_c" or "erlang_a"
    load_erlangs: float
    p_wait: float
    asa_s: float
    service_level: float
    sl_threshold_s: float
    occupancy: float
    p_abandon: float | None


def staffing(
    calls_per_hour: float,
    aht_s: float,
    *,
    target_sl: float | None = None,
    sl_threshold_s: float = 20.0,
    target_asa_s: float | None = None,
    max_occupancy: float | None = None,
    patience_s: float | None = None,
    max_abandon: float | None = None,
) -> StaffingResult:
    """Smallest N whose service level >= ``target_sl`` (within ``sl_threshold_s``), ASA <= ``target_asa_s``
    and occupancy <= ``max_occupancy`` (each target optional, at least one given). With ``patience_s``
    the Erlang A figures are used (service level = answered within T / answered, which ignores
    abandons: pair it with ``max_abandon``, the largest acceptable P(abandon)), else Erlang C.
    """
    _check_positive("calls_per_hour", calls_per_hour)
    _check_positive("aht_s", aht_s)
    if target_sl is None and target_asa_s is None and max_occupancy is None and max_abandon is None:
        raise ErlangError(
            "give at least one target: service level, ASA, maximum occupancy or abandon rate"
        )
    if target_sl is not None and not 0.0 < target_sl < 1.0:
        raise ErlangError(f"target service level must be in (0, 1), got {target_sl!r}")
    if target_asa_s is not None and not target_asa_s > 0.0:
        raise ErlangError(f"target ASA must be > 0 seconds, got {target_asa_s!r}")
    if max_occupancy is not None and not 0.0 < max_occupancy <= 1.0:
        raise ErlangError(f"maximum occupancy must be in (0, 1], got {max_occupancy!r}")
    load = offered_load(calls_per_hour, aht_s)

    def meets(sl: float, asa: float, occ: float) -> bool:
        return (
            (target_sl is None or sl >= target_sl)
            and (target_asa_s is None or asa <= target_asa_s)
            and (max_occupancy is None or occ <= max_occupancy)
        )

    if patience_s is not None:
        if max_abandon is not None and not 0.0 < max_abandon < 1.0:
            raise ErlangError(f"maximum abandon rate must be in (0, 1), got {max_abandon!r}")

        def fits(n: int) -> ErlangAResult | None:
            ra = erlang_a(n, calls_per_hour, aht_s, patience_s, sl_threshold_s)
            ok = meets(ra.service_level, ra.asa_s, ra.occupancy) and (
                max_abandon is None or ra.p_abandon <= max_abandon
            )
            return ra if ok else None

        # Every Erlang A figure improves monotonically with N, so the smallest N that fits is found
        # by doubling, then bisection: O(log N) evaluations instead of a scan from 1.
        lo, hi = 0, 1
        best = fits(hi)
        while best is None:
            if hi >= MAX_STAFF:
                raise ErlangError(f"targets not reachable with {MAX_STAFF} agents")
            lo, hi = hi, min(2 * hi, MAX_STAFF)
            best = fits(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            found = fits(mid)
            if found is None:
                lo = mid
            else:
                hi, best = mid, found
        return StaffingResult(
            agents=hi,
            model="erlang_a",
            load_erlangs=load,
            p_wait=best.p_wait,
            asa_s=best.asa_s,
            service_level=best.service_level,
            sl_threshold_s=sl_threshold_s,
            occupancy=best.occupancy,
            p_abandon=best.p_abandon,
        )
    if max_abandon is not None:
        raise ErlangError("a maximum abandon rate needs a patience (Erlang A)")
    n = math.floor(load) + 1
    log_load = math.log(load)
    log_inv_b = _log_inv_erlang_b(n, load)
    while n <= MAX_STAFF:
        rc = _c_result(n, load, aht_s, sl_threshold_s, log_inv_b)
        if meets(rc.service_level, rc.asa_s, rc.occupancy):
            return StaffingResult(
                agents=n,
                model="erlang_c",
                load_erlangs=load,
                p_wait=rc.p_wait,
                asa_s=rc.asa_s,
                service_level=rc.service_level,
                sl_threshold_s=sl_threshold_s,
                occupancy=rc.occupancy,
                p_abandon=None,
            )
        n += 1
        log_inv_b = _next_log_inv_b(n, log_load, log_inv_b)
    raise ErlangError(f"targets not reachable with {MAX_STAFF} agents")


# ----------------------------------------------------------------------------------------------
# Command line: acd erlang {b,c,a,staff}


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so erlang_main can return an exit code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ErlangError(message)


def _agents_list(text: str) -> list[int]:
    """ "14", "11-16" or "11,12,14" -> list of agent counts."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            lo_s, hi_s = part.split("-", 1)
            lo, hi = int(lo_s), int(hi_s)
            if lo > hi:
                raise argparse.ArgumentTypeError(f"empty range {part!r}")
            out.extend(range(lo, hi + 1))
        else:
            out.append(int(part))
    if any(n < 1 for n in out):
        raise argparse.ArgumentTypeError("agent counts must be >= 1")
    return out


def _build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="acd erlang",
        description="Erlang B/C/A queueing figures and staffing for one queue.",
    )
    sub = parser.add_subparsers(dest="model", required=True, parser_class=_ArgumentParser)

    def common(p: argparse.ArgumentParser, agents: bool = True) -> None:
        p.add_argument("--calls-per-hour", type=float, required=True, help="offered calls per hour")
        p.add_argument("--aht", type=float, required=True, help="average handling time, seconds")
        if agents:
            p.add_argument(
                "--agents",
                type=_agents_list,
                required=True,
                help="N, a range 11-16 or a list 11,12",
            )
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    pb = sub.add_parser("b", help="Erlang B blocking probability")
    common(pb)
    pc = sub.add_parser("c", help="Erlang C: P(wait), ASA, service level, occupancy")
    common(pc)
    pc.add_argument("--sl-threshold", type=float, default=20.0, help="T in seconds (default 20)")
    pa = sub.add_parser("a", help="Erlang A: Erlang C with exponential patience (abandonment)")
    common(pa)
    pa.add_argument("--sl-threshold", type=float, default=20.0, help="T in seconds (default 20)")
    pa.add_argument("--patience", type=float, required=True, help="mean patience, seconds")
    ps = sub.add_parser("staff", help="smallest number of agents meeting the targets")
    common(ps, agents=False)
    ps.add_argument("--sl-threshold", type=float, default=20.0, help="T in seconds (default 20)")
    ps.add_argument(
        "--target-sl", type=float, help="service level target, fraction (0.8) or percent"
    )
    ps.add_argument("--target-asa", type=float, help="ASA target, seconds")
    ps.add_argument("--max-occupancy", type=float, help="occupancy cap, fraction")
    ps.add_argument("--patience", type=float, help="mean patience, seconds (uses Erlang A)")
    ps.add_argument(
        "--max-abandon", type=float, help="abandon rate cap, fraction (needs --patience)"
    )
    return parser


def _print_table(rows: Sequence[dict[str, object]]) -> None:
    if not rows:
        return
    keys = list(rows[0])
    cells = [[_fmt(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("  ".join(k.rjust(w) for k, w in zip(keys, widths, strict=True)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    return "-" if value is None else str(value)


def erlang_main(argv: list[str]) -> int:
    """``acd erlang``: returns 0 on success, 2 on bad input (message on stderr, no traceback)."""
    try:
        args = _build_parser().parse_args(argv)
        rows: list[dict[str, object]]
        if args.model == "b":
            load = offered_load(args.calls_per_hour, args.aht)
            rows = [
                {"agents": n, "load_erlangs": load, "p_block": erlang_b(n, load)}
                for n in args.agents
            ]
        elif args.model == "c":
            rows = [
                asdict(erlang_c(n, args.calls_per_hour, args.aht, args.sl_threshold))
                for n in args.agents
            ]
        elif args.model == "a":
            rows = [
                asdict(erlang_a(n, args.calls_per_hour, args.aht, args.patience, args.sl_threshold))
                for n in args.agents
            ]
        else:
            target_sl = args.target_sl
            if target_sl is not None and target_sl >= 1.0:
                target_sl /= 100.0  # "80" means 80 %
            rows = [
                asdict(
                    staffing(
                        args.calls_per_hour,
                        args.aht,
                        target_sl=target_sl,
                        sl_threshold_s=args.sl_threshold,
                        target_asa_s=args.target_asa,
                        max_occupancy=args.max_occupancy,
                        patience_s=args.patience,
                        max_abandon=args.max_abandon,
                    )
                )
            ]
    except ErlangError as exc:
        print(f"acd erlang: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows if len(rows) != 1 else rows[0], indent=2))
    else:
        _print_table(rows)
    return 0
