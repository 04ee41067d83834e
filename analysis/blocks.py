"""What a report section is made of, and the one way a figure becomes PNG bytes.

A section module (``analysis/sections/``) turns the analysis into a ``Section``: blocks of text, lists, tables
and folded detail, then its figures; ``analysis.report`` writes every section as HTML and as Markdown alike.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pandas as pd


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
class Figure:
    name: str  # file stem
    caption: str
    png: bytes


@dataclass
class Section:
    """One section of the report: its blocks, then its figures; ``tables`` are raw values written as CSV;
    ``folded`` sections start closed in HTML."""

    key: str
    title: str
    blocks: list = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    folded: bool = False


def png(fig) -> bytes:
    """A matplotlib figure as PNG bytes, the figure closed (the session's backend is left as it is)."""
    import matplotlib.pyplot as plt  # lazy: matplotlib costs a second to import, and only figures need it

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
