"""The ``stbench`` command: subcommands, ``--set`` overrides, ``plan`` (no Ray), and what a run records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from harness.cli import stbench
from harness.errors import UserError
from harness.space import apply_overrides, load_space


def test_help_lists_the_four_commands(capsys):
    assert stbench(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("run", "plan", "report", "verify"):
        assert f"  {command} " in out


def test_unknown_command_is_one_line(capsys):
    assert stbench(["frobnicate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "allowed: run, plan, report, verify" in err[0]


def test_set_overrides_apply_before_validation():
    space, _ = load_space("quick", overrides=["training.epochs=1", "datasets.mnist.lr=0.02", "resources.gpu=0.25",
                                              "training.seeds=[3, 5]"])
    assert space.training_for("mnist").epochs == 1
    assert space.training_for("mnist").lr == 0.02
    assert space.resources.gpu == 0.25
    assert sorted(t.seed for t in space.trials()) == [3, 3, 3, 3, 5, 5, 5, 5]


@pytest.mark.parametrize("override, field", [
    ("training.nosuchkey=1", "training.nosuchkey: unknown key"),
    ("training.epochs=0", "training.epochs"),
    ("training.optimizer=rmsprop", "training.optimizer"),
    ("datasets.fashion_mnist.lr=0.1", "datasets.fashion_mnist is not in the space"),
    ("training.epochs", "expected KEY=VALUE"),
    ("training.lr.low=1", "training.lr is not a mapping"),
])
def test_bad_override_is_the_same_one_line_error_as_bad_yaml(override, field):
    with pytest.raises(UserError) as e:
        load_space("quick", overrides=[override])
    assert field in str(e.value) and "\n" not in str(e.value)


def test_overrides_never_change_the_parsed_mapping():
    raw = {"training": {"epochs": 3}}
    assert apply_overrides(raw, ["training.epochs=1"]) == {"training": {"epochs": 1}}
    assert raw == {"training": {"epochs": 3}}


def test_plan_lists_the_trials_without_ray(mnist_root, tmp_path, capsys):
    rc = stbench(["plan", "--space", "quick", "--data-dir", str(mnist_root), "--results-dir", str(tmp_path / "r"),
                  "--json"])
    assert rc == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["counts"] == {"done": 0, "to run": 8, "failed": 0}
    assert {(t["architecture"], t["seed"]) for t in plan["trials"]} == {
        (a, s) for a in ("convnet", "stnet", "coordconv", "stcoordconv") for s in (0, 1)}
    assert plan["wall_s"] > 0 and "calibration" in plan["estimate_source"]
    assert all(t["seconds"] > 0 for t in plan["trials"])
    assert not (tmp_path / "r").exists()  # planning writes nothing

    stbench(["plan", "--space", "quick", "--data-dir", str(mnist_root), "--results-dir", str(tmp_path / "r"),
             "--json", "--set", "training.epochs=1", "--set", "training.seeds=1"])
    one = json.loads(capsys.readouterr().out)
    assert one["counts"]["to run"] == 4 and all(t["epochs"] == 1 for t in one["trials"])


def test_plan_never_starts_ray(mnist_root, tmp_path):
    code = ("import sys; from harness.cli import stbench; rc = stbench(sys.argv[1:]); import ray; "
            "print('RAY', ray.is_initialized(), 'RC', rc)")
    out = run_cli(["-c", code, "plan", "--space", "quick", "--data-dir", mnist_root, "--results-dir", tmp_path / "r"],
                  script="", timeout=300)
    assert "RAY False RC 0" in out.stdout, out.stderr


def test_plan_bad_override_exits_2_in_one_line(tmp_path):
    out = run_cli(["-m", "harness", "plan", "--space", "quick", "--set", "training.nosuchkey=1",
                   "--results-dir", tmp_path / "r"], script="", timeout=120)
    assert out.rc == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "training.nosuchkey: unknown key" in lines[0]
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_run_records_overrides_and_plan_sees_the_store(mnist_root, tmp_path, capsys):
    """A real run through ``stbench run`` with overrides: the runs table records them, the planned trials
    and the data directory; ``plan`` then finds every trial done and estimates from the stored epochs."""
    from harness.store import ResultsStore

    results = tmp_path / "results"
    args = ["--space", "tiny", "--data-dir", str(mnist_root), "--results-dir", str(results),
            "--set", "training.epochs=1", "--set", "training.train_limit=256", "--set", "training.val_size=128"]
    out = run_cli(["-m", "harness", "run", *args, "--wandb-mode", "disabled"], script="")
    assert out.rc == 0, out.stderr[-3000:]
    assert "trials done" in out.stdout  # the progress line
    store = ResultsStore(results)
    run = store.runs().iloc[0]
    assert json.loads(run.overrides_json) == ["training.epochs=1", "training.train_limit=256", "training.val_size=128"]
    assert Path(run.data_dir) == Path(mnist_root).resolve()
    from harness.data.distorted import cache_dir

    # where generated datasets are kept, so that the report reads the same files back
    assert json.loads(run.provenance_json)["cache_dir"] == str(cache_dir(mnist_root))
    planned = json.loads(run.planned_json)
    assert sorted(p["trial_id"] for p in planned) == sorted(store.trials().trial_id)
    assert (store.epochs().groupby("trial_id").epoch.max() == 1).all()

    assert stbench(["plan", *args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["counts"] == {"done": 2, "to run": 0, "failed": 0}
    assert stbench(["plan", *args[:-6], "--json", "--set", "training.epochs=2"]) == 0  # same cells, new identity
    plan = json.loads(capsys.readouterr().out)
    assert plan["counts"]["to run"] == 2 and "store" in plan["estimate_source"]


def test_progress_line_counts_trials_and_epochs_and_stops_the_eta_when_all_ended():
    import io

    from harness.durations import duration
    from harness.progress import ProgressCallback

    p = ProgressCallback("benchmark", total_trials=3, total_epochs=9, stream=io.StringIO())
    p.first_result, p.epochs, p.done, p.running = p.started, {"a": 3, "b": 1}, {"a"}, {"b"}
    line = p.line()
    assert "1/3 trials done, 1 running, 1 waiting; 4/9 epochs" in line and "ETA" in line
    p.done, p.running = {"a", "b", "c"}, set()  # e.g. ASHA stopped two of them early
    assert "3/3 trials done" in p.line() and "ETA" not in p.line()
    assert [duration(s) for s in (5, 75, 3725)] == ["5 s", "1 min 15 s", "1 h 02 min"]


@pytest.mark.slow
def test_a_run_keeps_heavy_imports_out_of_the_driver(tmp_path, mnist_root):
    """The driver's CPU is part of the harness's share: TensorBoard's logger is left out (W&B is the dashboard)
    and torchvision (~1 CPU-s to import) is imported only where data is downloaded; Tune's own result.json, which
    its end-of-fit analysis reads, is still written."""
    code = ("import sys; from harness.cli import stbench; "
            f"rc = stbench(['run', '--space', 'tiny', '--results-dir', {str(tmp_path / 'r')!r}, "
            f"'--data-dir', {str(mnist_root)!r}, '--quiet']); "
            "print('RC', rc, 'TBX', 'tensorboardX' in sys.modules, 'TV', 'torchvision' in sys.modules)")
    out = run_cli(["-c", code], script="")
    assert "RC 0 TBX False TV False" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    assert list((tmp_path / "r" / "ray").glob("*/*/result.json"))
