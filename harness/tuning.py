"""The tuning stage: an Optuna study per architecture × dataset, run through Ray Tune, before the benchmark.

Optuna's TPE sampler drives Ray Tune trials (``OptunaSearch``); a grid over seeds cannot share a Tuner
with it, so each cell gets its own Tuner and the benchmark grid runs afterwards at the best values.
The study lives in an Optuna SQLite storage in the results directory, not in Tune's experiment
state: an interrupted stage resumes on rerun (finished trials are kept and counted, trials that were
running when it died are marked failed and never repeated), and ``optuna-dashboard
sqlite:///RESULTS/optuna/studies.db`` shows it. The untuned default is the study's first trial, so
the study itself says what tuning bought.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .space import SearchSpace, identity_training
from .train import effective_loc_lr

STORAGE_FILE = "optuna/studies.db"


@dataclass
class Cell:
    architecture: str
    dataset: str
    study: str
    best_params: dict
    best_value: float
    default_value: float | None
    n_trials: int

    def as_tuned(self) -> dict:
        return {"study": self.study, "params": self.best_params}


def storage_url(results_dir: Path) -> str:
    path = Path(results_dir).resolve() / STORAGE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def study_name(space: SearchSpace, architecture: str, dataset: str) -> str:
    """Changes whenever what the study optimises changes (ranges, seeds, epochs, the cell's training)."""
    key = {"tune": space.tune.model_dump(exclude={"trials", "max_concurrent", "architectures"}),
           "training": identity_training(space.training_for(dataset).model_dump(exclude={"seeds"})),
           "model_options": space.model_options.get(architecture, {})}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{space.name}.{architecture}.{dataset}.{digest}"


def cells(space: SearchSpace, architectures=None, datasets=None) -> list[tuple[str, str]]:
    return [(a, d) for d in space.datasets for a in space.tune.architectures
            if (architectures is None or a in architectures) and (datasets is None or d in datasets)]


def default_point(space: SearchSpace, dataset: str) -> dict:
    """The untuned setting, in the study's own parameters (the localization lr equals the main lr)."""
    training = space.training_for(dataset)
    point = {}
    for name in space.tune.ranges():
        if name == "loc_lr":
            point[name] = effective_loc_lr(training.model_dump())
        elif name == "loc_lr_mult":
            point[name] = training.loc_lr_mult or (training.loc_lr / training.lr if training.loc_lr else 1.0)
        else:
            point[name] = training.lr
    ranges = space.tune.ranges()
    inside = all(ranges[k].low <= v <= ranges[k].high for k, v in point.items())
    return point if inside else {}


def open_study(space: SearchSpace, architecture: str, dataset: str, results_dir: Path):
    """The cell's study, created if new; trials a killed run left RUNNING are marked FAIL (never resumed)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(storage_url(results_dir))
    study = optuna.create_study(study_name=study_name(space, architecture, dataset), storage=storage,
                                direction="maximize", load_if_exists=True)
    for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING]):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
    return study, storage


def finished(study) -> list:
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return [t for t in study.get_trials(deepcopy=False) if t.state in done]


def trials_left(study, budget: int) -> int:
    return max(budget - len(finished(study)), 0)


def run_tuning(space: SearchSpace, *, results_dir: Path, data_dir: Path, before_work, callbacks_for, run_id: str,
               storage_path: str, architectures=None, datasets=None, verbose: int = 1) -> dict[tuple[str, str], Cell]:
    """Run (or resume) every cell's study to its trial budget; return the best values per cell.

    ``before_work()`` is called before the first trial is run (the caller connects Ray and records the
    run there), so a rerun whose studies are all finished never starts Ray."""
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from .train import tuning_trainable

    tuning = space.tune
    out: dict[tuple[str, str], Cell] = {}
    for architecture, dataset in cells(space, architectures, datasets):
        study, storage = open_study(space, architecture, dataset, results_dir)
        left = trials_left(study, tuning.trials)
        default = default_point(space, dataset)
        print(f"stbench: tuning {architecture} on {dataset}: study {study.study_name}, "
              f"{len(finished(study))} of {tuning.trials} trials done, {left} to run")
        if left > 0:
            before_work()
            training = space.training_for(dataset).model_dump(exclude={"seeds"})
            training.update({k: v for k, v in (("epochs", tuning.epochs), ("train_limit", tuning.train_limit)) if v})
            cell = {"architecture": architecture, "dataset": dataset, "stage": "tune", "study": study.study_name,
                    "study_key": study.study_name.rsplit(".", 1)[-1], "seeds": tuning.seed_list(),
                    "model_options": dict(space.model_options.get(architecture, {})), "training": training}
            domains = {k: (tune.loguniform if r.log else tune.uniform)(r.low, r.high) for k, r in tuning.ranges().items()}
            start = [default] if not study.trials and default else None
            searcher = OptunaSearch(metric="objective", mode="max", storage=storage, study_name=study.study_name,
                                    points_to_evaluate=start, seed=tuning.sampler_seed + len(study.trials))
            scheduler = (tune.schedulers.ASHAScheduler(metric="objective", mode="max", max_t=training["epochs"],
                                                       grace_period=tuning.grace_period, time_attr="epoch")
                         if tuning.scheduler == "asha" else None)
            cpu, gpu = space.resources.cpu, space.resources.gpu
            tuner = tune.Tuner(
                tune.with_resources(tuning_trainable, {"cpu": cpu, "gpu": gpu}),
                param_space={"trial": cell, "data_dir": str(data_dir), "cpus": cpu, **domains},
                tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=left,
                                            max_concurrent_trials=tuning.max_concurrent, reuse_actors=True),
                run_config=tune.RunConfig(
                    name=f"{run_id}-tune-{architecture}-{dataset}",
                    storage_path=storage_path,
                    callbacks=callbacks_for(job_type="tune"),
                    failure_config=tune.FailureConfig(max_failures=space.max_failures),
                    progress_reporter=tune.CLIReporter(
                        parameter_columns=list(tuning.ranges()), max_report_frequency=20,
                        metric_columns={"epoch": "epoch", "val_acc": "val acc", "objective": "objective"}),
                    verbose=1 if verbose else 0,
                ),
            )
            tuner.fit()
            study, storage = open_study(space, architecture, dataset, results_dir)
        out[(architecture, dataset)] = summarise(study, architecture, dataset, default)
    return out


def summarise(study, architecture: str, dataset: str, default: dict) -> Cell:
    done = [t for t in finished(study) if t.value is not None]
    if not done:
        raise RuntimeError(f"tuning {architecture} on {dataset}: no trial of study {study.study_name} finished")
    best = max(done, key=lambda t: t.value)
    at_default = [t.value for t in done if default and t.params == default]
    return Cell(architecture, dataset, study.study_name, dict(best.params), best.value,
                at_default[0] if at_default else None, len(done))
