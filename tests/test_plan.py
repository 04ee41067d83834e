"""``stbench plan`` before the data is there, and read-only on the store (issue 23)."""

from __future__ import annotations

from harness.cli import stbench
from harness.data import DATASETS
from harness.plan import published_train_size
from harness.store import ResultsStore


def test_plan_without_the_data_estimates_from_declared_shapes_and_says_so_on_its_own_line(tmp_path, capsys):
    empty = tmp_path / "no-data"
    empty.mkdir()
    assert stbench(["plan", "--space", "tiny", "--data-dir", str(empty), "--results-dir", str(tmp_path / "r")]) == 0
    lines = capsys.readouterr().out.splitlines()
    estimate = [ln for ln in lines if ln.startswith("estimate:")]
    assert len(estimate) == 1 and estimate[0].startswith("estimate: about") and "CPU" in estimate[0], lines
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
