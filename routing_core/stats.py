"""Wait statistics: the five service-level definitions and confidence intervals.

How this works
--------------
Calls are described by parallel arrays: ``answered`` and ``abandoned`` flags and ``wait_s`` (time to
answer, or time until the caller hung up). "Within T" means ``wait_s <= T``; a short abandon is an
abandon with ``wait_s < short_abandon_s``. Calls neither answered nor abandoned (blocked by a full
queue) are in no definition's numerator or denominator. The five definitions in use in the industry:

  (a) answered within T / answered                                   (abandons ignored)
  (b) (answered within T + abandoned within T) / (answered + abandoned)   (early abandons count as met)
  (c) answered within T / (answered + abandoned)                     (every abandon counts against)
  (d) answered within T / (answered + abandoned after T)             (only late abandons count against)
  (e) answered within T / (answered + abandoned - short abandons)    (callers who hung up almost at once,
      e.g. wrong numbers, are removed from the offered calls; the usual "offered minus short abandons")

A denominator of zero gives NaN.

Confidence intervals are Student-t intervals over independent (or nearly independent) samples:
either batch means (the measured period after warm-up is cut into a fixed number of equal time batches
and a ratio is computed per batch; consecutive batches of a long steady-state run are close to
independent) or independent replications (one value per run). The t quantile is exact for every
integer degree of freedom up to ``T_EXACT_MAX_DF``: the t CDF has a finite closed form for integer df
(Abramowitz & Stegun 26.7.3 and 26.7.4), inverted by bisection. Beyond that the Cornish-Fisher expansion
around the normal quantile (A&S 26.7.5, four terms) is used; its error there is below 1e-7.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "SL_DEFINITIONS",
    "ConfidenceInterval",
    "batch_index",
    "batch_ratios",
    "mean_ci",
    "service_level_defs",
    "t_quantile",
]

# Above this df the four-term Cornish-Fisher expansion is accurate to better than 1e-7, and the exact
# series (df/2 terms) would only cost time.
T_EXACT_MAX_DF: Final = 200
# Bisection steps on [0, upper]: halves the bracket 200 times, far below double precision.
_BISECT_STEPS: Final = 200

SL_DEFINITIONS: Final = {
    "a": "answered within T / answered",
    "b": "(answered within T + abandoned within T) / (answered + abandoned)",
    "c": "answered within T / (answered + abandoned)",
    "d": "answered within T / (answered + abandoned after T)",
    "e": "answered within T / (answered + abandoned - short abandons)",
}


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def service_level_defs(
    answered: npt.ArrayLike,
    abandoned: npt.ArrayLike,
    wait_s: npt.ArrayLike,
    threshold_s: float,
    short_abandon_s: float = 0.0,
) -> dict[str, float]:
    """The five service levels (keys "a".."e", see SL_DEFINITIONS) of a set of calls."""
    ans = np.asarray(answered, dtype=bool)
    ab = np.asarray(abandoned, dtype=bool)
    wait = np.asarray(wait_s, dtype=np.float64)
    if not (ans.shape == ab.shape == wait.shape):
        raise ValueError("answered, abandoned and wait_s must have the same shape")
    if np.any(ans & ab):
        raise ValueError("a call cannot be both answered and abandoned")
    within = wait <= threshold_s
    n_ans = float(ans.sum())
    n_ab = float(ab.sum())
    ans_within = float((ans & within).sum())
    ab_within = float((ab & within).sum())
    short = float((ab & (wait < short_abandon_s)).sum())
    return {
        "a": _ratio(ans_within, n_ans),
        "b": _ratio(ans_within + ab_within, n_ans + n_ab),
        "c": _ratio(ans_within, n_ans + n_ab),
        "d": _ratio(ans_within, n_ans + n_ab - ab_within),
        "e": _ratio(ans_within, n_ans + n_ab - short),
    }


def _t_two_sided_cdf(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer df (A&S 26.7.3 odd df, 26.7.4 even df)."""
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    c2 = c * c
    if df % 2 == 1:
        if df == 1:
            return 2.0 * theta / math.pi
        term = c
        acc = c
        for k in range(1, (df - 3) // 2 + 1):  # cos^(2k+1) with coefficient 2*4..(2k) / 3*5..(2k+1)
            term *= c2 * (2 * k) / (2 * k + 1)
            acc += term
        return (2.0 / math.pi) * (theta + s * acc)
    term = 1.0
    acc = 1.0
    for k in range(1, (df - 2) // 2 + 1):  # cos^(2k) with coefficient 1*3..(2k-1) / 2*4..(2k)
        term *= c2 * (2 * k - 1) / (2 * k)
        acc += term
    return s * acc


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (0 < p < 1, df >= 1)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p!r}")
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df!r}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    if df > T_EXACT_MAX_DF:
        z = NormalDist().inv_cdf(p)
        z2 = z * z
        g1 = (z2 + 1.0) * z / 4.0
        g2 = ((5.0 * z2 + 16.0) * z2 + 3.0) * z / 96.0
        g3 = (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * z / 384.0
        g4 = ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0) * z / 92160.0
        v = float(df)
        return z + g1 / v + g2 / v**2 + g3 / v**3 + g4 / v**4
    target = 2.0 * p - 1.0
    lo, hi = 0.0, 1.0
    while _t_two_sided_cdf(hi, df) < target:
        hi *= 2.0
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        if _t_two_sided_cdf(mid, df) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * hi:
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True, slots=True)
class ConfidenceInterval:
    """Student-t interval ``mean +- t * s / sqrt(n)`` over ``n`` independent samples."""

    mean: float
    lo: float
    hi: float
    n: int
    confidence: float

    def contains(self, value: float) -> bool:
        return self.lo <= value <= self.hi

    def overlaps(self, other: ConfidenceInterval) -> bool:
        return self.lo <= other.hi and other.lo <= self.hi


def mean_ci(samples: npt.ArrayLike, confidence: float = 0.95) -> ConfidenceInterval:
    """t interval for the mean of ``samples``; NaN samples (empty batches) are dropped.

    With fewer than two samples the interval is (NaN, NaN).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    x = np.asarray(samples, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0:
        return ConfidenceInterval(math.nan, math.nan, math.nan, 0, confidence)
    mean = float(x.mean())
    if n < 2:
        return ConfidenceInterval(mean, math.nan, math.nan, n, confidence)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return ConfidenceInterval(mean, mean - half, mean + half, n, confidence)


def batch_index(
    times_s: npt.ArrayLike, start_s: float, end_s: float, n_batches: int
) -> npt.NDArray[np.int64]:
    """Batch number (0..n_batches-1) of each time in [start_s, end_s); -1 outside the window."""
    if n_batches < 1 or not end_s > start_s:
        raise ValueError("need n_batches >= 1 and end_s > start_s")
    t = np.asarray(times_s, dtype=np.float64)
    idx = np.floor((t - start_s) * (n_batches / (end_s - start_s))).astype(np.int64)
    idx[(t < start_s) | (t >= end_s)] = -1
    np.minimum(idx, n_batches - 1, out=idx)  # rounding at the right edge
    return idx


def batch_ratios(
    numer: npt.ArrayLike, denom: npt.ArrayLike, batch: npt.ArrayLike, n_batches: int
) -> npt.NDArray[np.float64]:
    """Per batch ``sum(numer) / sum(denom)`` over the observations with that batch number (-1 skipped).

    A batch whose denominator is zero yields NaN (``mean_ci`` drops it).
    """
    b = np.asarray(batch, dtype=np.int64)
    keep = b >= 0
    num = np.bincount(b[keep], weights=np.asarray(numer, np.float64)[keep], minlength=n_batches)
    den = np.bincount(b[keep], weights=np.asarray(denom, np.float64)[keep], minlength=n_batches)
    out = np.full(n_batches, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out
