"""The answer first: one headline row per dataset × architecture and a few plain sentences per dataset.

Everything here is read off the tables ``metrics`` already computed (nothing is
estimated twice): the test-accuracy difference from the baseline with its
interval and the number of paired seeds, the chance that a seed beats one of the
baseline, the median epochs to the target, the overfitting gap at the
best-validation epoch and the training time per epoch relative to the baseline
on the same hardware. Each number carries its interval (or why it has none) and
the n it rests on, so that "no clear difference" is never read as "no effect".

One family, one rule: "higher" / "lower" (sentences and headline) follow Holm's
adjusted p-value of the paired table (``significant``), never a raw interval, so
the answer claims a difference exactly when the table beside it does. The
intervals printed with them are unadjusted and say so.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import format as fmt
from .metrics import ROUGH_PAIRS


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float, np.floating, np.integer)) and math.isfinite(float(x))


HIGHER, LOWER, SAME = "higher than", "lower than", "not clearly different from"


def comparison_word(row) -> str:
    """The paired row's direction as the corrected family decides it: ``HIGHER``/``LOWER`` only when Holm's
    adjusted p is below α (``row.significant``), else ``SAME``, whatever the unadjusted interval says."""
    if bool(getattr(row, "significant", False)) and _finite(row.difference) and row.difference != 0:
        return HIGHER if row.difference > 0 else LOWER
    return SAME


def holm_clause(row) -> str:
    """``Holm-adjusted p = 0.29 across 9 comparisons`` (or why there is no test)."""
    if not _finite(row.p):
        return f"no test ({row.note})" if row.note else "no test"
    family = int(getattr(row, "family", 1) or 1)
    return f"Holm-adjusted p = {row.p_holm:.2g} across {family} comparison{'s' * (family != 1)}"


def answer_lead(confidence: float) -> str:
    """The answer section's opening paragraph (report.py's ``_answer`` shows it)."""
    c = fmt.conf_label(confidence)
    return (f"What the store says, dataset by dataset: each number with its {c} interval (or why it has none) and "
            "the number of seeds it rests on. Intervals are unadjusted (each at its own level, not corrected for "
            "the other cells). 'Higher' or 'lower' is said only where the paired comparison survives Holm's "
            "correction across all paired comparisons of the report (the paired table's 'significant'); "
            "'not clearly different' means it does not, which is not evidence of no difference: the power line "
            "says how many seeds could tell.")


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


HEADLINE_WORDS = {HIGHER: "higher", LOWER: "lower", SAME: "not clearly different"}


def _headline_accuracy(p, baseline: str) -> str:
    """``higher (Holm p = 0.012): +2.00 [+1.10, +2.90] pp vs convnet (n = 5 pairs)``: the corrected family's
    word first, then the unadjusted interval."""
    return (f"{HEADLINE_WORDS[comparison_word(p)]} ({holm_clause(p).replace('Holm-adjusted p', 'Holm p')}): "
            + fmt.interval(p.difference, p.low, p.high, 2, 100, True, p.note) + f" pp vs {baseline} (n = {p.pairs} pairs)")


def headline(tables: dict[str, pd.DataFrame], baseline: str, confidence: float) -> pd.DataFrame:
    """One row per dataset × architecture (baseline first): the four answers, each with interval and n. The
    accuracy cell's word follows Holm's correction (``comparison_word``); every interval is unadjusted and the
    column names say so."""
    c = fmt.conf_label(confidence)
    beats, gap, times = (f"P(seed beats {baseline}) [{c} CI, unadjusted]",
                         f"overfitting gap (train − val acc., best epoch) [{c} CI, unadjusted]",
                         f"train time / epoch × {baseline} [{c} CI, unadjusted]")
    acc, paired, conv = tables["accuracy"], tables["paired"], tables["convergence"]
    gaps, over = tables["gaps"], tables["overhead"]
    rows = []
    for r in acc.itertuples():
        d, a = r.dataset, r.architecture
        row = {"dataset": d, "architecture": a, "seeds": f"{r.seeds}" + (f" (+{r.diverged + r.error} failed)"
                                                                        if r.diverged + r.error else "")}
        if a == baseline:
            row["test accuracy"] = fmt.mean_accuracy(r) + f" % (mean [{c} CI])"
            row[beats] = fmt.DASH
        else:
            p = _rows(paired, dataset=d, architecture=a, metric="test_acc")
            if p.empty:
                row["test accuracy"] = "no paired seeds with " + baseline
                row[beats] = fmt.DASH
            else:
                p = next(p.itertuples())
                row["test accuracy"] = _headline_accuracy(p, baseline)
                row[beats] = fmt.interval(p.prob, p.prob_low, p.prob_high, 2, note=p.prob_note)
        k = next(_rows(conv, dataset=d, architecture=a, clock="epochs").itertuples(), None)
        row[f"median epochs to target [{c} CI, unadjusted]"] = _epochs(k) if k is not None else "no target"
        g = _rows(gaps, dataset=d, architecture=a, at="best")
        row[gap] = (
            fmt.interval(g.iloc[0].acc_gap, g.iloc[0].acc_gap_low, g.iloc[0].acc_gap_high, 2, 100, True,
                         g.iloc[0].acc_gap_note) + " pp") if len(g) else fmt.DASH
        o = _rows(over, dataset=d, architecture=a)
        row[times] = "; ".join(
            (f"{fmt.num(x.sec_per_epoch, 2)} s per epoch = 1" if a == baseline else
             fmt.interval(x.time_ratio, x.time_ratio_low, x.time_ratio_high, 2, note=x.time_ratio_note))
            + f" ({x.hardware}, n = {x.trials})" for x in o.itertuples()) or fmt.DASH
        rows.append(row)
    return pd.DataFrame(rows)


def accuracy_sentence(r, baseline: str, c: str) -> str:
    """``Test accuracy of stnet is not clearly different from convnet's: +0.32 [+0.05, +0.60] pp (unadjusted
    95 % CI) over 5 paired seed(s); Holm-adjusted p = 0.29 across 9 comparisons; …power line…``"""
    power = ""
    if _finite(r.needed) and r.needed > r.pairs:
        power = (f"; {r.needed:.0f} seeds would be needed to detect {r.effect * 100:g} pp with 80 % power at the "
                 f"observed spread and the corrected α = {r.power_alpha:.2g}"
                 + (f" (a rough guide: that spread rests on {r.pairs} pairs)" if r.pairs < ROUGH_PAIRS else ""))
    bounded = _finite(r.low) or _finite(r.high)
    return (f"Test accuracy of {r.architecture} is {comparison_word(r)} {baseline}'s: "
            f"{fmt.interval(r.difference, r.low, r.high, 2, 100, True, r.note)} pp"
            + (f" (unadjusted {c} CI)" if bounded else "") + f" over {r.pairs} paired seed(s); {holm_clause(r)}"
            + power + ".")


def sentences(tables: dict[str, pd.DataFrame], baseline: str, confidence: float) -> dict[str, list[str]]:
    """Dataset → a few sentences in plain words, each claim with its uncertainty and the seeds behind it."""
    c = fmt.conf_label(confidence)
    acc, paired, conv, over = tables["accuracy"], tables["paired"], tables["convergence"], tables["overhead"]
    out: dict[str, list[str]] = {}
    for dataset in sorted(acc["dataset"].unique()):
        lines = []
        a = acc[acc["dataset"] == dataset]
        n = sorted(set(a["seeds"]))
        lines.append(f"{'/'.join(map(str, n))} complete seed(s) per architecture; intervals at {c}, unadjusted.")
        p = _rows(paired, dataset=dataset, metric="test_acc")
        for r in p.itertuples():
            lines.append(accuracy_sentence(r, baseline, c))
        e = _rows(conv, dataset=dataset, clock="epochs")
        if len(e):
            parts = [f"{r.architecture} {fmt.median_time(r, 0)}" for r in e.itertuples()]
            lines.append(f"Median epochs to {e['target'].iloc[0] * 100:g} % validation accuracy (Kaplan–Meier, "
                         f"[{c} CI, unadjusted]): " + "; ".join(parts) + ".")
        else:
            lines.append("No convergence target for this dataset, so no convergence speed.")
        g = _rows(tables["gaps"], dataset=dataset, at="best")
        if len(g):
            parts = [f"{r.architecture} {fmt.interval(r.acc_gap, r.acc_gap_low, r.acc_gap_high, 2, 100, True, r.acc_gap_note)}"
                     for r in g.itertuples()]
            lines.append(f"Overfitting gap, train − validation accuracy at the best-validation epoch (pp, [{c} CI, "
                         "unadjusted]): "
                         + "; ".join(parts) + ".")
        o = _rows(over, dataset=dataset)
        o = o[o["architecture"] != baseline]
        for hardware, group in o.groupby("hardware", sort=False):
            parts = [f"{r.architecture} {fmt.interval(r.time_ratio, r.time_ratio_low, r.time_ratio_high, 2, note=r.time_ratio_note)}×"
                     for r in group.itertuples()]
            lines.append(f"Training time per epoch relative to {baseline} on {hardware} ([{c} CI, unadjusted]): "
                         + "; ".join(parts) + ".")
        out[dataset] = lines
    return out
