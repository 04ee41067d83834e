"""Training: a plain loop over tensors held on the trial's device, and the Ray Tune trainable around it.

``Trainer`` knows nothing about Ray: it takes a trial config and the data and
yields one metrics dict per epoch, so tests and benchmarks drive it directly.
``trainable`` is the Tune function (config in, one ``tune.report`` with a
checkpoint per epoch out) and resumes from Tune's last checkpoint when Ray
restarts a trial.

The loop is the fast path: images are batched by index from one tensor (no
DataLoader workers, no per-image PIL work) and losses and correct counts are
accumulated on the device and read once per epoch, so the host waits for the
device once per epoch rather than once per batch. Batches come from the splits (``train_batches`` /
``eval_batches``): ``ImageSplits`` index tensors (the fast path), ``LoaderSplits`` read DataLoader workers
for image sets too large to hold whole. The loss and the accuracy come from ``splits.task``
(classification or regression, ``harness.tasks``), so the metric names are the same for both.
"""

from __future__ import annotations

import logging
import math
import random
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .data import DATASETS, ImageSplits
from .data.base import tensor_batches
from .models import build_model, count_parameters, localization_parameters
from .trial import Status, Trial, effective_loc_lr

EVAL_BATCH = 1000
RUNNING, COMPLETE, DIVERGED = Status.RUNNING.value, Status.COMPLETE.value, Status.DIVERGED.value
ENDED = (COMPLETE, DIVERGED)  # a trainer's own ends (a scheduler's stop is Tune's doing, not the trainer's)
STATE_FILE = "state.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(model: torch.nn.Module, training: dict) -> torch.optim.Optimizer:
    """One parameter group for the network and, for models with a spatial transformer,
    a second one for the localization network with its own learning rate."""
    lr = training["lr"]
    loc = localization_parameters(model)
    loc_ids = {id(p) for p in loc}
    rest = [p for p in model.parameters() if id(p) not in loc_ids]
    groups = [{"params": rest, "lr": lr, "name": "main"}]
    if loc:
        groups.append({"params": loc, "lr": effective_loc_lr(training), "name": "localization"})
    if training["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=training["momentum"], weight_decay=training["weight_decay"])
    if training["optimizer"] == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=training["weight_decay"])
    raise ValueError(f"unknown optimizer {training['optimizer']!r}; allowed: sgd, adam")


class Trainer:
    """One seed of one trial (``trial.seeds`` has exactly one seed)."""

    def __init__(self, trial: Trial, splits: ImageSplits, device: torch.device | str = "cpu", test: bool = True):
        self.test = test  # tuning trials never look at the test set
        self.trial = trial
        self.seed = trial.seed
        self.training = trial.training
        self.splits = splits
        self.task = splits.task  # loss and accuracy: classification or regression
        self.device = torch.device(device)
        seed_everything(self.seed)
        self.model = build_model(trial.architecture, splits.in_shape, splits.num_classes,
                                 **trial.model_options).to(self.device)
        self._setup_fast_path()
        self.optimizer = build_optimizer(self.model, self.training)
        self.num_params = count_parameters(self.model)
        self.epoch = 0  # epochs completed
        self.best_val_acc = -1.0
        self.best_epoch = 0
        self.best_state: dict | None = None
        self.last_metrics: dict = {}

    # -- fast-path switches (Training.precision / channels_last / compile; all off by default) ----
    def _setup_fast_path(self) -> None:
        self.bf16 = self.training.get("precision", "fp32") == "bf16"
        if self.bf16 and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"precision: bf16 is not supported by {torch.cuda.get_device_name(self.device)}; use fp32")
        self.channels_last = bool(self.training.get("channels_last", False))
        if self.channels_last:  # before the optimizer is built; parameters keep their identity
            self.model.to(memory_format=torch.channels_last)
        if self.training.get("compile", False):  # compiles the forward in place: state_dict keys are unchanged
            self.model.compile()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """``self.model(x)`` under the switches; with all of them off, exactly that."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.bf16:  # the loss and the metrics stay in float32
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                return self.model(x).float()
        return self.model(x)

    # -- checkpoint state ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {
            "epoch": self.epoch, "best_val_acc": self.best_val_acc, "best_epoch": self.best_epoch,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "best_state": self.best_state, "rng_cpu": torch.get_rng_state(),
            "last_metrics": self.last_metrics, "model_spec": self.model_spec,
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    @property
    def model_spec(self) -> dict:
        """What rebuilds the model from saved weights (``analysis.checkpoints``)."""
        return model_spec(self.trial, self.splits)

    def best_weights(self) -> dict[int, dict]:
        """seed → the best-validation weights and their epoch (None before the first epoch)."""
        return {self.seed: {"state_dict": self.best_state, "best_epoch": self.best_epoch}}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]
        self.best_val_acc = state["best_val_acc"]
        self.best_epoch = state["best_epoch"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.best_state = state["best_state"]
        self.last_metrics = state["last_metrics"]
        torch.set_rng_state(state["rng_cpu"].cpu())
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), self.device)

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> Iterator[dict]:
        """Train the remaining epochs, yielding each epoch's metrics; the last carries the test result."""
        epochs = self.training["epochs"]
        if self.last_metrics.get("status") in ENDED:  # resumed after the end: say it again
            yield self.last_metrics
            return
        while self.epoch < epochs:
            metrics = self._epoch(self.epoch + 1)
            self.epoch += 1
            if not math.isfinite(metrics["train_loss"]):
                metrics.update(status=DIVERGED, diverged_epoch=self.epoch)
                self.last_metrics = metrics
                yield metrics
                return
            if self.epoch == epochs:
                metrics.update(self.final_metrics())
            self.last_metrics = metrics
            yield metrics
        if self.last_metrics.get("status") == RUNNING:  # resumed after the last epoch's checkpoint
            self.last_metrics.update(self.final_metrics())
            yield self.last_metrics

    def final_metrics(self) -> dict:
        """Test loss and accuracy of the best-validation epoch: the only use of the test set."""
        current = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        done = {"status": COMPLETE, "best_epoch": self.best_epoch, "best_val_acc": self.best_val_acc}
        if not self.test:
            return done
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        t0 = time.perf_counter()
        test_loss, test_acc = self._evaluate(self.splits.eval_batches("test", EVAL_BATCH))
        self.model.load_state_dict(current)
        return {**done, "test_loss": test_loss, "test_acc": test_acc, "test_time_s": time.perf_counter() - t0}

    def _epoch(self, epoch: int) -> dict:
        n, batch = self.splits.n_train, self.training["batch_size"]
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
        train_loss, train_acc = loss_sum.item() / n, correct.item() / n  # the epoch's one host sync
        train_time = time.perf_counter() - t0

        t0 = time.perf_counter()
        val_loss, val_acc = self._evaluate(self.splits.eval_batches("val", EVAL_BATCH))
        # The running training metrics above are taken with dropout on while the weights change; the
        # overfitting gap needs the final weights in eval mode on training images, as validation is measured.
        train_eval_loss, train_eval_acc = self._evaluate(self.splits.eval_batches("train_eval", EVAL_BATCH))
        eval_time = time.perf_counter() - t0
        if val_acc > self.best_val_acc:
            self.best_val_acc, self.best_epoch = val_acc, epoch
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return {
            "epoch": epoch, "status": RUNNING,
            "train_loss": train_loss, "train_acc": train_acc,
            "val_loss": val_loss, "val_acc": val_acc,
            "train_eval_loss": train_eval_loss, "train_eval_acc": train_eval_acc,
            "train_time_s": train_time, "eval_time_s": eval_time,
            "images_per_s": n / train_time if train_time > 0 else float("nan"),
            "num_params": self.num_params,
        }

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
    t = trial.training
    protocol = t.get("protocol", "standard")
    return _load_splits(trial.dataset, str(data_dir), t["val_size"], t["split_seed"], t["train_limit"],
                        t["test_limit"], protocol)


@lru_cache(maxsize=1)
def _load_splits(dataset: str, data_dir: str, val_size: int, split_seed: int, train_limit, test_limit, protocol: str):
    """The last splits loaded, kept: Tune reuses a trial's process for the next trial, which usually reads the same
    splits (other seeds and architectures of the dataset), so only the first trial of a process pays the load.
    Nothing writes into the tensors (the trainer builds new ones for every batch)."""
    return DATASETS[dataset].load(
        Path(data_dir), val_size=val_size, split_seed=split_seed, train_limit=train_limit, test_limit=test_limit,
        **({"protocol": protocol} if protocol != "standard" else {}),
    )


def pick_device() -> torch.device:
    """The GPU Ray assigned to this trial, if any (Ray sets CUDA_VISIBLE_DEVICES), else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def make_runner(trial: Trial, splits, device, test: bool = True):
    """A ``Trainer`` for one seed, a ``StackedTrainer`` (one vmapped model) for several."""
    if len(trial.seeds) == 1:
        return Trainer(trial, splits, device, test=test)
    from .stacked import StackedTrainer

    return StackedTrainer(trial, splits, device, test=test)


def epochs_by_seed(runner) -> Iterator[dict[str, dict]]:
    """Each epoch's metrics as {str(seed): metrics}, whichever kind of runner."""
    if isinstance(runner, Trainer):
        return ({str(runner.seed): m} for m in runner.run())
    return ({str(seed): m for seed, m in per_seed.items()} for per_seed in runner.run())


SUMMED = ("images_per_s",)
SHOWN = ("train_loss", "train_acc", "val_loss", "val_acc", "train_eval_loss", "train_eval_acc",
         "train_time_s", "eval_time_s", "images_per_s", "best_val_acc", "test_acc", "test_loss")


def summarise_epoch(per_seed: dict[str, dict]) -> dict:
    """One line for the progress table: the seeds' mean (images/s summed), the newest epoch, the status
    ``running`` until every seed has finished (then the seeds' common status, or ``mixed``)."""
    ms = list(per_seed.values())
    out = {"epoch": max(m["epoch"] for m in ms)}
    for k in SHOWN:
        vals = [m[k] for m in ms if isinstance(m.get(k), (int, float)) and math.isfinite(m[k])]
        if vals:
            out[k] = float(np.sum(vals) if k in SUMMED else np.mean(vals))
    out["num_params"] = ms[0].get("num_params")
    statuses = {m["status"] for m in ms}
    out["status"] = RUNNING if RUNNING in statuses else (statuses.pop() if len(statuses) == 1 else "mixed")
    return out


def trainable(config: dict) -> None:
    """Ray Tune function trainable. ``config``: ``trial`` (``Trial.to_config()``), ``data_dir``, ``cpus``,
    ``resume`` (trial key → checkpoint URI of an earlier, interrupted run). Reports per epoch the seeds'
    metrics under ``per_seed`` and their summary at the top level, with a checkpoint of the whole trial."""
    import ray
    from ray import tune

    from .provenance import host_info

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one "checkpoint created" line per epoch is noise
    trial = Trial.from_config(config)
    torch.set_num_threads(max(1, int(config.get("cpus", 1))))
    device = pick_device()
    splits = load_splits(trial, config["data_dir"]).to(device)
    runner = make_runner(trial, splits, device)
    checkpoint = tune.get_checkpoint()  # Ray retrying this trial in this run
    if checkpoint is None and config.get("resume", {}).get(trial.trial_id):  # an earlier, interrupted run
        checkpoint = tune.Checkpoint(config["resume"][trial.trial_id])
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            saved = torch.load(Path(d) / STATE_FILE, map_location=device, weights_only=True)
        runner.load_state_dict(saved["trainer"])
    context = ray.get_runtime_context()
    where = {**host_info(str(device)), "node_id": context.get_node_id(),
             "node_ip": ray.util.get_node_ip_address(), "trial_key": trial.trial_id}
    for per_seed in epochs_by_seed(runner):
        with tempfile.TemporaryDirectory() as d:
            torch.save({"trainer": runner.state_dict(), "best": runner.best_weights(),
                        "model_spec": runner.model_spec}, Path(d) / STATE_FILE)
            tune.report({**summarise_epoch(per_seed), "per_seed": per_seed, **where},
                        checkpoint=tune.Checkpoint.from_directory(d))


AVERAGED = ("train_loss", "train_acc", "val_loss", "val_acc", "train_eval_loss", "train_eval_acc",
            "train_time_s", "eval_time_s", "images_per_s")


def tuning_trainable(config: dict) -> None:
    """Ray Tune trainable of the tuning stage: one Optuna trial trains the cell at the sampled learning
    rates for several seeds in lockstep and reports, per epoch, the metrics averaged over seeds and
    ``objective``, the seeds' mean best validation accuracy so far (what the study maximises)."""
    from ray import tune

    trial = Trial.from_config(config)  # the sampled learning rates applied
    torch.set_num_threads(max(1, int(config.get("cpus", 1))))
    device = pick_device()
    splits = load_splits(trial, config["data_dir"]).to(device)
    trainers = [Trainer(trial.with_seeds([seed]), splits, device, test=False) for seed in trial.seeds]
    for per_seed in zip(*(t.run() for t in trainers)):
        metrics = {k: float(np.mean([m[k] for m in per_seed])) for k in AVERAGED}
        diverged = [m for m in per_seed if m["status"] == DIVERGED]
        metrics.update(epoch=per_seed[0]["epoch"], num_params=trainers[0].num_params,
                       objective=float(np.mean([t.best_val_acc for t in trainers])),
                       status=DIVERGED if diverged else per_seed[0]["status"])
        if diverged:
            metrics["diverged_epoch"] = diverged[0]["epoch"]
        tune.report(metrics)
        if diverged:
            return
