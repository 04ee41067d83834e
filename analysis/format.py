"""Numbers for people: the tables of ``metrics`` turned into short strings (percentages, intervals, ratios).

Kept apart from the arithmetic so the CSV files hold raw values and the HTML and
Markdown hold the same numbers, rounded the same way.
"""

from __future__ import annotations

import math

import pandas as pd

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


def interval(estimate, low, high, digits: int = 2, scale: float = 1.0, signed: bool = False) -> str:
    """``93.41 [90.10, 96.72]``; the brackets are left out when the interval is undefined (one seed)."""
    head = num(estimate, digits, scale, signed)
    if not (_finite(low) or _finite(high)):
        return head
    return f"{head} [{num(low, digits, scale, signed)}, {num(high, digits, scale, signed)}]"


def accuracy(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "dataset": table["dataset"], "architecture": table["architecture"],
        "seeds": table["seeds"], "failed (diverged + error)": table["diverged"] + table["error"],
        "unfinished (running + pending)": table["running"] + table["pending"],
        "test acc. %, mean [95 % t-CI]": [interval(r.mean, max(r.mean_low, 0.0), min(r.mean_high, 1.0), 2, 100)
                                          for r in table.itertuples()],
        "test acc. %, IQM [95 % bootstrap CI]": [interval(r.iqm, r.iqm_low, r.iqm_high, 2, 100) for r in table.itertuples()],
    })


def _median_time(median, low, high, observed, reached, unit: str, digits: int) -> str:
    if reached == 0 or not _finite(median):
        return f"not reached by half (followed ≤ {num(observed, digits)} {unit})"
    return interval(median, low, high, digits)


def convergence(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "dataset": table["dataset"], "architecture": table["architecture"],
        "target val. acc.": [f"{t * 100:g} %" for t in table["target"]],
        "reached": [f"{r.reached} / {r.trials}" for r in table.itertuples()],
        "median epochs [95 % CI]": [_median_time(r.epochs_median, r.epochs_low, r.epochs_high, r.epochs_observed,
                                                 r.reached, "epochs", 0) for r in table.itertuples()],
        "median train seconds [95 % CI]": [_median_time(r.seconds_median, r.seconds_low, r.seconds_high,
                                                        r.seconds_observed, r.reached, "s", 1) for r in table.itertuples()],
    })


def gaps(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "dataset": table["dataset"], "architecture": table["architecture"],
        "epoch": table["at"].map({"best": "best validation", "last": "last"}), "trials": table["trials"],
        "train − val acc., pp [95 % CI]": [interval(r.acc_gap, r.acc_gap_low, r.acc_gap_high, 2, 100, True)
                                           for r in table.itertuples()],
        "val − train loss [95 % CI]": [interval(r.loss_gap, r.loss_gap_low, r.loss_gap_high, 3, 1, True)
                                       for r in table.itertuples()],
    })


def overhead(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    def ratio(r, name):
        return interval(getattr(r, f"{name}_ratio"), getattr(r, f"{name}_ratio_low"), getattr(r, f"{name}_ratio_high"), 2)

    return pd.DataFrame({
        "dataset": table["dataset"], "hardware": table["hardware"], "architecture": table["architecture"],
        "trials": table["trials"],
        "train s / epoch": [num(x, 2) for x in table["sec_per_epoch"]],
        f"× {baseline} [95 % CI]": [ratio(r, "time") for r in table.itertuples()],
        "images / s": [num(x, 0) for x in table["images_per_s"]],
        f"throughput × {baseline} [95 % CI]": [ratio(r, "throughput") for r in table.itertuples()],
        "eval s / epoch": [num(x, 2) for x in table["eval_s_per_epoch"]],
        f"eval × {baseline} [95 % CI]": [ratio(r, "eval") for r in table.itertuples()],
    })


def paired(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "dataset": table["dataset"], "metric": table["metric"],
        "comparison": [f"{r.architecture} − {r.baseline}" for r in table.itertuples()], "paired seeds": table["pairs"],
        "difference, pp [95 % CI]": [interval(r.difference, r.low, r.high, 2, 100, True) for r in table.itertuples()],
        "p (paired t)": [num(p, 3) for p in table["p"]], "p (Holm)": [num(p, 3) for p in table["p_holm"]],
        "significant (α = 0.05)": ["yes" if s else "no" for s in table["significant"]],
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
