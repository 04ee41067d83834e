"""Every table of the report, computed once from a loaded store: ``analyse`` (the report, the notebook and the
W&B report all start here). The tables are pure functions of ``metrics``; what could not be computed becomes a
note. Drawing and wording are the section modules' (``analysis/sections/``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pandas as pd

from harness.decide import report_lines

from . import metrics, reproduction, stats, verdict
from .checkpoints import Inspection, inspect_checkpoints
from .load import Results, choose_data_dir, named_baselines, recorded_cache_dir, resolve_targets


@dataclass
class Analysis:
    results: Results
    targets: dict[str, float]
    baseline: str
    confidence: float
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # raw values, written as CSV
    paired_sentences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    inspection: Inspection | None = None  # when the weights were examined
    verdicts: dict[str, list[str]] = field(default_factory=dict)  # dataset → plain sentences
    data_dir: str | None = None  # the dataset root the checkpoint figures used, and where it came from
    reproduction: reproduction.Section | None = None  # only when the store holds a run of the study's protocol


def hardware_note(trials: pd.DataFrame) -> str | None:
    """Say so when trials ran on more than one device model (timings are then grouped, never pooled)."""
    kinds = trials["hardware"].dropna().value_counts() if "hardware" in trials else pd.Series(dtype=int)
    if len(kinds) <= 1:
        return None
    return (f"mixed hardware: trials ran on {len(kinds)} device models ("
            + ", ".join(f"{k}: {n} trials" for k, n in kinds.items())
            + "); seconds to target and overhead ratios are computed per device model, never across them")


def analyse(results: Results, targets: dict[str, float] | None = None, baseline: str = metrics.BASELINE,
            confidence: float = stats.CONFIDENCE, data_dir: str | os.PathLike | None = None,
            checkpoints: bool = True) -> Analysis:
    """Every table of the report, and a note for each thing that is missing or left out. ``targets``
    override the datasets' and the spaces' own convergence targets."""
    notes = list(results.notes)
    a = Analysis(results, resolve_targets(results, targets, notes), baseline, confidence, notes=notes)
    trials, epochs = results.trials, results.epochs
    t = a.tables
    t["status"] = metrics.status_table(trials, baseline)
    t["accuracy"] = metrics.accuracy_table(trials, confidence, baseline)
    summary = metrics.trial_summary(epochs)
    t["trial_summary"] = summary
    ttt = metrics.time_to_target(epochs, a.targets, trials)
    t["time_to_target"] = ttt
    t["convergence"] = metrics.convergence_table(ttt, confidence, baseline)
    t["convergence_curves"] = metrics.convergence_curves(ttt, confidence)
    t["gaps"] = metrics.gap_table(summary, confidence, baseline)
    t["overhead"] = metrics.overhead_table(summary, trials, baseline, confidence)
    t["paired"] = metrics.paired_table(trials, baseline, confidence=confidence, named=named_baselines(results))
    t["headline"] = verdict.headline(t, baseline, confidence)
    a.paired_sentences = metrics.describe_paired(t["paired"], confidence=confidence)
    a.verdicts = verdict.sentences(t, baseline, confidence)
    decided = report_lines(results)
    if decided:
        a.verdicts["seeds until decided"] = decided
    a.reproduction = reproduction.section(results, a.targets, baseline)
    t.update(a.reproduction.tables if a.reproduction else {})

    if trials.empty:
        a.notes.append("the store holds no trials yet: every table below is empty")
    counts = trials["status"].value_counts()
    failed = int(counts.get("diverged", 0) + counts.get("error", 0))
    if failed:
        a.notes.append(f"{failed} trial(s) failed ({int(counts.get('diverged', 0))} diverged, "
                       f"{int(counts.get('error', 0))} error): counted beside each accuracy, not averaged into it; "
                       "in time to target they count as never reaching it (censored at the planned horizon); "
                       "their epochs still count in learning curves and timings")
        for row in trials[trials["status"] == "error"].itertuples():
            a.notes.append(f"error in {row.architecture}/{row.dataset}/seed {row.seed}: {row.error}")
    unfinished = int(counts.get("running", 0) + counts.get("pending", 0))
    if unfinished:
        a.notes.append(f"the benchmark is not finished: {int(counts.get('running', 0))} trial(s) running or "
                       f"interrupted (epochs so far are shown; they are censored in time to target), "
                       f"{int(counts.get('pending', 0))} not started")
    no_target = [d for d in results.datasets if d not in a.targets]
    if no_target:
        a.notes.append(f"no target accuracy for {', '.join(no_target)}: convergence speed is not reported there; "
                       f"pass --target {no_target[0]}=ACCURACY")
    if (mixed := hardware_note(trials)) is not None:
        a.notes.append(mixed)
    a.notes += mixed_code_notes(trials)
    timed = trials["hardware"].notna()
    if (~timed & (trials["status"] == "running")).any():
        a.notes.append("running trials have no recorded hardware yet, so their timings are left out of the overhead "
                       f"table, and their seconds to target are grouped as '{metrics.UNKNOWN_HARDWARE}'")
    for dataset in results.datasets:
        done = trials[(trials["dataset"] == dataset) & (trials["status"] == "complete")]
        if len(done) and baseline not in set(done["architecture"].unique()):
            a.notes.append(f"{dataset}: no complete {baseline} trial, so no paired comparison or overhead ratio there")
    if checkpoints:
        root, source = choose_data_dir(results, data_dir)
        a.data_dir = f"{root} ({source})"
        a.inspection = inspect_checkpoints(results, root, cache_dir=recorded_cache_dir(results.runs))
        a.notes += a.inspection.notes
    else:
        a.notes.append("checkpoint figures (confusion matrices, transformer outputs, misclassified images) were not "
                       "requested (--no-checkpoints)")
    return a


def mixed_code_notes(trials: pd.DataFrame) -> list[str]:
    """A note per architecture × dataset whose complete trials ran different plugin code (``code_json``: each
    plugin file's sha256 or package version): its seeds are not one experiment; ``--retry-stale`` reruns them."""
    if "code_json" not in trials or trials.empty:
        return []
    done = trials[trials["status"] == "complete"]
    notes = []
    for (dataset, arch), cell in done.groupby(["dataset", "architecture"]):
        versions = cell["code_json"].fillna("none").nunique()
        if versions > 1:
            notes.append(f"{arch} on {dataset}: its {len(cell)} complete trials ran {versions} different versions of "
                         "the plugin code; rerun with --retry-stale to train the stale ones with today's code")
    return notes
