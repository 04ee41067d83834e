"""Optuna tuning of the localization-network learning rate: real studies through Ray Tune, resumable."""

import pytest

from analysis.load import load
from harness.errors import UserError
from harness.space import parse_space
from harness.store import ResultsStore, verify
from harness.tuning import default_point, finished, open_study, study_name
from conftest import space_yaml
from test_reliability import running, wait_for

TUNING = {"name": "tune-test", "architectures": ["convnet", "stnet"], "training": {"train_limit": 600},
          "wandb": {"mode": "disabled"},
          "tune": {"trials": 4, "seeds": 2, "loc_lr": {"low": 1.0e-4, "high": 1.0e-1}, "max_concurrent": 1}}
SPACE = space_yaml(TUNING)


def test_schema_of_the_tuning_section():
    space = parse_space(SPACE)
    assert space.tune.architectures == ["stnet"] and space.tune.seed_list() == [1000, 1001]
    assert default_point(space, "mnist") == {"loc_lr": 0.05}
    for bad, message in [
        ({"loc_lr_mult": {"low": 0.01, "high": 1}}, "give exactly one of loc_lr"),
        ({"architectures": ["convnet"]}, "convnet has no localization network to tune"),
        ({"scheduler": "hyperband"}, "tune.scheduler: 'hyperband' is not allowed; allowed: none, asha"),
        ({"loc_lr": {"low": 1, "high": 0.5}}, "tune.loc_lr: low must be below high"),
    ]:
        with pytest.raises(UserError, match=message):
            parse_space(space_yaml(TUNING, tune=bad))


def test_study_identity_follows_what_it_optimises():
    space = parse_space(SPACE)
    same = parse_space(space_yaml(TUNING, tune={"trials": 9}))  # a bigger budget continues the same study
    other = parse_space(space_yaml(TUNING, tune={"seeds": 3}))
    assert study_name(space, "stnet", "mnist") == study_name(same, "stnet", "mnist")
    assert study_name(space, "stnet", "mnist") != study_name(other, "stnet", "mnist")
    # a fast-path switch at its default keeps the study (as it keeps trial ids); switched on, it is another study
    default_switch = parse_space(space_yaml(TUNING, training={"precision": "fp32"}))
    switched_on = parse_space(space_yaml(TUNING, training={"channels_last": True}))
    assert study_name(default_switch, "stnet", "mnist") == study_name(space, "stnet", "mnist")
    assert study_name(switched_on, "stnet", "mnist") != study_name(space, "stnet", "mnist")


def test_trials_a_killed_run_left_running_are_failed_and_never_resumed(tmp_path):
    import optuna

    space = parse_space(SPACE)
    study, _ = open_study(space, "stnet", "mnist", ResultsStore.open(tmp_path).optuna_url())
    done = study.ask()
    study.tell(done, 0.5)
    interrupted = study.ask()  # what a SIGKILLed driver leaves behind: a trial forever RUNNING
    study, _ = open_study(space, "stnet", "mnist", ResultsStore.open(tmp_path).optuna_url())
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert states == {done.number: optuna.trial.TrialState.COMPLETE, interrupted.number: optuna.trial.TrialState.FAIL}
    assert [t.number for t in finished(study)] == [done.number]


@pytest.mark.slow
def test_tuning_is_interrupted_resumed_and_the_benchmark_uses_the_best_value(tmp_path, mnist_root):
    space_file = tmp_path / "tune.yaml"
    space_file.write_text(SPACE)
    space = parse_space(SPACE)
    results = tmp_path / "results"

    def finished_trials():  # read the store, not the study: only the driver touches Optuna's storage while it runs
        if not (results / "trials").exists():  # Tune tells Optuna a trial finished before the store hears of it
            return 0
        trials = ResultsStore(results).trials()
        return int(((trials.stage == "tune") & (trials.status == "complete")).sum())

    with running(space_file, results, mnist_root) as proc:
        wait_for(lambda: finished_trials() >= 1, proc, timeout=180)
    study, _ = open_study(space, "stnet", "mnist", ResultsStore(results).optuna_url())  # marks the trial the kill interrupted as failed
    before = {t.number: t.params for t in finished(study)}
    assert 1 <= len(before) < 4

    with running(space_file, results, mnist_root) as proc:
        assert proc.wait(timeout=300) == 0
    study, _ = open_study(space, "stnet", "mnist", ResultsStore(results).optuna_url())
    done = finished(study)
    assert len(done) == 4  # the study continued to its budget
    assert {t.number: t.params for t in done if t.number in before} == before  # earlier trials kept as they were
    params = [t.params["loc_lr"] for t in done]
    assert len(set(params)) == len(params)  # no trial repeated
    assert params.count(0.05) == 1  # the untuned default was evaluated once, as the first trial
    assert len(study.trials) >= 4

    store = ResultsStore(results)
    trials = store.trials()
    bench = trials[trials.stage == "benchmark"].set_index("architecture")
    best = max(done, key=lambda t: t.value).params["loc_lr"]
    assert bench.loc["stnet", "lr_tuned"] and bench.loc["stnet", "loc_lr"] == pytest.approx(best)
    assert bench.loc["stnet", "study"] == study.study_name
    assert not bench.loc["convnet", "lr_tuned"] and bench.loc["convnet", "loc_lr"] == 0.05
    tune_rows = trials[trials.stage == "tune"]
    assert len(tune_rows) >= 4 and set(tune_rows.study) == {study.study_name}
    assert verify(results)[0] == []
    analysed = load(results)
    assert set(analysed.trials.architecture) == {"convnet", "stnet"} and len(analysed.trials) == 2
    assert any("tune trial(s)" in note for note in analysed.notes)


@pytest.mark.slow
def test_asha_stops_poor_trials_and_lr_with_loc_lr_mult_reach_the_benchmark(ray_local, tmp_path, mnist_root):
    from harness.cli import main

    space_file = tmp_path / "asha.yaml"
    space_file.write_text(space_yaml(
        TUNING, {"tune": {"loc_lr": None}}, architectures=["stnet"], training={"epochs": 3, "train_limit": 300},
        tune={"trials": 4, "seeds": 1, "scheduler": "asha", "grace_period": 1,
              "lr": {"low": 1.0e-3, "high": 0.3, "log": True}, "loc_lr_mult": {"low": 0.01, "high": 1.0, "log": True}}))
    results = tmp_path / "results"
    argv = ["--space", str(space_file), "--results-dir", str(results), "--data-dir", str(mnist_root), "--quiet"]
    assert main(argv) == 0

    space = parse_space(space_file.read_text())
    study, _ = open_study(space, "stnet", "mnist", ResultsStore(results).optuna_url())
    assert all(set(t.params) == {"lr", "loc_lr_mult"} for t in study.trials)
    for t in study.trials:
        assert 1.0e-3 <= t.params["lr"] <= 0.3 and 0.01 <= t.params["loc_lr_mult"] <= 1.0
    trials = ResultsStore(results).trials()
    tune = trials[trials.stage == "tune"]
    assert len(tune) == 4 and set(tune.status) <= {"complete", "stopped"}
    stopped = tune[tune.status == "stopped"]
    assert len(stopped) >= 1 and (stopped.epochs_completed < 3).all()  # ASHA cut them at a rung
    assert (tune[tune.status == "complete"].epochs_completed == 3).all()

    (bench,) = trials[trials.stage == "benchmark"].itertuples()
    best = max((t for t in finished(study) if t.value is not None), key=lambda t: t.value).params
    assert bench.lr_tuned and bench.study == study.study_name and bench.status == "complete"
    assert bench.lr == pytest.approx(best["lr"]) and bench.loc_lr == pytest.approx(best["lr"] * best["loc_lr_mult"])
    assert verify(results)[0] == []
