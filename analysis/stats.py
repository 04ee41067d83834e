"""Interval estimates and tests for a handful of seeds.

Benchmarks here have 2 to 10 seeds per cell, so every estimate comes with an
interval that is honest at small n: Student-t intervals for means, a
percentile bootstrap for the interquartile mean, Kaplan–Meier (via scipy) for
times that some trials never reach, a Welch interval on the log scale for
ratios of timings, and paired t-tests with Holm's correction for the
seed-by-seed comparisons. Each function takes plain arrays and returns plain
numbers, so the tables in ``metrics`` stay thin and the tests can check every
answer against a known value.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
NAN = float("nan")


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval; bounds are NaN when ``n`` is too small."""

    estimate: float
    low: float
    high: float
    n: int

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high


def _clean(values) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    return x[np.isfinite(x)]


def t_interval(values, confidence: float = CONFIDENCE) -> Interval:
    """Mean with a Student-t interval (the interval is the mean itself when every value is equal)."""
    x = _clean(values)
    if len(x) == 0:
        return Interval(NAN, NAN, NAN, 0)
    mean = float(x.mean())
    if len(x) < 2:
        return Interval(mean, NAN, NAN, 1)
    if np.ptp(x) == 0:
        return Interval(mean, mean, mean, len(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = stats.ttest_1samp(x, 0.0).confidence_interval(confidence)
    return Interval(mean, float(ci.low), float(ci.high), len(x))


def iqm(values) -> float:
    """Interquartile mean: the mean of the middle 50 % (robust to one bad seed, less noisy than the median)."""
    x = _clean(values)
    return float(stats.trim_mean(x, 0.25)) if len(x) else NAN


def bootstrap_iqm(values, confidence: float = CONFIDENCE, n_resamples: int = 2000, seed: int = 0) -> Interval:
    """IQM with a percentile-bootstrap interval (seeded, so a report is reproducible).

    Percentile rather than BCa: BCa's jackknife is unstable with the few seeds a
    benchmark has. With two seeds the interval is simply their range.
    """
    x = _clean(values)
    if len(x) < 2:
        return Interval(iqm(x), NAN, NAN, len(x))
    estimate = iqm(x)
    if np.ptp(x) == 0:
        return Interval(estimate, estimate, estimate, len(x))
    res = stats.bootstrap((x,), lambda s, axis: stats.trim_mean(s, 0.25, axis=axis), confidence_level=confidence,
                          n_resamples=n_resamples, method="percentile", rng=seed)
    return Interval(estimate, float(res.confidence_interval.low), float(res.confidence_interval.high), len(x))


def ratio_interval(numerator, denominator, confidence: float = CONFIDENCE) -> Interval:
    """Ratio of geometric means, ``numerator / denominator``, with a Welch t-interval on the log scale.

    Timings are positive and their noise multiplicative, so the log scale is the
    natural one; the two groups are independent trials (timing noise is not paired
    by seed). The interval needs at least two values on each side.
    """
    a, b = np.log(_clean(numerator)), np.log(_clean(denominator))
    n = min(len(a), len(b))
    if n == 0:
        return Interval(NAN, NAN, NAN, 0)
    estimate = math.exp(a.mean() - b.mean())
    if n < 2:
        return Interval(estimate, NAN, NAN, n)
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return Interval(estimate, estimate, estimate, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(confidence)
    return Interval(estimate, math.exp(ci.low), math.exp(ci.high), n)


@dataclass(frozen=True)
class PairedResult:
    """Mean of ``a - b`` over pairs, its t-interval and the paired t-test's two-sided p-value."""

    difference: Interval
    pvalue: float


def paired_test(a, b, confidence: float = CONFIDENCE) -> PairedResult:
    """Paired t-test on matched values (pairs with a missing side are dropped by the caller)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    interval = t_interval(d, confidence)
    if len(d) < 2:
        return PairedResult(interval, NAN)
    if np.all(d == 0):
        return PairedResult(interval, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_rel(a[keep], b[keep]).pvalue)
    return PairedResult(interval, p)


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment (controls the family-wise error rate); NaNs stay NaN and are not counted.

    scipy offers only false-discovery-rate control (``false_discovery_control``),
    so the few lines of Holm live here.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, NAN)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


@dataclass(frozen=True)
class TimeToEvent:
    """Kaplan–Meier summary of a time until an event that some trials never reach (right-censored).

    ``median`` is the first time by which the estimated fraction that reached the
    event is at least one half; ``inf`` when that never happens within what was
    observed. ``low``/``high`` invert the pointwise log-log band of the survival
    curve (``inf`` = not bounded by the data). ``curve`` holds the step function of
    the fraction reached: times, fraction, lower and upper band.
    """

    median: float
    low: float
    high: float
    n: int
    reached: int
    curve: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def kaplan_meier(times, reached, confidence: float = CONFIDENCE) -> TimeToEvent:
    """Median time to an event with censoring, via ``scipy.stats.ecdf`` on ``CensoredData``.

    A trial that never reached the event enters as right-censored at the last time
    it was observed: it counts as "not yet" up to then, so it can only push the
    median later, never earlier (dropping it would bias the median down).
    """
    t = np.asarray(times, dtype=float)
    r = np.asarray(reached, dtype=bool)
    keep = np.isfinite(t)
    t, r = t[keep], r[keep]
    empty = (np.array([]),) * 4
    if len(t) == 0:
        return TimeToEvent(NAN, NAN, NAN, 0, 0, empty)
    if not r.any():
        flat = (np.array([0.0, t.max()]), np.zeros(2), np.zeros(2), np.zeros(2))
        return TimeToEvent(math.inf, NAN, math.inf, len(t), 0, flat)
    data = stats.CensoredData(uncensored=t[r], right=t[~r])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sf = stats.ecdf(data).sf
        band = sf.confidence_interval(confidence, method="log-log")
    q, s = sf.quantiles, sf.probabilities
    lo, hi = band.low.probabilities, band.high.probabilities
    # The log-log band is undefined where S is 0 or 1: pin it to 1 before any event, to 0 (low) and the
    # last defined value (high) once every trial has reached the event.
    lo = np.where(s >= 1, 1.0, np.where(s <= 0, 0.0, lo))
    hi = np.where(s >= 1, 1.0, hi)
    hi = np.fmin.accumulate(np.where(np.isnan(hi), np.inf, hi))  # non-increasing; carries the last value over NaNs

    def first_at_or_below_half(values):
        hits = np.flatnonzero(np.nan_to_num(values, nan=1.0) <= 0.5 + 1e-12)
        return float(q[hits[0]]) if len(hits) else math.inf

    median = first_at_or_below_half(s)
    low = first_at_or_below_half(lo)
    high = first_at_or_below_half(hi)
    curve = (np.concatenate([[0.0], q]), np.concatenate([[0.0], 1 - s]),
             np.concatenate([[0.0], 1 - np.minimum(hi, 1.0)]), np.concatenate([[0.0], 1 - lo]))
    return TimeToEvent(median, low, high, len(t), int(r.sum()), curve)
