"""Confidence intervals for aggregate scores, computed from per-sample scores.

The unit of resampling is the *sample* (one context): the queries of a shared-context sample are
correlated, so a sample's score is the mean over its queries and the interval is over samples.

* Scores that are all 0 or 1 (needle found / not found) are a binomial proportion: the interval
  is the **Wilson score interval** (Wilson 1927), which stays honest for small ``n`` and for
  proportions at 0 or 1 where the normal interval collapses to a point.
* Other scores in [0, 1] (fraction of needles found, F1) get a **Student-t interval** on the mean,
  clipped to [0, 1].
* Paired comparisons (a method's score relative to the full cache on the same samples) use a
  seeded **percentile bootstrap** over samples; see :mod:`kvlab.report.effective`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided confidence interval; ``method`` says how it was computed."""

    mean: float
    low: float
    high: float
    n: int
    method: str  # "wilson", "t", "single" (n = 1: no interval), "none" (no data)


def mean_ci(scores: list[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean of per-sample ``scores`` with a confidence interval (Wilson for 0/1 scores, else t)."""
    n = len(scores)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "none")
    mean = sum(scores) / n
    if all(s in (0.0, 1.0) for s in scores):
        low, high = wilson(sum(scores), n, confidence)
        return Interval(mean, low, high, n, "wilson")
    if n == 1:
        return Interval(mean, mean, mean, 1, "single")
    var = sum((s - mean) ** 2 for s in scores) / (n - 1)
    half = t_quantile(0.5 + confidence / 2, n - 1) * math.sqrt(var / n)
    low, high = mean - half, mean + half
    if 0.0 <= min(scores) and max(scores) <= 1.0:
        low, high = max(0.0, low), min(1.0, high)
    return Interval(mean, low, high, n, "t")


def wilson(successes: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``successes / n``."""
    if n <= 0:
        raise ValueError("wilson() needs n >= 1")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return low, high


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t distribution (``df`` >= 1), by bisection on its CDF (no scipy needed)."""
    if df < 1:
        raise ValueError("t_quantile() needs df >= 1")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _t_cdf(t: float, df: int) -> float:
    """CDF of Student's t via the regularized incomplete beta function."""
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2, 0.5, x)
    return 1 - tail if t >= 0 else tail


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) by its continued fraction (Numerical Recipes 6.4)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def _betacf(a: float, b: float, x: float) -> float:
    tiny, c, d = 1e-300, 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h
