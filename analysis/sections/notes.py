"""What is missing or left out: trials by status, and every note the analysis made."""

from __future__ import annotations

from ..blocks import Items, Section, Table
from ..compute import Analysis


def section(a: Analysis) -> Section:
    blocks = [Table(a.tables["status"], "Trials by status")]
    if a.notes:
        blocks.append(Items(a.notes, "notes"))
    return Section("notes", "What is missing or left out", blocks)
