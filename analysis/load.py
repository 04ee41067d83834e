"""Read a results store into tidy frames for analysis (the Parquet store only, never Ray's own files).

Three things happen here so that every table downstream can stay a pure function:

* **One row per trial, whatever its state.** Finished trials come from the
  ``trials`` table (``complete``, ``diverged``, ``error``); trials with epoch rows
  but no trial row are ``running``; trials the search space asks for that have
  left no trace yet are ``pending``. A partially finished store is therefore
  reported as it is, with what is missing named.
* **Benchmark trials only.** Only trials of the ``benchmark`` stage are analysed;
  the others (tuning trials) are counted in the notes and kept apart.
* **One search space, or all.** ``space`` selects the trials that a named search
  space expands to (read from the YAML kept in the ``runs`` table); without it,
  every benchmark trial is pooled, and a store that mixes spaces says so.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from harness.contract import TrainingSettings
from harness.data import DATA_DIR_ENV, DATASETS, resolve_data_dir
from harness.data.distorted import CACHE_ENV
from harness.errors import UserError
from harness.space import parse_space
from harness.provenance import hardware_label
from harness.store import ResultsStore

KEY = ["dataset", "architecture", "seed"]
BENCHMARK_STAGE = "benchmark"
STATUS_ORDER = ["complete", "diverged", "error", "running", "pending"]


@dataclass
class Results:
    """What the analysis reads: tidy frames plus notes about anything left out or missing."""

    root: Path
    trials: pd.DataFrame  # one row per trial: KEY, trial_id, status, test metrics, hardware, config…
    epochs: pd.DataFrame  # one row per trial × epoch, with the trial's status
    runs: pd.DataFrame
    spaces: dict[str, str] = field(default_factory=dict)  # space name → YAML text of its latest run
    notes: list[str] = field(default_factory=list)

    @property
    def datasets(self) -> list[str]:
        return sorted(self.trials["dataset"].dropna().unique())

    def checkpoint_path(self, trial_id: str) -> Path:
        return ResultsStore(self.root).checkpoint_path(trial_id)


def open_store(root: str | os.PathLike) -> ResultsStore:
    """An existing store (a UserError naming the problem otherwise); never creates or writes anything."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--results-dir: {root} does not exist; run the benchmark first or pass the right directory")
    return ResultsStore.open(root, create=False)


def load(root: str | os.PathLike, space: str | None = None) -> Results:
    store = open_store(root)
    trials, epochs, runs = store.trials(), store.epochs(), store.runs()
    notes: list[str] = []

    trials, epochs = _benchmark_only(trials, epochs, notes)
    spaces = _latest_space_yaml(runs)
    expected = _expected_trials(spaces, notes, runs)

    if space is not None:
        if space not in spaces and space not in set(trials["space"].dropna()):
            known = sorted(set(spaces) | set(trials["space"].dropna()))
            raise UserError(f"--space: no run of a space named {space!r} in {store.root}; "
                            f"allowed: {', '.join(known) or 'none (the store is empty)'}")
        wanted = set(expected.loc[expected["space"] == space, "trial_id"])
        keep_trials = trials["trial_id"].isin(wanted) | (trials["space"] == space)
        trial_ids = set(trials.loc[keep_trials, "trial_id"]) | (wanted & set(epochs["trial_id"].to_numpy(dtype=object)))
        trials = trials[trials["trial_id"].isin(trial_ids)]
        epochs = epochs[epochs["trial_id"].isin(trial_ids)]
        expected = expected[expected["space"] == space]
        runs = runs[runs["space"] == space]
        spaces = {space: spaces[space]} if space in spaces else {}
    elif len(spaces) > 1:
        notes.append(f"the store holds runs of {len(spaces)} search spaces ({', '.join(sorted(spaces))}); their trials "
                     "are pooled by architecture × dataset × seed; pass --space NAME to analyse one")

    traced = set(trials["trial_id"].to_numpy(dtype=object)) | set(epochs["trial_id"].to_numpy(dtype=object))
    unknown = expected[(expected["unknown_cell"] == True) & ~expected["trial_id"].isin(traced)]  # noqa: E712
    if len(unknown):
        notes.append(f"{len(unknown)} planned trial(s) have not started and cannot be placed in a cell (the stored "
                     "search space no longer expands to their ids with today's schema); they are not in the tables")
    table = _one_row_per_trial(trials, epochs, expected)
    dup = table[table["status"] != "pending"].duplicated(KEY, keep=False)
    if dup.any():
        cells = table[table["status"] != "pending"][dup][KEY].drop_duplicates()
        notes.append(f"{len(cells)} architecture × dataset × seed cell(s) hold more than one trial (different settings "
                     "pooled); paired comparisons average them per seed; pass --space NAME to separate them")
    epochs = epochs.merge(table[["trial_id", "status"]], on="trial_id", how="left")
    epochs = epochs.sort_values(["dataset", "architecture", "seed", "trial_id", "epoch"], ignore_index=True)
    return Results(root=store.root, trials=table, epochs=epochs, runs=runs.reset_index(drop=True),
                   spaces=spaces, notes=notes)


def _benchmark_only(trials: pd.DataFrame, epochs: pd.DataFrame, notes: list[str]):
    """Drop trials of other stages (tuning); say how many were set aside."""
    parts = [df.set_index("trial_id")["stage"] for df in (trials, epochs) if "stage" in df.columns]
    if not parts:
        return trials, epochs
    stage = pd.concat(parts)
    stage = stage[~stage.index.duplicated()]
    other = stage[stage.notna() & (stage != BENCHMARK_STAGE)]
    if len(other):
        notes.append("set aside, not benchmark trials: "
                     + ", ".join(f"{n} {k} trial(s)" for k, n in other.value_counts().items()))
    drop = set(other.index)
    return trials[~trials["trial_id"].isin(drop)], epochs[~epochs["trial_id"].isin(drop)]


def _latest_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Each space's most recent run (the one that defines what is expected now)."""
    return runs.sort_values("started_at").groupby("space", sort=True).tail(1)


def _latest_space_yaml(runs: pd.DataFrame) -> dict[str, str]:
    """Space name → the YAML text of its most recent run."""
    if runs.empty:
        return {}
    return {row.space: row.space_yaml for row in _latest_runs(runs).itertuples() if isinstance(row.space_yaml, str)}


def _planned_ids(runs: pd.DataFrame) -> dict[str, list]:
    """Space name → what its latest run planned (``planned_json``: one entry per seed, a dict with
    ``trial_id`` and the cell, or a bare id), for stores that record it."""
    if runs.empty or "planned_json" not in runs:
        return {}
    out = {}
    for row in _latest_runs(runs).itertuples():
        try:
            ids = json.loads(row.planned_json) if isinstance(row.planned_json, str) else None
        except ValueError:
            ids = None
        if isinstance(ids, list):
            out[row.space] = [i if isinstance(i, dict) else {"trial_id": str(i)} for i in ids]
    return out


def _expand(name: str, text: str) -> list[dict]:
    """The trials a stored YAML expands to with today's schema, one dict per seed (raises UserError)."""
    rows = []
    for t in parse_space(text, source=f"search space {name!r}").trials():  # possibly K seeds stacked: a row each
        rows += [{"architecture": t.architecture, "dataset": t.dataset, "seed": s, "trial_id": i}
                 for s, i in t.ids.items()]
    return rows


def _expected_trials(spaces: dict[str, str], notes: list[str], runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The trials the latest run of each space planned, so that trials not started yet can be reported as
    pending. ``by_id``: the run recorded its planned ids (a trial is pending while its id has no trace);
    otherwise the YAML is expanded with today's schema (a cell is pending while it has no trial at all)."""
    planned = _planned_ids(runs if runs is not None else pd.DataFrame())
    rows = []
    for name in sorted(set(spaces) | set(planned)):
        complete = name in planned and all(all(k in e for k in KEY) for e in planned[name])
        try:  # the YAML is only needed where the run did not record each planned seed's cell
            expanded = _expand(name, spaces[name]) if name in spaces and not complete else []
        except UserError as e:
            expanded = []
            if name not in planned:
                notes.append(f"cannot expand the search space {name!r} kept in the store ({e}); "
                             "trials not started are not listed")
                continue
        if name in planned:
            cells = {t["trial_id"]: t for t in expanded}
            for entry in planned[name]:
                i = str(entry["trial_id"])
                cell = entry if all(k in entry for k in KEY) else cells.get(i)
                rows.append({"space": name, "trial_id": i, "by_id": True, **{k: cell[k] for k in KEY}} if cell
                            else {"space": name, "trial_id": i, "by_id": True, "unknown_cell": True})
        else:
            rows += [{"space": name, "trial_id": t["trial_id"], **{k: t[k] for k in KEY}, "by_id": False}
                     for t in expanded]
    return pd.DataFrame(rows, columns=["space", "trial_id", *KEY, "by_id", "unknown_cell"])


def _one_row_per_trial(trials: pd.DataFrame, epochs: pd.DataFrame, expected: pd.DataFrame) -> pd.DataFrame:
    """Finished trials, then running ones (epochs but no trial row), then pending ones (expected, no trace)."""
    finished = trials.copy()
    seen = set(finished["trial_id"].to_numpy(dtype=object))
    running = (epochs[~epochs["trial_id"].isin(seen)]
               .sort_values("epoch").groupby("trial_id", as_index=False)
               .agg(**{k: (k, "first") for k in ["run_id", *KEY]}, epochs_completed=("epoch", "max")))
    running["status"] = "running"
    present = pd.concat([finished[KEY], running[KEY]]).drop_duplicates()
    seen |= set(running["trial_id"].to_numpy(dtype=object))
    known = expected[expected["unknown_cell"] != True]  # noqa: E712 (NaN-safe)
    by_id = known[known["by_id"] == True]  # noqa: E712
    by_id = by_id[~by_id["trial_id"].isin(seen)].drop_duplicates("trial_id")
    by_cell = known[known["by_id"] != True].drop_duplicates(KEY).merge(present, on=KEY, how="left", indicator=True)  # noqa: E712
    by_cell = by_cell[by_cell["_merge"] == "left_only"].drop(columns="_merge")
    pending = pd.concat([f for f in (by_id, by_cell) if len(f)] or [by_cell]).drop(columns=["by_id", "unknown_cell"])
    pending["status"] = "pending"
    frames = [f for f in (finished, running, pending) if len(f)]
    table = pd.concat(frames, ignore_index=True) if frames else finished.assign(status=pd.Series(dtype=str))
    table = table.reindex(columns=list(dict.fromkeys([*finished.columns, "status"])))
    table["seed"] = table["seed"].astype("Int64")
    table["hardware"] = [hardware_label(*row) for row in zip(*(_column(table, c) for c in HARDWARE_FIELDS))]
    table["training"] = table["config_json"].map(_training)
    return table.sort_values(["dataset", "architecture", "seed"], ignore_index=True)


HARDWARE_FIELDS = ("device", "cpu_model", "gpu_model")  # where a trial's timings were taken: hardware_label's


def _column(table: pd.DataFrame, name: str) -> np.ndarray:
    """A column's values as Python objects (NaN where missing; all NaN if the column is absent)."""
    return table[name].to_numpy(dtype=object) if name in table else np.full(len(table), np.nan, dtype=object)


def _training(config_json) -> TrainingSettings | None:
    """The trial's typed training settings (None for a pending trial, or a record this code cannot read).
    Seeds of one cell share their settings, so each distinct set is validated once (settings are frozen)."""
    try:
        training = json.loads(config_json)["training"]
        try:
            return _settings(tuple(sorted(training.items())))
        except TypeError:  # an unhashable value: validate it without the cache
            return TrainingSettings.from_dict(training)
    except (TypeError, ValueError, KeyError, AttributeError):
        return None


@functools.lru_cache(maxsize=4096)
def _settings(items: tuple) -> TrainingSettings:
    return TrainingSettings.from_dict(dict(items))


# -- what the analysis is asked about: convergence targets, and where the data and its cache are --------
def parse_targets(items: list[str] | None, defaults: dict[str, float] | None = None) -> dict[str, float]:
    """``["mnist=0.98", "fashion_mnist=85%"]`` over ``defaults`` (none: only what is given, which then
    overrides the datasets' and spaces' own targets); a clear UserError for anything else."""
    targets = dict(defaults or {})
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            number = float(value.rstrip("% ")) / (100 if value.strip().endswith("%") else 1)
        except ValueError:
            number = float("nan")
        if not sep or not name.strip() or not 0 < number <= 1:
            raise UserError(f"--target: expected DATASET=ACCURACY with an accuracy in (0, 1] or a percentage, "
                            f"e.g. mnist=0.98 or mnist=98% (got {item!r})")
        targets[name.strip()] = number
    return targets


def space_targets(results: Results, notes: list[str] | None = None) -> dict[str, float]:
    """The ``targets:`` each analysed space declared (read from the YAML kept in the store, leniently, so a
    store written under an older or newer schema still yields them); conflicting spaces are noted."""
    found: dict[str, float] = {}
    for name, text in sorted(results.spaces.items()):
        try:
            declared = (yaml.safe_load(text) or {}).get("targets") or {}
        except (yaml.YAMLError, AttributeError):
            continue
        for dataset, value in declared.items() if isinstance(declared, dict) else ():
            if isinstance(value, (int, float)) and 0 < value <= 1:
                if dataset in found and found[dataset] != value and notes is not None:
                    notes.append(f"spaces declare different targets for {dataset}; using {value:g} (space {name!r})")
                found[dataset] = float(value)
    return found


def resolve_targets(results: Results, overrides: dict[str, float] | None = None,
                    notes: list[str] | None = None) -> dict[str, float]:
    """Each dataset's own ``convergence_target``, then the space's ``targets:``, then ``--target``."""
    return {**default_targets(), **space_targets(results, notes), **(overrides or {})}


def recorded_data_dir(runs: pd.DataFrame) -> str | None:
    """The data directory the latest run that recorded one used (None when no run recorded it)."""
    return _recorded(runs, "data_dir")


def _recorded(runs: pd.DataFrame | None, key: str, accept=lambda value: True) -> str | None:
    """The newest run's recorded ``key`` that ``accept`` takes: the runs table's column of that name, else the
    key of the run's ``provenance_json``; None when no run recorded one."""
    if runs is None or runs.empty:
        return None
    for row in runs.sort_values("started_at", ascending=False).itertuples():
        value = getattr(row, key, None)
        if not isinstance(value, str) or not value:
            try:
                value = json.loads(getattr(row, "provenance_json", None) or "{}").get(key)
            except (TypeError, ValueError, AttributeError):
                value = None
        if isinstance(value, str) and value and accept(value):
            return value
    return None


def choose_data_dir(results: Results, given: str | os.PathLike | None) -> tuple[Path, str]:
    """``--data-dir`` when given, else the directory the run recorded (when it still exists here), else
    ``$STBENCH_DATA_DIR``, else ``./datasets``; with where it came from, for the notes."""
    if given:
        return resolve_data_dir(given), "--data-dir"
    recorded = recorded_data_dir(results.runs)
    if recorded and Path(recorded).is_dir():
        return Path(recorded), "recorded by the run"
    if os.environ.get(DATA_DIR_ENV):
        source = f"${DATA_DIR_ENV}" + (f" (the run's {recorded} is not here)" if recorded else "")
        return resolve_data_dir(None), source
    return resolve_data_dir(None), "default ./datasets" + (f" (the run's {recorded} is not here)" if recorded else "")


def recorded_cache_dir(runs: pd.DataFrame) -> Path | None:
    """The dataset cache the run recorded (``cache_dir`` column or provenance key), where it still exists, for
    the weights to be examined on the same generated images; None when ``$STBENCH_CACHE_DIR`` says otherwise
    (the user's own setting wins) or nothing usable was recorded."""
    if os.environ.get(CACHE_ENV):
        return None
    recorded = _recorded(runs, "cache_dir", accept=lambda value: Path(value).is_dir())
    return Path(recorded) if recorded else None


def default_targets() -> dict[str, float]:
    """Each dataset's own convergence target (the validation accuracy that stops the convergence clock)."""
    return {name: d.convergence_target for name, d in DATASETS.items() if d.convergence_target is not None}


def named_baselines(results: Results) -> dict:
    """The ``baselines:`` the analysed spaces name (architecture → its baseline(s)), read leniently from the YAML
    kept in the store; later spaces win for an architecture two of them name."""
    named: dict = {}
    for _, text in sorted(results.spaces.items()):
        try:
            declared = (yaml.safe_load(text) or {}).get("baselines") or {}
        except (yaml.YAMLError, AttributeError):
            continue
        if isinstance(declared, dict):
            named.update({str(k): v for k, v in declared.items() if isinstance(v, (str, list))})
    return named
