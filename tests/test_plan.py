"""``stbench plan`` before the data is there, and read-only on the store (issue 23)."""

from __future__ import annotations

import json

from harness.cli import stbench
from harness.data import DATASETS
from harness.plan import describe_cluster, published_train_size, run_hardware, same_hardware
from harness.space import load_space
from harness.store import ResultsStore


def test_plan_without_the_data_estimates_from_declared_shapes_and_says_so_on_its_own_line(tmp_path, capsys):
    empty = tmp_path / "no-data"
    empty.mkdir()
    assert stbench(["plan", "--space", "tiny", "--data-dir", str(empty), "--results-dir", str(tmp_path / "r")]) == 0
    lines = capsys.readouterr().out.splitlines()
    estimate = [ln for ln in lines if ln.startswith("estimate:")]
    assert len(estimate) == 1 and estimate[0].startswith("estimate: about"), lines
    assert estimate[0].endswith("of this machine") and lines[lines.index(estimate[0]) + 1].startswith("it holds for CPU ")
    missing = [ln for ln in lines if ln.startswith("note: data not found for mnist (cannot read dataset file")]
    assert len(missing) == 1 and "published 60,000 training images" in missing[0], lines
    assert not (tmp_path / "r").exists() and list(empty.iterdir()) == []  # nothing written, nothing downloaded


def test_published_sizes_are_the_official_training_splits():
    assert published_train_size(DATASETS["mnist"]) == 60_000
    assert published_train_size(DATASETS["fashion_mnist"]) == 60_000
    assert published_train_size(DATASETS["mnist_rts"]) == 60_000  # MNIST's, distorted
    assert published_train_size(DATASETS["cub200"]) == 5_994


def test_plan_reads_the_store_s_optuna_studies_without_creating_anything(tmp_path, mnist_root, capsys):
    store = ResultsStore.open(tmp_path / "r")
    assert stbench(["plan", "--space", "tune_loc_lr_small", "--data-dir", str(mnist_root), "--results-dir",
                    str(store.root), "--json"]) == 0
    capsys.readouterr()
    assert not store.optuna_path.parent.exists()
    assert store.optuna_url(create=False) == f"sqlite:///{store.optuna_path}"


def _gpu_store(root, model="NVIDIA H200", images_per_s=10_000.0, eval_time_s=0.05):
    """A store whose tiny-space trials (under other ids) ran on ``model``: epoch times the plan can scale."""
    store = ResultsStore.open(root)
    for t in load_space("tiny")[0].trials():
        trial_id = f"gpu-{t.trial_id}"
        store.put_trial({"trial_id": trial_id, "run_id": "r", "architecture": t.architecture, "dataset": t.dataset,
                         "seed": t.seed, "stage": "benchmark", "status": "complete", "device": "cuda:0",
                         "gpu_model": model, "cpu_model": "some CPU",
                         "config_json": json.dumps(t.record(), sort_keys=True, default=str)})
        store.put_epochs(trial_id, [{"trial_id": trial_id, "run_id": "r", "architecture": t.architecture,
                                     "dataset": t.dataset, "seed": t.seed, "stage": "benchmark", "epoch": e,
                                     "images_per_s": images_per_s, "eval_time_s": eval_time_s} for e in (1, 2)])
    return store.root


def test_plan_for_a_gpu_scales_the_store_s_epochs_of_that_gpu_and_says_for_which_it_holds(tmp_path, capsys):
    root = _gpu_store(tmp_path / "r")
    args = ["plan", "--space", "tiny", "--gpu", "1", "--data-dir", str(tmp_path), "--results-dir", str(root)]
    assert stbench([*args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["hardware"] == "GPU NVIDIA H200" and plan["runs_on"] == "this machine"
    # tiny: 2 epochs of 1,000 training images at 10,000 images/s, plus 2 × 500 evaluated at 0.05 s per 500
    assert {t["seconds"] for t in plan["trials"]} == {2 * (1000 / 10_000 + 1000 * 0.05 / 1000)}
    assert stbench(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "it holds for GPU NVIDIA H200: epoch times from GPU NVIDIA H200's epochs already in the store" in lines
    assert any(ln.startswith("note: this machine has no GPU: the times are scaled from the store's epochs on GPU "
                             "NVIDIA H200") for ln in lines), lines


def test_a_clusters_gpus_are_matched_to_stored_epochs_by_rays_accelerator_type():
    nodes = [{"Resources": {"CPU": 0.0, "node:1": 1.0}},  # the head schedules only
             {"Resources": {"CPU": 16.0, "GPU": 2.0, "accelerator_type:H200": 1.0}},
             {"Resources": {"CPU": 16.0, "GPU": 2.0, "accelerator_type:H200": 1.0}}]
    cluster = describe_cluster("10.0.0.1:6379", nodes)
    assert (cluster.cpus, cluster.gpus, cluster.gpu_models) == (32.0, 4.0, ("H200",))
    assert cluster.where == "the Ray cluster at 10.0.0.1:6379: 3 node(s), 32 CPUs, 4 GPUs (H200)"
    assert run_hardware("cuda", cluster) == ["GPU H200"] and run_hardware("cpu", cluster) == []  # CPU model unknown
    assert same_hardware("GPU NVIDIA H200", "GPU H200") and same_hardware("CPU AMD EPYC", "CPU AMD EPYC")
    assert not same_hardware("GPU NVIDIA H100 80GB HBM3", "GPU H200") and not same_hardware("CPU H200", "GPU H200")


def test_plan_loads_no_ray(tmp_path):
    """Planning happens before a cluster is booked: it reads the store and the space, never Ray Tune (whose
    import was 0.9 s of a plan's start-up, through the progress line's duration format)."""
    import subprocess
    import sys

    empty = tmp_path / "no-data"
    empty.mkdir()
    code = ("import sys; from harness.cli import stbench; "
            f"rc = stbench(['plan', '--space', 'tiny', '--data-dir', {str(empty)!r}, '--results-dir', {str(tmp_path / 'r')!r}]); "
            "print(rc, sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'optuna', 'wandb'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "0 []", out
