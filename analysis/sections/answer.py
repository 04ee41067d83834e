"""The answer first: a verdict per dataset in plain sentences (worded from the Holm-corrected family), the
decisions of any seeds-until-decided run, and the headline table."""

from __future__ import annotations

from .. import verdict
from ..blocks import Items, Section, Table, Text
from ..compute import Analysis


def section(a: Analysis) -> Section:
    blocks: list = [Text(verdict.answer_lead(a.confidence))]
    for dataset, lines in a.verdicts.items():
        blocks += [Text(dataset, "dataset"), Items(lines, "verdict")]
    if not a.verdicts:
        blocks.append(Text("Nothing to conclude yet: no complete trials.", "empty"))
    blocks.append(Table(a.tables["headline"], "Headline"))
    return Section("answer", "The answer", blocks)
