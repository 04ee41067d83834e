"""The answer first: one headline row per dataset × architecture and a few plain sentences per dataset.

Everything here is read off the tables ``metrics`` already computed (nothing is
estimated twice): the test-accuracy difference from the baseline with its
interval and the number of paired seeds, the chance that a seed beats one of the
baseline, the median epochs to the target, the overfitting gap at the
best-validation epoch and the training time per epoch relative to the baseline
on the same hardware. Each number carries its interval (or why it has none) and
the n it rests on, so that "no clear difference" is never read as "no effect".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import format as fmt


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float, np.floating, np.integer)) and math.isfinite(float(x))


def _direction(low, high, up: str, down: str, same: str = "no clear difference") -> str:
    if _finite(low) and low > 0:
        return up
    if _finite(high) and high < 0:
        return down
    return same


def _rows(frame: pd.DataFrame, **where) -> pd.DataFrame:
    if frame is None or frame.empty:
        return pd.DataFrame(columns=frame.columns if frame is not None else [])
    mask = np.ones(len(frame), dtype=bool)
    for k, v in where.items():
        mask &= (frame[k] == v).to_numpy()
    return frame[mask]


def _epochs(c) -> str:
    """``2 (2/2 reached 95 %; too few trials for an interval)``, or how far the trials were followed."""
    reached = f"{c.reached}/{c.trials} reached {c.target * 100:g} %"
    if c.reached == 0 or not _finite(c.median):
        return f"not reached by half ({reached} within {fmt.num(c.observed, 0)} epochs)"
    if _finite(c.low) or _finite(c.high):
        return f"{fmt.interval(c.median, c.low, c.high, 0)} ({reached})"
    return f"{fmt.num(c.median, 0)} ({reached}; {c.note.split(': ')[-1] if c.note else 'no interval'})"


def headline(tables: dict[str, pd.DataFrame], baseline: str, confidence: float) -> pd.DataFrame:
    """One row per dataset × architecture (baseline first): the four answers, each with interval and n."""
    acc, paired, conv = tables["accuracy"], tables["paired"], tables["convergence"]
    gaps, over = tables["gaps"], tables["overhead"]
    rows = []
    for r in acc.itertuples():
        d, a = r.dataset, r.architecture
        row = {"dataset": d, "architecture": a, "seeds": f"{r.seeds}" + (f" (+{r.diverged + r.error} failed)"
                                                                        if r.diverged + r.error else "")}
        if a == baseline:
            row["test accuracy"] = fmt.mean_accuracy(r) + " % (mean)"
            row[f"P(seed beats {baseline})"] = fmt.DASH
        else:
            p = _rows(paired, dataset=d, architecture=a, metric="test_acc")
            if p.empty:
                row["test accuracy"] = "no paired seeds with " + baseline
                row[f"P(seed beats {baseline})"] = fmt.DASH
            else:
                p = p.iloc[0]
                row["test accuracy"] = (fmt.interval(p.difference, p.low, p.high, 2, 100, True, p.note)
                                        + f" pp vs {baseline} (n = {p.pairs} pairs)")
                row[f"P(seed beats {baseline})"] = fmt.interval(p.prob, p.prob_low, p.prob_high, 2, note=p.prob_note)
        c = next(_rows(conv, dataset=d, architecture=a, clock="epochs").itertuples(), None)
        row["median epochs to target"] = _epochs(c) if c is not None else "no target"
        g = _rows(gaps, dataset=d, architecture=a, at="best")
        row["overfitting gap (train − val acc., best epoch)"] = (
            fmt.interval(g.iloc[0].acc_gap, g.iloc[0].acc_gap_low, g.iloc[0].acc_gap_high, 2, 100, True,
                         g.iloc[0].acc_gap_note) + " pp") if len(g) else fmt.DASH
        o = _rows(over, dataset=d, architecture=a)
        row[f"train time / epoch × {baseline}"] = "; ".join(
            (f"{fmt.num(x.sec_per_epoch, 2)} s per epoch = 1" if a == baseline else
             fmt.interval(x.time_ratio, x.time_ratio_low, x.time_ratio_high, 2, note=x.time_ratio_note))
            + f" ({x.hardware}, n = {x.trials})" for x in o.itertuples()) or fmt.DASH
        rows.append(row)
    return pd.DataFrame(rows)


def sentences(tables: dict[str, pd.DataFrame], baseline: str, confidence: float) -> dict[str, list[str]]:
    """Dataset → a few sentences in plain words, each claim with its uncertainty and the seeds behind it."""
    c = fmt.conf_label(confidence)
    acc, paired, conv, over = tables["accuracy"], tables["paired"], tables["convergence"], tables["overhead"]
    out: dict[str, list[str]] = {}
    for dataset in sorted(acc["dataset"].unique()):
        lines = []
        a = acc[acc["dataset"] == dataset]
        n = sorted(set(a["seeds"]))
        lines.append(f"{'/'.join(map(str, n))} complete seed(s) per architecture; intervals at {c}.")
        p = _rows(paired, dataset=dataset, metric="test_acc")
        for r in p.itertuples():
            word = _direction(r.low, r.high, "higher than", "lower than", "not clearly different from")
            lines.append(f"Test accuracy of {r.architecture} is {word} {baseline}'s: "
                         f"{fmt.interval(r.difference, r.low, r.high, 2, 100, True, r.note)} pp over {r.pairs} paired "
                         f"seed(s)" + (f"; {r.needed:.0f} seeds would be needed to detect {r.effect * 100:g} pp at the "
                                       f"observed spread" if _finite(r.needed) and r.needed > r.pairs else "") + ".")
        e = _rows(conv, dataset=dataset, clock="epochs")
        if len(e):
            parts = [f"{r.architecture} {fmt.median_time(r, 0)}" for r in e.itertuples()]
            lines.append(f"Median epochs to {e['target'].iloc[0] * 100:g} % validation accuracy (Kaplan–Meier, "
                         f"[{c} CI]): " + "; ".join(parts) + ".")
        else:
            lines.append("No convergence target for this dataset, so no convergence speed.")
        g = _rows(tables["gaps"], dataset=dataset, at="best")
        if len(g):
            parts = [f"{r.architecture} {fmt.interval(r.acc_gap, r.acc_gap_low, r.acc_gap_high, 2, 100, True, r.acc_gap_note)}"
                     for r in g.itertuples()]
            lines.append("Overfitting gap, train − validation accuracy at the best-validation epoch (pp): "
                         + "; ".join(parts) + ".")
        o = _rows(over, dataset=dataset)
        o = o[o["architecture"] != baseline]
        for hardware, group in o.groupby("hardware", sort=False):
            parts = [f"{r.architecture} {fmt.interval(r.time_ratio, r.time_ratio_low, r.time_ratio_high, 2, note=r.time_ratio_note)}×"
                     for r in group.itertuples()]
            lines.append(f"Training time per epoch relative to {baseline} on {hardware}: " + "; ".join(parts) + ".")
        out[dataset] = lines
    return out
