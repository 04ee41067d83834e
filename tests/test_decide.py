"""Seeds until decided (harness/decide.py): the e-value against an independent integral, then the production
stopping rule (``decide.stop``) by simulation: type-I error, power, expected seeds and coverage at stopping, for
normal, Student t (3 df), skewed and outlier-contaminated seeds over a grid of spreads and true differences.
``-s`` prints the table (and the seeds saved against a fixed-n paired t-test of the same power). Vectorised:
seconds in all."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import integrate
from scipy import stats as sps

from analysis import stats as astats
from harness import decide as D


# -- known answers --------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,t", [(3, 1.5), (5, 2.5), (10, 3.0), (20, 0.7)])
def test_the_e_value_is_the_bayes_factor_of_the_t_statistic(n, t):
    """E_n as the ratio of t's marginal density under δ ~ N(0, g) (a noncentral t mixed over δ, integrated
    numerically) to its central density: an independent route to the closed form."""
    g, nu = D.PRIOR, n - 1
    mixed = integrate.quad(lambda delta: sps.nct.pdf(t, nu, delta * math.sqrt(n)) * sps.norm.pdf(delta, 0, math.sqrt(g)),
                           -12, 12, limit=200)[0]
    expected = mixed / sps.t.pdf(t, nu)
    # data with exactly this t: mean t·s/√n, SD s
    z = np.random.default_rng(n).normal(size=n)
    z = (z - z.mean()) / z.std(ddof=1)
    d = z + t / math.sqrt(n)
    assert float(D.e_value(d[None, :])[0]) == pytest.approx(expected, rel=1e-6)


def test_the_interval_ends_where_the_e_value_reaches_one_over_alpha():
    d = np.random.default_rng(0).normal(0.3, 1.0, (1, 12))
    for alpha in (0.05, 0.01):
        _, lo, hi = D.interval(d, alpha)
        assert float(D.e_value(d, float(lo[0]))[0]) == pytest.approx(1 / alpha, rel=1e-9)
        assert float(D.e_value(d, float(hi[0]))[0]) == pytest.approx(1 / alpha, rel=1e-9)
    # wider than the fixed-n t-interval at every n, and no finite bound before 1/α is reachable
    for n in range(2, 40):
        assert D.critical_t(n, 0.05) > sps.t.ppf(0.975, n - 1)
    for n in range(2, 12):  # E_n is bounded by (1 + n g)^((n − 1)/2): below 1/α no t can decide anything
        reachable = (1 + n * D.PRIOR) ** ((n - 1) / 2) >= 1 / 0.05
        assert np.isfinite(D.critical_t(n, 0.05)) == reachable
    assert np.isinf(D.critical_t(5, 0.05)) and np.isfinite(D.critical_t(6, 0.05))
    _, lo, hi = D.interval(np.full((1, 8), 0.01))  # no spread: no certainty from it
    assert np.isinf(lo[0]) and np.isinf(hi[0])


def test_checkpoints_and_classification():
    assert D.checkpoints(20, 5) == [5, 10, 15, 20] and D.checkpoints(20, 2) == list(range(2, 21, 2))
    assert D.checkpoints(7, 3) == [3, 6, 7] and D.checkpoints(10, 1) == list(range(2, 11))
    assert list(D.classify([0.1, -0.2, -0.001, -1.0], [0.3, 0.2, 0.004, 1.0], 0.005)) == [
        D.DIFFERENT, D.UNDECIDED, D.EQUIVALENT, D.UNDECIDED]


# -- the simulation -------------------------------------------------------------------------------------
REPS = 4000
BUDGET, ROUND, FAMILY = 20, 2, 3
MARGIN = 0.005
SPREADS = (0.001, 0.003, 0.01)  # SD of the paired differences: 0.1, 0.3, 1 pp
DIFFERENCES = (0.0, 0.0025, 0.005, 0.01)  # true mean differences: 0, half a margin, the margin, two margins
KINDS = ("normal", "t3", "skewed", "outlier", "very skewed")
ASSERTED = ("normal", "t3", "skewed", "outlier")  # 'very skewed' (exponential) is printed, not asserted


def draw(kind: str, rng, shape) -> np.ndarray:
    """Unit-variance, zero-mean noise: normal; Student t with 3 df (scaled by its SD, √3); 'skewed' = gamma
    with shape 4 (skewness 1); 'outlier' = one seed in 20 collapses 6 SDs low (centred); 'very skewed' =
    exponential (skewness 2)."""
    if kind == "normal":
        return rng.normal(size=shape)
    if kind == "t3":
        return rng.standard_t(3, shape) / math.sqrt(3)
    if kind == "skewed":
        return (rng.gamma(4.0, 1.0, shape) - 4.0) / 2.0
    if kind == "outlier":
        bad = rng.random(shape) < 0.05
        x = rng.normal(size=shape) - 6.0 * bad + 0.3
        return x / math.sqrt(1 + 36 * 0.05 * 0.95)
    return rng.exponential(1.0, shape) - 1.0


def simulate(seed: int = 0) -> pd.DataFrame:
    """One row per distribution × spread × true difference: the decisions of the production rule at the
    family's α/K (K = 3 comparisons sharing a baseline, each paired difference drawn with the same law)."""
    rng = np.random.default_rng(seed)
    settings = D.Settings(["convnet"], margin=MARGIN, budget=BUDGET, round_size=ROUND,
                          family=D.comparisons(["convnet", "a", "b", "c"], ["mnist"], ["convnet"]))
    alpha_each = settings.alpha_each
    rows = []
    for kind in KINDS:
        for sd in SPREADS:
            for diff in DIFFERENCES:
                noise = draw(kind, rng, (REPS, FAMILY, BUDGET))
                s = D.stop(diff + sd * noise, settings.looks, alpha_each, MARGIN, settings.prior)
                first = s.decision[:, 0]  # one comparison's view; the family's columns are exchangeable
                row = {"data": kind, "sd_pp": sd * 100, "diff_pp": diff * 100,
                       "different": np.mean(first == D.DIFFERENT), "equivalent": np.mean(first == D.EQUIVALENT),
                       "out_of_budget": np.mean(first == D.OUT_OF_BUDGET), "seeds": s.n[:, 0].mean(),
                       "coverage": np.mean((s.low[:, 0] <= diff) & (diff <= s.high[:, 0])),
                       "family_wrong": np.mean((s.decision == D.DIFFERENT).any(1)) if diff == 0 else np.nan}
                # a fixed-n paired t-test at the same α/K reaching the same power (different), for diff ≠ 0
                power = row["different"]
                row["fixed_n"] = (astats.seeds_needed(sd, diff, alpha_each, power=min(power, 0.99))
                                  if diff > 0 and power >= 0.5 else np.nan)
                rows.append(row)
    return pd.DataFrame(rows)


def table_text(frame: pd.DataFrame) -> str:
    lines = ["| data | SD pp | true diff pp | different | equivalent | out of budget | E[seeds] | coverage at stop | "
             "family-wise wrong 'different' | fixed-n seeds, same power |",
             "|" + " --- |" * 10]
    for r in frame.itertuples():
        fam = "–" if math.isnan(r.family_wrong) else f"{r.family_wrong:.3f}"
        fixed = "–" if not np.isfinite(r.fixed_n) else f"{r.fixed_n:.0f}"
        lines.append(f"| {r.data} | {r.sd_pp:g} | {r.diff_pp:g} | {r.different:.3f} | {r.equivalent:.3f} | "
                     f"{r.out_of_budget:.3f} | {r.seeds:.1f} | {r.coverage:.3f} | {fam} | {fixed} |")
    return "\n".join(lines)


def test_the_stopping_rule_keeps_its_error_rates_by_simulation():
    frame = simulate()
    alpha, alpha_each = D.ALPHA, D.ALPHA / FAMILY
    print(f"\nseeds until decided: budget {BUDGET}, looks every {ROUND} seeds, margin ±{MARGIN * 100:g} pp, "
          f"{FAMILY} comparisons at α = {alpha:g} / {FAMILY}, prior g = {D.PRIOR}, {REPS} runs per row")
    print(table_text(frame))
    se = lambda p: math.sqrt(p * (1 - p) / REPS)  # noqa: E731
    for r in frame[frame["data"].isin(ASSERTED)].itertuples():
        assert r.coverage >= 1 - alpha_each - 3 * se(alpha_each), r  # the interval at stopping covers
        if r.diff_pp == 0:
            assert r.different <= alpha_each + 3 * se(alpha_each), r  # type-I, one comparison
            assert r.family_wrong <= alpha + 3 * se(alpha), r  # family-wise
        if r.diff_pp * 1e-2 >= MARGIN:
            assert r.equivalent <= alpha_each + 3 * se(alpha_each), r  # 'equivalent' is wrong here
    normal = frame[frame["data"] == "normal"].set_index(["sd_pp", "diff_pp"])
    assert normal.loc[(0.1, 1.0), "different"] > 0.99 and normal.loc[(0.1, 1.0), "seeds"] < 10
    assert normal.loc[(0.1, 0.0), "equivalent"] > 0.99 and normal.loc[(0.1, 0.0), "seeds"] < 10
    assert normal.loc[(1.0, 0.0), "out_of_budget"] > 0.5  # 1 pp of spread cannot show ±0.5 pp in 20 seeds


def test_saved_seeds_against_a_fixed_n_design_of_the_same_power():
    """Where the sequential rule reaches ≥ 80 % power, its expected seeds against the fixed n a paired t-test
    needs for that power at the same α/K (analysis.stats.seeds_needed): printed, and on average fewer."""
    frame = simulate(seed=1)
    normal = frame[(frame["data"] == "normal") & (frame["different"] >= 0.8) & np.isfinite(frame["fixed_n"])]
    print("\n" + table_text(normal))
    saved = (normal["fixed_n"] - normal["seeds"]).mean()
    print(f"mean seeds saved per comparison (normal seeds, rows with ≥ 80 % power): {saved:.1f}")
    assert len(normal) >= 2
