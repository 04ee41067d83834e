"""Interval estimates and tests for a handful of seeds, each honest at the n it is shown at.

Benchmarks here have 2 to 10 seeds per cell. Every interval below is checked by
a coverage simulation (tests/test_stats.py: normal and skewed data, n = 2, 3, 5,
10) and shown only at the n where it covers what it claims:

* mean: Student-t interval (exact for normal seeds at every n ≥ 2);
* interquartile mean: Yuen's trimmed-mean t-interval (Tukey–McLaughlin), only from
  ``MIN_SEEDS_IQM`` seeds (below that the IQM is the mean, or nearly, and a
  percentile bootstrap covers 50 % at n = 2 and ~75 % at n = 3, so the report
  lists the seeds instead);
* ratio of timings: Welch interval on the log scale;
* P(a random seed of A beats one of B): Newcombe's score interval (method 5), from
  ``MIN_SEEDS_PROB`` seeds each (checked across true probabilities 0.5 to 0.95);
* median time to an event (Kaplan–Meier): the exact order-statistic interval when
  nothing is censored, the inverted log-log band otherwise, never below the n at
  which even uncensored data could bound it; with every trial censored, only a lower
  bound, at the longest follow-up that enough trials shared (``km_lower_bound_all_censored``).

Each interval is *unadjusted*: at its own confidence level, not corrected for the
many cells a report shows. Only the paired comparisons' p-values are corrected
(Holm, ``holm``) and the words of the answer follow those.

With no spread among the seeds an interval would have zero width, which reads as
certainty: such intervals carry ``note = "all n seeds equal"`` and no bounds.
The vectorised helpers (``*_bounds``) take many samples at once along the last
axis, which is what keeps the coverage simulation to seconds.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
NAN = float("nan")
TRIM = 0.25  # interquartile mean: 25 % trimmed from each end
MIN_SEEDS_IQM = 10  # the trimmed-mean interval covers within ~2 points of nominal from here (tests/test_stats.py)
MIN_SEEDS_PROB = 4  # P(A beats B): at 3 seeds each, 2 of the C(6, 3) = 20 rank orders of equal distributions give
#                    p = 0 or 1, so coverage falls to 0.90 at a true 0.5; from 4 it stays ≥ 0.94 across true
#                    probabilities 0.5–0.95 (tests/test_stats.py prints the grid)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval; bounds are NaN when not shown, and ``note`` says why."""

    estimate: float
    low: float
    high: float
    n: int
    note: str = ""

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)


def _clean(values) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    return x[np.isfinite(x)]


def _quantile(confidence: float) -> float:
    return 0.5 + confidence / 2


def _no_interval(estimate: float, n: int, minimum: int = 2) -> Interval | None:
    """The interval to return instead when ``n`` values cannot give one, else None."""
    if n == 0:
        return Interval(NAN, NAN, NAN, 0, "no values")
    if n < minimum:
        return Interval(estimate, NAN, NAN, n, f"{n} seed{'s' * (n != 1)}: an interval needs ≥ {minimum}")
    return None


def equal_note(n: int) -> str:
    return f"all {n} seeds equal"


# -- means ----------------------------------------------------------------------------------------
def t_bounds(x: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and Student-t bounds along the last axis (n ≥ 2)."""
    n = x.shape[-1]
    mean = x.mean(-1)
    half = stats.t.ppf(_quantile(confidence), n - 1) * x.std(-1, ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


def t_interval(values, confidence: float = CONFIDENCE) -> Interval:
    """Mean with a Student-t interval; no bounds with fewer than 2 values or when all values are equal."""
    x = _clean(values)
    mean = float(x.mean()) if len(x) else NAN
    if (skip := _no_interval(mean, len(x))) is not None:
        return skip
    if np.ptp(x) == 0:
        return Interval(mean, NAN, NAN, len(x), equal_note(len(x)))
    m, lo, hi = t_bounds(x, confidence)
    return Interval(float(m), float(lo), float(hi), len(x))


def iqm(values) -> float:
    """Interquartile mean: the mean of the middle 50 % (robust to one bad seed, less noisy than the median).
    With 2 or 3 values nothing is trimmed, so it is the mean."""
    x = _clean(values)
    return float(stats.trim_mean(x, TRIM)) if len(x) else NAN


def trimmed_bounds(x: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interquartile mean and Yuen's (1974) interval along the last axis: with g trimmed per end and
    h = n − 2g kept, SE² = (n − 1)·s_w² / (h·(h − 1)) (s_w the winsorised SD), t on h − 1 degrees of freedom.
    (The Tukey–McLaughlin form s_w / ((1 − 2g/n)·√n) used before is 4–5 % narrower at n = 10.)"""
    n = x.shape[-1]
    g = int(TRIM * n)
    s = np.sort(x, axis=-1)
    centre = s[..., g:n - g].mean(-1)
    w = np.concatenate([np.repeat(s[..., g:g + 1], g, -1), s[..., g:n - g], np.repeat(s[..., n - g - 1:n - g], g, -1)], -1)
    h = n - 2 * g
    se = w.std(-1, ddof=1) * math.sqrt((n - 1) / (h * (h - 1)))
    half = stats.t.ppf(_quantile(confidence), h - 1) * se
    return centre, centre - half, centre + half


def iqm_interval(values, confidence: float = CONFIDENCE, min_seeds: int = MIN_SEEDS_IQM) -> Interval:
    """IQM with the trimmed-mean interval, shown from ``min_seeds`` values on (below, ``note`` says why)."""
    x = _clean(values)
    estimate = iqm(x)
    if (skip := _no_interval(estimate, len(x), min_seeds)) is not None:
        return skip
    if np.ptp(x) == 0:
        return Interval(estimate, NAN, NAN, len(x), equal_note(len(x)))
    c, lo, hi = trimmed_bounds(x, confidence)
    return Interval(float(c), float(lo), float(hi), len(x))


# -- ratios of timings ----------------------------------------------------------------------------
def welch_bounds(a: np.ndarray, b: np.ndarray, confidence: float = CONFIDENCE):
    """Difference of means ``a − b`` and Welch bounds along the last axis (each side n ≥ 2)."""
    va, vb = a.var(-1, ddof=1) / a.shape[-1], b.var(-1, ddof=1) / b.shape[-1]
    se2 = va + vb
    with np.errstate(divide="ignore", invalid="ignore"):
        df = se2 ** 2 / (va ** 2 / (a.shape[-1] - 1) + vb ** 2 / (b.shape[-1] - 1))
    d = a.mean(-1) - b.mean(-1)
    half = stats.t.ppf(_quantile(confidence), df) * np.sqrt(se2)
    return d, d - half, d + half


def ratio_interval(numerator, denominator, confidence: float = CONFIDENCE) -> Interval:
    """Ratio of geometric means, ``numerator / denominator``, with a Welch t-interval on the log scale.

    Timings are positive and their noise multiplicative, so the log scale is the
    natural one; the two groups are independent trials (timing noise is not paired
    by seed). The interval needs at least two values on each side.
    """
    a, b = np.log(_clean(numerator)), np.log(_clean(denominator))
    n = min(len(a), len(b))
    estimate = math.exp(a.mean() - b.mean()) if n else NAN
    if (skip := _no_interval(estimate, n)) is not None:
        return skip
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return Interval(estimate, NAN, NAN, n, "no spread in either group")
    _, lo, hi = welch_bounds(a, b, confidence)
    return Interval(estimate, math.exp(lo), math.exp(hi), n)


# -- paired comparisons ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PairedResult:
    """Mean of ``a - b`` over pairs, its t-interval and the paired t-test's two-sided p-value (NaN with
    ``note`` when no test is possible: fewer than 2 pairs, or every difference the same)."""

    difference: Interval
    pvalue: float
    sd: float  # standard deviation of the paired differences (what the power line uses)
    note: str = ""


def paired_test(a, b, confidence: float = CONFIDENCE) -> PairedResult:
    """Paired t-test on matched values (pairs with a missing side are dropped).

    Identical differences have no spread: the t statistic is ±∞ or 0/0, and a
    p-value of 0 (or 1) would claim a certainty that n seeds cannot give, so the
    p-value is NaN and the note says so (the smallest p-value even a sign-flip
    test could reach with n pairs is 2 / 2ⁿ)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    interval = t_interval(d, confidence)
    sd = float(d.std(ddof=1)) if len(d) > 1 else NAN
    if len(d) < 2:
        return PairedResult(interval, NAN, sd, f"{len(d)} pair{'s' * (len(d) != 1)}: a test needs ≥ 2")
    if np.ptp(d) == 0:
        return PairedResult(interval, NAN, sd, f"all {len(d)} paired differences equal: no spread to test against "
                                               f"(even a sign-flip test could not go below p = {2 / 2 ** len(d):.2g})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_1samp(d, 0.0).pvalue)
    return PairedResult(interval, p, sd)


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


# -- probability of improvement -----------------------------------------------------------------
def _newcombe_variance(theta, m, n):
    """Hanley–McNeil variance of the Mann–Whitney proportion with Newcombe's N* = (m + n) / 2."""
    k = (m + n) / 2 - 1
    return theta * (1 - theta) / (m * n) * (1 + k * (1 - theta) / (2 - theta) + k * theta / (1 + theta))


def newcombe_bounds(p, m: int, n: int, confidence: float = CONFIDENCE, iterations: int = 60):
    """Newcombe's (2006) method 5: the θ in [0, 1] with (p − θ)² ≤ z²·V(θ), found by bisection on each side
    of ``p`` (vectorised over ``p``). Unlike a Wald or percentile-bootstrap interval it never collapses at
    p = 0 or 1, which is where a handful of seeds puts it."""
    p = np.asarray(p, dtype=float)
    z2 = stats.norm.ppf(_quantile(confidence)) ** 2

    def outside(theta):
        return (p - theta) ** 2 > z2 * _newcombe_variance(theta, m, n)

    def solve(edge):  # from p towards edge: the last θ still inside
        inner, outer = p.copy(), np.full_like(p, edge)
        at_edge = ~outside(outer)
        for _ in range(iterations):
            mid = (inner + outer) / 2
            out = outside(mid)
            outer = np.where(out, mid, outer)
            inner = np.where(out, inner, mid)
        return np.where(at_edge, edge, inner)

    return solve(0.0), solve(1.0)


def prob_improvement(a, b, confidence: float = CONFIDENCE, min_seeds: int = MIN_SEEDS_PROB) -> Interval:
    """P(a random seed of A beats a random seed of B), ties counting half (the Mann–Whitney U / (m·n),
    as rliable reports it), with Newcombe's score interval. A and B are taken as independent samples."""
    x, y = _clean(a), _clean(b)
    m, n = len(x), len(y)
    if m == 0 or n == 0:
        return Interval(NAN, NAN, NAN, 0, "no values")
    # U / (m·n) from the midranks of the pooled sample: the pairwise count with ties as half, in O((m+n) log)
    # time and memory (the m×n comparison matrix is 5 GB at 25,000 seeds a side).
    ranks = stats.rankdata(np.concatenate([x, y]))
    p = float((ranks[:m].sum() - m * (m + 1) / 2) / (m * n))
    if (skip := _no_interval(p, min(m, n), min_seeds)) is not None:
        return skip
    lo, hi = newcombe_bounds(np.array([p]), m, n, confidence)
    return Interval(p, float(lo[0]), float(hi[0]), min(m, n))


# -- power ----------------------------------------------------------------------------------------
def paired_power(n, effect_size: float, alpha: float = 0.05) -> np.ndarray:
    """Power of the two-sided paired (one-sample) t-test with n pairs at standardised effect δ/σ."""
    n = np.asarray(n, dtype=float)
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = effect_size * np.sqrt(n)
    return stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)


def seeds_needed(sd: float, difference: float, alpha: float = 0.05, power: float = 0.8, most: int = 10_000) -> float:
    """Seeds (pairs) a paired t-test needs to detect ``difference`` with the given power when paired
    differences spread with standard deviation ``sd``; NaN when the spread is unknown or zero, ``inf``
    beyond ``most``."""
    if not (np.isfinite(sd) and sd > 0 and difference != 0):
        return NAN
    for start, stop in ((2, 200), (200, most + 1)):  # power rises with n: the usual answer is in the first block
        n = np.arange(start, stop)
        ok = np.flatnonzero(paired_power(n, abs(difference) / sd, alpha) >= power)
        if len(ok):
            return float(n[ok[0]])
    return math.inf


# -- time to an event (Kaplan–Meier) ------------------------------------------------------------
@dataclass(frozen=True)
class TimeToEvent:
    """Kaplan–Meier summary of a time until an event that some trials never reach (right-censored).

    ``median`` follows R's ``survfit``: the first time the estimated fraction still
    short of the event is ≤ ½, and where that fraction is exactly ½ over a stretch,
    the midpoint of the stretch (so with no censoring it is the ordinary sample
    median); ``inf`` = not reached by half. ``low``/``high``: NaN when ``n`` is too
    small for any interval at this confidence (``note`` says so), ``inf`` = not
    bounded by the data. ``curve``: times, fraction reached, its lower and upper band.
    """

    median: float
    low: float
    high: float
    n: int
    reached: int
    curve: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    note: str = ""


def min_seeds_for_median(confidence: float = CONFIDENCE) -> int:
    """The fewest values whose extremes bound a median at this confidence (6 at 95 %): below it no
    distribution-free interval exists, even without censoring."""
    return int(math.ceil(math.log2(2 / (1 - confidence))))


def median_order_interval(sorted_times: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The exact distribution-free interval for a median, (x₍ᵣ₎, x₍ₙ₋ᵣ₊₁₎) with the largest r whose
    binomial coverage 1 − 2·P(Bin(n, ½) ≤ r − 1) is still ≥ ``confidence``; NaNs if none is."""
    n = len(sorted_times)
    tail = stats.binom.cdf(np.arange(n), n, 0.5)  # P(Bin ≤ r − 1) for r = 1..n
    ok = np.flatnonzero(2 * tail <= 1 - confidence + 1e-12)
    if not len(ok):
        return NAN, NAN
    r = ok[-1] + 1
    return float(sorted_times[r - 1]), float(sorted_times[n - r])


def kaplan_meier(times, reached, confidence: float = CONFIDENCE) -> TimeToEvent:
    """Median time to an event with right-censoring, via ``scipy.stats.ecdf`` on ``CensoredData``.

    A trial that did not reach the event enters as censored at the time given for
    it: the caller decides that time (a running trial at its last epoch; a failed
    one at the planned horizon, because failing is not the same as stopping to be
    watched: censoring it at the failure would pull the median earlier).
    """
    t = np.asarray(times, dtype=float)
    r = np.asarray(reached, dtype=bool)
    keep = np.isfinite(t)
    t, r = t[keep], r[keep]
    n = len(t)
    empty = (np.array([]),) * 4
    if n == 0:
        return TimeToEvent(NAN, NAN, NAN, 0, 0, empty)
    smallest = min_seeds_for_median(confidence)
    too_few = n < smallest
    note = f"{n} trials: an interval for a median needs ≥ {smallest} at {confidence * 100:g} %" if too_few else ""
    if not r.any():
        flat = (np.array([0.0, t.max()]), np.zeros(2), np.zeros(2), np.zeros(2))
        low = NAN if too_few else km_lower_bound_all_censored(t, confidence)
        return TimeToEvent(math.inf, low, NAN if too_few else math.inf, n, 0, flat, note)
    data = stats.CensoredData(uncensored=t[r], right=t[~r])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sf = stats.ecdf(data).sf
        band = sf.confidence_interval(confidence, method="log-log")
    q, s = sf.quantiles, sf.probabilities
    lo, hi = band.low.probabilities, band.high.probabilities
    # The log-log band is undefined where S is 1 (before any event) or 0 (every trial reached it): it is 1
    # before the first event, and 0 once nobody is left short of the event.
    lo = np.where(s >= 1, 1.0, np.where(s <= 0, 0.0, lo))
    hi = np.where(s >= 1, 1.0, np.where(s <= 0, 0.0, hi))
    hi = np.fmin.accumulate(np.where(np.isnan(hi), np.inf, hi))  # non-increasing; carries the last value over NaNs

    median = _survfit_median(q, s)
    if too_few:
        low = high = NAN
    elif r.all():
        low, high = median_order_interval(np.sort(t), confidence)
    else:
        low, high = _first_at_or_below_half(q, lo), _first_at_or_below_half(q, hi)
    curve = (np.concatenate([[0.0], q]), np.concatenate([[0.0], 1 - s]),
             np.concatenate([[0.0], 1 - np.minimum(hi, 1.0)]), np.concatenate([[0.0], 1 - lo]))
    return TimeToEvent(median, low, high, n, int(r.sum()), curve, note)


def km_lower_bound_all_censored(times, confidence: float = CONFIDENCE) -> float:
    """With no trial at the event, the latest time t the median is still shown to exceed: k trials followed
    past t without an event bound the fraction reached by t below ½ when 1 − ((1 − c)/2)^(1/k) < ½ (the
    exact binomial upper bound for 0 events in k), i.e. k ≥ ``min_seeds_for_median``. So the bound is the
    follow-up time that many trials reached, never the single longest one (follow-ups 1, 1, 1, 1, 1, 50 bound
    the median above 1, not above 50: one trial followed to 50 says little about the other five)."""
    t = np.sort(np.asarray(times, dtype=float))[::-1]
    k = min_seeds_for_median(confidence)
    return float(t[k - 1]) if len(t) >= k else NAN


def _first_at_or_below_half(q, values) -> float:
    hits = np.flatnonzero(np.nan_to_num(values, nan=1.0) <= 0.5 + 1e-12)
    return float(q[hits[0]]) if len(hits) else math.inf


def _survfit_median(q, s) -> float:
    hits = np.flatnonzero(s <= 0.5 + 1e-12)
    if not len(hits):
        return math.inf
    i = hits[0]
    later = np.flatnonzero(s < s[i] - 1e-12)  # the next event, skipping censoring times
    if abs(s[i] - 0.5) < 1e-12 and len(later):  # flat at exactly one half: the midpoint, as survfit
        return float((q[i] + q[later[0]]) / 2)
    return float(q[i])
