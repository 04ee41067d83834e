"""W&B: one offline run per trial that matches the store; and W&B failing never costs a result."""

import pytest

from conftest import space_yaml
from harness.cli import main
from harness.store import ResultsStore, verify
from wandb_offline import read_runs

SPACE = space_yaml(name="wandb-e2e", architectures=["convnet", "stnet"],
                   training={"val_size": 200, "train_limit": 300, "test_limit": 200},
                   wandb={"mode": "offline", "project": "stbench-tests", "init_timeout_s": 5})


@pytest.fixture()
def space_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return path


@pytest.mark.slow
def test_offline_runs_one_per_trial_with_config_tags_and_history(ray_local, space_file, tmp_path, mnist_root):
    results = tmp_path / "results"
    assert main(["--space", str(space_file), "--results-dir", str(results), "--data-dir", str(mnist_root), "--quiet"]) == 0
    store = ResultsStore(results)
    trials, epochs = store.trials().set_index("trial_id"), store.epochs()
    run_id = store.runs().run_id.item()

    runs = read_runs(results / "wandb")
    assert len(runs) == len(trials) == 2
    for run in runs:
        trial = run.config["trial"]
        (trial_id,) = trial["ids"].values()  # one seed per trial here: its store id
        row = trials.loc[trial_id]
        assert run.run.project == "stbench-tests" and run.run.run_group == run_id and run.run.job_type == "benchmark"
        assert set(run.run.tags) == {row.architecture, row.dataset, f"seed={row.seed}"}
        assert run.run.display_name == f"{row.architecture}-{row.dataset}-s{row.seed}"
        assert trial["training"]["lr"] == 0.05 and trial["architecture"] == row.architecture
        stored = epochs[epochs.trial_id == trial_id].set_index("epoch")
        logged = {h["epoch"]: h for h in run.history if "epoch" in h}
        assert sorted(logged) == sorted(stored.index) == [1, 2]
        for epoch, h in logged.items():
            for metric in ("train_loss", "train_acc", "val_loss", "val_acc", "train_eval_acc", "images_per_s"):
                assert h[metric] == pytest.approx(stored.loc[epoch, metric])
        assert run.summary["test_acc"] == pytest.approx(row.test_acc) and run.summary["num_params"] == row.num_params


@pytest.mark.slow
def test_w_and_b_failing_never_costs_a_result(ray_local, space_file, tmp_path, mnist_root, monkeypatch, capsys):
    key = "k" * 40
    monkeypatch.setenv("WANDB_API_KEY", key)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    results = tmp_path / "results"
    argv = ["--space", str(space_file), "--results-dir", str(results), "--data-dir", str(mnist_root), "--quiet",
            "--wandb-mode", "online"]
    assert main(argv) == 0
    out = capsys.readouterr()
    warnings = [line for line in out.err.splitlines() if line.startswith("stbench: warning: W&B")]
    assert len(warnings) == 1 and "W&B logging failed for trial" in warnings[0] and "CommError" in warnings[0], out.err
    assert key not in out.err + out.out
    store = ResultsStore(results)
    assert set(store.trials().status) == {"complete"} and len(store.epochs()) == 4 and verify(results)[0] == []
    assert not [p for p in results.rglob("*") if p.is_file() and key.encode() in p.read_bytes()]


def test_online_without_credentials_falls_back_to_offline(monkeypatch, tmp_path, capsys):
    from harness.tracking import WandbSettings, effective_mode

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    assert effective_mode(WandbSettings(mode="online")) == "offline"
    assert "no credentials were found" in capsys.readouterr().err
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert effective_mode(WandbSettings(mode="online")) == "online"
    assert effective_mode(WandbSettings(mode="disabled")) == "disabled"


def test_report_is_logged_to_a_w_and_b_run_of_its_own(tmp_path, capsys):
    from analysis.report import main as report_main
    from test_analysis import Synth

    synth = Synth(tmp_path / "store")
    for arch, acc in (("convnet", 0.9), ("stnet", 0.92)):
        for seed in range(3):
            synth.trial(arch, seed, [acc - 0.1, acc + 0.01 * seed])
    out = tmp_path / "report"
    assert report_main(["--results-dir", str(synth.root), "--out", str(out), "--no-checkpoints", "--wandb"]) == 0
    assert "logged to W&B (offline)" in capsys.readouterr().out
    (run,) = read_runs(out)
    assert run.run.job_type == "report" and run.run.project == "stbench"
    logged = {k: v for h in run.history for k, v in h.items()}
    assert logged["table/accuracy/_type"] == "table-file" and logged["table/accuracy/nrows"] == 2
    figures = sorted((out / "figures").glob("*.png"))
    assert figures and all(logged[f"figure/{p.stem}/_type"] == "image-file" for p in figures)
    assert "accuracy" in run.summary["report_markdown"].lower()


def test_the_logging_actor_class_loads_without_ray_or_torch():
    """Ray imports the actor class's module in the logging process: it must not pull Ray Tune or torch in there
    (seconds of CPU beside the first trial's start-up)."""
    import subprocess
    import sys

    code = ("import sys, harness.wandb_writer; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'torch', 'wandb', 'pandas', 'numpy'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
