"""``python -m analysis.report --results-dir DIR --out DIR``: one self-contained HTML report, a Markdown
summary, the tables as CSV and the figures as PNG, from the Parquet results store alone.

``analyse`` computes every table (pure functions from ``metrics``) and collects
what could not be computed as notes; ``render`` draws the figures; ``write``
puts it all on disk. A partially finished store is reported as it stands: each
section shows what is there and says what is missing.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from harness.errors import UserError

from . import format as fmt
from . import metrics, stats
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


def parse_targets(items: list[str] | None, defaults: dict[str, float] | None = None) -> dict[str, float]:
    """``["mnist=0.98", "fashion_mnist=85%"]`` over the defaults; a clear UserError for anything else."""
    targets = dict(metrics.DEFAULT_TARGETS if defaults is None else defaults)
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
def analyse(results: Results, targets: dict[str, float] | None = None, baseline: str = metrics.BASELINE,
            confidence: float = stats.CONFIDENCE, data_dir: str | os.PathLike | None = None,
            checkpoints: bool = True) -> Analysis:
    """Every table of the report, and a note for each thing that is missing or left out."""
    targets = dict(metrics.DEFAULT_TARGETS if targets is None else targets)
    a = Analysis(results, targets, baseline, confidence, notes=list(results.notes))
    trials, epochs = results.trials, results.epochs
    t = a.tables
    t["status"] = metrics.status_table(trials, baseline)
    t["accuracy"] = metrics.accuracy_table(trials, confidence, baseline)
    summary = metrics.trial_summary(epochs)
    t["trial_summary"] = summary
    ttt = metrics.time_to_target(epochs, targets)
    t["time_to_target"] = ttt
    t["convergence"] = metrics.convergence_table(ttt, confidence, baseline)
    t["convergence_curves"] = metrics.convergence_curves(ttt, confidence)
    t["gaps"] = metrics.gap_table(summary, confidence, baseline)
    t["overhead"] = metrics.overhead_table(summary, trials, baseline, confidence)
    t["paired"] = metrics.paired_table(trials, baseline, confidence=confidence)
    a.paired_sentences = metrics.describe_paired(t["paired"])

    if trials.empty:
        a.notes.append("the store holds no trials yet: every table below is empty")
    counts = trials["status"].value_counts()
    failed = int(counts.get("diverged", 0) + counts.get("error", 0))
    if failed:
        a.notes.append(f"{failed} trial(s) failed ({int(counts.get('diverged', 0))} diverged, "
                       f"{int(counts.get('error', 0))} error): counted beside each accuracy, not averaged into it; "
                       "their epochs still count in learning curves, time to target (censored) and timings")
        for row in trials[trials["status"] == "error"].itertuples():
            a.notes.append(f"error in {row.architecture}/{row.dataset}/seed {row.seed}: {row.error}")
    unfinished = int(counts.get("running", 0) + counts.get("pending", 0))
    if unfinished:
        a.notes.append(f"the benchmark is not finished: {int(counts.get('running', 0))} trial(s) running or "
                       f"interrupted (epochs so far are shown; they are censored in time to target), "
                       f"{int(counts.get('pending', 0))} not started")
    no_target = [d for d in results.datasets if d not in targets]
    if no_target:
        a.notes.append(f"no target accuracy for {', '.join(no_target)}: convergence speed is not reported there; "
                       f"pass --target {no_target[0]}=ACCURACY")
    timed = trials["hardware"].notna()
    if (~timed & (trials["status"] == "running")).any():
        a.notes.append("running trials have no recorded hardware yet, so their timings are left out of the overhead table")
    for dataset in results.datasets:
        done = trials[(trials["dataset"] == dataset) & (trials["status"] == "complete")]
        if len(done) and baseline not in set(done["architecture"]):
            a.notes.append(f"{dataset}: no complete {baseline} trial, so no paired comparison or overhead ratio there")
    if checkpoints:
        from harness.data import resolve_data_dir

        from .checkpoints import inspect_checkpoints

        a.inspection = inspect_checkpoints(results, resolve_data_dir(data_dir))
        a.notes += a.inspection.notes
    else:
        a.notes.append("checkpoint figures (confusion matrices, transformer outputs, misclassified images) were not "
                       "requested (--no-checkpoints)")
    return a


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
    out = [
        Figure("learning_curves", "curves", "Validation accuracy and loss and training loss per epoch, mean over seeds "
               f"with a {c:.0%} t-interval band.", _png(F.learning_curves(a.results.epochs, baseline=b, confidence=c))),
        Figure("time_to_target", "convergence", "Fraction of seeds that reached the target validation accuracy "
               "against epochs and against training seconds (Kaplan–Meier; seeds that never reached it are censored "
               "at their last epoch, not dropped).", _png(F.time_to_target(t["convergence_curves"], t["convergence"], b, c))),
        Figure("gaps", "gaps", "Overfitting gap at the best-validation epoch (plain) and the last epoch (hatched).",
               _png(F.gap_bars(t["gaps"], b, c))),
        Figure("overhead", "overhead", f"Seconds per epoch relative to {b} on the same dataset and hardware "
               "(training left, evaluation right); dashed line = parity.", _png(F.overhead_bars(t["overhead"], b, c))),
    ]
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


# -- writing --------------------------------------------------------------------------------------
SECTIONS = [
    ("accuracy", "1. Test accuracy",
     "Test accuracy of the best-validation epoch of each complete trial. Mean with a Student-t interval; "
     "interquartile mean (IQM) with a percentile-bootstrap interval. Failed trials are counted, not averaged. "
     "t-intervals are clipped to 0–100 % here (tables/accuracy.csv keeps them raw)."),
    ("paired", "2. Paired comparisons with the baseline",
     "Seeds are shared across architectures, so each architecture is compared with the baseline seed by seed: "
     "mean paired difference with a t-interval, paired t-test, Holm's correction across all comparisons."),
    ("convergence", "3. Convergence speed",
     "Epochs and training seconds (evaluation excluded) until validation accuracy first reaches the dataset's "
     "target. Trials that never reach it are censored at their last epoch, not dropped; medians and intervals are "
     "Kaplan–Meier estimates (interval: the log-log band of the curve inverted at one half; ∞ = not bounded by the data)."),
    ("curves", "4. Learning curves", ""),
    ("gaps", "5. Overfitting gap",
     "Training minus validation accuracy and validation minus training loss, at the best-validation epoch and at "
     "the last epoch. Training metrics are those of the epoch's final weights in eval mode on a fixed training "
     "subset the size of the validation set, measured exactly as validation is (column train_metric = eval). "
     "Stores from before that measurement existed fall back to running averages taken with dropout on "
     "(train_metric = running), which understate the fit: such gaps read low, often negative."),
    ("overhead", "6. Training-time overhead",
     "Per trial, the median epoch's training seconds, images/s and evaluation seconds; per architecture the "
     "geometric mean over trials, and its ratio to the baseline on the same dataset and hardware with a Welch "
     "interval on the log scale. Trials that ran concurrently share the machine, which adds noise."),
    ("weights", "7. What the weights show",
     "From each trial's best-validation checkpoint, evaluated on the test split its trial used."),
]


def _display_tables(a: Analysis) -> dict[str, list[tuple[str, pd.DataFrame]]]:
    t = a.tables
    shown = {
        "accuracy": [("", fmt.accuracy(t["accuracy"]))],
        "paired": [("", fmt.paired(t["paired"]))],
        "convergence": [("", fmt.convergence(t["convergence"]))],
        "gaps": [("", fmt.gaps(t["gaps"]))],
        "overhead": [("", fmt.overhead(t["overhead"], a.baseline))],
    }
    if a.inspection is not None and a.inspection.misclassified:
        from .checkpoints import examples_table

        examples = examples_table(a.inspection)
        shown["weights"] = [("Misclassified test images of the representative checkpoints",
                             metrics.order_rows(examples, a.baseline))]
    return shown


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
.verdict{background:#f3f8ff;border-left:4px solid #4a7fd0;padding:.5em 1em}
"""


def write_html(a: Analysis, figures: list[Figure], path: Path, generated: str) -> None:
    r = a.results
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>stbench report</title><style>{CSS}</style></head><body>",
             "<h1>stbench: do spatial transformers and CoordConv help?</h1>",
             f"<p class='lead'>Results store <code>{e(str(r.root))}</code> · generated {e(generated)} · baseline "
             f"<b>{e(a.baseline)}</b> · intervals at {a.confidence:.0%}</p>",
             "<h2>Provenance</h2>", _html_table(provenance_table(r)),
             "<h3>Runs</h3>", _html_table(runs_table(r))]
    for name, text in r.spaces.items():
        parts.append(f"<details><summary>Search space <b>{e(name)}</b> (YAML kept in the store)</summary>"
                     f"<pre>{e(text)}</pre></details>")
    parts += ["<h3>Trials by status</h3>", _html_table(a.tables["status"])]
    if a.notes:
        parts.append("<h3>Notes: what is missing or left out</h3><ul class='notes'>"
                     + "".join(f"<li>{e(n)}</li>" for n in a.notes) + "</ul>")
    tables = _display_tables(a)
    for key, title, lead in SECTIONS:
        parts.append(f"<h2>{e(title)}</h2>")
        if lead:
            parts.append(f"<p class='lead'>{e(lead)}</p>")
        if key == "paired":
            parts.append("<div class='verdict'>" + "".join(f"<p>{e(s)}</p>" for s in a.paired_sentences) + "</div>")
        for caption, frame in tables.get(key, []):
            if caption:
                parts.append(f"<h3>{e(caption)}</h3>")
            parts.append(_html_table(frame))
        for f in (f for f in figures if f.section == key):
            data = base64.b64encode(f.png).decode()
            parts.append(f"<figure><img alt='{e(f.name)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{e(f.caption)}</figcaption></figure>")
        if key == "weights" and not any(f.section == "weights" for f in figures):
            parts.append("<p class='empty'>Skipped: see the notes at the top for why.</p>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")


def write_markdown(a: Analysis, figures: list[Figure], path: Path, generated: str) -> None:
    r = a.results
    lines = ["# stbench report (summary)", "",
             f"Results store `{r.root}`, generated {generated}; baseline `{a.baseline}`; intervals at {a.confidence:.0%}. "
             "The full report with figures is `report.html`; raw tables are in `tables/`.", "",
             "## Provenance", "", fmt.markdown(provenance_table(r)), "",
             "## Trials by status", "", fmt.markdown(a.tables["status"]), ""]
    if a.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in a.notes), ""]
    tables = _display_tables(a)
    for key, title, lead in SECTIONS:
        lines += [f"## {title}", ""]
        if lead:
            lines += [lead, ""]
        if key == "paired":
            lines += [*(f"- {s}" for s in a.paired_sentences), ""]
        for caption, frame in tables.get(key, []):
            lines += ([f"**{caption}**", ""] if caption else []) + [fmt.markdown(frame), ""]
        lines += [f"![{f.name}](figures/{f.name}.png)" for f in figures if f.section == key]
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
        epilog="Targets default to " + ", ".join(f"{k}={v:g}" for k, v in metrics.DEFAULT_TARGETS.items()) + ".")
    p.add_argument("--results-dir", default="results", metavar="DIR", help="the results store (default: ./results)")
    p.add_argument("--out", default="report", metavar="DIR", help="where to write the report (default: ./report)")
    p.add_argument("--data-dir", metavar="DIR", help="dataset root for the checkpoint figures "
                   "(default: $STBENCH_DATA_DIR, else ./datasets)")
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
