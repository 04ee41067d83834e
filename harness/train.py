"""Training: a plain loop over tensors held on the trial's device; no Ray, Optuna or W&B.

``RunnerBase`` is what every runner of the contract (``harness.contract.Runner``) shares; ``Trainer`` is the
one-seed runner: it takes a trial and its data and yields, per epoch, ``{seed: EpochRecord}``, so tests and
benchmarks drive it directly (``harness.stacked`` trains several seeds as one model; the Ray Tune trainables
around both are in ``harness.trainables``).

The loop is the fast path: images are batched by index from one tensor (no
DataLoader workers, no per-image PIL work) and losses and correct counts are
accumulated on the device and read once per epoch, so the host waits for the
device once per epoch rather than once per batch. Batches come from the splits (``train_batches`` /
``eval_batches``): ``ImageSplits`` index tensors (the fast path), ``LoaderSplits`` read DataLoader workers
for image sets too large to hold whole. The loss and the accuracy come from ``splits.task``
(classification or regression, ``harness.tasks``), so the metric names are the same for both.
"""

from __future__ import annotations

import math
import random
import time
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .data import DATASETS, ImageSplits
from .data.base import tensor_batches
from .models import build_model, count_parameters, localization_parameters
from .contract import ENDED, EpochRecord, Status, TrainingSettings
from .trial import Trial

EVAL_BATCH = 1000
RUNNING, COMPLETE, DIVERGED = Status.RUNNING.value, Status.COMPLETE.value, Status.DIVERGED.value


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(model: torch.nn.Module, training: TrainingSettings) -> torch.optim.Optimizer:
    """One parameter group for the network and, for models with a spatial transformer,
    a second one for the localization network with its own learning rate."""
    lr = training.lr
    loc = localization_parameters(model)
    loc_ids = {id(p) for p in loc}
    rest = [p for p in model.parameters() if id(p) not in loc_ids]
    groups = [{"params": rest, "lr": lr, "name": "main"}]
    if loc:
        groups.append({"params": loc, "lr": training.effective_loc_lr, "name": "localization"})
    if training.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=training.momentum, weight_decay=training.weight_decay)
    if training.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=training.weight_decay)
    raise ValueError(f"unknown optimizer {training.optimizer!r}; allowed: sgd, adam")


class RunnerBase:
    """What every runner shares (``harness.contract.Runner``): the per-seed bookkeeping (status, best epoch and
    weights, last record), the loop over epochs with divergence and the end, resume state and its RNG, the
    bf16 check. A subclass trains and evaluates: ``_epoch(epoch, active)`` → {seed index: record} (built with
    ``_record``), ``_test(indices)`` → {index: (test loss, test accuracy, seconds)}, ``_weights(i)`` → seed
    ``i``'s current weights as an unstacked ``state_dict``, and ``_model_state`` / ``_load_model_state``."""

    def __init__(self, trial: Trial, splits, device: torch.device | str = "cpu", test: bool = True):
        self.test = test  # tuning trials never look at the test set
        self.trial = trial
        self.training = trial.training
        self.seeds = [int(s) for s in trial.seeds]
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: need distinct seeds, got {self.seeds}")
        self.splits = splits
        self.task = splits.task  # loss and accuracy: classification or regression
        self.device = torch.device(device)
        self.bf16 = self.training.bf16
        if self.bf16 and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"precision: bf16 is not supported by {torch.cuda.get_device_name(self.device)}; use fp32")
        k = len(self.seeds)
        self.epoch = 0  # epochs completed
        self.status = [RUNNING] * k
        self.best_val_acc = [-1.0] * k
        self.best_epoch = [0] * k
        self.best_state: list[dict | None] = [None] * k
        self.last: list[EpochRecord | None] = [None] * k
        self.num_params = 0

    @property
    def model_spec(self) -> dict:
        """What rebuilds one seed's model from its saved weights (``analysis.checkpoints``)."""
        return model_spec(self.trial, self.splits)

    def best_weights(self) -> dict[int, dict]:
        """seed → its best-validation weights (an unstacked state_dict; None before the first epoch) and epoch."""
        return {s: {"state_dict": self.best_state[i], "best_epoch": self.best_epoch[i]}
                for i, s in enumerate(self.seeds)}

    def best_val_by_seed(self) -> dict[int, float]:
        """seed → its best validation accuracy so far (-1 before the first epoch)."""
        return dict(zip(self.seeds, self.best_val_acc))

    # -- checkpoint state ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {"seeds": list(self.seeds), "epoch": self.epoch, "status": list(self.status),
                 "best_val_acc": list(self.best_val_acc), "best_epoch": list(self.best_epoch),
                 "best_state": list(self.best_state), "last": [r.as_dict() if r else None for r in self.last],
                 "rng_cpu": torch.get_rng_state(), **self._model_state()}
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict) -> None:
        if [int(s) for s in state["seeds"]] != self.seeds:
            raise ValueError(f"checkpoint holds seeds {state['seeds']}, this runner trains {self.seeds}")
        self.epoch = state["epoch"]
        self.status = list(state["status"])
        self.best_val_acc = list(state["best_val_acc"])
        self.best_epoch = list(state["best_epoch"])
        self.best_state = list(state["best_state"])
        self.last = [EpochRecord.from_dict(r) if r else None for r in state["last"]]
        self._load_model_state(state)
        torch.set_rng_state(state["rng_cpu"].cpu())
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), self.device)

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> Iterator[dict[int, EpochRecord]]:
        """Train the remaining epochs, yielding ``{seed: record}`` for the seeds that report that epoch (every
        seed still training; a diverged seed once); the last epoch's records carry the test result."""
        epochs = self.training.epochs
        if all(s in ENDED for s in self.status):  # resumed after the end: say it again
            yield self._reports(range(len(self.seeds)))
            return
        while self.epoch < epochs and RUNNING in self.status:
            active = [i for i, s in enumerate(self.status) if s == RUNNING]
            records = self._epoch(self.epoch + 1, active)
            self.epoch += 1
            for i in active:
                if not math.isfinite(records[i].train_loss):
                    records[i].status, records[i].diverged_epoch = DIVERGED, self.epoch
                    self.status[i] = DIVERGED
                self.last[i] = records[i]
            self._finish([i for i in active if self.status[i] == RUNNING] if self.epoch == epochs else [])
            yield self._reports(active)
        finishing = [i for i, s in enumerate(self.status) if s == RUNNING]
        if finishing:  # resumed after the last epoch's checkpoint
            self._finish(finishing)
            yield self._reports(finishing)

    def _reports(self, indices) -> dict[int, EpochRecord]:
        return {self.seeds[i]: self.last[i] for i in indices}

    def _finish(self, indices: list[int]) -> None:
        """Test loss and accuracy of each seed's best-validation epoch: the only use of the test set."""
        for i in indices:
            self.status[i] = COMPLETE
            r = self.last[i]
            r.status, r.best_epoch, r.best_val_acc = COMPLETE, self.best_epoch[i], self.best_val_acc[i]
        if indices and self.test:
            for i, (loss, acc, seconds) in self._test(indices).items():
                self.last[i].test_loss, self.last[i].test_acc, self.last[i].test_time_s = loss, acc, seconds

    def _record(self, i: int, epoch: int, train: tuple[float, float], val: tuple[float, float],
                train_eval: tuple[float, float], train_time: float, eval_time: float) -> EpochRecord:
        """Seed ``i``'s record of ``epoch``, keeping its weights when validation improved."""
        if val[1] > self.best_val_acc[i]:
            self.best_val_acc[i], self.best_epoch[i] = val[1], epoch
            self.best_state[i] = self._weights(i)
        n = self.splits.n_train
        return EpochRecord(epoch=epoch, status=RUNNING, train_loss=train[0], train_acc=train[1],
                           val_loss=val[0], val_acc=val[1], train_eval_loss=train_eval[0],
                           train_eval_acc=train_eval[1], train_time_s=train_time, eval_time_s=eval_time,
                           images_per_s=n / train_time if train_time > 0 else math.nan, num_params=self.num_params)

    def _epoch(self, epoch: int, active: list[int]) -> dict[int, EpochRecord]:
        raise NotImplementedError

    def _test(self, indices: list[int]) -> dict[int, tuple[float, float, float]]:
        raise NotImplementedError

    def _weights(self, i: int) -> dict:
        raise NotImplementedError

    def _model_state(self) -> dict:
        raise NotImplementedError

    def _load_model_state(self, state: dict) -> None:
        raise NotImplementedError


class Trainer(RunnerBase):
    """One seed of one trial (``trial.seeds`` has exactly one seed): the unstacked fast path."""

    def __init__(self, trial: Trial, splits: ImageSplits, device: torch.device | str = "cpu", test: bool = True):
        super().__init__(trial, splits, device, test)
        if len(self.seeds) != 1:
            raise ValueError(f"a Trainer trains one seed, got {self.seeds}")
        self.seed = self.seeds[0]
        seed_everything(self.seed)
        self.model = build_model(trial.architecture, splits.in_shape, splits.num_classes,
                                 **trial.model_options).to(self.device)
        self._setup_fast_path()
        self.optimizer = build_optimizer(self.model, self.training)
        self.num_params = count_parameters(self.model)

    # -- fast-path switches (TrainingSettings.precision / channels_last / compile; all off by default) --
    def _setup_fast_path(self) -> None:
        self.channels_last = self.training.channels_last
        if self.channels_last:  # before the optimizer is built; parameters keep their identity
            self.model.to(memory_format=torch.channels_last)
        if self.training.compile:  # compiles the forward in place: state_dict keys are unchanged
            self.model.compile()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """``self.model(x)`` under the switches; with all of them off, exactly that."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.bf16:  # the loss and the metrics stay in float32
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                return self.model(x).float()
        return self.model(x)

    def _model_state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def _load_model_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def _weights(self, i: int) -> dict:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _test(self, indices: list[int]) -> dict[int, tuple[float, float, float]]:
        current = self._weights(0)
        if self.best_state[0] is not None:
            self.model.load_state_dict(self.best_state[0])
        t0 = time.perf_counter()
        test_loss, test_acc = self._evaluate(self.splits.eval_batches("test", EVAL_BATCH))
        seconds = time.perf_counter() - t0
        self.model.load_state_dict(current)
        return {0: (test_loss, test_acc, seconds)}

    def _epoch(self, epoch: int, active: list[int]) -> dict[int, EpochRecord]:
        n, batch = self.splits.n_train, self.training.batch_size
        batches = self.splits.train_batches(batch, seed=shuffle_seed(self.seed, epoch))
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        self.model.train()
        t0 = time.perf_counter()
        for xb, yb in batches:
            logits = self._forward(xb)
            loss = self.task.loss(logits, yb)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach() * len(yb)
            correct += self.task.correct(logits, yb)
        train = (loss_sum.item() / n, correct.item() / n)  # the epoch's one host sync
        train_time = time.perf_counter() - t0

        t0 = time.perf_counter()
        val = self._evaluate(self.splits.eval_batches("val", EVAL_BATCH))
        # The running training metrics above are taken with dropout on while the weights change; the
        # overfitting gap needs the final weights in eval mode on training images, as validation is measured.
        train_eval = self._evaluate(self.splits.eval_batches("train_eval", EVAL_BATCH))
        return {0: self._record(0, epoch, train, val, train_eval, train_time, time.perf_counter() - t0)}

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        return self._evaluate(tensor_batches(x, y, EVAL_BATCH))

    @torch.inference_mode()
    def _evaluate(self, batches) -> tuple[float, float]:
        """Mean loss and accuracy over (inputs, targets) batches; one host sync at the end."""
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        count = 0
        for xb, target in batches:
            logits = self._forward(xb)
            loss_sum += self.task.loss(logits, target, reduction="sum")
            correct += self.task.correct(logits, target)
            count += len(target)
        return loss_sum.item() / count, correct.item() / count


def shuffle_seed(seed: int, epoch: int) -> int:
    """The training order of ``seed`` in ``epoch`` (stacked seeds keep their own)."""
    return seed * 100_003 + epoch


def model_spec(trial: Trial, splits) -> dict:
    return {"architecture": trial.architecture, "in_shape": list(splits.in_shape),
            "num_classes": splits.num_classes, "classes": list(splits.classes), "model_options": trial.model_options}


def load_splits(trial: Trial, data_dir: str | Path) -> ImageSplits:
    """The splits ``trial`` trains and is evaluated on (its protocol's)."""
    return _load_splits(trial.dataset, str(data_dir), tuple(trial.training.split_options().items()))


@lru_cache(maxsize=1)
def _load_splits(dataset: str, data_dir: str, options: tuple):
    """The last splits loaded, kept: Tune reuses a trial's process for the next trial, which usually reads the same
    splits (other seeds and architectures of the dataset), so only the first trial of a process pays the load.
    Nothing writes into the tensors (the trainer builds new ones for every batch)."""
    return DATASETS[dataset].load(Path(data_dir), **dict(options))


def pick_device() -> torch.device:
    """The GPU Ray assigned to this trial, if any (Ray sets CUDA_VISIBLE_DEVICES), else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
