"""Durations as a person reads them, for the progress line and the plan's estimate.

A module of its own because ``stbench plan`` prints durations and must not import Ray Tune (which
``harness.progress``, a Tune callback, does at its top: 0.9 s of a plan's start-up).
"""

from __future__ import annotations


def duration(seconds: float) -> str:
    """``5 s``, ``1 min 15 s``, ``1 h 02 min``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
