"""Provenance: versions, hardware and commits of every run, and the search spaces kept in the store."""

from __future__ import annotations

import json

import pandas as pd

from ..blocks import Folded, Section, Table
from ..compute import Analysis
from ..load import Results

VERSION_COLUMNS = ("python_version", "torch_version", "torchvision_version", "ray_version", "optuna_version")
NOT_RECORDED = "not recorded"


def _values(series: pd.Series) -> str:
    """Distinct values with their counts, most common first: ``a (6), b (2)``; one value alone is shown bare."""
    counts = series.dropna().astype(str).value_counts()
    if counts.empty:
        return NOT_RECORDED
    if len(counts) == 1:
        return counts.index[0]
    return ", ".join(f"{v} ({n} trials)" for v, n in counts.items())


def _run_provenance(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for text in runs.get("provenance_json", pd.Series(dtype=object)).dropna():
        try:
            rows.append(json.loads(text))
        except ValueError:
            continue
    return pd.DataFrame(rows)


def provenance_table(results: Results) -> pd.DataFrame:
    """Field → value for the report header: commit, dirty flag, versions, platform, hardware, hosts, spaces."""
    trials = results.trials[results.trials["status"].isin(("complete", "diverged", "error"))]
    driver = _run_provenance(results.runs)

    def pick(column: str) -> str:
        from_trials = _values(trials[column]) if column in trials else NOT_RECORDED
        if from_trials != NOT_RECORDED:
            return from_trials
        return _values(driver[column]) if column in driver else NOT_RECORDED

    commit = pick("git_commit")
    if commit == NOT_RECORDED:
        commit += " (the benchmark did not run from a git checkout)"
    dirty = pick("git_dirty")
    rows = [("git commit", commit),
            ("uncommitted changes", {"True": "yes", "False": "no"}.get(dirty, dirty))]
    rows += [(c.removesuffix("_version"), pick(c)) for c in VERSION_COLUMNS]
    rows += [("platform (driver)", _values(driver["platform"]) if "platform" in driver else NOT_RECORDED),
             ("hardware", _values(trials["hardware"])),
             ("hosts", _values(trials["hostname"])),
             ("search space(s)", ", ".join(sorted(results.spaces)) or NOT_RECORDED),
             ("runs", str(len(results.runs)))]
    return pd.DataFrame(rows, columns=["field", "value"])


def runs_table(results: Results) -> pd.DataFrame:
    """One row per benchmark invocation: when, which space, how many trials, where, which command."""
    runs = results.runs.sort_values("started_at")
    table = pd.DataFrame({
        "run": runs["run_id"], "space": runs["space"],
        "started (UTC)": runs["started_at"].dt.strftime("%Y-%m-%d %H:%M:%S"),
        "finished (UTC)": runs["finished_at"].dt.strftime("%Y-%m-%d %H:%M:%S").fillna("not finished"),
        "trials (skipped)": [f"{t} ({s})" for t, s in zip(runs["trials_total"], runs["trials_skipped"])],
        "address": runs["address"], "command": runs["command"],
    })
    if "data_dir" in runs:  # stores whose runs record the data directory they used
        table["data dir"] = runs["data_dir"].fillna(NOT_RECORDED)
    return table.reset_index(drop=True)


def section(a: Analysis) -> Section:
    r = a.results
    blocks: list = [Table(provenance_table(r)), Table(runs_table(r), "Runs")]
    blocks += [Folded(f"Search space {name} (YAML kept in the store)", text) for name, text in r.spaces.items()]
    return Section("provenance", "Provenance", blocks, folded=True)
