"""The researcher's path, for real: run_benchmark.py → Ray Tune → Parquet store."""

import pytest

from conftest import run_cli, space_yaml
from harness.cli import main
from harness.contract import Checkpoint
from harness.models import build_model
from harness.store import TMP_PREFIX, ResultsStore

TINY = space_yaml(name="e2e", architectures=["convnet", "stcoordconv"],
                  training={"seeds": 2, "val_size": 200, "train_limit": 300, "test_limit": 200})


@pytest.fixture()
def space_file(tmp_path):
    path = tmp_path / "e2e.yaml"
    path.write_text(TINY)
    return path


def snapshot(root):
    return {p.relative_to(root): p.stat().st_mtime_ns for p in root.rglob("*")
            if p.is_file() and "ray" not in p.relative_to(root).parts and p.name != ".lock"}


@pytest.mark.slow
def test_benchmark_runs_through_ray_tune_and_fills_the_store(ray_local, space_file, tmp_path, mnist_root, capsys):
    results = tmp_path / "results"
    argv = ["--space", str(space_file), "--results-dir", str(results), "--data-dir", str(mnist_root), "--quiet"]
    assert main(argv) == 0

    store = ResultsStore.open(results, create=False)
    trials, epochs = store.trials(), store.epochs()
    assert len(trials) == 4 and set(trials.status) == {"complete"}
    assert set(zip(trials.architecture, trials.seed)) == {(a, s) for a in ("convnet", "stcoordconv") for s in (0, 1)}
    assert len(epochs) == 4 * 2 and not epochs.duplicated(["trial_id", "epoch"]).any()
    assert all(sorted(e) == [1, 2] for _, e in epochs.groupby("trial_id").epoch)
    assert trials.test_acc.between(0, 1).all()
    assert (trials.num_params == trials.architecture.map({"convnet": 21_840, "stcoordconv": 28_860})).all()
    assert trials.torch_version.notna().all() and trials.hostname.notna().all() and trials.node_id.notna().all()
    assert (trials.train_time_s > 0).all() and epochs.images_per_s.gt(0).all()
    assert store.runs().space.tolist() == ["e2e"] and "name: e2e" in store.runs().space_yaml[0]
    assert not list(results.rglob(f"{TMP_PREFIX}*"))

    # the best-validation weights are kept, loadable without unpickling code
    saved = Checkpoint.load(store.checkpoint_path(trials.trial_id[0]))  # torch.load(weights_only=True) inside
    spec = saved.model_spec
    model = build_model(spec["architecture"], spec["in_shape"], spec["num_classes"], **spec["model_options"])
    model.load_state_dict(saved.seed_weights["state_dict"])

    # rerunning the same command finds everything done and writes nothing
    before = snapshot(results)
    capsys.readouterr()
    assert main(argv) == 0
    assert "4 of 4 trials already in the store" in capsys.readouterr().out
    assert snapshot(results) == before


@pytest.mark.slow
def test_cli_filters_run_a_subset_and_a_rerun_adds_the_rest(ray_local, space_file, tmp_path, mnist_root):
    results = tmp_path / "results"
    base = ["--space", str(space_file), "--results-dir", str(results), "--data-dir", str(mnist_root), "--quiet"]
    assert main(base + ["--architectures", "convnet", "--seeds", "1"]) == 0
    assert ResultsStore(results).trials()[["architecture", "seed"]].values.tolist() == [["convnet", 1]]
    assert main(base + ["--architectures", "convnet"]) == 0
    trials = ResultsStore(results).trials()
    assert sorted(trials.seed) == [0, 1] and trials.trial_id.is_unique
    assert len(ResultsStore(results).epochs()) == 4


@pytest.mark.parametrize("extra,expected", [
    (["--space", "nope"], "--space: no search space named 'nope'"),
    (["--architectures", "resnet"], "--architectures: resnet not in the search space; allowed: convnet, stcoordconv"),
    (["--seeds", "5"], "--seeds: 5 not in the search space; allowed: 0, 1"),
    (["--data-dir", "{tmp}/empty", "--no-download"], "mnist: no IDX files in"),
    (["--results-dir", "{tmp}/afile"], "is a file, not a directory"),
    (["--max-concurrent", "0"], "--max-concurrent: must be ≥ 1"),
])
def test_bad_command_lines_fail_in_one_line_before_ray_starts(space_file, tmp_path, mnist_root, capsys, extra, expected):
    (tmp_path / "afile").write_text("")
    argv = ["--space", str(space_file), "--results-dir", str(tmp_path / "r"), "--data-dir", str(mnist_root)]
    argv += [a.format(tmp=tmp_path) for a in extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err.splitlines()[0]
    assert err.count("\n") == 1 + (extra[0] == "--space")  # the shipped spaces are listed on a line of their own
    assert not (tmp_path / "r" / "epochs").exists() or not any((tmp_path / "r" / "epochs").iterdir())


def test_help_explains_every_option():
    done = run_cli(["--help"], timeout=120)
    assert done.rc == 0
    out = done.stdout
    for option in ("--space", "--results-dir", "--data-dir", "--address", "--max-concurrent", "STBENCH_DATA_DIR"):
        assert option in out
