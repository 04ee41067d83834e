"""Numbers for people: the tables of ``metrics`` turned into short strings (percentages, intervals, ratios).

Kept apart from the arithmetic so the CSV files hold raw values and the HTML and
Markdown hold the same numbers, rounded the same way.
"""

from __future__ import annotations

import math

import pandas as pd

from .stats import MIN_SEEDS_IQM

DASH = "–"


def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def num(x, digits: int = 2, scale: float = 1.0, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)) or pd.isna(x):
        return DASH
    if math.isinf(float(x)):
        return "∞" if x > 0 else "−∞"
    text = f"{float(x) * scale:{'+' if signed else ''}.{digits}f}"
    return text.replace("-", "−")


def conf_label(confidence: float) -> str:
    """``0.95`` → ``"95 %"``: every interval label is built from the report's confidence level."""
    return f"{confidence * 100:g} %"


def interval(estimate, low, high, digits: int = 2, scale: float = 1.0, signed: bool = False, note: str = "") -> str:
    """``93.41 [90.10, 96.72]``; without bounds the estimate alone, with the reason when there is one
    (``97.49 (all 2 seeds equal)``), never a zero-width interval."""
    head = num(estimate, digits, scale, signed)
    if not (_finite(low) or _finite(high)):
        return f"{head} ({note})" if note and head != DASH else head
    return f"{head} [{num(low, digits, scale, signed)}, {num(high, digits, scale, signed)}]"


def mean_accuracy(r) -> str:
    """An accuracy-table row's mean test accuracy in % with its t-interval, clipped to [0, 100]."""
    return interval(r.mean, max(r.mean_low, 0.0), min(r.mean_high, 1.0), 2, 100, note=r.mean_note)


def seeds(values: str, digits: int = 2, scale: float = 100.0) -> str:
    """The seeds themselves (``values`` as the accuracy table keeps them), for cells too small for an interval."""
    parts = [num(float(v), digits, scale) for v in str(values or "").split()]
    return ("seeds: " + ", ".join(parts)) if parts else DASH


def accuracy(table: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    c = conf_label(confidence)

    def robust(r):
        if _finite(r.iqm_low):
            return interval(r.iqm, r.iqm_low, r.iqm_high, 2, 100)
        return seeds(r.values)

    return pd.DataFrame({
        "dataset": table["dataset"], "architecture": table["architecture"],
        "seeds": table["seeds"], "failed (diverged + error)": table["diverged"] + table["error"],
        "unfinished (running + pending)": table["running"] + table["pending"],
        f"test acc. %, mean [{c} t-CI]": [mean_accuracy(r) for r in table.itertuples()],
        f"IQM [{c} CI], or the seeds below {MIN_SEEDS_IQM}": [robust(r) for r in table.itertuples()],
    })


def median_time(r, digits: int) -> str:
    """A Kaplan–Meier median with its interval, or why there is none."""
    unit = "epochs" if r.clock == "epochs" else "s"
    if r.reached == 0 or not _finite(r.median):
        return f"not reached by half (followed ≤ {num(r.observed, digits)} {unit})"
    return interval(r.median, r.low, r.high, digits, note=r.note and "too few trials for an interval")


def convergence(table: pd.DataFrame, clock: str, confidence: float = 0.95) -> pd.DataFrame:
    """One clock of the convergence table: epochs (all hardware) or training seconds (per device model)."""
    t = table[table["clock"] == clock]
    c = conf_label(confidence)
    frame = pd.DataFrame({
        "dataset": t["dataset"], "hardware": t["hardware"], "architecture": t["architecture"],
        "target val. acc.": [f"{x * 100:g} %" for x in t["target"]],
        "reached": [f"{r.reached} / {r.trials}" for r in t.itertuples()],
        "failed (censored at the horizon)": t["failed"],
        (f"median epochs [{c} CI, unadjusted]" if clock == "epochs" else f"median train seconds [{c} CI, unadjusted]"):
            [median_time(r, 0 if clock == "epochs" else 1) for r in t.itertuples()],
    })
    return (frame.drop(columns="hardware") if clock == "epochs" else frame).reset_index(drop=True)


def gaps(table: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    c = conf_label(confidence)
    return pd.DataFrame({
        "dataset": table["dataset"], "architecture": table["architecture"],
        "epoch": table["at"].map({"best": "best validation", "last": "last"}), "trials": table["trials"],
        f"train − val acc., pp [{c} CI, unadjusted]": [interval(r.acc_gap, r.acc_gap_low, r.acc_gap_high, 2, 100, True,
                                                    r.acc_gap_note) for r in table.itertuples()],
        f"val − train loss [{c} CI, unadjusted]": [interval(r.loss_gap, r.loss_gap_low, r.loss_gap_high, 3, 1, True,
                                                r.loss_gap_note) for r in table.itertuples()],
    })


def overhead(table: pd.DataFrame, baseline: str, confidence: float = 0.95) -> pd.DataFrame:
    c = conf_label(confidence)

    def ratio(r, name):
        return interval(getattr(r, f"{name}_ratio"), getattr(r, f"{name}_ratio_low"), getattr(r, f"{name}_ratio_high"),
                        2, note=getattr(r, f"{name}_ratio_note", ""))

    return pd.DataFrame({
        "dataset": table["dataset"], "hardware": table["hardware"], "architecture": table["architecture"],
        "trials": table["trials"],
        "train s / epoch": [num(x, 2) for x in table["sec_per_epoch"]],
        f"× {baseline} [{c} CI, unadjusted]": [ratio(r, "time") for r in table.itertuples()],
        "images / s": [num(x, 0) for x in table["images_per_s"]],
        f"throughput × {baseline} [{c} CI, unadjusted]": [ratio(r, "throughput") for r in table.itertuples()],
        "eval s / epoch": [num(x, 2) for x in table["eval_s_per_epoch"]],
        f"eval × {baseline} [{c} CI, unadjusted]": [ratio(r, "eval") for r in table.itertuples()],
    })


def paired(table: pd.DataFrame, confidence: float = 0.95, alpha: float = 0.05) -> pd.DataFrame:
    c = conf_label(confidence)
    effect = f"{table['effect'].iloc[0] * 100:g} pp" if len(table) else "0.5 pp"
    return pd.DataFrame({
        "dataset": table["dataset"], "metric": table["metric"],
        "comparison": [f"{r.architecture} − {r.baseline}" for r in table.itertuples()], "paired seeds": table["pairs"],
        f"difference, pp [{c} CI, unadjusted]": [interval(r.difference, r.low, r.high, 2, 100, True, r.note)
                                     for r in table.itertuples()],
        f"P(seed beats baseline) [{c} CI, unadjusted]": [interval(r.prob, r.prob_low, r.prob_high, 2, note=r.prob_note)
                                            for r in table.itertuples()],
        "p (paired t)": [num(p, 3) for p in table["p"]], "p (Holm)": [num(p, 3) for p in table["p_holm"]],
        f"significant (α = {alpha:g})": ["yes" if s else "no" if _finite(p) else "no test"
                                        for s, p in zip(table["significant"], table["p"])],
        f"seeds to detect {effect} (80 % power, α / family)": [num(n, 0) for n in table["needed"]],
    })


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured pipe table (pandas' ``to_markdown`` needs the optional ``tabulate``)."""
    if frame.empty:
        return "_(no rows)_"
    cells = [[str(c) for c in frame.columns]] + [["" if pd.isna(v) else str(v) for v in row] for row in frame.itertuples(index=False)]
    cells = [[c.replace("|", "\\|").replace("\n", " ") for c in row] for row in cells]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join(" --- " for _ in cells[0]) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(lines)
