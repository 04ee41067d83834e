"""Orchestration: check everything, then fan the grid out over Ray Tune.

Everything that can be wrong with the input is checked here before Ray starts
(search space, data files, split sizes, results directory), so a mistake costs
seconds, not a cluster's worth of failed trials. Trials already finished in the
store are skipped, so rerunning the same command continues a benchmark.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .data import DATASETS
from .errors import UserError
from .provenance import driver_provenance
from .space import SearchSpace
from .store import ResultsStore, now


@dataclass
class Outcome:
    run_id: str
    total: int
    skipped: int
    statuses: dict[str, int] = field(default_factory=dict)


def new_run_id() -> str:
    return f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def trial_name(trial) -> str:
    t = trial.config["trial"]
    return f"{t['architecture']}-{t['dataset']}-s{t['seed']}-{t['trial_id'][:6]}"


def preflight(space: SearchSpace, trials: list[dict], data_dir: Path, download: bool) -> None:
    """Dataset files present and well-formed; every split big enough for its batch size."""
    for name in sorted({t["dataset"] for t in trials}):
        dataset = DATASETS[name]
        dataset.prepare(data_dir, download=download)
        n_train, n_test = dataset.split_sizes(data_dir)
        training = space.training_for(name)
        where = f"datasets.{name}"
        if training.val_size >= n_train:
            raise UserError(f"{where}.val_size: {training.val_size} leaves no training images "
                            f"({n_train} in the training split); allowed: 1..{n_train - 1}")
        n_fit = min(training.train_limit or n_train, n_train - training.val_size)
        if training.batch_size > n_fit:
            raise UserError(f"{where}.batch_size: {training.batch_size} is larger than the training split "
                            f"({n_fit} images); allowed: 1..{n_fit}")


def cluster_address(address: str | None) -> str | None:
    """The cluster to join: ``--address``, else ``$RAY_ADDRESS``; None means a fresh local Ray."""
    return address or os.environ.get("RAY_ADDRESS") or None


def check_local_gpus(space: SearchSpace, address: str | None) -> None:
    """A local run whose trials ask for GPUs on a machine without one would wait forever: refuse it."""
    if space.resources.gpu > 0 and not cluster_address(address):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"resources.gpu: {space.resources.gpu:g} GPU per trial, but this machine has no GPU; "
                            "pass --gpu 0 (or set resources.gpu: 0) to train on the CPU, or --address a cluster with GPUs")


def select(trials: list[dict], architectures=None, datasets=None, seeds=None) -> list[dict]:
    """Restrict the grid from the command line; a name the space does not contain is an error."""
    for key, wanted in (("architecture", architectures), ("dataset", datasets), ("seed", seeds)):
        if wanted is None:
            continue
        present = sorted({t[key] for t in trials}, key=str)
        unknown = [w for w in wanted if w not in present]
        if unknown:
            raise UserError(f"--{key}s: {', '.join(map(str, unknown))} not in the search space; "
                            f"allowed: {', '.join(map(str, present))}")
        trials = [t for t in trials if t[key] in wanted]
    return trials


STORAGE_ENV = "STBENCH_STORAGE_PATH"


def tune_storage(results_dir: Path, storage_path: str | None = None) -> str:
    """Where Ray Tune keeps trial checkpoints: ``--storage-path``, else ``$STBENCH_STORAGE_PATH``, else
    ``RESULTS_DIR/ray``. On a multi-node cluster it must be storage every node reaches (S3, NFS)."""
    return storage_path or os.environ.get(STORAGE_ENV) or str(Path(results_dir).resolve() / "ray")


def run(space: SearchSpace, space_yaml: str, *, results_dir: Path, data_dir: Path, select_by: dict | None = None,
        address: str | None = None, max_concurrent: int | None = None, download: bool = True,
        retry_errored: bool = False, verbose: int = 1, storage_path: str | None = None) -> Outcome:
    """Tune (when the space asks for it), then benchmark; everything checked before anything is written."""
    select_by = select_by or {}
    trials = select(space.trials(), **select_by)
    store = ResultsStore.check(results_dir)  # nothing is written until every check has passed
    preflight(space, trials, data_dir, download)
    check_local_gpus(space, address)
    with ray_connection(address) if cluster_address(address) else nullcontext():  # an unreachable cluster is bad input too
        store.create()
        with store.lock(), ExitStack() as stack:
            swept = store.sweep_partials()
            if swept:
                print(f"stbench: removed {len(swept)} partial file(s) left by an interrupted write")
            session = _Session(space, space_yaml, store, Path(results_dir), data_dir, address, verbose, stack,
                               tune_storage(results_dir, storage_path))
            tuned = session.tune(select_by) if space.tune is not None else {}
            trials = select(space.trials(tuned), **select_by)
            return session.benchmark(trials, max_concurrent, retry_errored)


class _Session:
    """One invocation: a run id, a run row in the store, and a Ray connection opened only if there is work."""

    def __init__(self, space, space_yaml, store, results_dir, data_dir, address, verbose, stack: ExitStack,
                 storage_path: str):
        self.space, self.space_yaml, self.store, self.storage_path = space, space_yaml, store, storage_path
        self.results_dir, self.data_dir, self.address, self.verbose = results_dir, data_dir, address, verbose
        self.stack = stack
        self.run_id = new_run_id()
        self.run_row: dict | None = None
        self.provenance: dict = {}

    def _start(self, total: int, skipped: int) -> None:
        """First real work of this invocation: record the run, connect to Ray."""
        if self.run_row is None:
            provenance = driver_provenance()
            self.run_row = {"run_id": self.run_id, "space": self.space.name, "space_yaml": self.space_yaml,
                            "command": provenance.pop("argv"),
                            "address": cluster_address(self.address) or "local",
                            "trials_total": total, "trials_skipped": skipped, "started_at": now(),
                            "provenance_json": json.dumps(provenance, sort_keys=True)}
            self.store.put_run(self.run_row)
            self.stack.callback(lambda: self.store.put_run({**self.run_row, "finished_at": now()}))
            self.provenance = {k: provenance[k] for k in (
                "git_commit", "git_dirty", "python_version", "torch_version", "torchvision_version",
                "ray_version", "optuna_version")}
            configure_tune_output()
            self.stack.enter_context(ray_connection(self.address))

    def callbacks(self, job_type: str = "benchmark") -> list:
        from .callbacks import StoreCallback
        from .tracking import WandbSettings, make_callback

        callbacks = [StoreCallback(self.store, self.run_id, self.space.name, self.provenance)]
        w = self.space.wandb
        settings = WandbSettings(mode=w.mode, project=w.project, entity=w.entity, init_timeout_s=w.init_timeout_s)
        wandb_callback = make_callback(settings, self.results_dir, group=self.run_id, job_type=job_type)
        return callbacks + ([wandb_callback] if wandb_callback is not None else [])

    def tune(self, select_by: dict) -> dict:
        from . import tuning

        cells = tuning.run_tuning(self.space, results_dir=self.results_dir, data_dir=self.data_dir,
                                  before_work=lambda: self._start(total=0, skipped=0),
                                  callbacks_for=self.callbacks, run_id=self.run_id, storage_path=self.storage_path,
                                  architectures=select_by.get("architectures"), datasets=select_by.get("datasets"),
                                  verbose=self.verbose)
        for (arch, dataset), cell in cells.items():
            default = "n/a" if cell.default_value is None else f"{cell.default_value:.4f}"
            print(f"stbench: tuned {arch} on {dataset}: {cell.best_params} → objective {cell.best_value:.4f} "
                  f"(untuned default {default}; {cell.n_trials} trials, study {cell.study})")
        return {key: cell.as_tuned() for key, cell in cells.items()}

    def benchmark(self, trials: list[dict], max_concurrent, retry_errored: bool) -> Outcome:
        done_statuses = ("complete", "diverged") if retry_errored else ("complete", "diverged", "error")
        done = self.store.finished_trial_ids(done_statuses)
        pending = [t for t in trials if t["trial_id"] not in done]
        outcome = Outcome(self.run_id, total=len(trials), skipped=len(trials) - len(pending))
        print(f"stbench: {len(trials)} trials in '{self.space.name}', {outcome.skipped} already in "
              f"{self.results_dir}, {len(pending)} to run (run {self.run_id})")
        if pending:
            self._start(total=len(trials), skipped=outcome.skipped)
            self.run_row.update(trials_total=len(trials), trials_skipped=outcome.skipped)
            resume = {k: v for k, v in self.store.resume_points().items() if k in {t["trial_id"] for t in pending}}
            if resume:
                print(f"stbench: {len(resume)} unfinished trial(s) resume from their last checkpoint")
            _fit(self.space, pending, resume, self.callbacks(), self.run_id, self.storage_path, self.data_dir,
                 max_concurrent, self.verbose)
            finished = self.store.trials()
            finished = finished[finished["trial_id"].isin({t["trial_id"] for t in trials})]
            outcome.statuses = finished["status"].value_counts().to_dict()
        return outcome


@contextmanager
def ray_connection(address: str | None):
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``), or start a local Ray, for the block's duration.

    An already initialised Ray (a notebook, the tests) is used as it is and left running.
    """
    import ray

    target = cluster_address(address)
    _check_reachable(target)  # also when a Ray is already up: a wrong address is still the user's mistake
    if ray.is_initialized():
        yield
        return
    try:
        # No address: a fresh local Ray ("local"), never whatever cluster happens to run on this machine.
        ray.init(address=target or "local", include_dashboard=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--address {target}: no Ray cluster answered ({first}); "
                        "start one (`ray start --head` or `ray up cluster.yaml`) or drop --address to run locally") from None
    try:
        yield
    finally:
        ray.shutdown()


def _check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not minutes: ``ray.init`` retries an unreachable HOST:PORT for a long time."""
    if not address or address in ("auto", "local"):
        return  # "auto" finds a running cluster from local state and fails fast by itself
    if address.startswith(("http://", "https://")):
        raise UserError(f"--address {address}: that is a dashboard / job-submission URL; use HOST:6379 (the GCS port) "
                        "or 'auto' on a cluster node, or submit with `ray job submit --address {address}`")
    host_port = address.removeprefix("ray://")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address}: expected HOST:PORT, ray://HOST:PORT or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise UserError(f"--address {address}: no Ray cluster answered ({e.strerror or e}); start one "
                        "(`ray start --head` or `ray up cluster.yaml`) or drop --address to run locally") from None


def configure_tune_output() -> None:
    """Tune's classic table shows the columns a researcher scans for (its newer output prints every result)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def _fit(space, pending, resume, callbacks, run_id, storage_path, data_dir, max_concurrent, verbose) -> None:
    from ray import tune

    from .train import trainable

    reporter = tune.CLIReporter(
        parameter_columns={"trial/architecture": "architecture", "trial/dataset": "dataset", "trial/seed": "seed"},
        metric_columns={"epoch": "epoch", "train_loss": "train loss", "val_acc": "val acc",
                        "test_acc": "test acc", "images_per_s": "img/s"},
        max_report_frequency=20, print_intermediate_tables=True,
    )
    resources = {"cpu": space.resources.cpu, "gpu": space.resources.gpu}
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space={"trial": tune.grid_search(pending), "resume": resume, "data_dir": str(data_dir),
                     "cpus": space.resources.cpu},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=max_concurrent, reuse_actors=True,
            trial_name_creator=trial_name, trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=run_id, storage_path=storage_path,
            callbacks=callbacks,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=space.max_failures),
            progress_reporter=reporter, verbose=1 if verbose else 0,
        ),
    )
    tuner.fit()
