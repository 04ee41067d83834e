"""Overfitting gap: training minus validation, at the best-validation epoch and the last."""

from __future__ import annotations

from .. import figures as F
from .. import format as fmt
from ..blocks import Figure, Section, Table, Text, png
from ..compute import Analysis


def section(a: Analysis) -> Section:
    blocks = [Text("Training minus validation accuracy and validation minus training loss, at the best-validation "
                 "epoch and at the last epoch. Training metrics are those of the epoch's final weights in eval mode on "
                 "a fixed training subset the size of the validation set, measured exactly as validation is (column "
                 "train_metric = eval). Stores from before that measurement existed fall back to running averages "
                 "taken with dropout on (train_metric = running), which understate the fit: such gaps read low, "
                 "often negative."),
            Table(fmt.gaps(a.tables["gaps"], a.confidence))]
    figure = Figure("gaps", "Overfitting gap at the best-validation epoch (plain) and the last epoch (hatched); "
                    f"error bars = {fmt.conf_label(a.confidence)} t-interval, none where the seeds agree exactly.",
                    png(F.gap_bars(a.tables["gaps"], a.baseline, a.confidence)))
    return Section("gaps", "5. Overfitting gap", blocks, [figure])
