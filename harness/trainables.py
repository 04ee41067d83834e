"""The Ray side of training: the Tune function trainables (config in, one ``tune.report`` per epoch out).

They sit with the Tune callbacks (``harness.callbacks``, ``progress``, ``tracking``) because they are where Ray
meets the training room; the runners they drive (``harness.runner``) import no Ray. What a trainable reports
is the hand-over the callbacks read: ``per_seed`` (seed → ``EpochRecord.as_dict()``), the seeds' summary at
the top level (``contract.summarise``), where the trial ran, and a ``contract.Checkpoint`` per epoch.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import ray
import torch
from ray import tune

from .contract import CHECKPOINT_FILE, Checkpoint, EpochRecord, Status, average, summarise
from .provenance import host_info
from .runner import make_runner
from .train import load_splits, pick_device
from .trial import Trial


def _setup(config: dict, test: bool, stack: bool):
    trial = Trial.from_config(config)  # a tuning trial: the sampled learning rates applied
    torch.set_num_threads(max(1, int(config.get("cpus", 1))))
    device = pick_device()
    splits = load_splits(trial, config["data_dir"]).to(device)
    return trial, device, make_runner(trial, splits, device, test=test, stack=stack)


def per_seed_report(records: dict[int, EpochRecord]) -> dict:
    """The seeds' records as Tune carries them: {str(seed): the record's fields}."""
    return {str(seed): r.as_dict() for seed, r in records.items()}


def trainable(config: dict) -> None:
    """Ray Tune function trainable. ``config``: ``trial`` (``Trial.to_config()``), ``data_dir``, ``cpus``,
    ``resume`` (trial key → checkpoint URI of an earlier, interrupted run). Reports per epoch the seeds'
    records under ``per_seed`` and their summary at the top level, with a checkpoint of the whole trial."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one "checkpoint created" line per epoch is noise
    trial, device, runner = _setup(config, test=True, stack=True)
    checkpoint = tune.get_checkpoint()  # Ray retrying this trial in this run
    if checkpoint is None and config.get("resume", {}).get(trial.trial_id):  # an earlier, interrupted run
        checkpoint = tune.Checkpoint(config["resume"][trial.trial_id])
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            runner.load_state_dict(Checkpoint.load(Path(d) / CHECKPOINT_FILE, map_location=device).trainer)
    context = ray.get_runtime_context()
    where = {**host_info(str(device)), "node_id": context.get_node_id(),
             "node_ip": ray.util.get_node_ip_address(), "trial_key": trial.trial_id}
    for records in runner.run():
        with tempfile.TemporaryDirectory() as d:
            Checkpoint(model_spec=runner.model_spec, best=runner.best_weights(),
                       trainer=runner.state_dict()).save(Path(d) / CHECKPOINT_FILE)
            tune.report({**summarise(records), "per_seed": per_seed_report(records), **where},
                        checkpoint=tune.Checkpoint.from_directory(d))


def tuning_trainable(config: dict) -> None:
    """Ray Tune trainable of the tuning stage: one Optuna trial trains the cell at the sampled learning
    rates for several seeds in lockstep (unstacked) and reports, per epoch, the metrics averaged over seeds and
    ``objective``, the seeds' mean best validation accuracy so far (what the study maximises)."""
    _, _, runner = _setup(config, test=False, stack=False)
    for records in runner.run():
        seeds = list(records.values())
        diverged = [r for r in seeds if r.status == Status.DIVERGED.value]
        best = runner.best_val_by_seed()
        metrics = {**average(seeds), "epoch": seeds[0].epoch, "num_params": runner.num_params,
                   "objective": float(sum(best.values()) / len(best)),
                   "status": Status.DIVERGED.value if diverged else seeds[0].status}
        if diverged:
            metrics["diverged_epoch"] = diverged[0].epoch
        tune.report(metrics)
        if diverged:
            return
