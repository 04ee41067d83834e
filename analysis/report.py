"""``python -m analysis.report --results-dir DIR --out DIR``: one self-contained HTML report, a Markdown
summary, the tables as CSV and the figures as PNG, from the Parquet results store alone.

``analysis.compute.analyse`` computes every table; each section module (``analysis/sections/``) turns that into
its text, tables and figures; ``OUTLINE`` below is the report's order, and the writers render every section as
HTML and as Markdown alike. The answer comes first (a verdict per dataset), the detail next, provenance last.
A partially finished store is reported as it stands: each section shows what is there and says what is missing.
Adding a section is one module with ``section(analysis) -> Section`` and one line in ``OUTLINE``.
"""

from __future__ import annotations

import argparse
import base64
import html
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from harness.errors import UserError

from . import format as fmt
from . import metrics, stats
from .blocks import Folded, Items, Section, Table, Text
from .compute import Analysis, analyse
from .load import load, parse_targets
from .sections import (accuracy, answer, convergence, curves, gaps, notes, overhead, paired, provenance, study,
                       weights)

# The report's outline, in order.
OUTLINE = [answer, notes, accuracy, paired, convergence, curves, gaps, overhead, weights, study, provenance]


def sections(a: Analysis) -> list[Section]:
    """Every section of the outline, built from the analysis (figures drawn here)."""
    return [module.section(a) for module in OUTLINE]


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


def write_html(a: Analysis, sections: list[Section], path: Path, generated: str) -> None:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>stbench report</title><style>{CSS}</style></head><body>",
             "<h1>stbench: do spatial transformers and CoordConv help?</h1>",
             f"<p class='lead'>Results store <code>{e(str(a.results.root))}</code> · generated {e(generated)} · baseline "
             f"<b>{e(a.baseline)}</b> · intervals at {fmt.conf_label(a.confidence)}</p>"]
    for section in sections:
        body = [_html_block(b) for b in section.blocks]
        for f in section.figures:
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


def write_markdown(a: Analysis, sections: list[Section], path: Path, generated: str) -> None:
    lines = ["# stbench report (summary)", "",
             f"Results store `{a.results.root}`, generated {generated}; baseline `{a.baseline}`; intervals at "
             f"{fmt.conf_label(a.confidence)}. The full report with figures is `report.html`; raw tables are in "
             "`tables/`.", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            lines += _md_block(block)
        lines += [f"![{f.name}](figures/{f.name}.png)" for f in section.figures]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


def write(a: Analysis, sections: list[Section], out: str | os.PathLike) -> dict[str, Path]:
    """report.html (self-contained), summary.md, tables/*.csv (raw values), figures/*.png."""
    out = Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    paths = {"html": out / "report.html", "markdown": out / "summary.md"}
    for name, frame in {**a.tables, **{k: v for s in sections for k, v in s.tables.items()}}.items():
        frame.to_csv(out / "tables" / f"{name}.csv", index=False)
    for f in (f for s in sections for f in s.figures):
        (out / "figures" / f"{f.name}.png").write_bytes(f.png)
    write_html(a, sections, paths["html"], generated)
    write_markdown(a, sections, paths["markdown"], generated)
    return paths


def build(results_dir, out, *, targets: dict[str, float] | None = None, space: str | None = None,
          baseline: str = metrics.BASELINE, confidence: float = stats.CONFIDENCE,
          data_dir=None, checkpoints: bool = True) -> tuple[Analysis, dict[str, Path]]:
    """Store in, report out: the whole pipeline behind the command line."""
    a = analyse(load(results_dir, space=space), targets, baseline, confidence, data_dir, checkpoints)
    return a, write(a, sections(a), out)


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
        from harness.tracking import WandbSettings  # lazy: W&B's import costs seconds, and few reports log to it

        from .wandb_report import publish  # lazy with W&B above

        where = publish(a.tables, Path(args.out) / "figures", paths["markdown"], Path(args.out),
                        WandbSettings(mode=args.wandb, project=args.wandb_project, entity=args.wandb_entity),
                        name=f"report-{args.space or 'all'}")
        if where:
            print(f"report: logged to W&B ({args.wandb}): {where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
