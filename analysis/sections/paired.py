"""Each architecture against the baseline, seed by seed: differences, tests, P(beats), power."""

from __future__ import annotations

from .. import format as fmt
from .. import metrics, stats
from ..blocks import Items, Section, Table, Text
from ..compute import Analysis


def section(a: Analysis) -> Section:
    c = fmt.conf_label(a.confidence)
    lead = Text("Seeds are shared across architectures, so each architecture is compared with the baseline seed by "
                f"seed: mean paired difference with an unadjusted {c} t-interval, paired t-test, Holm's correction "
                "across all comparisons (no p-value where every paired difference is the same: there is no spread to "
                "test against). Beside it, the probability that a random seed of the architecture beats one of the "
                f"baseline (ties half; Newcombe's unadjusted {c} interval, from {stats.MIN_SEEDS_PROB} seeds each), "
                f"and the seeds a paired t-test needs to detect {metrics.EFFECT * 100:g} pp with 80 % power at the "
                "observed spread and α / (comparisons), Holm's strictest step.")
    return Section("paired", "2. Paired comparisons with the baseline",
                   [lead, Items(a.paired_sentences, "verdict"), Table(fmt.paired(a.tables["paired"], a.confidence))])
