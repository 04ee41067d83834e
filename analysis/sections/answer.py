"""The answer first: a verdict per dataset in plain sentences, and the headline table."""

from __future__ import annotations

from .. import format as fmt
from ..blocks import Items, Section, Table, Text
from ..compute import Analysis


def section(a: Analysis) -> Section:
    c = fmt.conf_label(a.confidence)
    blocks: list = [Text(f"What the store says, dataset by dataset: each number with its {c} interval (or why it "
                         "has none) and the number of seeds it rests on. 'Not clearly different' means the interval "
                         "includes no difference; the power line says whether more seeds could tell.")]
    for dataset, lines in a.verdicts.items():
        blocks += [Text(dataset, "dataset"), Items(lines, "verdict")]
    if not a.verdicts:
        blocks.append(Text("Nothing to conclude yet: no complete trials.", "empty"))
    blocks.append(Table(a.tables["headline"], "Headline"))
    return Section("answer", "The answer", blocks)
