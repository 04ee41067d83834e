"""The trial: one unit of Ray Tune work, typed, from the search space to the store.

A ``Trial`` is a cell (architecture × dataset × training settings × model options) and the seeds it
trains: one seed normally, several when seeds are stacked into one vmapped model (``Training.stack``).
Every seed keeps its own identity (``seed_id``), so the store, the analysis and resume see seeds one by
one whatever the grouping. Tuning trials (``Stage.TUNE``) train their seeds to one averaged objective
and are stored as one row per Optuna trial.

Everything that reads a trial (the trainable, the store callback, W&B, the driver, the analysis of
checkpoints) goes through this class; the Tune config is only its serialised form (``to_config`` /
``from_config``), never read by key elsewhere.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Iterable

from .contract import FINISHED, Status, TrainingSettings
from .identity import dataset_key, model_key

__all__ = ["FINISHED", "Stage", "Status", "Trial", "TrainingSettings", "group_seeds", "identity_training"]

class Stage(str, Enum):
    BENCHMARK = "benchmark"
    TUNE = "tune"

    def __str__(self) -> str:
        return self.value


# Training keys that identify a result only when set away from their default: adding such a key keeps the
# identities (trial ids, study names) of everything that does not use it. ``stack`` never identifies a seed:
# how seeds are grouped into one Tune trial is an execution detail, recorded with each row.
IDENTITY_DEFAULTS: dict[str, Any] = {"precision": "fp32", "channels_last": False, "compile": False,
                                     "protocol": "standard"}
NOT_IDENTITY = ("stack",)
TUNED_KEYS = ("loc_lr", "loc_lr_mult", "lr")


def identity_training(training: TrainingSettings | dict) -> dict:
    """The training settings that identify a result."""
    training = training.as_dict() if isinstance(training, TrainingSettings) else training
    return {k: v for k, v in training.items()
            if k not in NOT_IDENTITY and not (k in IDENTITY_DEFAULTS and v == IDENTITY_DEFAULTS[k])}


def _digest(key: dict, n: int = 16) -> str:
    blob = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


@dataclass(frozen=True, eq=True)
class Trial:
    architecture: str
    dataset: str
    seeds: tuple[int, ...]
    training: TrainingSettings = field(hash=False)  # a dict is read with TrainingSettings.from_dict
    model_options: dict = field(default_factory=dict, hash=False)
    stage: Stage = Stage.BENCHMARK
    study: str | None = None  # tuning: the study it belongs to; benchmark: the study its tuned values came from
    tuned: dict | None = field(default=None, hash=False)  # the tuned learning rates a benchmark trial applies

    def __post_init__(self):
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "stage", Stage(self.stage))
        if isinstance(self.training, dict):
            object.__setattr__(self, "training", TrainingSettings.from_dict(self.training))
        if not self.seeds:
            raise ValueError("a trial trains at least one seed")

    # -- identity ------------------------------------------------------------------------------
    def seed_id(self, seed: int) -> str:
        """The stable identity of one seed's result: a hash of what determines it."""
        architecture, options = model_key(self.architecture, self.model_options)  # built-ins: name and options
        return _digest({"architecture": architecture, "dataset": dataset_key(self.dataset), "seed": int(seed),
                        "model_options": options, "training": identity_training(self.training)})

    @property
    def ids(self) -> dict[int, str]:
        return {s: self.seed_id(s) for s in self.seeds}

    @property
    def seed(self) -> int:
        """The seed of a one-seed trial (a stack has several: use ``seeds``)."""
        if len(self.seeds) != 1:
            raise ValueError(f"trial of {len(self.seeds)} seeds has no single seed")
        return self.seeds[0]

    @property
    def trial_id(self) -> str:
        """A one-seed trial's id; a stack's key (its seeds' ids hashed), used for its resume pointer."""
        if len(self.seeds) == 1:
            return self.seed_id(self.seeds[0])
        return "stack-" + _digest({"ids": sorted(self.ids.values())})

    @property
    def study_key(self) -> str:
        return (self.study or "").rsplit(".", 1)[-1]

    def row_id(self, seed: int | None, tune_trial_id: str = "") -> str:
        """The store id of a result row: a seed's id, or one Optuna trial's (``tune-<study>-<tune id>``)."""
        if self.stage is Stage.TUNE:
            return f"tune-{self.study_key}-{tune_trial_id}"
        return self.seed_id(seed)

    @property
    def name(self) -> str:
        seeds = ",".join(map(str, self.seeds)) if len(self.seeds) <= 4 else f"{self.seeds[0]}..{self.seeds[-1]}"
        prefix = "tune-" if self.stage is Stage.TUNE else ""
        return f"{prefix}{self.architecture}-{self.dataset}-s{seeds}"

    # -- derived settings ----------------------------------------------------------------------
    @property
    def loc_lr(self) -> float:
        return self.training.effective_loc_lr

    @property
    def lr_tuned(self) -> bool:
        return self.stage is Stage.TUNE or bool(self.tuned)

    def with_seeds(self, seeds: Iterable[int]) -> "Trial":
        return replace(self, seeds=tuple(seeds))

    def with_training(self, **updates) -> "Trial":
        return replace(self, training=self.training.replace(**updates))

    def record(self) -> dict:
        """What the store keeps as the trial's configuration (``config_json``)."""
        return {"architecture": self.architecture, "dataset": self.dataset, "seeds": list(self.seeds),
                "training": self.training.as_dict(), "model_options": self.model_options, "stage": self.stage.value,
                "study": self.study, "tuned": self.tuned}

    # -- the Tune config -----------------------------------------------------------------------
    def to_config(self) -> dict:
        return self.record()

    @classmethod
    def from_config(cls, config: dict) -> "Trial":
        """From ``config["trial"]`` (and, for a tuning trial, the learning rates Optuna sampled beside it)."""
        data = config["trial"] if "trial" in config else config
        seeds = tuple(data["seeds"]) if "seeds" in data else (data["seed"],)  # records written before stacking
        trial = cls(architecture=data["architecture"], dataset=data["dataset"], seeds=seeds,
                    training=TrainingSettings.from_dict(data["training"]), model_options=dict(data.get("model_options") or {}),
                    stage=Stage(data.get("stage", "benchmark")), study=data.get("study"), tuned=data.get("tuned"))
        sampled = {k: config[k] for k in TUNED_KEYS if k in config and "trial" in config}
        return trial.with_training(**sampled) if sampled else trial


def group_seeds(trials: list[Trial], stack: dict[str, int] | int) -> list[Trial]:
    """One-seed trials of the same cell grouped into stacks of at most ``stack`` seeds (per dataset when a
    mapping), in seed order; a cell's trials keep their first appearance's order."""
    cells: dict[tuple, list[Trial]] = {}
    for t in trials:
        key = (t.architecture, t.dataset, json.dumps(t.training.as_dict(), sort_keys=True, default=str),
               json.dumps(t.model_options, sort_keys=True, default=str), t.stage, t.study,
               json.dumps(t.tuned, sort_keys=True, default=str))
        cells.setdefault(key, []).append(t)
    out = []
    for members in cells.values():
        k = max(1, stack.get(members[0].dataset, 1) if isinstance(stack, dict) else int(stack))
        seeds = sorted(s for t in members for s in t.seeds)
        out += [members[0].with_seeds(seeds[i:i + k]) for i in range(0, len(seeds), k)]
    return out
