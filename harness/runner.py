"""Which runner trains a trial: one ``Trainer`` for one seed, one ``StackedTrainer`` (a vmapped model) for a
stack of seeds, or a ``SeedLoop`` of Trainers stepped in lockstep (tuning's seeds, which stay unstacked so that
a study's objective does not depend on the device's stacking default). All three are ``contract.Runner``s."""

from __future__ import annotations

from typing import Iterator

import torch

from .contract import EpochRecord
from .stacked import StackedTrainer
from .train import Trainer
from .trial import Trial


class SeedLoop:
    """Several one-seed runners advanced one epoch each in turn; a runner that has ended drops out."""

    def __init__(self, runners: list[Trainer]):
        self.runners = runners
        self.seeds = [s for r in runners for s in r.seeds]

    @property
    def model_spec(self) -> dict:
        return self.runners[0].model_spec

    @property
    def num_params(self) -> int:
        return self.runners[0].num_params

    def run(self) -> Iterator[dict[int, EpochRecord]]:
        streams = [r.run() for r in self.runners]
        while streams:
            out: dict[int, EpochRecord] = {}
            alive = []
            for stream in streams:
                records = next(stream, None)
                if records is not None:
                    out.update(records)
                    alive.append(stream)
            if not out:
                return
            yield out
            streams = alive

    def best_val_by_seed(self) -> dict[int, float]:
        return {s: v for r in self.runners for s, v in r.best_val_by_seed().items()}

    def state_dict(self) -> dict:
        return {"runners": [r.state_dict() for r in self.runners]}

    def load_state_dict(self, state: dict) -> None:
        for r, s in zip(self.runners, state["runners"], strict=True):
            r.load_state_dict(s)

    def best_weights(self) -> dict[int, dict]:
        return {s: w for r in self.runners for s, w in r.best_weights().items()}


def make_runner(trial: Trial, splits, device: torch.device | str, test: bool = True, stack: bool = True):
    """A ``Trainer`` for one seed; for several, one ``StackedTrainer`` (``stack``) or a ``SeedLoop``."""
    if len(trial.seeds) == 1:
        return Trainer(trial, splits, device, test=test)
    if stack:
        return StackedTrainer(trial, splits, device, test=test)
    return SeedLoop([Trainer(trial.with_seeds([s]), splits, device, test=test) for s in trial.seeds])
