"""Every shipped search space validates and plans; the ones that fit this machine run end to end with the
shipped defaults (W&B offline, tuning on), shrunk only through ``--set`` overrides on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import CliResult, run_cli
from harness.plan import make_plan
from harness.space import SPACES_DIR, load_space
from harness.store import ResultsStore, verify

SHIPPED = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
SMALL = [s for s in SHIPPED if s in ("tiny", "quick", "tune_loc_lr_small") or s.endswith("_small")]


def test_the_small_spaces_are_the_ones_ci_runs():
    assert {"tiny", "quick", "tune_loc_lr_small", "paper_stn_distorted_small", "paper_coordconv_small"} <= set(SMALL)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_space_validates_and_plans(name, tmp_path, mnist_root):
    space, _ = load_space(name)
    plan = make_plan(space, select_by={}, results_dir=tmp_path / "r", data_dir=mnist_root, estimate=False)
    assert len(plan.trials) == len(space.trials()) > 0
    assert {t.state for t in plan.trials} == {"to run"}
    assert len({t.trial_id for t in plan.trials}) == len(plan.trials)


def shrink(name: str) -> list[str]:
    """``--set`` overrides that make a space's trials seconds long: one epoch (the tuning stage: two Optuna
    trials of one epoch), a few hundred images; every other setting, W&B and the tuning ranges as shipped."""
    space, _ = load_space(name)
    sets = []
    for dataset in space.datasets:
        for key, value in (("epochs", 1), ("train_limit", 384), ("val_size", 128), ("test_limit", 128)):
            sets += ["--set", f"datasets.{dataset}.{key}={value}"]
    if space.tune is not None:
        sets += ["--set", "tune.trials=2", "--set", "tune.epochs=1", "--set", "tune.train_limit=384"]
    return sets


def run_space(name: str, results: Path, data_dir: Path, *extra: str) -> CliResult:
    return run_cli(["--space", name, "--results-dir", results, "--data-dir", data_dir, "--max-concurrent", "2",
                    *shrink(name), *extra], timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("name", SMALL)
def test_small_space_runs_end_to_end_with_shipped_defaults(name, tmp_path, mnist_root):
    from wandb_offline import read_runs

    space, _ = load_space(name)
    assert space.wandb.mode == "offline"  # as shipped: the test must not need to change it
    results = tmp_path / "results"
    out = run_space(name, results, mnist_root)
    assert out.rc == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    # Nothing but our own lines (and Ray's one line about token authentication): no library's warnings. Tune's
    # "... took 0.6 s, which may be a performance bottleneck" depends on the machine's speed, not on behaviour.
    stray = [line for line in (out.stdout + out.stderr).splitlines()
             if line.strip() and not line.startswith(("stbench:", "Token authentication is enabled"))
             and "which may be a performance bottleneck" not in line]
    assert not stray, stray[:10]
    problems, counts = verify(results)
    assert not problems, problems
    trials = ResultsStore(results).trials()
    bench = trials[trials.stage == "benchmark"]
    # finished: a learning rate Optuna picked from the shipped range may make a one-epoch trial diverge, an end too
    assert len(bench) == len(space.trials()) and bench.status.isin(["complete", "diverged"]).all(), \
        bench[["trial_id", "status", "error"]]
    assert (bench.status == "complete").any()
    runs = read_runs(results / "wandb")
    bench_runs = [r for r in runs if r.run is not None and "tune" not in list(r.run.tags)]
    assert len(bench_runs) == len(bench)  # one offline W&B run per benchmark trial
    assert all(r.history and r.exited for r in bench_runs)
    if space.tune is not None:
        tune = trials[trials.stage == "tune"]
        assert len(tune) == 2 * len(space.tune.architectures) * len(space.datasets)
        assert tune.status.isin(["complete", "stopped", "diverged"]).all(), tune[["trial_id", "status", "error"]]
        tune_runs = [r for r in runs if r.run is not None and "tune" in list(r.run.tags)]
        assert len(tune_runs) == len(tune)  # tuning trials log to W&B too, named and tagged by their study
        for r in tune_runs:
            tags = list(r.run.tags)
            assert any(t.startswith("study=") for t in tags) and r.run.display_name.startswith("tune-")
        tuned = bench[bench.architecture.isin(space.tune.architectures)]
        assert len(tuned) and tuned.lr_tuned.all() and tuned.study.notna().all()
        assert all(json.loads(c)["tuned"] for c in tuned.config_json)
        assert not bench[~bench.index.isin(tuned.index)].lr_tuned.any()
