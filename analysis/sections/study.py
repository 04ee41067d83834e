"""Reproduction of the reference study: our runs of its protocol beside its published ones (``analysis.reproduction``)."""

from __future__ import annotations

from .. import reproduction
from ..blocks import Figure, Section, Table, Text
from ..compute import Analysis


TITLE = "8. " + reproduction.TITLE


def section(a: Analysis) -> Section:
    r = a.reproduction
    if r is None:
        return Section(reproduction.KEY, TITLE, [Text("No trial of the reference study's protocol in this store "
                                                      "(training.protocol: study; python run_benchmark.py --space seed "
                                                      "runs it).", "empty")])
    return Section(reproduction.KEY, TITLE, [Text(r.full_lead), *(Table(frame, caption) for caption, frame in r.display)],
                   [Figure(name, caption, data) for name, caption, data in r.figures])
