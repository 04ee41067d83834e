"""The training contract: what a trial is trained with, what it reports, what it saves.

One file holds the types that cross room boundaries, so each is defined once and everything else derives from
it (as AlgoPerf's ``spec.py`` holds a workload's whole contract):

* ``TrainingSettings`` — a trial's hyper-parameters and switches, typed, with their defaults. The search-space
  schema (``harness.space.Training``) is generated from it, so a default lives here and nowhere else.
* ``EpochRecord`` — one seed's metrics for one epoch. The store's epoch table, the metrics Tune's table and W&B
  show, and the averages a tuning trial reports are all read off its fields' metadata: adding a metric is one
  field here (and the line in the runner that measures it).
* ``Runner`` — what ``Trainer`` and ``StackedTrainer`` implement: ``run()`` yields, per epoch, ``{seed:
  EpochRecord}``; ``state_dict`` / ``load_state_dict`` resume it; ``best_weights`` is what the analysis reloads.
* ``Checkpoint`` — the one payload written by the trainable, copied per seed into the store by the callback and
  read by the analysis; ``load`` is strict.
* ``Status`` — a trial's state.

Imports nothing from Ray, Optuna, W&B or pydantic: the training room runs on a bare PyTorch machine.
"""

from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Literal, Optional, Protocol


class Status(str, Enum):
    """A trial's state in the store; ``FINISHED`` ones are skipped on rerun, ``ERROR`` on request."""

    RUNNING = "running"
    COMPLETE = "complete"
    DIVERGED = "diverged"
    ERROR = "error"
    STOPPED = "stopped"  # a tuning scheduler (ASHA) stopped it early

    def __str__(self) -> str:
        return self.value


FINISHED = (Status.COMPLETE.value, Status.DIVERGED.value, Status.STOPPED.value)
ENDED = (Status.COMPLETE.value, Status.DIVERGED.value)  # a runner's own ends (a scheduler's stop is Tune's)

# Seeds per Tune trial when the space does not say (``TrainingSettings.stack``), per device kind: measured with
# benchmarks/throughput.py (README, Performance); CUDA's is unmeasured until benchmarks/gpu_check.py runs.
DEFAULT_STACK = {"cpu": 1, "cuda": 5}


# -- training settings ---------------------------------------------------------------------------------------
def setting(default: Any, description: str = "", **constraints) -> Any:
    """A settings field: its default, and the bounds (``ge``, ``gt``, ``lt``) the schema enforces."""
    return field(default=default, metadata={"description": description, **constraints})


@dataclass(frozen=True)
class TrainingSettings:
    """Hyper-parameters of one trial; defaults follow the reference study (SGD, batch 64). The seeds are not
    here: they are the trial's (``Trial.seeds``)."""

    epochs: int = setting(20, ge=1)
    batch_size: int = setting(64, ge=1)
    optimizer: Literal["sgd", "adam"] = setting("sgd")
    lr: float = setting(0.01, gt=0)
    momentum: float = setting(0.0, ge=0, lt=1)
    weight_decay: float = setting(0.0, ge=0)
    loc_lr: Optional[float] = setting(None, "absolute learning rate of the localization network", gt=0)
    loc_lr_mult: Optional[float] = setting(None, "localization lr as a multiple of lr", gt=0)
    val_size: int = setting(5000, ge=1)
    split_seed: int = setting(0, ge=0)
    train_limit: Optional[int] = setting(None, ge=1)
    test_limit: Optional[int] = setting(None, ge=1)
    protocol: Literal["standard", "study"] = setting(
        "standard", "study: the reference study's splits and normalisation (see harness/data)")
    # Fast-path switches: each changes numerics (bf16 a lot, the others at rounding level), so all are off
    # by default and a trial's identity covers them only when switched on (``harness.trial.identity_training``).
    precision: Literal["fp32", "bf16"] = setting("fp32", "bf16: autocast the forward pass to bfloat16")
    channels_last: bool = setting(False, "model and inputs in channels-last memory format")
    compile: bool = setting(False, "torch.compile the model (compiles once per trial)")
    stack: Optional[int] = setting(None, "seeds trained at once as one vmapped model (default: per device); "
                                   "never part of a seed's identity", ge=1)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainingSettings":
        """From a trial record: unknown keys are an error; keys an older record lacks take their defaults."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"training: unknown setting {unknown[0]!r}; allowed: {', '.join(cls.field_names())}")
        return cls(**values)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **updates) -> "TrainingSettings":
        return dataclasses.replace(self, **updates)

    @property
    def effective_loc_lr(self) -> float:
        """The localization network's learning rate: absolute ``loc_lr``, else ``loc_lr_mult`` × lr, else lr."""
        return self.loc_lr or self.lr * (self.loc_lr_mult or 1.0)

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    def split_options(self) -> dict:
        """What ``Dataset.load`` takes to build exactly the splits this trial trains and is evaluated on."""
        return {"val_size": self.val_size, "split_seed": self.split_seed, "train_limit": self.train_limit,
                "test_limit": self.test_limit, "protocol": self.protocol}


# -- the epoch record ----------------------------------------------------------------------------------------
def metric(*, stored: bool = False, shown: bool = False, averaged: bool = False, summed: bool = False,
           column: str | None = None, default: Any = None) -> Any:
    """A record field. ``stored``: a column of the store's epoch table; ``shown``: in every result Tune and W&B
    get (the seeds' mean, or their sum when ``summed``); ``column``: also a column, so headed, of the table
    ``--verbose`` prints (a shown metric); ``averaged``: a tuning trial reports the seeds' mean."""
    return field(default=default, metadata={"stored": stored, "shown": shown or column is not None,
                                            "averaged": averaged, "summed": summed, "column": column})


EVERY_EPOCH = dict(stored=True, shown=True, averaged=True)


@dataclass
class EpochRecord:
    """One seed's metrics after one epoch; the last epoch's record also carries the test result."""

    epoch: int = metric(stored=True)
    status: str = metric(default=Status.RUNNING.value)
    train_loss: float = metric(**EVERY_EPOCH, column="train loss", default=math.nan)
    train_acc: float = metric(**EVERY_EPOCH, default=math.nan)
    val_loss: float = metric(**EVERY_EPOCH, default=math.nan)
    val_acc: float = metric(**EVERY_EPOCH, column="val acc", default=math.nan)
    # the final weights in eval mode on training images: the overfitting gap's side
    train_eval_loss: float = metric(**EVERY_EPOCH, default=math.nan)
    train_eval_acc: float = metric(**EVERY_EPOCH, default=math.nan)
    train_time_s: float = metric(**EVERY_EPOCH, default=math.nan)
    eval_time_s: float = metric(**EVERY_EPOCH, default=math.nan)
    images_per_s: float = metric(**EVERY_EPOCH, column="img/s", summed=True, default=math.nan)
    num_params: Optional[int] = metric()
    # set when the seed ends
    best_epoch: Optional[int] = metric()
    best_val_acc: Optional[float] = metric(shown=True)
    test_loss: Optional[float] = metric(shown=True)
    test_acc: Optional[float] = metric(column="test acc")
    test_time_s: Optional[float] = metric()
    diverged_epoch: Optional[int] = metric()

    @classmethod
    def names(cls, **flags: bool) -> tuple[str, ...]:
        """Field names whose metadata has every given flag set, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls) if all(f.metadata.get(k) == v for k, v in flags.items()))

    @classmethod
    def columns(cls) -> dict[str, str]:
        """name → heading of the metrics in the table ``--verbose`` prints, in declaration order."""
        return {f.name: f.metadata["column"] for f in dataclasses.fields(cls) if f.metadata.get("column")}

    @classmethod
    def types(cls) -> dict[str, type]:
        """name → ``int`` or ``float`` (or ``str``), for schemas built from the record (the store's epoch table)."""
        kinds = {"int": int, "float": float, "str": str, "Optional[int]": int, "Optional[float]": float}
        return {f.name: kinds[str(f.type)] for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, values: dict) -> "EpochRecord":
        """From a report (the per-seed dict Tune carried): keys that are not fields are an error."""
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise ValueError(f"epoch record: unknown metric {unknown[0]!r}")
        return cls(**values)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def ended(self) -> bool:
        return self.status in ENDED


def summarise(records: dict[Any, EpochRecord]) -> dict:
    """One line for Tune's table and W&B from the seeds of one report: the ``shown`` metrics' mean (``summed``
    ones' sum), the newest epoch, and the status ``running`` until every seed has ended (then the seeds'
    common status, or ``mixed``)."""
    rs = list(records.values())
    out: dict[str, Any] = {"epoch": max(r.epoch for r in rs)}
    summed = set(EpochRecord.names(summed=True))
    for k in EpochRecord.names(shown=True):
        vals = [getattr(r, k) for r in rs]
        vals = [v for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
        if vals:
            out[k] = float(sum(vals) if k in summed else sum(vals) / len(vals))
    out["num_params"] = rs[0].num_params
    statuses = {r.status for r in rs}
    running = Status.RUNNING.value
    out["status"] = running if running in statuses else (statuses.pop() if len(statuses) == 1 else "mixed")
    return out


def average(records: list[EpochRecord]) -> dict:
    """The ``averaged`` metrics' mean over seeds: what a tuning trial reports per epoch."""
    return {k: float(sum(getattr(r, k) for r in records) / len(records)) for k in EpochRecord.names(averaged=True)}


# -- the runner interface ------------------------------------------------------------------------------------
class Runner(Protocol):
    """Trains the seeds of one trial. ``run()`` yields, per epoch, ``{seed: EpochRecord}`` for the seeds that
    report that epoch (a seed that diverged reports once, then stops); resumed after its end, it says the last
    records again. ``best_weights()``: seed → ``{"state_dict", "best_epoch"}`` of its best-validation epoch."""

    seeds: list[int]
    model_spec: dict

    def run(self) -> Iterator[dict[int, EpochRecord]]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def best_weights(self) -> dict[int, dict]: ...

    def best_val_by_seed(self) -> dict[int, float]: ...


# -- the checkpoint ------------------------------------------------------------------------------------------
CHECKPOINT_FILE = "state.pt"


@dataclass
class Checkpoint:
    """A trial's saved state. The trainable writes one per epoch with the runner's ``trainer`` state (what
    resume needs); the store keeps one per seed with only that seed's best weights and its ``trial`` record
    (what the analysis rebuilds the model from). ``model_spec``: architecture, input shape, classes, options."""

    model_spec: dict
    best: dict[int, dict]  # seed → {"state_dict": best-validation weights, "best_epoch": int}
    trainer: Optional[dict] = None
    trial: Optional[dict] = None  # Trial.record() of the one seed, in the store's copies

    VERSION = 1
    # the two layouts written before this class (keys exactly these): read, never written
    _LEGACY_TRAINABLE = {"trainer", "best", "model_spec"}
    _LEGACY_SEED = {"state_dict", "best_epoch", "model_spec", "trial"}

    def save(self, target: str | Path | BinaryIO) -> None:
        import torch  # lazy, as in load: the store and the schema read this module without paying for torch

        torch.save({"version": self.VERSION, **dataclasses.asdict(self)}, target)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        self.save(buf)
        return buf.getvalue()

    @classmethod
    def load(cls, source: str | Path | BinaryIO | bytes, map_location: Any = "cpu") -> "Checkpoint":
        """Strict: a payload with keys this version does not know is an error, not silently dropped."""
        import torch  # lazy: see save

        if isinstance(source, (bytes, bytearray)):
            source = io.BytesIO(source)
        raw = torch.load(source, map_location=map_location, weights_only=True)
        if not isinstance(raw, dict):
            raise ValueError(f"checkpoint: expected a mapping, got {type(raw).__name__}")
        keys = set(raw)
        if keys == cls._LEGACY_TRAINABLE:
            return cls(model_spec=raw["model_spec"], best=raw["best"], trainer=raw["trainer"])
        if keys == cls._LEGACY_SEED:
            seed = int((raw["trial"].get("seeds") or [raw["trial"].get("seed")])[0])
            return cls(model_spec=raw["model_spec"], trial=raw["trial"],
                       best={seed: {"state_dict": raw["state_dict"], "best_epoch": raw["best_epoch"]}})
        if raw.get("version") != cls.VERSION:
            raise ValueError(f"checkpoint: version {raw.get('version')!r}; this stbench reads version {cls.VERSION}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(keys - fields - {"version"})
        if unknown:
            raise ValueError(f"checkpoint: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(fields))}")
        return cls(**{k: v for k, v in raw.items() if k != "version"})

    def for_seed(self, seed: int, trial_record: dict) -> "Checkpoint":
        """The store's copy for one seed: its best weights, no resume state."""
        return Checkpoint(model_spec=self.model_spec, best={int(seed): self.best[seed]}, trial=trial_record)

    @property
    def seed_weights(self) -> dict:
        """The one seed's ``{"state_dict", "best_epoch"}`` of a store copy."""
        if len(self.best) != 1:
            raise ValueError(f"checkpoint holds {len(self.best)} seeds; a store copy holds one")
        return next(iter(self.best.values()))
