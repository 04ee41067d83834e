"""The report's tables, as pure functions: tidy frames from ``load`` in, one DataFrame out.

Each table is one question of the study (accuracy, convergence speed,
overfitting gap, training-time overhead, paired comparison with the baseline),
one row per dataset × architecture (× hardware or epoch where that matters),
with raw fractions and seconds; turning numbers into text is ``format``'s job.
Nothing here names a dataset: targets arrive as a dict, and a dataset without
one is left out of the convergence tables (the report says so).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import stats
from .load import KEY

BASELINE = "convnet"
DEFAULT_TARGETS = {"mnist": 0.98, "fashion_mnist": 0.85}
ALPHA = 0.05
CLOCKS = {"epochs": "epoch", "seconds": "train_seconds"}  # convergence clocks → column of time_to_target


def architecture_order(names, baseline: str = BASELINE) -> list[str]:
    """The baseline first, then the registry's order, then anything unknown alphabetically."""
    from harness.models import MODELS

    names = set(names)
    known = [n for n in MODELS if n in names and n != baseline]
    return ([baseline] if baseline in names else []) + known + sorted(names - set(known) - {baseline})


def order_rows(frame: pd.DataFrame, baseline: str = BASELINE, extra: tuple = ()) -> pd.DataFrame:
    """Rows sorted by dataset (then ``extra`` columns), architectures in ``architecture_order``."""
    if frame.empty:
        return frame.reset_index(drop=True)
    order = {a: i for i, a in enumerate(architecture_order(frame["architecture"].unique(), baseline))}
    rank = frame["architecture"].map(order)
    return frame.assign(_rank=rank).sort_values(["dataset", *extra, "_rank"]).drop(columns="_rank").reset_index(drop=True)


# -- status ---------------------------------------------------------------------------------------
def status_table(trials: pd.DataFrame, baseline: str = BASELINE) -> pd.DataFrame:
    """Trials per dataset × architecture and status (complete, diverged, error, running, pending)."""
    from .load import STATUS_ORDER

    if trials.empty:
        return pd.DataFrame(columns=["dataset", "architecture", *STATUS_ORDER, "total"])
    counts = pd.crosstab([trials["dataset"], trials["architecture"]], trials["status"])
    counts = counts.reindex(columns=STATUS_ORDER, fill_value=0)
    counts["total"] = counts.sum(axis=1)
    return order_rows(counts.reset_index().rename_axis(columns=None), baseline)


# -- 1. accuracy ----------------------------------------------------------------------------------
def accuracy_table(trials: pd.DataFrame, confidence: float = stats.CONFIDENCE, baseline: str = BASELINE) -> pd.DataFrame:
    """Test accuracy of complete trials: mean with t-interval, bootstrap IQM with its interval, and the
    number of seeds beside the failed (diverged, error) and unfinished trials, which are counted, not averaged."""
    rows = []
    for (dataset, arch), group in trials.groupby(["dataset", "architecture"]):
        done = group.loc[group["status"] == "complete", "test_acc"].dropna()
        mean, iqm = stats.t_interval(done, confidence), stats.bootstrap_iqm(done, confidence)
        counts = group["status"].value_counts()
        rows.append({"dataset": dataset, "architecture": arch, "seeds": len(done),
                     **{s: int(counts.get(s, 0)) for s in ("diverged", "error", "running", "pending")},
                     "mean": mean.estimate, "mean_low": mean.low, "mean_high": mean.high,
                     "iqm": iqm.estimate, "iqm_low": iqm.low, "iqm_high": iqm.high})
    columns = ["dataset", "architecture", "seeds", "diverged", "error", "running", "pending",
               "mean", "mean_low", "mean_high", "iqm", "iqm_low", "iqm_high"]
    return order_rows(pd.DataFrame(rows, columns=columns), baseline)


# -- per-trial summaries of the epoch curves -----------------------------------------------------
def trial_summary(epochs: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: metrics at its best-validation epoch (the first maximum, as the trainer picks it)
    and at its last epoch, and its median per-epoch timings."""
    metrics = ["train_acc", "val_acc", "train_loss", "val_loss", "train_eval_acc", "train_eval_loss"]
    columns = ["trial_id", *KEY, "status", "epochs", "sec_per_epoch", "eval_s_per_epoch", "images_per_s", "best_epoch",
               *(f"{at}_{m}" for m in metrics for at in ("best", "last"))]
    if epochs.empty:
        return pd.DataFrame(columns=columns)
    ordered = epochs.sort_values(["trial_id", "epoch"])
    by = ordered.groupby("trial_id", sort=False)
    valid = ordered[ordered["val_acc"].notna()]
    best = ordered.loc[valid.groupby("trial_id")["val_acc"].idxmax()].set_index("trial_id")  # the first maximum
    last = by.tail(1).set_index("trial_id")
    out = by.agg(**{k: (k, "first") for k in [*KEY, "status"]}, epochs=("epoch", "max"),
                 sec_per_epoch=("train_time_s", "median"), eval_s_per_epoch=("eval_time_s", "median"),
                 images_per_s=("images_per_s", "median"))
    out["best_epoch"] = best["epoch"]
    for m in metrics:
        out[f"best_{m}"] = best[m] if m in best else np.nan
        out[f"last_{m}"] = last[m] if m in last else np.nan
    return out.reset_index()[columns]


# -- 2. convergence speed ------------------------------------------------------------------------
def time_to_target(epochs: pd.DataFrame, targets: dict[str, float]) -> pd.DataFrame:
    """Per trial: the first epoch whose validation accuracy reaches the dataset's target, and the training
    seconds spent until then (evaluation excluded). A trial that never reaches it is right-censored at the
    last epoch it reported (``reached`` False), whatever its status: it is kept, not dropped."""
    columns = ["trial_id", *KEY, "status", "target", "reached", "epoch", "train_seconds"]
    rows = []
    for trial_id, group in epochs[epochs["dataset"].isin(targets)].groupby("trial_id"):
        group = group.sort_values("epoch")
        target = targets[group["dataset"].iloc[0]]
        clock = group["train_time_s"].cumsum().to_numpy()
        hit = np.flatnonzero(group["val_acc"].to_numpy() >= target)
        i = hit[0] if len(hit) else len(group) - 1
        first = group.iloc[0]
        rows.append({"trial_id": trial_id, **{k: first[k] for k in KEY}, "status": first["status"],
                     "target": target, "reached": bool(len(hit)),
                     "epoch": int(group["epoch"].iloc[i]), "train_seconds": float(clock[i])})
    return order_rows(pd.DataFrame(rows, columns=columns))


def convergence_table(ttt: pd.DataFrame, confidence: float = stats.CONFIDENCE, baseline: str = BASELINE) -> pd.DataFrame:
    """Kaplan–Meier median epochs and training seconds to the target, with intervals that account for
    censoring; ``inf`` = not reached by half the trials (or the interval is not bounded by the data), and
    ``*_observed`` is the longest time any trial was followed, the horizon of what the data can say."""
    rows = []
    for (dataset, arch), group in ttt.groupby(["dataset", "architecture"]):
        row = {"dataset": dataset, "architecture": arch, "target": group["target"].iloc[0],
               "trials": len(group), "reached": int(group["reached"].sum())}
        for clock, column in CLOCKS.items():
            km = stats.kaplan_meier(group[column], group["reached"], confidence)
            row.update({f"{clock}_median": km.median, f"{clock}_low": km.low, f"{clock}_high": km.high,
                        f"{clock}_observed": float(group[column].max())})
        rows.append(row)
    columns = ["dataset", "architecture", "target", "trials", "reached",
               *(f"{c}_{s}" for c in CLOCKS for s in ("median", "low", "high", "observed"))]
    return order_rows(pd.DataFrame(rows, columns=columns), baseline)


def convergence_curves(ttt: pd.DataFrame, confidence: float = stats.CONFIDENCE) -> pd.DataFrame:
    """Kaplan–Meier fraction of trials that reached the target against each clock, with its band (long form)."""
    parts = []
    for (dataset, arch), group in ttt.groupby(["dataset", "architecture"]):
        for clock, column in CLOCKS.items():
            km = stats.kaplan_meier(group[column], group["reached"], confidence)
            t, f, lo, hi = km.curve
            parts.append(pd.DataFrame({"dataset": dataset, "architecture": arch, "clock": clock,
                                       "time": t, "fraction": f, "low": lo, "high": hi}))
    columns = ["dataset", "architecture", "clock", "time", "fraction", "low", "high"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


# -- 3. overfitting gap --------------------------------------------------------------------------
def gap_table(summary: pd.DataFrame, confidence: float = stats.CONFIDENCE, baseline: str = BASELINE) -> pd.DataFrame:
    """Train − validation accuracy and validation − train loss of complete trials, at the best-validation
    epoch and at the last epoch, mean with t-interval per dataset × architecture.

    Training metrics are the eval-mode ones (final weights, dropout off, a fixed training subset the size
    of the validation set), measured exactly as validation is. Stores written before those existed only
    have running averages taken with dropout on, which understate the fit (gaps read low, often
    negative); ``train_metric`` says which one a row used."""
    rows = []
    done = summary[summary["status"] == "complete"]
    for (dataset, arch), group in done.groupby(["dataset", "architecture"]):
        for at in ("best", "last"):
            kind = "eval" if group[f"{at}_train_eval_acc"].notna().all() else "running"
            train = "train_eval" if kind == "eval" else "train"
            acc = stats.t_interval(group[f"{at}_{train}_acc"] - group[f"{at}_val_acc"], confidence)
            loss = stats.t_interval(group[f"{at}_val_loss"] - group[f"{at}_{train}_loss"], confidence)
            rows.append({"dataset": dataset, "architecture": arch, "at": at, "train_metric": kind, "trials": acc.n,
                         "acc_gap": acc.estimate, "acc_gap_low": acc.low, "acc_gap_high": acc.high,
                         "loss_gap": loss.estimate, "loss_gap_low": loss.low, "loss_gap_high": loss.high})
    columns = ["dataset", "architecture", "at", "train_metric", "trials", "acc_gap", "acc_gap_low", "acc_gap_high",
               "loss_gap", "loss_gap_low", "loss_gap_high"]
    return order_rows(pd.DataFrame(rows, columns=columns), baseline, extra=("at",))


# -- 4. training-time overhead -------------------------------------------------------------------
def overhead_table(summary: pd.DataFrame, trials: pd.DataFrame, baseline: str = BASELINE,
                   confidence: float = stats.CONFIDENCE) -> pd.DataFrame:
    """Seconds per training epoch, images/s and evaluation seconds per epoch, each relative to the baseline
    on the same dataset and hardware, as a ratio of geometric means with a log-scale Welch interval.

    Each trial contributes its median epoch (robust to a slow first epoch). Only trials whose hardware is
    recorded (finished ones) count; ratios need the baseline on the same hardware."""
    timed = summary.merge(trials[["trial_id", "hardware"]], on="trial_id", how="left")
    timed = timed[timed["hardware"].notna() & (timed["sec_per_epoch"] > 0)]
    rows = []
    for (dataset, hardware), cell in timed.groupby(["dataset", "hardware"]):
        base = cell[cell["architecture"] == baseline]
        for arch, group in cell.groupby("architecture"):
            row = {"dataset": dataset, "hardware": hardware, "architecture": arch, "trials": len(group),
                   "sec_per_epoch": _geomean(group["sec_per_epoch"]),
                   "images_per_s": _geomean(group["images_per_s"]),
                   "eval_s_per_epoch": _geomean(group["eval_s_per_epoch"])}
            for name, column in (("time", "sec_per_epoch"), ("throughput", "images_per_s"), ("eval", "eval_s_per_epoch")):
                r = stats.ratio_interval(group[column], base[column], confidence) if len(base) else stats.Interval(
                    np.nan, np.nan, np.nan, 0)
                row.update({f"{name}_ratio": r.estimate, f"{name}_ratio_low": r.low, f"{name}_ratio_high": r.high})
            rows.append(row)
    columns = ["dataset", "hardware", "architecture", "trials", "sec_per_epoch", "images_per_s", "eval_s_per_epoch",
               *(f"{n}_ratio{s}" for n in ("time", "throughput", "eval") for s in ("", "_low", "_high"))]
    return order_rows(pd.DataFrame(rows, columns=columns), baseline, extra=("hardware",))


def _geomean(values) -> float:
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x) & (x > 0)]
    return float(np.exp(np.log(x).mean())) if len(x) else np.nan


# -- 5. paired comparisons -----------------------------------------------------------------------
def paired_table(trials: pd.DataFrame, baseline: str = BASELINE, metrics=("test_acc",),
                 confidence: float = stats.CONFIDENCE, alpha: float = ALPHA) -> pd.DataFrame:
    """Each architecture minus the baseline, seed by seed (seeds are shared across architectures), on
    complete trials: mean paired difference with t-interval, paired t-test, and Holm's adjustment across
    every comparison in the table (all datasets, architectures and metrics form one family)."""
    done = trials[trials["status"] == "complete"]
    rows = []
    for metric in metrics:
        for dataset, cell in done.groupby("dataset"):
            wide = cell.pivot_table(index="seed", columns="architecture", values=metric, aggfunc="mean")
            if baseline not in wide:
                continue
            for arch in wide.columns.drop(baseline):
                pair = wide[[arch, baseline]].dropna()
                res = stats.paired_test(pair[arch], pair[baseline], confidence)
                rows.append({"dataset": dataset, "metric": metric, "architecture": arch, "baseline": baseline,
                             "pairs": len(pair), "difference": res.difference.estimate,
                             "low": res.difference.low, "high": res.difference.high, "p": res.pvalue})
    columns = ["dataset", "metric", "architecture", "baseline", "pairs", "difference", "low", "high",
               "p", "p_holm", "significant"]
    table = pd.DataFrame(rows, columns=columns[:-2])
    table["p_holm"] = stats.holm(table["p"]) if len(table) else []
    table["significant"] = table["p_holm"] < alpha
    return order_rows(table, baseline, extra=("metric",))


def describe_paired(table: pd.DataFrame, alpha: float = ALPHA, scale: float = 100.0, unit: str = "pp") -> list[str]:
    """The paired comparisons in words: which differences survive Holm's correction, which do not, and why
    some could not be tested."""
    if table.empty:
        return ["No paired comparison is possible yet: it needs complete trials of the baseline and of another "
                "architecture with the same seeds."]
    lines = []
    for row in table.itertuples():
        what = f"{row.architecture} vs {row.baseline} on {row.dataset} ({row.metric}, {row.pairs} paired seeds)"
        if not np.isfinite(row.p):
            lines.append(f"{what}: too few paired seeds for a test (need at least 2).")
            continue
        diff = f"{row.difference * scale:+.2f} {unit}"
        ci = (f" (95 % CI {row.low * scale:+.2f} to {row.high * scale:+.2f})"
              if np.isfinite(row.low) else "")
        verdict = (f"significant after Holm's correction (adjusted p = {row.p_holm:.3g} < {alpha})" if row.significant
                   else f"not significant after Holm's correction (p = {row.p:.3g}, adjusted p = {row.p_holm:.3g})")
        lines.append(f"{what}: {diff}{ci}, {verdict}.")
    n_sig = int(table["significant"].sum())
    head = (f"{n_sig} of {len(table)} differences from {table['baseline'].iloc[0]} are significant at α = {alpha} "
            "after Holm's correction." if n_sig else
            f"None of the {len(table)} differences from {table['baseline'].iloc[0]} is significant at α = {alpha} "
            "after Holm's correction.")
    return [head, *lines]
