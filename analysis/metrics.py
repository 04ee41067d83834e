"""The report's tables, as pure functions: tidy frames from ``load`` in, one DataFrame out.

Each table is one question of the study (accuracy, convergence speed,
overfitting gap, training-time overhead, paired comparison with the baseline),
one row per dataset × architecture (× hardware or epoch where that matters),
with raw fractions and seconds; turning numbers into text is ``format``'s job.
Nothing here names a dataset: targets arrive as a dict (each dataset declares its
own ``convergence_target``; a space or the command line may override it), and a
dataset without one is left out of the convergence tables (the report says so).
Timings (seconds to target, overhead ratios) are grouped by hardware, never pooled.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.baselines import comparisons
from harness.models import MODELS

from . import stats
from .format import conf_label, num
from .load import KEY, STATUS_ORDER, default_targets

BASELINE = "convnet"
ALPHA = 0.05
EFFECT = 0.005  # the difference the power line asks about: 0.5 percentage points of accuracy
CLOCKS = {"epochs": "epoch", "seconds": "train_seconds"}  # convergence clocks → column of time_to_target
FAILED = ("diverged", "error")


DEFAULT_TARGETS = default_targets()


def architecture_order(names, baseline: str = BASELINE) -> list[str]:
    """The baseline first, then the registry's order, then anything unknown alphabetically."""
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
    if trials.empty:
        return pd.DataFrame(columns=["dataset", "architecture", *STATUS_ORDER, "total"])
    counts = pd.crosstab([trials["dataset"], trials["architecture"]], trials["status"])
    counts = counts.reindex(columns=STATUS_ORDER, fill_value=0)
    counts["total"] = counts.sum(axis=1)
    return order_rows(counts.reset_index().rename_axis(columns=None), baseline)


# -- 1. accuracy ----------------------------------------------------------------------------------
def accuracy_table(trials: pd.DataFrame, confidence: float = stats.CONFIDENCE, baseline: str = BASELINE) -> pd.DataFrame:
    """Test accuracy of complete trials: mean with t-interval, interquartile mean with its trimmed-mean
    interval (from ``stats.MIN_SEEDS_IQM`` seeds; ``values`` lists the seeds for the cells below that), and
    the number of seeds beside the failed (diverged, error) and unfinished trials, counted, not averaged.
    ``*_note`` says why an interval has no bounds ("all 2 seeds equal", too few seeds)."""
    rows = []
    for (dataset, arch), group in trials.groupby(["dataset", "architecture"]):
        done = group.loc[group["status"] == "complete"].sort_values("seed")["test_acc"].dropna()
        mean, iqm = stats.t_interval(done, confidence), stats.iqm_interval(done, confidence)
        counts = group["status"].value_counts()
        rows.append({"dataset": dataset, "architecture": arch, "seeds": len(done),
                     **{s: int(counts.get(s, 0)) for s in ("diverged", "error", "running", "pending")},
                     "mean": mean.estimate, "mean_low": mean.low, "mean_high": mean.high, "mean_note": mean.note,
                     "iqm": iqm.estimate, "iqm_low": iqm.low, "iqm_high": iqm.high, "iqm_note": iqm.note,
                     "values": " ".join(f"{v:.6g}" for v in done)})
    columns = ["dataset", "architecture", "seeds", "diverged", "error", "running", "pending",
               "mean", "mean_low", "mean_high", "mean_note", "iqm", "iqm_low", "iqm_high", "iqm_note", "values"]
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
def time_to_target(epochs: pd.DataFrame, targets: dict[str, float], trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per trial: the first epoch whose validation accuracy reaches the dataset's target, and the training
    seconds spent until then (evaluation excluded). A trial that never reaches it is kept, right-censored
    (``reached`` False):

    * a running (or interrupted) trial at the last epoch it reported: it may still get there;
    * a failed one (diverged, error) at its planned horizon (the ``epochs`` of its training settings; its
      seconds extrapolated at its median epoch): it will never get there, and censoring it at the failure
      would treat it as a trial still in the race that was merely stopped being watched, which pulls the
      median earlier.

    ``trials`` (one row per trial, from ``load``) supplies the planned epochs and the hardware."""
    columns = ["trial_id", *KEY, "status", "hardware", "target", "reached", "censored_at", "epoch", "train_seconds"]
    info = _trial_info(trials)
    e = epochs[epochs["dataset"].isin(targets)]
    if e.empty:
        return order_rows(pd.DataFrame([], columns=columns))
    # One pass over all epochs, grouped once (a loop per trial costs ~10 ms a trial: minutes at 100,000 trials).
    e = e.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)
    ids = e["trial_id"]
    seconds = e["train_time_s"].astype(float)
    clock = seconds.fillna(0.0).groupby(ids).cumsum()  # as np.nancumsum: a missing time adds nothing
    target = e["dataset"].map(targets).astype(float)
    hit = (e["val_acc"].astype(float) >= target).to_numpy()
    firsts = e.groupby(ids, sort=False).head(1).set_index("trial_id")
    e = e.assign(clock=clock)
    lasts = e.groupby(ids, sort=False).tail(1).set_index("trial_id")
    hits = e[hit].groupby("trial_id", sort=False).head(1).set_index("trial_id")
    median_s = seconds.groupby(ids, sort=False).median()
    # the trial's own record where it has one (status, hardware, planned epochs), else what its epochs say
    own = info.reindex(firsts.index)
    status = own["status"].where(own["status"].notna() & (own["status"] != ""),
                                 firsts["status"] if "status" in firsts else None)
    reached = firsts.index.isin(hits.index)
    last = lasts["epoch"].reindex(firsts.index).to_numpy(dtype=float)
    end = lasts["clock"].reindex(firsts.index).to_numpy(dtype=float)
    planned = own["planned"].to_numpy(dtype=float)
    horizon = ~reached & status.isin(FAILED).to_numpy() & (planned > last)  # NaN planned: never
    per_epoch = median_s.reindex(firsts.index).to_numpy(dtype=float)
    per_epoch = np.where(np.isfinite(per_epoch), per_epoch, 0.0)
    out = firsts[KEY].reset_index()
    out["status"] = status.to_numpy()
    out["hardware"] = own["hardware"].to_numpy()
    out["target"] = out["dataset"].map(targets).astype(float)
    out["reached"] = reached
    out["censored_at"] = np.where(reached, "", np.where(horizon, "planned horizon (failed)", "last epoch"))
    out["epoch"] = np.where(reached, hits["epoch"].reindex(firsts.index).to_numpy(dtype=float),
                            np.where(horizon, planned, last)).astype(int)
    out["train_seconds"] = np.where(reached, hits["clock"].reindex(firsts.index).to_numpy(dtype=float),
                                    np.where(horizon, end + per_epoch * (planned - last), end))
    return order_rows(out[columns])


def _trial_info(trials: pd.DataFrame | None) -> pd.DataFrame:
    """By trial_id: status, hardware (None where not recorded) and planned epochs (from the trial's training
    settings; NaN for a pending trial, which has none yet)."""
    if trials is None or trials.empty:
        return pd.DataFrame({"status": [], "planned": [], "hardware": []}, index=pd.Index([], name="trial_id"))
    training = trials["training"] if "training" in trials else pd.Series(None, index=trials.index, dtype=object)
    hardware = trials["hardware"] if "hardware" in trials else pd.Series(None, index=trials.index, dtype=object)
    info = pd.DataFrame({
        "status": trials["status"].to_numpy(dtype=object),
        "planned": [float(getattr(t, "epochs", None) or np.nan) for t in training.to_numpy(dtype=object)],
        "hardware": [h if isinstance(h, str) else None for h in hardware.to_numpy(dtype=object)],
    }, index=pd.Index(trials["trial_id"].to_numpy(dtype=object), name="trial_id"))
    return info[~info.index.duplicated(keep="last")]


UNKNOWN_HARDWARE = "not recorded (running)"


def _clock_groups(ttt: pd.DataFrame):
    """(dataset, clock, hardware, architecture, rows): epochs pooled over hardware (an epoch is an epoch
    anywhere), seconds only within one device model."""
    if ttt.empty:
        return
    hw = ttt["hardware"].fillna(UNKNOWN_HARDWARE)
    for (dataset, arch), group in ttt.groupby(["dataset", "architecture"]):
        yield dataset, "epochs", "", arch, group
    for (dataset, hardware, arch), group in ttt.assign(hardware=hw).groupby(["dataset", "hardware", "architecture"]):
        yield dataset, "seconds", hardware, arch, group


def convergence_table(ttt: pd.DataFrame, confidence: float = stats.CONFIDENCE, baseline: str = BASELINE) -> pd.DataFrame:
    """Kaplan–Meier median epochs (pooled over hardware) and training seconds (per device model) to the
    target, one row per dataset × clock × hardware × architecture, with intervals that account for
    censoring; ``inf`` = not reached by half (or the interval is not bounded by the data), NaN bounds = too
    few trials for any interval (``note``), and ``observed`` is the longest time any trial was followed."""
    rows = []
    for dataset, clock, hardware, arch, group in _clock_groups(ttt):
        column = CLOCKS[clock]
        km = stats.kaplan_meier(group[column], group["reached"], confidence)
        rows.append({"dataset": dataset, "clock": clock, "hardware": hardware, "architecture": arch,
                     "target": group["target"].iloc[0], "trials": len(group), "reached": int(group["reached"].sum()),
                     "failed": int(group["status"].isin(FAILED).sum()), "median": km.median, "low": km.low,
                     "high": km.high, "observed": float(group[column].max()), "note": km.note})
    columns = ["dataset", "clock", "hardware", "architecture", "target", "trials", "reached", "failed",
               "median", "low", "high", "observed", "note"]
    return order_rows(pd.DataFrame(rows, columns=columns), baseline, extra=("clock", "hardware"))


def convergence_curves(ttt: pd.DataFrame, confidence: float = stats.CONFIDENCE) -> pd.DataFrame:
    """Kaplan–Meier fraction of trials that reached the target against each clock (seconds per device
    model), with its band (long form)."""
    parts = []
    for dataset, clock, hardware, arch, group in _clock_groups(ttt):
        km = stats.kaplan_meier(group[CLOCKS[clock]], group["reached"], confidence)
        t, f, lo, hi = km.curve
        parts.append(pd.DataFrame({"dataset": dataset, "architecture": arch, "clock": clock, "hardware": hardware,
                                   "time": t, "fraction": f, "low": lo, "high": hi}))
    columns = ["dataset", "architecture", "clock", "hardware", "time", "fraction", "low", "high"]
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
            acc_gaps = group[f"{at}_{train}_acc"] - group[f"{at}_val_acc"]
            loss_gaps = group[f"{at}_val_loss"] - group[f"{at}_{train}_loss"]
            acc, loss = stats.t_interval(acc_gaps, confidence), stats.t_interval(loss_gaps, confidence)
            rows.append({"dataset": dataset, "architecture": arch, "at": at, "train_metric": kind, "trials": acc.n,
                         "acc_gap": acc.estimate, "acc_gap_low": acc.low, "acc_gap_high": acc.high,
                         "acc_gap_note": acc.note, "loss_gap": loss.estimate, "loss_gap_low": loss.low,
                         "loss_gap_high": loss.high, "loss_gap_note": loss.note,
                         "acc_gap_values": " ".join(f"{v:.6g}" for v in acc_gaps.dropna()),
                         "loss_gap_values": " ".join(f"{v:.6g}" for v in loss_gaps.dropna())})
    columns = ["dataset", "architecture", "at", "train_metric", "trials", "acc_gap", "acc_gap_low", "acc_gap_high",
               "acc_gap_note", "loss_gap", "loss_gap_low", "loss_gap_high", "loss_gap_note",
               "acc_gap_values", "loss_gap_values"]
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
                    np.nan, np.nan, np.nan, 0, f"no {baseline} on this hardware")
                row.update({f"{name}_ratio": r.estimate, f"{name}_ratio_low": r.low, f"{name}_ratio_high": r.high,
                            f"{name}_ratio_note": r.note})
            rows.append(row)
    columns = ["dataset", "hardware", "architecture", "trials", "sec_per_epoch", "images_per_s", "eval_s_per_epoch",
               *(f"{n}_ratio{s}" for n in ("time", "throughput", "eval") for s in ("", "_low", "_high", "_note"))]
    return order_rows(pd.DataFrame(rows, columns=columns), baseline, extra=("hardware",))


def _geomean(values) -> float:
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x) & (x > 0)]
    return float(np.exp(np.log(x).mean())) if len(x) else np.nan


# -- 5. paired comparisons -----------------------------------------------------------------------
def paired_table(trials: pd.DataFrame, baseline: str = BASELINE, metrics=("test_acc",),
                 confidence: float = stats.CONFIDENCE, alpha: float = ALPHA, effect: float = EFFECT,
                 named: dict | None = None) -> pd.DataFrame:
    """Each architecture minus the baseline, and ``st(X)`` / ``coordconv(X)`` minus ``X`` (what the wrapper
    added; a space's ``baselines:`` as ``named`` chooses others: ``harness.baselines``), seed by seed (seeds are
    shared across architectures), on complete trials: mean paired difference with t-interval, paired t-test, and Holm's adjustment across
    every comparison in the table (all datasets, architectures and metrics form one family).

    Beside the p-value, the effect sizes people read: the mean difference with its interval, and
    ``prob`` = P(a random seed of the architecture beats a random seed of the baseline) with Newcombe's
    interval (over all complete seeds of each, as rliable reports it); and the power line: ``needed`` =
    the seeds a paired t-test would need to detect ``effect`` with 80 % power at the observed spread
    ``sd`` of the paired differences (NaN when there is no spread to go by), at the family's corrected
    level ``power_alpha`` = α / (tests in the family): Holm's strictest step, which the largest difference
    must pass (with 9 comparisons, d = 1 needs 17 seeds, not the 10 of an uncorrected α).

    The intervals (difference, ``prob``) are unadjusted, each at its own confidence; only ``p_holm`` (and
    ``significant``, which the report's words follow) is corrected across the family."""
    done = trials[trials["status"] == "complete"]
    rows = []
    for metric in metrics:
        for dataset, cell in done.groupby("dataset"):
            wide = cell.pivot_table(index="seed", columns="architecture", values=metric, aggfunc="mean")
            for arch, base in comparisons(architecture_order(wide.columns, baseline), baseline, named):
                pair = wide[[arch, base]].dropna()
                res = stats.paired_test(pair[arch], pair[base], confidence)
                prob = stats.prob_improvement(wide[arch].dropna(), wide[base].dropna(), confidence)
                rows.append({"dataset": dataset, "metric": metric, "architecture": arch, "baseline": base,
                             "pairs": len(pair), "difference": res.difference.estimate,
                             "low": res.difference.low, "high": res.difference.high, "p": res.pvalue,
                             "note": res.note or res.difference.note, "sd": res.sd,
                             "prob": prob.estimate, "prob_low": prob.low, "prob_high": prob.high,
                             "prob_seeds": prob.n, "prob_note": prob.note,
                             "effect": effect})
    columns = ["dataset", "metric", "architecture", "baseline", "pairs", "difference", "low", "high", "p", "note",
               "sd", "prob", "prob_low", "prob_high", "prob_seeds", "prob_note", "effect",
               "family", "power_alpha", "needed", "p_holm", "significant"]
    table = pd.DataFrame(rows, columns=columns[:-5])
    family = int(np.isfinite(table["p"].to_numpy(dtype=float)).sum()) if len(table) else 0
    table["family"] = family
    table["power_alpha"] = alpha / max(family, 1)
    table["needed"] = [stats.seeds_needed(sd, effect, alpha / max(family, 1)) for sd in table["sd"]]
    table["p_holm"] = stats.holm(table["p"]) if len(table) else []
    table["significant"] = table["p_holm"] < alpha
    return order_rows(table, baseline, extra=("metric",))


ROUGH_PAIRS = 5  # below this many pairs the spread the power line rests on is itself a rough guess


def corrected_alpha(row) -> str:
    """``α = 0.05 / 9 = 0.0056 (Holm's family of 9)``, or the plain α for a family of one."""
    family = int(getattr(row, "family", 1) or 1)
    if family <= 1:
        return f"α = {row.power_alpha:.2g}"
    return f"α = {row.power_alpha * family:.2g} / {family} = {row.power_alpha:.2g} (Holm's family of {family})"


def power_sentence(row, scale: float = 100.0, unit: str = "pp") -> str:
    """How many seeds would detect ``row.effect`` at the observed spread and the family's corrected α, next to
    how many there are; 'a rough guide' when that spread rests on fewer than ``ROUGH_PAIRS`` pairs."""
    effect = f"{row.effect * scale:.2g} {unit}"
    if not np.isfinite(row.needed):
        return (f"no spread among the paired differences to size a study by; a difference of {effect} cannot be "
                "judged from these seeds")
    have = f"{row.pairs} paired seed{'s' * (row.pairs != 1)}"
    rough = (f" (a rough guide: that spread itself rests on {row.pairs} pairs)" if row.pairs < ROUGH_PAIRS else "")
    return (f"detecting {effect} with 80 % power at {corrected_alpha(row)} and the observed spread (SD of paired "
            f"differences {row.sd * scale:.2f} {unit}) needs {row.needed:.0f} paired seeds{rough}; there "
            f"{'are' if row.pairs != 1 else 'is'} {have}"
            + (", so 'not significant' may mean 'too few seeds'" if row.needed > row.pairs else ""))


def describe_paired(table: pd.DataFrame, alpha: float = ALPHA, scale: float = 100.0, unit: str = "pp",
                    confidence: float = stats.CONFIDENCE) -> list[str]:
    """The paired comparisons in words: the difference with its interval, the chance a seed of one beats a
    seed of the other, which differences survive Holm's correction, the power line, and why some could
    not be tested."""
    if table.empty:
        return ["No paired comparison is possible yet: it needs complete trials of the baseline and of another "
                "architecture with the same seeds."]
    label = conf_label(confidence)
    lines = []
    for row in table.itertuples():
        what = f"{row.architecture} vs {row.baseline} on {row.dataset} ({row.metric}, {row.pairs} paired seeds)"
        if row.pairs < 2:
            lines.append(f"{what}: too few paired seeds for a test (need at least 2).")
            continue
        diff = f"{num(row.difference, 2, scale, True)} {unit}"
        ci = (f" (unadjusted {label} CI {num(row.low, 2, scale, True)} to {num(row.high, 2, scale, True)})"
              if np.isfinite(row.low) else "")
        prob = (f"; a seed of {row.architecture} beats one of {row.baseline} with probability {row.prob:.2f}"
                + (f" (unadjusted {label} CI {row.prob_low:.2f} to {row.prob_high:.2f})" if np.isfinite(row.prob_low)
                   else f" ({row.prob_note})" if row.prob_note else ""))
        if not np.isfinite(row.p):
            verdict = f"no test: {row.note}"
        elif row.significant:
            verdict = f"significant after Holm's correction (adjusted p = {row.p_holm:.3g} < {alpha})"
        else:
            verdict = f"not significant after Holm's correction (p = {row.p:.3g}, adjusted p = {row.p_holm:.3g})"
        lines.append(f"{what}: {diff}{ci}{prob}; {verdict}; {power_sentence(row, scale, unit)}.")
    n_sig = int(table["significant"].sum())
    head = (f"{n_sig} of {len(table)} differences from {table['baseline'].iloc[0]} are significant at α = {alpha} "
            "after Holm's correction." if n_sig else
            f"None of the {len(table)} differences from {table['baseline'].iloc[0]} is significant at α = {alpha} "
            "after Holm's correction.")
    return [head, *lines]
