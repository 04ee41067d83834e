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

from . import decide, plugins
from .contract import EpochRecord
from .data import DATASETS
from .errors import UserError
from .provenance import driver_provenance
from .space import SearchSpace
from .store import ResultsStore, now
from .trial import FINISHED, Stage, Status, Trial, group_seeds


@dataclass
class Outcome:
    run_id: str
    total: int
    skipped: int
    statuses: dict[str, int] = field(default_factory=dict)


def new_run_id() -> str:
    return f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def trial_name(tune_trial) -> str:
    t = Trial.from_config(tune_trial.config)
    suffix = tune_trial.trial_id if t.stage is Stage.TUNE else t.trial_id[-6:]
    return f"{t.name}-{suffix}"


def preflight(space: SearchSpace, trials: list[Trial], data_dir: Path, download: bool) -> None:
    """Dataset files present and well-formed; every split big enough for its batch size; every model that is
    not a built-in on a built-in dataset takes its dataset's input."""
    plugins.check_inputs(plugins.pairs_to_check(trials), stack=space.stack_sizes(stack_device(space)))
    for name in sorted({t.dataset for t in trials}):
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
        import torch  # lazy: the checks before Ray (and stbench plan, which imports this module) load no Ray

        if not torch.cuda.is_available():
            raise UserError(f"resources.gpu: {space.resources.gpu:g} GPU per trial, but this machine has no GPU; "
                            "pass --gpu 0 to train on the CPU, or --address a cluster with GPUs")


def select(trials: list[Trial], architectures=None, datasets=None, seeds=None) -> list[Trial]:
    """Restrict the grid (one-seed trials) from the command line; a name the space lacks is an error."""
    for key, wanted in (("architecture", architectures), ("dataset", datasets), ("seed", seeds)):
        if wanted is None:
            continue
        present = sorted({getattr(t, key) for t in trials}, key=str)
        unknown = [w for w in wanted if w not in present]
        if unknown:
            raise UserError(f"--{key}s: {', '.join(map(str, unknown))} not in the search space; "
                            f"allowed: {', '.join(map(str, present))}")
        trials = [t for t in trials if getattr(t, key) in wanted]
    return trials


STORAGE_ENV = "STBENCH_STORAGE_PATH"


def tune_storage(store: ResultsStore, storage_path: str | None = None) -> str:
    """Where Ray Tune keeps trial checkpoints: ``--storage-path``, else ``$STBENCH_STORAGE_PATH``, else
    the store's ``ray/``. On a multi-node cluster it must be storage every node reaches (S3, NFS)."""
    return storage_path or os.environ.get(STORAGE_ENV) or str(store.ray_dir)


def run(space: SearchSpace, space_yaml: str, *, results_dir: Path, data_dir: Path, select_by: dict | None = None,
        address: str | None = None, max_concurrent: int | None = None, download: bool = True,
        retry_errored: bool = False, verbose: int = 1, storage_path: str | None = None,
        overrides: list[str] | tuple = (), until_decided: bool = False, retry_stale: bool = False) -> Outcome:
    """Tune (when the space asks for it), then benchmark; everything checked before anything is written.
    With a ``decide:`` section (or ``until_decided``) the benchmark runs seeds in rounds (harness/decide.py);
    ``retry_stale``: rerun finished trials whose plugin code has changed since (``plugins.stale_ids``)."""
    select_by = select_by or {}
    decided = until_decided or space.decide is not None
    if decided:
        decide.check_selection(space, select_by)
        space = decide.budget_space(space, decide.config(space).budget)
    trials = select(space.trials(), **select_by)
    store = ResultsStore.check(results_dir)  # nothing is written until every check has passed
    preflight(space, trials, data_dir, download)
    check_local_gpus(space, address)
    with ray_connection(address, verbose) if cluster_address(address) else nullcontext():  # an unreachable cluster is bad input too
        store.create()
        with store.lock(), ExitStack() as stack:
            swept = store.sweep_partials()
            if swept:
                print(f"stbench: removed {len(swept)} partial file(s) left by an interrupted write")
            session = _Session(space, space_yaml, store, data_dir, address, verbose, stack,
                               tune_storage(store, storage_path), list(overrides))
            session.retry_stale = retry_stale
            tuned = session.tuning_stage(select_by) if space.tune is not None else {}
            trials = select(space.trials(tuned), **select_by)
            if decided:  # seeds in rounds: run_decided_rounds below, decisions from harness/decide.py
                settings = decide.settings_for(space, max(space.stack_sizes(stack_device(space)).values()),
                                               select_by.get("architectures"))
                outcome = run_decided_rounds(session, trials, settings, max_concurrent, retry_errored,
                                             Outcome(session.run_id, 0, 0))
            else:
                outcome = session.benchmark(trials, max_concurrent, retry_errored)
            packed = store.compact_if_many()  # readers stay fast: finished trials' files into a few packs
            if packed:
                print(f"stbench: packed {packed['trials']} finished trials into {packed['packs']} pack(s)")
            return outcome


def done_statuses(retry_errored: bool) -> tuple[str, ...]:
    """What a rerun skips: finished trials, and errored ones unless they are to be retried."""
    return FINISHED if retry_errored else (*FINISHED, Status.ERROR.value)


def stack_device(space: SearchSpace) -> str:
    return "cuda" if space.resources.gpu > 0 else "cpu"


class _Session:
    """One invocation: a run id, a run row in the store, and a Ray connection opened only if there is work."""

    def __init__(self, space, space_yaml, store: ResultsStore, data_dir, address, verbose, stack: ExitStack,
                 storage_path: str, overrides: list[str]):
        self.space, self.space_yaml, self.store, self.storage_path = space, space_yaml, store, storage_path
        self.data_dir, self.address, self.verbose, self.overrides = data_dir, address, verbose, overrides
        self.stack = stack
        self.run_id = new_run_id()
        self.run_row: dict | None = None
        self.provenance: dict = {}

    def _start(self) -> None:
        """First real work of this invocation: record the run, connect to Ray."""
        if self.run_row is None:
            # lazy: the checks before Ray (and stbench plan, which imports this module) load no Ray
            from .data.distorted import cache_dir

            # the generated datasets' cache: the report reads the same files back when it examines weights
            provenance = {**driver_provenance(), "cache_dir": str(cache_dir(self.data_dir)),
                          **({"plugins": plugins.fingerprints()} if plugins.active() else {})}
            self.run_row = {"run_id": self.run_id, "space": self.space.name, "space_yaml": self.space_yaml,
                            "command": provenance.pop("argv"),
                            "address": cluster_address(self.address) or "local",
                            "overrides_json": json.dumps(self.overrides), "data_dir": str(self.data_dir),
                            "started_at": now(), "provenance_json": json.dumps(provenance, sort_keys=True)}
            self.store.put_run(self.run_row)
            self.stack.callback(lambda: self.store.put_run({**self.run_row, "finished_at": now()}))
            self.provenance = {k: provenance[k] for k in (
                "git_commit", "git_dirty", "python_version", "torch_version", "torchvision_version",
                "ray_version", "optuna_version")}
            # each row carries the plugin code it ran (None without plugins): the report flags mixed cells
            code = plugins.fingerprints()
            self.provenance["code_json"] = json.dumps(code, sort_keys=True) if code else None
            configure_tune_output()
            self.stack.enter_context(ray_connection(self.address, self.verbose))

    def callbacks(self, label: str, trials: int, epochs: int, job_type: str = "benchmark") -> list:
        # lazy: the checks before Ray (and stbench plan, which imports this module) load no Ray
        from .callbacks import StoreCallback
        from .progress import ProgressCallback
        from .tracking import WandbSettings, make_callback

        callbacks = [StoreCallback(self.store, self.run_id, self.space.name, self.provenance)]
        if self.verbose:
            callbacks.append(ProgressCallback(label, trials, epochs))
        w = self.space.wandb
        settings = WandbSettings(mode=w.mode, project=w.project, entity=w.entity, init_timeout_s=w.init_timeout_s)
        wandb_callback = make_callback(settings, self.store.wandb_dir, group=self.run_id, job_type=job_type)
        return callbacks + ([wandb_callback] if wandb_callback is not None else [])

    def tuning_stage(self, select_by: dict) -> dict:
        """Run (or resume) every cell's Optuna study to its trial budget; return the best values per cell.
        A rerun whose studies are all finished never starts Ray."""
        from . import tuning  # lazy: the checks before Ray (and stbench plan, which imports this module) load no Ray
        from .trainables import tuning_trainable

        out = {}
        for arch, dataset in tuning.cells(self.space, select_by.get("architectures"), select_by.get("datasets")):
            study, storage = tuning.open_study(self.space, arch, dataset, self.store.optuna_url())
            left = tuning.trials_left(study, self.space.tune.trials)
            default = tuning.default_point(self.space, dataset)
            print(f"stbench: tuning {arch} on {dataset}: study {study.study_name}, "
                  f"{len(tuning.finished(study))} of {self.space.tune.trials} trials done, {left} to run")
            if left > 0:
                self._start()
                trial = tuning.tuning_trial(self.space, arch, dataset, study.study_name)
                domains, searcher, scheduler = tuning.search(self.space, study, storage, trial, default)
                tuner = build_tuner(
                    tuning_trainable, self.space, param_space={**self._common(), "trial": trial.to_config(), **domains},
                    name=f"{self.run_id}-tune-{arch}-{dataset}", storage_path=self.storage_path,
                    callbacks=self.callbacks(f"tuning {arch} on {dataset}", left, left * trial.training.epochs, "tune"),
                    verbose=self.verbose, max_concurrent=self.space.tune.max_concurrent,
                    search_alg=searcher, scheduler=scheduler, num_samples=left,
                    columns=({f"{k}": k for k in domains}, {"epoch": "epoch", "val_acc": "val acc", "objective": "objective"}))
                tuner.fit()
                study, storage = tuning.open_study(self.space, arch, dataset, self.store.optuna_url())
            cell = out[(arch, dataset)] = tuning.summarise(study, arch, dataset, default)
            shown = "n/a" if cell.default_value is None else f"{cell.default_value:.4f}"
            print(f"stbench: tuned {arch} on {dataset}: {cell.best_params} → objective {cell.best_value:.4f} "
                  f"(untuned default {shown}; {cell.n_trials} trials, study {cell.study})")
        return {key: cell.as_tuned() for key, cell in out.items()}

    def _common(self) -> dict:
        return {"data_dir": str(self.data_dir), "cpus": self.space.resources.cpu}

    def benchmark(self, trials: list[Trial], max_concurrent, retry_errored: bool) -> Outcome:
        done = self.store.finished_trial_ids(done_statuses(retry_errored))
        stale = plugins.stale_ids(self.store, trials) & done
        if stale and getattr(self, "retry_stale", False):
            done -= stale
            print(f"stbench: {len(stale)} finished trial(s) ran other plugin code than now: running them again "
                  "(--retry-stale)")
        elif stale:
            print(f"stbench: warning: {len(stale)} finished trial(s) ran other plugin code than now (their run's "
                  "provenance_json.plugins); kept, --retry-stale runs them again")
        pending = [t for t in trials if t.trial_id not in done]
        outcome = Outcome(self.run_id, total=len(trials), skipped=len(trials) - len(pending))
        units = group_seeds(pending, self.space.stack_sizes(stack_device(self.space)))
        stacked = f" in {len(units)} stacked trials" if len(units) < len(pending) else ""
        print(f"stbench: {len(trials)} trials in '{self.space.name}', {outcome.skipped} already in "
              f"{self.store.root}, {len(pending)} to run{stacked} (run {self.run_id})")
        if pending:
            self._start()
            self.run_row.update(trials_total=len(trials), trials_skipped=outcome.skipped, planned_json=json.dumps(
                [{"trial_id": t.trial_id, "architecture": t.architecture, "dataset": t.dataset, "seed": t.seed}
                 for t in trials]))
            self.store.put_run(self.run_row)
            resume = {k: v for k, v in self.store.resume_points().items() if k in {u.trial_id for u in units}}
            if resume:
                print(f"stbench: {len(resume)} unfinished trial(s) resume from their last checkpoint")
            # lazy: the checks before Ray (and stbench plan, which imports this module) load no Ray
            from .trainables import trainable

            epochs = sum(u.training.epochs for u in units)
            tuner = build_tuner(
                trainable, self.space, name=self.run_id, storage_path=self.storage_path, verbose=self.verbose,
                param_space={**self._common(), "trial": tune_grid([u.to_config() for u in units]), "resume": resume},
                callbacks=self.callbacks("benchmark", len(units), epochs), max_concurrent=max_concurrent,
                checkpoints=2, columns=({"trial/architecture": "architecture", "trial/dataset": "dataset",
                                         "trial/seeds": "seeds"},
                                        {"epoch": "epoch", **EpochRecord.columns()}))
            tuner.fit()
            finished = self.store.trials()
            finished = finished[finished["trial_id"].isin({t.trial_id for t in trials})]
            outcome.statuses = finished["status"].value_counts().to_dict()
        return outcome


def tune_grid(values: list):
    from ray import tune  # lazy: the checks before Ray (and stbench plan, which imports this module) load no Ray

    return tune.grid_search(values)


def build_tuner(trainable, space: SearchSpace, *, param_space: dict, name: str, storage_path: str, callbacks: list,
                verbose: int, columns: tuple[dict, dict], max_concurrent: int | None = None, search_alg=None,
                scheduler=None, num_samples: int = 1, checkpoints: int | None = None):
    """The one place a Ray Tune ``Tuner`` is built: resources, retries, storage, callbacks and output are
    the same for both stages; the tuning stage adds its searcher, scheduler and number of samples.

    Ray's own table is shown only with ``--verbose`` (verbose ≥ 2); the progress line replaces it."""
    from ray import tune  # lazy: the checks before Ray (and stbench plan, which imports this module) load no Ray
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    parameters, metrics = columns
    reporter = tune.CLIReporter(parameter_columns=parameters, metric_columns=metrics,
                                max_report_frequency=20, print_intermediate_tables=True)
    resources = {"cpu": space.resources.cpu, "gpu": space.resources.gpu}
    return tune.Tuner(
        tune.with_resources(plugins.carry(trainable), resources),  # the space's plugins travel with it
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
            max_concurrent_trials=max_concurrent, reuse_actors=True,
            trial_name_creator=trial_name, trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=storage_path, callbacks=[*callbacks, CSVLoggerCallback(), JsonLoggerCallback()],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=checkpoints),
            failure_config=tune.FailureConfig(max_failures=space.max_failures),
            progress_reporter=reporter, verbose=1 if verbose >= 2 else 0,
        ),
    )


@contextmanager
def ray_connection(address: str | None, verbose: int = 1):
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``), or start a local Ray, for the block's duration.

    Worker processes' output reaches this terminal only with ``--verbose``: otherwise it is Ray's own noise
    (a reused trial process that gets SIGTERM while it exits prints a traceback) and stays in Ray's session
    logs (``/tmp/ray/session_latest/logs``); trial errors reach the store and the summary either way.
    An already initialised Ray (a notebook, the tests) is used as it is and left running.
    """
    import ray  # lazy: the checks before Ray (and stbench plan, which imports this module) load no Ray

    target = cluster_address(address)
    _check_reachable(target)  # also when a Ray is already up: a wrong address is still the user's mistake
    if ray.is_initialized():
        yield
        return
    if not target:
        # Ray prestarts a worker per CPU for the first driver, but Tune gives its trial actors a runtime env
        # (env_vars), so they never land on those workers, which are killed idle a second later: on a 2-core
        # machine ~0.8 CPU-s of a one-minute run spent for nothing. A user's own setting wins.
        os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
    try:
        # No address: a fresh local Ray ("local"), never whatever cluster happens to run on this machine.
        ray.init(address=target or "local", include_dashboard=False, configure_logging=False,
                 log_to_driver=verbose >= 2)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        first = str(e).strip().splitlines()[0][:60] if str(e).strip() else type(e).__name__
        raise UserError(f"--address {target}: no Ray cluster answered ({first}); {START_ONE}") from None
    try:
        yield
    finally:
        ray.shutdown()


START_ONE = "start one (`ray start --head`, `ray up cluster.yaml`) or drop --address"


def _check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not minutes: ``ray.init`` retries an unreachable HOST:PORT for a long time."""
    if not address or address in ("auto", "local"):
        return  # "auto" finds a running cluster from local state and fails fast by itself
    if address.startswith(("http://", "https://")):
        raise UserError(f"--address {address}: a dashboard / job-submission URL; allowed: HOST:6379 (the GCS port) "
                        "or 'auto' (or use `ray job submit`)")
    host_port = address.removeprefix("ray://")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address}: expected HOST:PORT, ray://HOST:PORT or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise UserError(f"--address {address}: no Ray cluster answered ({str(e.strerror or e)[:60]}); {START_ONE}") from None


def configure_tune_output() -> None:
    """Tune's classic table shows the columns a researcher scans for (its newer output prints every result).

    Tune's automatic loggers are off: ``build_tuner`` names the CSV and JSON ones itself (Tune's end-of-fit
    analysis reads their files and warns for every trial without them) and leaves TensorBoard's out: W&B is the
    dashboard here, and its event files would be one more write per result in the driver."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def run_decided_rounds(session, trials: list, settings: "decide.Settings", max_concurrent, retry_errored: bool, outcome):
    """The driver's loop: replay the decisions from the store, run the next round's seeds for the cells that
    still need them (as ordinary trials: a kill between rounds and a rerun continue where it stopped), until
    every comparison is decided or out of budget. ``trials``: the budget grid (one-seed trials)."""
    ids = {t.trial_id for t in trials}
    by_cell: dict[tuple[str, str], list] = {}
    for t in trials:
        by_cell.setdefault((t.architecture, t.dataset), []).append(t)
    print(f"stbench: seeds until decided: {len(settings.family)} comparison(s), each at α = "
          f"{settings.alpha_each:.3g}, margin ±{settings.margin * 100:g} pp, looks at "
          f"{', '.join(map(str, settings.looks))} seeds")
    done_before = session.store.finished_trial_ids(done_statuses(retry_errored)) & ids
    considered: set[str] = set()
    last = None
    rounds = 0
    while True:
        decisions = decide.replay(session.store.trials(), settings, ids)
        nxt = decide.next_round(decisions)
        if nxt is None:
            break
        look, cells = nxt
        batch = sorted((t for cell in cells for t in by_cell.get(cell, []) if t.seed < look),
                       key=lambda t: (t.dataset, t.architecture, t.seed))
        if (look, frozenset(cells)) == last:  # the round ran and still left its seeds missing: stop, say why
            print(f"stbench: seeds until decided: the round to {look} seeds left trials unfinished; rerun to continue")
            break
        last = (look, frozenset(cells))
        open_ = sum(d.decision == decide.UNDECIDED for d in decisions.values())
        print(f"stbench: round {rounds + 1}: seeds up to {look} for {len(cells)} cell(s); {open_} of "
              f"{len(decisions)} comparison(s) undecided")
        session.benchmark(batch, max_concurrent, retry_errored)
        rounds += 1
        considered |= {t.trial_id for t in batch}
        finished = session.store.trials()  # each trial counted once, with the status it ended with
        finished = finished[finished["trial_id"].isin(considered - done_before)]
        outcome.statuses = finished["status"].value_counts().to_dict()
    outcome.total, outcome.skipped = len(considered), len(considered & done_before)
    for line in decide.sentences(decide.replay(session.store.trials(), settings, ids), settings):
        print(f"stbench: {line}")
    return outcome
