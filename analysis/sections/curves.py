"""Learning curves: validation accuracy and loss and training loss per epoch."""

from __future__ import annotations

from .. import figures as F
from .. import format as fmt
from ..blocks import Figure, Section, png
from ..compute import Analysis


def section(a: Analysis) -> Section:
    label = fmt.conf_label(a.confidence)
    figure = Figure("learning_curves", "Validation accuracy and loss and training loss per epoch: mean over seeds "
                    f"(bold); with {F.SEED_LINES} seeds or fewer each seed as a thin line, with more a {label} t-interval "
                    "band, clipped to the metric's range.",
                    png(F.learning_curves(a.results.epochs, baseline=a.baseline, confidence=a.confidence)))
    return Section("curves", "4. Learning curves", [], [figure])
