"""Convergence speed: epochs and seconds to the dataset's target (Kaplan–Meier), with its figure."""

from __future__ import annotations

from .. import figures as F
from .. import format as fmt
from .. import stats
from ..blocks import Figure, Section, Table, Text, png
from ..compute import Analysis


def section(a: Analysis) -> Section:
    c = fmt.conf_label(a.confidence)
    conv = a.tables["convergence"]
    targets = ", ".join(f"{d} {v * 100:g} %" for d, v in sorted(a.targets.items()) if d in set(conv["dataset"].unique()))
    blocks = [Text(f"Epochs and training seconds (evaluation excluded) until validation accuracy first reaches the "
                 f"dataset's target ({targets or 'none here'}; each dataset declares its own, a space's targets: "
                 "or --target override it). Medians are Kaplan–Meier estimates (where exactly half have reached it, "
                 "the midpoint to the next time, as R's survfit). Trials still running are censored at their last "
                 "epoch; failed trials count as never reaching the target (censored at the planned horizon, not at "
                 f"the failure). Intervals ({c}): the exact order-statistic interval when every trial reached the "
                 f"target, else the inverted log-log band; none below {stats.min_seeds_for_median(a.confidence)} "
                 "trials, where no distribution-free interval reaches that level; ∞ = not bounded by the data. "
                 "Seconds are compared only within one device model."),
            Table(fmt.convergence(conv, "epochs", a.confidence), "Epochs to target (all hardware)"),
            Table(fmt.convergence(conv, "seconds", a.confidence), "Training seconds to target, per device model")]
    label = fmt.conf_label(a.confidence)
    figure = Figure("time_to_target", "Fraction of seeds that reached the target validation accuracy against epochs and "
                    "against training seconds per device model (Kaplan–Meier, "
                    f"{label} band; running seeds censored at their last epoch, failed ones at the planned horizon).",
                    png(F.time_to_target(a.tables["convergence_curves"], conv, a.baseline, a.confidence)))
    return Section("convergence", "3. Convergence speed", blocks, [figure])
