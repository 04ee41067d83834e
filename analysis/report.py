"""``python -m analysis.report --results-dir DIR --out DIR``: one self-contained HTML report, a Markdown
summary, the tables as CSV and the figures as PNG, from the Parquet results store alone.

``analyse`` computes every table (pure functions from ``metrics``) and collects
what could not be computed as notes; ``render`` draws the figures; ``SECTIONS``
is the report's outline, each section a function from the analysis to blocks
(text, tables, figures) that ``write`` renders as HTML and as Markdown alike.
The answer comes first (a verdict per dataset), the detail next, provenance
last. A partially finished store is reported as it stands: each section shows
what is there and says what is missing.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pandas as pd

from harness.errors import UserError

from . import format as fmt
from . import metrics, reproduction, stats, verdict
from .load import Results, load
from .provenance import provenance_table, runs_table


@dataclass
class Figure:
    name: str  # file stem
    section: str
    caption: str
    png: bytes


@dataclass
class Analysis:
    results: Results
    targets: dict[str, float]
    baseline: str
    confidence: float
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # raw values, written as CSV
    paired_sentences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    inspection: object | None = None  # checkpoints.Inspection when the weights were examined
    verdicts: dict[str, list[str]] = field(default_factory=dict)  # dataset → plain sentences
    data_dir: str | None = None  # the dataset root the checkpoint figures used, and where it came from
    reproduction: reproduction.Section | None = None  # only when the store holds a run of the study's protocol


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


# -- computing ------------------------------------------------------------------------------------
def space_targets(results: Results, notes: list[str] | None = None) -> dict[str, float]:
    """The ``targets:`` each analysed space declared (read from the YAML kept in the store, leniently, so a
    store written under an older or newer schema still yields them); conflicting spaces are noted."""
    import yaml

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
    return {**metrics.DEFAULT_TARGETS, **space_targets(results, notes), **(overrides or {})}


def recorded_data_dir(runs: pd.DataFrame) -> str | None:
    """The data directory the latest run that recorded one used (None when no run recorded it)."""
    return _recorded(runs, "data_dir")


def _recorded(runs: pd.DataFrame | None, key: str, accept=lambda value: True) -> str | None:
    """The newest run's recorded ``key`` that ``accept`` takes: the runs table's column of that name, else the
    key of the run's ``provenance_json``; None when no run recorded one."""
    import json

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
    from harness.data import DATA_DIR_ENV, resolve_data_dir

    if given:
        return resolve_data_dir(given), "--data-dir"
    recorded = recorded_data_dir(results.runs)
    if recorded and Path(recorded).is_dir():
        return Path(recorded), "recorded by the run"
    if os.environ.get(DATA_DIR_ENV):
        source = f"${DATA_DIR_ENV}" + (f" (the run's {recorded} is not here)" if recorded else "")
        return resolve_data_dir(None), source
    return resolve_data_dir(None), "default ./datasets" + (f" (the run's {recorded} is not here)" if recorded else "")


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
    t["paired"] = metrics.paired_table(trials, baseline, confidence=confidence)
    t["headline"] = verdict.headline(t, baseline, confidence)
    a.paired_sentences = metrics.describe_paired(t["paired"], confidence=confidence)
    a.verdicts = verdict.sentences(t, baseline, confidence)
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
    timed = trials["hardware"].notna()
    if (~timed & (trials["status"] == "running")).any():
        a.notes.append("running trials have no recorded hardware yet, so their timings are left out of the overhead "
                       f"table, and their seconds to target are grouped as '{metrics.UNKNOWN_HARDWARE}'")
    for dataset in results.datasets:
        done = trials[(trials["dataset"] == dataset) & (trials["status"] == "complete")]
        if len(done) and baseline not in set(done["architecture"]):
            a.notes.append(f"{dataset}: no complete {baseline} trial, so no paired comparison or overhead ratio there")
    if checkpoints:
        from .checkpoints import inspect_checkpoints

        root, source = choose_data_dir(results, data_dir)
        a.data_dir = f"{root} ({source})"
        with _recorded_cache_dir(results.runs):
            a.inspection = inspect_checkpoints(results, root)
        a.notes += a.inspection.notes
    else:
        a.notes.append("checkpoint figures (confusion matrices, transformer outputs, misclassified images) were not "
                       "requested (--no-checkpoints)")
    return a


@contextmanager
def _recorded_cache_dir(runs: pd.DataFrame):
    """While the weights are examined, use the dataset cache the run recorded (``cache_dir`` column or
    provenance key) unless ``$STBENCH_CACHE_DIR`` says otherwise, so generated datasets are not rebuilt."""
    from harness.data.distorted import CACHE_ENV

    recorded = _recorded(runs, "cache_dir", accept=lambda value: Path(value).is_dir())
    if recorded is None or os.environ.get(CACHE_ENV):
        yield
        return
    os.environ[CACHE_ENV] = recorded
    try:
        yield
    finally:
        os.environ.pop(CACHE_ENV, None)


# -- drawing --------------------------------------------------------------------------------------
def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def render(a: Analysis) -> list[Figure]:
    """All figures as PNG bytes, each tagged with the report section it belongs to."""
    from . import figures as F

    t, b, c = a.tables, a.baseline, a.confidence
    label = fmt.conf_label(c)
    out = [
        Figure("learning_curves", "curves", "Validation accuracy and loss and training loss per epoch: mean over seeds "
               f"(bold); with {F.SEED_LINES} seeds or fewer each seed as a thin line, with more a {label} t-interval "
               "band, clipped to the metric's range.",
               _png(F.learning_curves(a.results.epochs, baseline=b, confidence=c))),
        Figure("time_to_target", "convergence", "Fraction of seeds that reached the target validation accuracy "
               "against epochs and against training seconds per device model (Kaplan–Meier, "
               f"{label} band; running seeds censored at their last epoch, failed ones at the planned horizon).",
               _png(F.time_to_target(t["convergence_curves"], t["convergence"], b, c))),
        Figure("gaps", "gaps", "Overfitting gap at the best-validation epoch (plain) and the last epoch (hatched); "
               f"error bars = {label} t-interval, none where the seeds agree exactly.",
               _png(F.gap_bars(t["gaps"], b, c))),
        Figure("overhead", "overhead", f"Seconds per epoch relative to {b} on the same dataset and hardware "
               "(training left, evaluation right); dashed line = parity.", _png(F.overhead_bars(t["overhead"], b, c))),
    ]
    out += [Figure(n, reproduction.KEY, c, png) for n, c, png in (a.reproduction.figures if a.reproduction else [])]
    ins = a.inspection
    if ins is not None:
        for dataset in sorted({x.dataset for x in ins.confusions}):
            items = [x for x in ins.confusions if x.dataset == dataset]
            order = metrics.architecture_order([x.architecture for x in items], b)
            items.sort(key=lambda x: order.index(x.architecture))
            out.append(Figure(f"confusion_{dataset}", "weights", f"{dataset}: confusion matrices on the test split, "
                              "summed over each architecture's best-validation checkpoints (row %).",
                              _png(F.confusion_matrices(items, f"{dataset}: confusion matrices (% of each true class)"))))
        rank = {a: i for i, a in enumerate(metrics.architecture_order({x.architecture for x in ins.misclassified}, b))}
        for x in sorted(ins.transforms, key=lambda x: (x.dataset, rank.get(x.architecture, 0))):
            out.append(Figure(f"transform_{x.dataset}_{x.architecture}", "weights",
                              f"{x.dataset} · {x.architecture} (seed {x.seed}): test images beside the spatial "
                              "transformer's output (framed).",
                              _png(F.transform_grid(x.inputs, x.outputs, f"{x.dataset} · {x.architecture}, seed {x.seed}: "
                                                    "input | transformed"))))
        for x in sorted(ins.misclassified, key=lambda x: (x.dataset, rank.get(x.architecture, 0))):
            out.append(Figure(f"misclassified_{x.dataset}_{x.architecture}", "weights",
                              f"{x.dataset} · {x.architecture} (seed {x.seed}): the first {len(x.images)} of "
                              f"{x.wrong} misclassified test images ({x.wrong / max(x.total, 1):.2%} of {x.total}).",
                              _png(F.misclassified_grid(x.images, x.true, x.predicted, x.classes,
                                                        f"{x.dataset} · {x.architecture}, seed {x.seed}: misclassified"))))
    return out


# -- the report's outline -------------------------------------------------------------------------
@dataclass
class Text:
    text: str
    css: str = "lead"


@dataclass
class Items:
    items: list[str]
    css: str = ""


@dataclass
class Table:
    frame: pd.DataFrame
    caption: str = ""


@dataclass
class Folded:
    """Detail a reader opens on demand (a ``<details>`` in HTML, a fenced block in Markdown)."""

    summary: str
    text: str


@dataclass
class Section:
    """One section of the report: ``content`` turns the analysis into blocks; the section's figures (those
    whose ``Figure.section`` is ``key``) follow them. ``folded`` sections start closed in HTML."""

    key: str
    title: str
    content: Callable[[Analysis], list]
    folded: bool = False


def _answer(a: Analysis) -> list:
    c = fmt.conf_label(a.confidence)
    blocks: list = [Text(f"What the store says, dataset by dataset: each number with its {c} interval (or why it "
                         "has none) and the number of seeds it rests on. 'Not clearly different' means the interval "
                         "includes no difference; the power line says whether more seeds could tell.")]
    for dataset, lines in a.verdicts.items():
        blocks += [Text(dataset, "dataset"), Items(lines, "verdict")]
    if not a.verdicts:
        blocks.append(Text("Nothing to conclude yet: no complete trials.", "empty"))
    blocks.append(Table(a.tables["headline"], "Headline"))
    return blocks


def _notes(a: Analysis) -> list:
    blocks = [Table(a.tables["status"], "Trials by status")]
    if a.notes:
        blocks.append(Items(a.notes, "notes"))
    return blocks


def _accuracy(a: Analysis) -> list:
    c = fmt.conf_label(a.confidence)
    return [Text("Test accuracy of the best-validation epoch of each complete trial. Mean with a Student-t "
                 f"interval ({c}; t-intervals clipped to 0–100 % here, tables/accuracy.csv keeps them raw). "
                 f"Interquartile mean (IQM) with a trimmed-mean interval from {stats.MIN_SEEDS_IQM} seeds on; below "
                 "that the IQM is (nearly) the mean and no small-sample interval for it covers what it claims (a "
                 "percentile bootstrap covers about half the time at 2 seeds), so the seeds themselves are listed. "
                 "With no spread among the seeds no interval is drawn: 'all n seeds equal'. Failed trials are "
                 "counted, not averaged."),
            Table(fmt.accuracy(a.tables["accuracy"], a.confidence))]


def _paired(a: Analysis) -> list:
    c = fmt.conf_label(a.confidence)
    return [Text("Seeds are shared across architectures, so each architecture is compared with the baseline seed "
                 f"by seed: mean paired difference with a {c} t-interval, paired t-test, Holm's correction across "
                 "all comparisons (no p-value where every paired difference is the same: there is no spread to test "
                 "against). Beside it, the probability that a random seed of the architecture beats one of the "
                 f"baseline (ties half; Newcombe's {c} interval, from {stats.MIN_SEEDS_PROB} seeds each), and the "
                 f"seeds a paired t-test needs to detect {metrics.EFFECT * 100:g} pp with 80 % power at the observed "
                 "spread."),
            Items(a.paired_sentences, "verdict"), Table(fmt.paired(a.tables["paired"], a.confidence))]


def _convergence(a: Analysis) -> list:
    c = fmt.conf_label(a.confidence)
    conv = a.tables["convergence"]
    targets = ", ".join(f"{d} {v * 100:g} %" for d, v in sorted(a.targets.items()) if d in set(conv["dataset"]))
    return [Text(f"Epochs and training seconds (evaluation excluded) until validation accuracy first reaches the "
                 f"dataset's target ({targets or 'none here'}; each dataset declares its own, a space's targets: "
                 "or --target override it). Medians are Kaplan–Meier estimates (where exactly half have reached it, "
                 "the midpoint to the next time, as R's survfit). Trials still running are censored at their last "
                 "epoch; failed trials count as never reaching the target (censored at the planned horizon, not at "
                 f"the failure). Intervals ({c}): the exact order-statistic interval when every trial reached the "
                 f"target, else the inverted log-log band; none below {stats.min_seeds_for_median(a.confidence)} "
                 "trials, where no distribution-free interval reaches that level; ∞ = not bounded by the data. "
                 "Seconds are compared only within one device model."),
            Table(fmt.convergence(conv, "epochs", a.confidence), "Epochs to target (all hardware)"),
            Table(fmt.convergence(conv, "seconds", a.confidence), "Training seconds to target, per device model")]


def _curves(a: Analysis) -> list:
    return []


def _gaps(a: Analysis) -> list:
    return [Text("Training minus validation accuracy and validation minus training loss, at the best-validation "
                 "epoch and at the last epoch. Training metrics are those of the epoch's final weights in eval mode on "
                 "a fixed training subset the size of the validation set, measured exactly as validation is (column "
                 "train_metric = eval). Stores from before that measurement existed fall back to running averages "
                 "taken with dropout on (train_metric = running), which understate the fit: such gaps read low, "
                 "often negative."),
            Table(fmt.gaps(a.tables["gaps"], a.confidence))]


def _overhead(a: Analysis) -> list:
    return [Text("Per trial, the median epoch's training seconds, images/s and evaluation seconds; per architecture "
                 "the geometric mean over trials, and its ratio to the baseline on the same dataset and device model "
                 f"with a {fmt.conf_label(a.confidence)} Welch interval on the log scale. Trials that ran "
                 "concurrently share the machine, which adds noise."),
            Table(fmt.overhead(a.tables["overhead"], a.baseline, a.confidence))]


def _weights(a: Analysis) -> list:
    blocks: list = [Text("From each trial's best-validation checkpoint, evaluated on the test split its trial used"
                         + (f"; dataset root {a.data_dir}." if a.data_dir else "."))]
    if a.inspection is not None and a.inspection.misclassified:
        from .checkpoints import examples_table

        blocks.append(Table(metrics.order_rows(examples_table(a.inspection), a.baseline),
                            "Misclassified test images of the representative checkpoints"))
    if a.inspection is None or not (a.inspection.confusions or a.inspection.transforms or a.inspection.misclassified):
        blocks.append(Text("Skipped: see the notes for why.", "empty"))
    return blocks


def _reproduction(a: Analysis) -> list:
    r = a.reproduction
    if r is None:
        return [Text("No trial of the reference study's protocol in this store (training.protocol: study; "
                     "python run_benchmark.py --space seed runs it).", "empty")]
    return [Text(r.full_lead), *(Table(frame, caption) for caption, frame in r.display)]


def _provenance(a: Analysis) -> list:
    r = a.results
    blocks: list = [Table(provenance_table(r)), Table(runs_table(r), "Runs")]
    blocks += [Folded(f"Search space {name} (YAML kept in the store)", text) for name, text in r.spaces.items()]
    return blocks


# The report's outline, in order. A new section is one function from the analysis to blocks and one line here.
SECTIONS: list[Section] = [
    Section("answer", "The answer", _answer),
    Section("notes", "What is missing or left out", _notes),
    Section("accuracy", "1. Test accuracy", _accuracy),
    Section("paired", "2. Paired comparisons with the baseline", _paired),
    Section("convergence", "3. Convergence speed", _convergence),
    Section("curves", "4. Learning curves", _curves),
    Section("gaps", "5. Overfitting gap", _gaps),
    Section("overhead", "6. Training-time overhead", _overhead),
    Section("weights", "7. What the weights show", _weights),
    Section(reproduction.KEY, "8. " + reproduction.TITLE, _reproduction),
    Section("provenance", "Provenance", _provenance, folded=True),
]


# -- writing --------------------------------------------------------------------------------------
def _html_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "<p class='empty'>Nothing to show yet.</p>"
    return frame.to_html(index=False, border=0, classes="t", na_rep=fmt.DASH, escape=True)


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table.t{border-collapse:collapse;font-size:.88em;margin:.6em 0} table.t th,table.t td{padding:.25em .7em;border-bottom:1px solid #e4e4e4;text-align:left}
table.t th{background:#f4f4f4;text-align:left !important} .lead{color:#555;font-size:.92em} .empty{color:#888;font-style:italic}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eee} figcaption{font-size:.85em;color:#555}
ul.notes li{margin:.2em 0} pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}
ul.verdict{background:#f3f8ff;border-left:4px solid #4a7fd0;padding:.5em 1em .5em 2em} p.dataset{font-weight:bold;margin-bottom:0}
details>summary{cursor:pointer}
"""


def _html_block(block) -> str:
    e = html.escape
    if isinstance(block, Text):
        return f"<p class='{block.css}'>{e(block.text)}</p>"
    if isinstance(block, Items):
        return f"<ul class='{block.css}'>" + "".join(f"<li>{e(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Table):
        return (f"<h3>{e(block.caption)}</h3>" if block.caption else "") + _html_table(block.frame)
    if isinstance(block, Folded):
        return f"<details><summary>{e(block.summary)}</summary><pre>{e(block.text)}</pre></details>"
    raise TypeError(f"unknown report block {type(block).__name__}")


def _md_block(block) -> list[str]:
    if isinstance(block, Text):
        return [f"**{block.text}**" if block.css == "dataset" else block.text, ""]
    if isinstance(block, Items):
        return [*(f"- {i}" for i in block.items), ""]
    if isinstance(block, Table):
        return ([f"**{block.caption}**", ""] if block.caption else []) + [fmt.markdown(block.frame), ""]
    if isinstance(block, Folded):
        return [f"<details><summary>{block.summary}</summary>", "", "```yaml", block.text.rstrip(), "```", "",
                "</details>", ""]
    raise TypeError(f"unknown report block {type(block).__name__}")


def write_html(a: Analysis, figures: list[Figure], path: Path, generated: str) -> None:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>stbench report</title><style>{CSS}</style></head><body>",
             "<h1>stbench: do spatial transformers and CoordConv help?</h1>",
             f"<p class='lead'>Results store <code>{e(str(a.results.root))}</code> · generated {e(generated)} · baseline "
             f"<b>{e(a.baseline)}</b> · intervals at {fmt.conf_label(a.confidence)}</p>"]
    for section in SECTIONS:
        body = [_html_block(b) for b in section.content(a)]
        for f in (f for f in figures if f.section == section.key):
            data = base64.b64encode(f.png).decode()
            body.append(f"<figure><img alt='{e(f.name)}' src='data:image/png;base64,{data}'>"
                        f"<figcaption>{e(f.caption)}</figcaption></figure>")
        if section.folded:
            parts.append(f"<details><summary><h2 style='display:inline'>{e(section.title)}</h2></summary>"
                         + "".join(body) + "</details>")
        else:
            parts += [f"<h2>{e(section.title)}</h2>", *body]
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")


def write_markdown(a: Analysis, figures: list[Figure], path: Path, generated: str) -> None:
    lines = ["# stbench report (summary)", "",
             f"Results store `{a.results.root}`, generated {generated}; baseline `{a.baseline}`; intervals at "
             f"{fmt.conf_label(a.confidence)}. The full report with figures is `report.html`; raw tables are in "
             "`tables/`.", ""]
    for section in SECTIONS:
        lines += [f"## {section.title}", ""]
        for block in section.content(a):
            lines += _md_block(block)
        lines += [f"![{f.name}](figures/{f.name}.png)" for f in figures if f.section == section.key]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


def write(a: Analysis, figures: list[Figure], out: str | os.PathLike) -> dict[str, Path]:
    """report.html (self-contained), summary.md, tables/*.csv (raw values), figures/*.png."""
    out = Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    paths = {"html": out / "report.html", "markdown": out / "summary.md"}
    for name, frame in a.tables.items():
        frame.to_csv(out / "tables" / f"{name}.csv", index=False)
    for f in figures:
        (out / "figures" / f"{f.name}.png").write_bytes(f.png)
    write_html(a, figures, paths["html"], generated)
    write_markdown(a, figures, paths["markdown"], generated)
    return paths


def build(results_dir, out, *, targets: dict[str, float] | None = None, space: str | None = None,
          baseline: str = metrics.BASELINE, confidence: float = stats.CONFIDENCE,
          data_dir=None, checkpoints: bool = True) -> tuple[Analysis, dict[str, Path]]:
    """Store in, report out: the whole pipeline behind the command line."""
    a = analyse(load(results_dir, space=space), targets, baseline, confidence, data_dir, checkpoints)
    return a, write(a, render(a), out)


# -- command line ---------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m analysis.report",
        description="Write the analysis report (HTML with figures, Markdown summary, CSV tables) from a results store.",
        epilog="Targets: each dataset's own (" + ", ".join(f"{k}={v:g}" for k, v in metrics.DEFAULT_TARGETS.items())
               + "), overridden by a space's targets: and then by --target.")
    p.add_argument("--results-dir", default="results", metavar="DIR", help="the results store (default: ./results)")
    p.add_argument("--out", default="report", metavar="DIR", help="where to write the report (default: ./report)")
    p.add_argument("--data-dir", metavar="DIR", help="dataset root for the checkpoint figures "
                   "(default: the one the run recorded, else $STBENCH_DATA_DIR, else ./datasets)")
    p.add_argument("--target", action="append", metavar="DATASET=ACC",
                   help="target validation accuracy for convergence speed, e.g. mnist=0.98 (repeatable)")
    p.add_argument("--space", metavar="NAME", help="analyse only the trials of this search space (default: all)")
    p.add_argument("--baseline", default=metrics.BASELINE, help="architecture the others are compared with "
                   f"(default: {metrics.BASELINE})")
    p.add_argument("--confidence", type=float, default=stats.CONFIDENCE, help="confidence level of every interval (default: 0.95)")
    p.add_argument("--no-checkpoints", action="store_true", help="skip the figures that need the weights and the dataset")
    p.add_argument("--wandb", nargs="?", const="offline", choices=("offline", "online"), default=None,
                   help="also log the tables and figures to a W&B run of their own (offline unless 'online'; "
                        "online also builds a W&B Report)")
    p.add_argument("--wandb-project", default="stbench", metavar="NAME", help="W&B project (default: stbench)")
    p.add_argument("--wandb-entity", default=None, metavar="NAME", help="W&B entity (team or user)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if not 0 < args.confidence < 1:
            raise UserError(f"--confidence: must be between 0 and 1 (got {args.confidence})")
        started = time.perf_counter()
        a, paths = build(args.results_dir, args.out, targets=parse_targets(args.target), space=args.space,
                         baseline=args.baseline, confidence=args.confidence, data_dir=args.data_dir,
                         checkpoints=not args.no_checkpoints)
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = a.tables["status"]["total"].sum() if len(a.tables["status"]) else 0
    print(f"report: {n} trials from {a.results.root} → {paths['html']} (+ summary.md, tables/, figures/) "
          f"in {time.perf_counter() - started:.1f} s")
    for note in a.notes:
        print(f"note: {note}")
    if args.wandb:
        from harness.tracking import WandbSettings

        from .wandb_report import publish

        where = publish(a.tables, Path(args.out) / "figures", paths["markdown"], Path(args.out),
                        WandbSettings(mode=args.wandb, project=args.wandb_project, entity=args.wandb_entity),
                        name=f"report-{args.space or 'all'}")
        if where:
            print(f"report: logged to W&B ({args.wandb}): {where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
