"""Test accuracy of each architecture: mean, IQM and their intervals, failed trials counted beside."""

from __future__ import annotations

from .. import format as fmt
from .. import stats
from ..blocks import Section, Table, Text
from ..compute import Analysis


def section(a: Analysis) -> Section:
    c = fmt.conf_label(a.confidence)
    return Section("accuracy", "1. Test accuracy", [Text("Test accuracy of the best-validation epoch of each complete trial. Mean with a Student-t "
                 f"interval ({c}; t-intervals clipped to 0–100 % here, tables/accuracy.csv keeps them raw). "
                 f"Interquartile mean (IQM) with a trimmed-mean interval from {stats.MIN_SEEDS_IQM} seeds on; below "
                 "that the IQM is (nearly) the mean and no small-sample interval for it covers what it claims (a "
                 "percentile bootstrap covers about half the time at 2 seeds), so the seeds themselves are listed. "
                 "With no spread among the seeds no interval is drawn: 'all n seeds equal'. Failed trials are "
                 "counted, not averaged."),
            Table(fmt.accuracy(a.tables["accuracy"], a.confidence))])
