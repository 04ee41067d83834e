"""Training-time overhead: seconds per epoch against the baseline on the same hardware."""

from __future__ import annotations

from .. import figures as F
from .. import format as fmt
from ..blocks import Figure, Section, Table, Text, png
from ..compute import Analysis


def section(a: Analysis) -> Section:
    blocks = [Text("Per trial, the median epoch's training seconds, images/s and evaluation seconds; per architecture "
                 "the geometric mean over trials, and its ratio to the baseline on the same dataset and device model "
                 f"with a {fmt.conf_label(a.confidence)} Welch interval on the log scale. Trials that ran "
                 "concurrently share the machine, which adds noise."),
            Table(fmt.overhead(a.tables["overhead"], a.baseline, a.confidence))]
    figure = Figure("overhead", f"Seconds per epoch relative to {a.baseline} on the same dataset and hardware "
                    "(training left, evaluation right); dashed line = parity.",
                    png(F.overhead_bars(a.tables["overhead"], a.baseline, a.confidence)))
    return Section("overhead", "6. Training-time overhead", blocks, [figure])
