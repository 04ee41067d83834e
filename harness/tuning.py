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

from .space import SearchSpace
from .trial import Stage, Trial, identity_training


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


def study_name(space: SearchSpace, architecture: str, dataset: str) -> str:
    """Changes whenever what the study optimises changes (ranges, seeds, epochs, the cell's training)."""
    key = {"tune": space.tune.model_dump(exclude={"trials", "max_concurrent", "architectures"}),
           "training": identity_training(space.training_for(dataset).settings()),
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
            point[name] = training.settings().effective_loc_lr
        elif name == "loc_lr_mult":
            point[name] = training.loc_lr_mult or (training.loc_lr / training.lr if training.loc_lr else 1.0)
        else:
            point[name] = training.lr
    ranges = space.tune.ranges()
    inside = all(ranges[k].low <= v <= ranges[k].high for k, v in point.items())
    return point if inside else {}


def open_study(space: SearchSpace, architecture: str, dataset: str, storage_url: str):
    """The cell's study, created if new; trials a killed run left RUNNING are marked FAIL (never resumed)."""
    import optuna  # lazy: plan imports this module and must not load Ray or Optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(storage_url)
    study = optuna.create_study(study_name=study_name(space, architecture, dataset), storage=storage,
                                direction="maximize", load_if_exists=True)
    for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING]):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
    return study, storage


def finished(study) -> list:
    import optuna  # lazy: plan imports this module and must not load Ray or Optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return [t for t in study.get_trials(deepcopy=False) if t.state in done]


def trials_left(study, budget: int) -> int:
    return max(budget - len(finished(study)), 0)


def tuning_trial(space: SearchSpace, architecture: str, dataset: str, study: str) -> Trial:
    """The cell as one tuning trial: the study's seeds, the tuning stage's epochs and training subset."""
    tuning = space.tune
    training = space.training_for(dataset).settings()
    training = training.replace(**{k: v for k, v in (("epochs", tuning.epochs), ("train_limit", tuning.train_limit)) if v})
    return Trial(architecture=architecture, dataset=dataset, seeds=tuple(tuning.seed_list()), training=training,
                 model_options=dict(space.model_options.get(architecture, {})), stage=Stage.TUNE, study=study)


def search(space: SearchSpace, study, storage, trial: Trial, default: dict):
    """What a tuning Tuner adds to a benchmark one: the sampled domains, Optuna's searcher (the untuned
    default first, in a new study) and, if asked for, ASHA."""
    from ray import tune  # lazy: plan imports this module and must not load Ray or Optuna
    from ray.tune.search.optuna import OptunaSearch

    tuning = space.tune
    domains = {k: (tune.loguniform if r.log else tune.uniform)(r.low, r.high) for k, r in tuning.ranges().items()}
    start = [default] if not study.trials and default else None
    searcher = OptunaSearch(metric="objective", mode="max", storage=storage, study_name=study.study_name,
                            points_to_evaluate=start, seed=tuning.sampler_seed + len(study.trials))
    scheduler = (tune.schedulers.ASHAScheduler(metric="objective", mode="max", max_t=trial.training.epochs,
                                               grace_period=tuning.grace_period, time_attr="epoch")
                 if tuning.scheduler == "asha" else None)
    return domains, searcher, scheduler


def summarise(study, architecture: str, dataset: str, default: dict) -> Cell:
    done = [t for t in finished(study) if t.value is not None]
    if not done:
        raise RuntimeError(f"tuning {architecture} on {dataset}: no trial of study {study.study_name} finished")
    best = max(done, key=lambda t: t.value)
    at_default = [t.value for t in done if default and t.params == default]
    return Cell(architecture, dataset, study.study_name, dict(best.params), best.value,
                at_default[0] if at_default else None, len(done))
