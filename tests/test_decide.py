"""Seeds until decided (harness/decide.py): the e-value against an independent integral, then the production
stopping rule (``decide.stop``) by simulation: type-I error, power, expected seeds and coverage at stopping, for
normal, Student t (3 df), skewed and outlier-contaminated seeds over a grid of spreads and true differences.
``-s`` prints the table (and the seeds saved against a fixed-n paired t-test of the same power). Vectorised:
seconds in all."""

from __future__ import annotations

import functools
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
    assert np.isinf(D.critical_t(6, 0.05 / 3)) and np.isfinite(D.critical_t(7, 0.05 / 3))  # the README's 6 and 7
    _, lo, hi = D.interval(np.full((1, 8), 0.01))  # no spread: no certainty from it
    assert np.isinf(lo[0]) and np.isinf(hi[0])


def test_checkpoints_and_classification():
    assert D.checkpoints(20, 5) == [5, 10, 15, 20] and D.checkpoints(20, 2) == list(range(2, 21, 2))
    assert D.checkpoints(7, 3) == [3, 6, 7] and D.checkpoints(10, 1) == list(range(2, 11))
    assert list(D.classify([0.1, -0.2, -0.001, -1.0], [0.3, 0.2, 0.004, 1.0], 0.005)) == [
        D.DIFFERENT, D.UNDECIDED, D.EQUIVALENT, D.UNDECIDED]


def test_looking_at_a_plain_t_test_after_every_seed_is_not_an_option():
    """Why the rule is needed (the README's 26 %): a paired t-test at α = 0.05 checked after each seed from 2 to 20
    rejects a true null in about a quarter of runs; the anytime-valid interval at the same α in under 5 %."""
    x = np.random.default_rng(3).normal(size=(20_000, 20))
    n = np.arange(1, 21)
    mean, sd = np.cumsum(x, 1) / n, None
    csum2 = np.cumsum(x ** 2, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = np.sqrt((csum2 - n * mean ** 2) / (n - 1))
        p = 2 * sps.t.sf(np.abs(mean / (sd / np.sqrt(n))), n - 1)
    naive = np.mean((p[:, 1:] < 0.05).any(1))
    assert 0.24 <= naive <= 0.28, naive
    s = D.stop(x, list(range(2, 21)), 0.05, margin=1e-12)
    assert np.mean(s.decision == D.DIFFERENT) < 0.05


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


@functools.lru_cache(maxsize=None)  # both simulation tests read the same table
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
    frame = simulate()
    normal = frame[(frame["data"] == "normal") & (frame["different"] >= 0.8) & np.isfinite(frame["fixed_n"])]
    print("\n" + table_text(normal))
    saved = (normal["fixed_n"] - normal["seeds"]).mean()
    print(f"mean seeds saved per comparison (normal seeds, rows with ≥ 80 % power), against a fixed n sized "
          f"knowing each row's spread and difference: {saved:.1f}")
    worst = normal["fixed_n"].max()  # one n fixed in advance that reaches the power in every one of these rows
    print(f"against one fixed n = {worst:.0f} that reaches that power in all of them: "
          f"{(worst - normal['seeds']).mean():.1f} (per row: "
          + ", ".join(f"{worst - x:.1f}" for x in normal["seeds"]) + ")")
    assert len(normal) >= 2 and (worst - normal["seeds"] > 0).all()


# -- the driver's rounds, on a real results store (trials written by a stand-in for Ray Tune) --------------
QUICK_DECIDE = """name: decide_test
architectures: [convnet, stnet, coordconv, stcoordconv]
training: {epochs: 1, train_limit: 1000}
datasets: {mnist: {}}
decide: {budget: 16, round: 2, margin: 0.005}
"""


class StandIn:
    """What ``run_decided_rounds`` uses of the driver's session: ``store`` and ``benchmark(trials, ...)``. Each trial's
    test accuracy is fixed by its architecture and seed: stnet 2 pp above convnet (different), coordconv within
    0.05 pp (equivalent), stcoordconv +0.3 pp with a 2 pp spread (out of budget)."""

    def __init__(self, root, interrupt_after: int | None = None):
        from test_analysis import Synth

        self.synth, self.store = Synth(root), Synth(root).store
        self.written: list[str] = []
        self.rounds, self.interrupt_after = 0, interrupt_after

    @staticmethod
    def accuracy(arch: str, seed: int) -> float:
        rng = np.random.default_rng(seed)
        base = 0.95 + 0.004 * rng.normal()
        return base + {"convnet": 0.0, "stnet": 0.02 + 0.002 * rng.normal(), "coordconv": 0.0005 * rng.normal(),
                       "stcoordconv": 0.003 + 0.02 * rng.normal()}[arch]

    def benchmark(self, trials, max_concurrent, retry_errored):
        if self.interrupt_after is not None and self.rounds == self.interrupt_after:
            raise KeyboardInterrupt  # killed between rounds
        done = self.store.finished_trial_ids()
        for t in trials:
            if t.trial_id not in done:
                self.synth.trial(t.architecture, t.seed, [0.5], test_acc=self.accuracy(t.architecture, t.seed),
                                 trial_id=t.trial_id)
                self.written.append(t.trial_id)
        self.rounds += 1


def _rounds(root, interrupt_after=None):
    from harness.driver import Outcome, run_decided_rounds
    from harness.space import parse_space

    space = D.budget_space(parse_space(QUICK_DECIDE), 16)
    settings = D.settings_for(space, 1)
    session = StandIn(root, interrupt_after)
    trials = space.trials()
    outcome = run_decided_rounds(session, trials, settings, None, False, Outcome("r", 0, 0))
    return session, outcome, D.replay(session.store.trials(), settings, {t.trial_id for t in trials}), settings


def test_rounds_stop_each_comparison_when_decided_and_resume_after_a_kill(tmp_path):
    session, outcome, decisions, settings = _rounds(tmp_path / "once")
    by_arch = {c.architecture: d for c, d in decisions.items()}
    assert by_arch["stnet"].decision == D.DIFFERENT and by_arch["coordconv"].decision == D.EQUIVALENT
    assert by_arch["stcoordconv"].decision == D.OUT_OF_BUDGET and by_arch["stcoordconv"].n == 16
    assert by_arch["stnet"].look < 16 and by_arch["coordconv"].look < 16
    assert len({by_arch[a].look for a in ("stnet", "coordconv", "stcoordconv")}) >= 2  # different rounds
    # a decided cell gets no more seeds; the baseline runs as long as any comparison is open
    trials = session.store.trials()
    count = trials.groupby("architecture")["seed"].nunique()
    assert count["stnet"] == by_arch["stnet"].look and count["coordconv"] == by_arch["coordconv"].look
    assert count["convnet"] == count["stcoordconv"] == 16
    assert len(session.written) == len(set(session.written)) == outcome.total == len(trials)
    # the driver's replay and the simulated rule (``stop``) agree on the same paired differences
    for comparison, d in decisions.items():
        values = D.paired_values(trials, comparison, settings.metric)
        padded = np.concatenate([values, np.zeros(16 - len(values))])[None, :]  # seeds after a stop never count
        s = D.stop(padded, settings.looks, settings.alpha_each, settings.margin, settings.prior)
        assert (s.decision[0], s.n[0]) == (d.decision, d.n) and s.low[0] == pytest.approx(d.low)
    # killed between rounds, then rerun: the same decisions from the same seeds, none trained twice
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        _rounds(killed, interrupt_after=2)
    first = set(StandIn(killed).store.finished_trial_ids())
    again, _, resumed, _ = _rounds(killed)
    assert not first & set(again.written) and len(again.written) == len(set(again.written))
    assert {c: (d.decision, d.n, d.look) for c, d in resumed.items()} == {
        c: (d.decision, d.n, d.look) for c, d in decisions.items()}
    assert set(StandIn(killed).store.finished_trial_ids()) == set(session.store.finished_trial_ids())
    words = D.sentences(decisions, settings)
    assert any("stnet − convnet on mnist: different after" in w and "excludes 0" in w for w in words)
    assert any("equivalent after" in w and "inside ±0.5 pp" in w for w in words)
    assert any("out of budget after 16 paired seeds" in w for w in words)
    assert all("family-wise error ≤ 5 % over 3 comparisons at whatever round" in w and "exact for normal" in w
               for w in words)


def test_the_decide_section_is_checked_before_anything_runs():
    from harness.errors import UserError
    from harness.space import parse_space

    with pytest.raises(UserError, match="decide.baselines: resnext is not among"):
        parse_space(QUICK_DECIDE.replace("round: 2", "round: 2, baselines: [resnext]"))
    with pytest.raises(UserError, match="decide.first: 30 is above the budget"):
        parse_space(QUICK_DECIDE.replace("round: 2", "round: 2, first: 30"))
    space = parse_space(QUICK_DECIDE)
    with pytest.raises(UserError, match="--seeds: not with seeds until decided"):
        D.check_selection(space, {"seeds": [0, 1]})
    with pytest.raises(UserError, match="decide.baselines: convnet must run too"):
        D.check_selection(space, {"architectures": ["stnet"]})
    grid = D.budget_space(space, 16).trials()
    assert sorted({t.seed for t in grid}) == list(range(16))
    # the same seed's id as in a plain run of the space: new seeds are ordinary trials
    plain = {(t.architecture, t.seed): t.trial_id for t in parse_space(QUICK_DECIDE.replace(
        "training: {", "training: {seeds: 3, ")).trials()}
    assert all(plain[(t.architecture, t.seed)] == t.trial_id for t in grid if t.seed < 3)
    lines = D.plan_for(D.budget_space(space, 16))
    assert "budget 16 seeds per cell, at most 64 trials" in lines[0] and "expected seeds" in lines[1]


# -- end to end: the quick space until decided, killed between rounds and resumed --------------------------
@pytest.mark.slow
def test_quick_until_decided_end_to_end_killed_between_rounds_and_resumed(mnist_root, tmp_path):
    import os
    import subprocess
    import sys
    import time

    from conftest import REPO, kill_tree, run_cli

    from analysis.load import load
    from harness.store import ResultsStore, verify

    results = tmp_path / "results"
    # convnet vs stnet on 1,000 images, 1 epoch: budget 6 seeds in rounds of 2 (looks at 2, 4, 6); a margin of
    # ±50 pp lets seeds this noisy reach "equivalent" at the first look that can decide (6 pairs)
    args = ["--space", "quick", "--until-decided", "--architectures", "convnet,stnet",
            "--set", "decide.budget=6", "--set", "decide.round=2", "--set", "decide.margin=0.5",
            "--set", "training.epochs=1", "--set", "training.train_limit=1000", "--set", "training.val_size=500",
            "--set", "training.test_limit=500", "--gpu", "0", "--results-dir", results, "--data-dir", mnist_root,
            "--wandb-mode", "disabled", "--max-concurrent", "2"]
    proc = subprocess.Popen([sys.executable, "run_benchmark.py", *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "RAY_ADDRESS": ""})
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:  # kill once round 1 (seeds 0, 1) is stored
            if (results / "trials").is_dir() and len(list((results / "trials").glob("*.parquet"))) >= 4:
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read()[-3000:]
    finally:
        kill_tree(proc)
    first = ResultsStore(results).trials()
    assert len(first) >= 4 and set(first.seed) >= {0, 1}
    out = run_cli(args, timeout=900)
    assert out.rc == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "stnet − convnet on mnist:" in out.stdout and "seeds until decided" in out.stdout
    problems, _ = verify(results)
    assert not problems, problems
    trials = ResultsStore(results).trials()
    assert trials.trial_id.is_unique
    kept = first.set_index("trial_id").run_id
    assert (trials.set_index("trial_id").run_id.reindex(kept.index) == kept).all()  # none of round 1 trained again
    assert set(trials.seed) <= set(range(6)) and set(trials.architecture) == {"convnet", "stnet"}
    lines = D.report_lines(load(results))
    assert len(lines) == 1 and "stnet − convnet on mnist" in lines[0]
    assert any(w in lines[0] for w in (D.DIFFERENT, D.EQUIVALENT, D.OUT_OF_BUDGET))
    plan_args = [a for a in args if a not in ("--wandb-mode", "disabled", "--max-concurrent", "2")]
    plan = run_cli(["-m", "harness", "plan", *plan_args], script="", timeout=300)
    assert plan.rc == 0, plan.stderr[-2000:]
    assert "budget 6 seeds per cell, at most 12 trials" in plan.stdout
    assert "the median over 1 comparison(s) in the store" in plan.stdout  # the spread the store shows


def test_bad_until_decided_input_is_one_line_and_exit_2_before_anything_is_written(tmp_path, capsys):
    from harness.cli import main

    results = tmp_path / "results"
    for extra, message in ((["--seeds", "0,1"], "error: --seeds: not with seeds until decided"),
                           (["--architectures", "stnet"], "error: decide.baselines: convnet must run too"),
                           (["--set", "decide.budget=1"], "decide.budget: Input should be greater than or equal to 2")):
        assert main(["--space", "quick", "--until-decided", "--gpu", "0", "--results-dir", str(results), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not results.exists()
