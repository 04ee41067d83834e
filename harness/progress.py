"""A progress line a person can read on a long run: trials done / running / left, epochs, and the ETA.

Ray Tune's table (``--verbose``) shows every trial; this prints one line when a trial ends and at
least once a minute otherwise, from the driver, and costs nothing per result.
"""

from __future__ import annotations

import sys
import time

from ray import tune

from .durations import duration


class ProgressCallback(tune.Callback):
    """``total_epochs``: the trial-epochs this Tuner will run (a stack of K seeds counts its epochs once)."""

    def __init__(self, label: str, total_trials: int, total_epochs: int, interval_s: float = 30.0, stream=None):
        self.label, self.total_trials, self.total_epochs = label, total_trials, total_epochs
        self.interval_s = interval_s
        self.stream = stream or sys.stdout
        self.started = time.monotonic()
        self.first_result: float | None = None
        self.epochs: dict[str, int] = {}
        self.done: set[str] = set()
        self.running: set[str] = set()
        self.last_print = self.started

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.first_result is None:
            self.first_result = time.monotonic()
        if "epoch" in result:
            self.epochs[trial.trial_id] = int(result["epoch"])

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial)

    def _end(self, trial):
        self.running.discard(trial.trial_id)
        self.done.add(trial.trial_id)
        self.print()

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self.last_print >= self.interval_s:
            self.print()

    def line(self) -> str:
        now = time.monotonic()
        epochs = sum(self.epochs.values())
        left = self.total_trials - len(self.done) - len(self.running)
        text = (f"stbench: {self.label}: {len(self.done)}/{self.total_trials} trials done, {len(self.running)} running, "
                f"{max(left, 0)} waiting; {epochs}/{self.total_epochs} epochs; {duration(now - self.started)} elapsed")
        if epochs and self.first_result is not None and epochs < self.total_epochs and left + len(self.running) > 0:
            rate = epochs / max(now - self.started, 1e-9)  # trial-epochs per second, start-up included
            text += f"; ETA {duration((self.total_epochs - epochs) / rate)}"
        return text

    def print(self) -> None:
        self.last_print = time.monotonic()
        print(self.line(), file=self.stream, flush=True)
