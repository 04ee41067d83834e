"""The report's "Reproduction" section: our runs of the reference study's protocol beside its published results.

The study's 68 runs (per-epoch accuracy on its 5,000-image half of the MNIST / Fashion-MNIST test set, or its
birds split) ship with the package as data (``analysis/reference/``, provenance in its README). Trials trained with
``training.protocol: study`` evaluate every epoch on the same images, so our ``val_acc`` per epoch is the quantity
the study published as ``accuracy``. For each architecture × dataset:

* **last-epoch accuracy** (the study's tables), mean ± sample SD (n), at the last epoch all our trials of the cell
  reached, against the study's at that same epoch: a partial run (fewer epochs or seeds) compares what exists;
* **best-epoch accuracy**: each run's maximum over those epochs;
* **epochs to the target** (median; runs that never reach it count as not yet, which is the Kaplan–Meier median
  here because every run on both sides is censored at the same epoch);
* **time per epoch relative to convnet** (ours: training + evaluation seconds; the study's: elapsed time / epochs,
  which is training + evaluation too, on its GPU);
* **verdict**, one of three, on the last-epoch accuracy with both numbers of runs (Student's t with the pooled
  variance, exact under "same distribution"; with 1 run of ours it is the prediction test, where a new run of the
  study would fall):

  - *outside* the study's results: the two-sided test rejects at ``ALPHA`` (the section says by how many points
    and study SDs);
  - *equivalent* within ±margin: two one-sided tests (Schuirmann's TOST, the same pooled t) both reject, i.e. the
    90 % interval of the difference lies inside ±margin; the margin is one study SD, never below
    ``MIN_MARGIN`` (0.5 pp), unless the caller sets one;
  - *inconclusive*: neither. p ≥ 0.05 alone is absence of evidence, not agreement: with 2 runs against the study's
    10, a true shift of one study SD passes the test 79 % of the time, while equivalence within one SD is
    almost never shown at 2–3 runs (tests/test_reproduction.py simulates both).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from harness.errors import UserError
from harness.space import parse_space

from . import format as fmt
from .metrics import ALPHA, BASELINE

REFERENCE_CSV = Path(__file__).resolve().parent / "reference" / "seed_results.csv"
MIN_MARGIN = 0.005  # the equivalence margin's floor: half a percentage point of accuracy
OUTSIDE, EQUIVALENT, INCONCLUSIVE, NONE = "outside", "equivalent", "inconclusive", "not comparable"
STUDY_TARGETS = {"mnist": 0.98, "fashion_mnist": 0.85}
KEY = "study"  # the section's key in the report
TITLE = "Reproduction of the reference study"
LEAD = ("Trials run with the study's protocol (training.protocol: study) beside the study's published runs. "
        "Accuracy is on the study's evaluation split after each epoch (its 5,000-image half of the official test "
        "set), compared at the last epoch every one of our trials of the cell reached. Verdict on last-epoch accuracy, "
        "with both numbers of runs (pooled-variance Student t; one run of ours: where a new run of the study would "
        "fall): outside (the two-sided test rejects at α = 0.05), equivalent (two one-sided tests show the difference "
        "within ±margin, by default one study SD and never below 0.5 pp; the margin is stated per cell), or "
        "inconclusive (neither: too few runs to tell). Time per epoch is relative to convnet on each side "
        "(ours: training + evaluation seconds on our hardware; the study's: elapsed seconds per epoch on its GPU).")


def reference(path: str | Path = REFERENCE_CSV) -> pd.DataFrame:
    """The study's per-epoch rows: architecture, dataset, run, epoch, accuracy, correct, loss, elapsed_s, ..."""
    return pd.read_csv(path)


@dataclass
class Comparison:
    """Our runs against the study's: the pooled t-test, the two one-sided tests, and the three-way decision."""

    diff: float  # ours - study (fraction)
    in_sds: float  # diff in the study's SDs
    p: float  # two-sided: "different"
    test: str  # "t" or "prediction t"
    n_ours: int
    n_study: int
    margin: float = float("nan")  # the equivalence margin (fraction), ±
    p_equivalent: float = float("nan")  # TOST: the larger of the two one-sided p-values
    note: str = ""

    @property
    def decision(self) -> str:
        return NONE if self.test == "none" else str(decisions(self.p, self.p_equivalent))

    def verdict(self) -> str:
        n = f"n = {self.n_ours} vs {self.n_study}"
        margin = f"±{fmt.num(self.margin, 2, 100)} pts"
        diff = f"{fmt.num(self.diff, 2, 100, True)} pts"
        decision = self.decision
        if decision == NONE:
            return f"not comparable ({n})"
        if self.note:
            return f"inconclusive: {self.note} (difference {diff}, margin {margin}, {n})"
        if decision == OUTSIDE:
            side = "above" if self.diff > 0 else "below"
            sds = f", {abs(self.in_sds):.1f} study SDs" if math.isfinite(self.in_sds) else ""
            return f"outside: {abs(self.diff) * 100:.2f} pts {side}{sds} ({self.test} p = {self.p:.2g}, {n})"
        if decision == EQUIVALENT:
            return (f"equivalent within {margin}: difference {diff} (TOST p = {self.p_equivalent:.2g}; "
                    f"{self.test} p = {self.p:.2f}, {n})")
        return (f"inconclusive: not shown outside ({self.test} p = {self.p:.2f}) nor within {margin} "
                f"(TOST p = {self.p_equivalent:.2f}); difference {diff}, {n}")


def default_margin(study) -> float:
    """One study SD, never below ``MIN_MARGIN``."""
    y = np.asarray(pd.Series(study, dtype=float).dropna())
    sd = float(y.std(ddof=1)) if len(y) > 1 else float("nan")
    return max(sd, MIN_MARGIN) if math.isfinite(sd) else MIN_MARGIN


def compare(ours, study, margin: float | None = None) -> Comparison:
    """Student's two-sample t-test with the pooled variance, of our last-epoch accuracies against the study's, and
    Schuirmann's two one-sided tests of |difference| < ``margin`` with the same t (default ``default_margin``).

    The hypothesis under test is "a faithful reproduction": the same distribution on both sides, equal variances
    included, so the pooled test is exact at every n; Welch's is not (it calls about 10 % of true reproductions
    "outside" with 2 runs against 10, see the tests). With one run of ours it is the prediction test: t on n − 1 df
    of (x − mean) / (SD·√(1 + 1/n)), where a new run of the study would fall. With no spread on either side there
    is nothing to scale a difference by: no p-value (a p of 0 would claim certainty), the cell is inconclusive."""
    x = np.asarray(pd.Series(ours, dtype=float).dropna())
    y = np.asarray(pd.Series(study, dtype=float).dropna())
    m, n = len(x), len(y)
    nan = float("nan")
    if m == 0 or n < 2:
        return Comparison(nan, nan, nan, "none", m, n)
    margin = default_margin(y) if margin is None else float(margin)
    diff = float(x.mean() - y.mean())
    sd_y = float(y.std(ddof=1))
    in_sds = diff / sd_y if sd_y > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    test = "prediction t" if m == 1 else "t"
    _, p, p_equivalent = pooled_tests(x, y, margin)
    if not np.isfinite(p):
        return Comparison(diff, in_sds, nan, test, m, n, margin, nan, "no spread on either side to test against")
    return Comparison(diff, in_sds, float(p), test, m, n, margin, float(p_equivalent))


def pooled_tests(x: np.ndarray, y: np.ndarray, margin) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Along the last axis (many samples at once, which keeps the simulations in the tests fast): the difference
    of means, the pooled t-test's two-sided p and TOST's p for |difference| < ``margin``; NaN p-values where
    neither side has any spread."""
    m, n = x.shape[-1], y.shape[-1]
    diff = x.mean(-1) - y.mean(-1)
    ss = ((y - y.mean(-1, keepdims=True)) ** 2).sum(-1) + ((x - x.mean(-1, keepdims=True)) ** 2).sum(-1)
    df = m + n - 2
    se = np.sqrt(ss / df) * math.sqrt(1 / m + 1 / n)
    se = np.where(se > 0, se, np.nan)
    p = 2 * sps.t.sf(np.abs(diff) / se, df)
    p_equivalent = np.maximum(sps.t.sf((diff + margin) / se, df), sps.t.cdf((diff - margin) / se, df))
    return diff, p, p_equivalent


def decisions(p, p_equivalent) -> np.ndarray:
    """``Comparison.decision`` for arrays of p-values (NaN p: inconclusive)."""
    p, pe = np.asarray(p), np.asarray(p_equivalent)
    return np.where(p < ALPHA, OUTSIDE, np.where(pe < ALPHA, EQUIVALENT, INCONCLUSIVE))


def study_trial_ids(results) -> set[str]:
    """Trials trained with ``protocol: study``: finished ones from their config, running or pending ones from the
    search spaces kept in the store."""
    trials = results.trials
    study = [getattr(t, "protocol", None) == "study" for t in trials["training"].to_numpy(dtype=object)]
    ids = set(trials["trial_id"].to_numpy(dtype=object)[np.array(study, dtype=bool)]) if len(trials) else set()
    for name, text in results.spaces.items():
        try:
            trials = parse_space(text, source=name).trials()
        except UserError:
            continue
        ids |= {i for t in trials if t.training.protocol == "study" for i in t.ids.values()}
    return ids


def _first_reach(curve: pd.Series, target: float | None) -> float:
    """The first epoch whose accuracy reaches ``target`` (inf if none; nan without a target)."""
    if target is None:
        return float("nan")
    hit = curve[curve >= target]
    return float(hit.index.min()) if len(hit) else math.inf


def _median_epochs(values: list[float], upto: int) -> str:
    """Median first epoch at the target; runs that never reach it by ``upto`` sort last (as inf), which is the
    Kaplan–Meier median when every run is censored at the same epoch."""
    v = np.sort(np.asarray(values, dtype=float))
    if not len(v) or np.isnan(v).all():
        return "–"
    med = float(np.median(v))
    reached = int(np.isfinite(v).sum())
    shown = f"{med:g}" if math.isfinite(med) else f"> {upto}"
    return f"{shown} ({reached}/{len(v)} reached)"


def _runs(frame: pd.DataFrame, run: str, acc: str, upto: int) -> dict:
    """Per run: the accuracy curve up to epoch ``upto``."""
    frame = frame[frame["epoch"] <= upto]
    return {k: g.set_index("epoch")[acc].sort_index() for k, g in frame.groupby(run)}


def _fmt(values) -> str:
    v = pd.Series(values, dtype=float).dropna()
    if v.empty:
        return fmt.DASH
    sd = f" ± {fmt.num(v.std(ddof=1), 2, 100)}" if len(v) > 1 else ""
    return f"{fmt.num(v.mean(), 2, 100)}{sd} (n={len(v)})"


@dataclass
class Section:
    key: str = KEY
    title: str = TITLE
    lead: str = LEAD
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # raw values, written as CSV
    display: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[tuple[str, str, bytes]] = field(default_factory=list)  # (file stem, caption, PNG)
    notes: list[str] = field(default_factory=list)

    @property
    def full_lead(self) -> str:
        return " ".join([self.lead, *(f"Note: {n}." for n in self.notes)])


def comparison_table(epochs: pd.DataFrame, ref: pd.DataFrame, targets: dict[str, float] | None = None,
                     baseline: str = BASELINE, margin: float | None = None) -> pd.DataFrame:
    """One raw row per architecture × dataset that both sides have: ours beside the study's (see module doc);
    ``margin`` (a fraction) replaces each cell's default equivalence margin (one study SD, ≥ 0.5 pp)."""
    targets = {**STUDY_TARGETS, **(targets or {})}
    rows = []
    for (dataset, arch), ours in epochs.groupby(["dataset", "architecture"]):
        study = ref[(ref["dataset"] == dataset) & (ref["architecture"] == arch)]
        if study.empty:
            continue
        upto = int(min(ours.groupby("trial_id")["epoch"].max().min(), study["epoch"].max()))
        o = _runs(ours, "trial_id", "val_acc", upto)
        s = _runs(study, "run", "accuracy", upto)
        o_last = [c.iloc[-1] for c in o.values() if len(c) and c.index[-1] == upto]
        s_last = [c.loc[upto] for c in s.values() if upto in c.index]
        o_best = [c.max() for c in o.values()]
        s_best = [c.max() for c in s.values()]
        target = targets.get(dataset)
        cmp = compare(o_last, s_last, margin)
        ours_upto = ours[ours["epoch"] <= upto]
        rows.append({
            "dataset": dataset, "architecture": arch, "epoch": upto, "study_epochs": int(study["epoch"].max()),
            "ours_last_mean": np.mean(o_last) if o_last else np.nan,
            "ours_last_sd": np.std(o_last, ddof=1) if len(o_last) > 1 else np.nan, "ours_n": len(o_last),
            "study_last_mean": np.mean(s_last), "study_last_sd": np.std(s_last, ddof=1) if len(s_last) > 1 else np.nan,
            "study_n": len(s_last),
            "ours_best_mean": np.mean(o_best), "study_best_mean": np.mean(s_best),
            "ours_last": _fmt(o_last), "study_last": _fmt(s_last), "ours_best": _fmt(o_best), "study_best": _fmt(s_best),
            "target": target,
            "ours_epochs_to_target": _median_epochs([_first_reach(c, target) for c in o.values()], upto) if target else "–",
            "study_epochs_to_target": _median_epochs([_first_reach(c, target) for c in s.values()], upto) if target else "–",
            "ours_s_per_epoch": float((ours_upto["train_time_s"] + ours_upto["eval_time_s"]).median()),
            "study_s_per_epoch": float((study.groupby("run")["elapsed_s"].max() / study.groupby("run")["epoch"].max()).median()),
            "ours_minus_study": cmp.diff, "in_study_sds": cmp.in_sds, "p": cmp.p, "test": cmp.test,
            "margin": cmp.margin, "p_equivalent": cmp.p_equivalent, "decision": cmp.decision,
            "verdict": cmp.verdict(),
        })
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    for side in ("ours", "study"):
        base = table[table["architecture"] == baseline].set_index("dataset")[f"{side}_s_per_epoch"]
        table[f"{side}_time_vs_{baseline}"] = table[f"{side}_s_per_epoch"] / table["dataset"].map(base)
    return table


def display_table(table: pd.DataFrame, baseline: str = BASELINE) -> pd.DataFrame:
    if table.empty:
        return table
    ratio = lambda v: fmt.DASH if pd.isna(v) else f"{fmt.num(v, 2)}×"  # noqa: E731
    return pd.DataFrame({
        "dataset": table["dataset"], "architecture": table["architecture"],
        "epoch": [f"{e} of {s}" for e, s in zip(table["epoch"], table["study_epochs"])],
        "last-epoch acc. %, ours": table["ours_last"], "study": table["study_last"],
        "best-epoch acc. %, ours": table["ours_best"], "study ": table["study_best"],
        "epochs to target, ours": table["ours_epochs_to_target"], "study  ": table["study_epochs_to_target"],
        f"time/epoch vs {baseline}, ours": table[f"ours_time_vs_{baseline}"].map(ratio),
        "study   ": table[f"study_time_vs_{baseline}"].map(ratio),
        "verdict": table["verdict"],
    })


def curves_figure(epochs: pd.DataFrame, ref: pd.DataFrame) -> bytes:
    """Per dataset, our mean per-epoch accuracy with a ±1 SD band (solid) over the study's (dashed, lighter band)."""
    import matplotlib.pyplot as plt  # the backend is the session's (figures.py leaves it alone too)
    import matplotlib.ticker  # lazy with pyplot: only the figure needs matplotlib

    datasets = sorted(d for d in epochs["dataset"].unique() if d in set(ref["dataset"].unique()))
    fig, axes = plt.subplots(1, max(len(datasets), 1), figsize=(6.2 * max(len(datasets), 1), 4.2), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, dataset in zip(axes[0], datasets):
        archs = sorted(set(epochs.loc[epochs["dataset"] == dataset, "architecture"]),
                       key=lambda a: (a != BASELINE, a))
        for i, arch in enumerate(archs):
            colour = colours[i % len(colours)]
            for frame, acc, style, alpha, label in (
                    (ref[(ref["dataset"] == dataset) & (ref["architecture"] == arch)], "accuracy", "--", 0.10, "study"),
                    (epochs[(epochs["dataset"] == dataset) & (epochs["architecture"] == arch)], "val_acc", "-", 0.25, "ours")):
                if frame.empty:
                    continue
                g = frame.groupby("epoch")[acc]
                mean, sd = g.mean() * 100, g.std(ddof=1).fillna(0) * 100
                ax.plot(mean.index, mean.values, style, color=colour, label=f"{arch} ({label}, n={frame.groupby('epoch').size().max()})")
                ax.fill_between(mean.index, (mean - sd).values, (mean + sd).values, color=colour, alpha=alpha, lw=0)
        ours_max = epochs.loc[epochs["dataset"] == dataset, "epoch"].max()
        lo = np.nanpercentile(ref.loc[ref["dataset"] == dataset, "accuracy"] * 100, 2)
        ax.set_ylim(max(lo, 0), 100)
        ax.set_xlim(0.5, max(ours_max, 2) + 0.5)
        ax.set_title(f"{dataset}: accuracy per epoch on the study's evaluation split")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel("accuracy (%), mean ± 1 SD")
        ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def section(results, targets: dict[str, float] | None = None, baseline: str = BASELINE,
            ref: pd.DataFrame | None = None, margin: float | None = None) -> Section | None:
    """The Reproduction section, or None when the store holds no trial of the study's protocol; ``margin`` as in
    ``comparison_table``."""
    ids = study_trial_ids(results)
    epochs = results.epochs[results.epochs["trial_id"].isin(ids)]
    if epochs.empty:
        return None
    ref = reference() if ref is None else ref
    table = comparison_table(epochs, ref, targets, baseline, margin)
    out = Section()
    if table.empty:
        out.notes.append("the study's protocol was run, but on no architecture × dataset the study published")
        return out
    out.tables["study_comparison"] = table
    out.display.append(("", display_table(table, baseline)))
    out.figures.append(("study_curves", "Our per-epoch accuracy (solid, mean ± 1 SD band) over the study's published "
                        "runs (dashed, lighter band), on the study's evaluation split.", curves_figure(epochs, ref)))
    partial = table[table["epoch"] < table["study_epochs"]]
    if len(partial):
        out.notes.append(f"partial run: {len(partial)} cell(s) compared at an earlier epoch than the study's last "
                         "(the study's accuracy is taken at the same epoch)")
    parts = []
    for decision in (OUTSIDE, EQUIVALENT, INCONCLUSIVE):
        cells = [f"{r.architecture}/{r.dataset}" for r in table[table["decision"] == decision].itertuples()]
        parts.append(f"{len(cells)} {decision}" + (f" ({', '.join(cells)})" if cells and decision != INCONCLUSIVE else ""))
    out.notes.append(f"of {len(table)} cells: " + "; ".join(parts))
    return out
