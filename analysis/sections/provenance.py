"""Provenance: versions, hardware and commits of every run, and the search spaces kept in the store."""

from __future__ import annotations

from ..blocks import Folded, Section, Table
from ..compute import Analysis
from ..provenance import provenance_table, runs_table


def section(a: Analysis) -> Section:
    r = a.results
    blocks: list = [Table(provenance_table(r)), Table(runs_table(r), "Runs")]
    blocks += [Folded(f"Search space {name} (YAML kept in the store)", text) for name, text in r.spaces.items()]
    return Section("provenance", "Provenance", blocks, folded=True)
