"""The added workloads: distorted MNIST, Not-so-Clevr regression (generators, loaders, one training step each)."""

import pytest
import torch

from harness.data import DATASETS
from harness.data.distorted import KINDS, distort
from harness.models import build_model
from harness.train import Trainer

ARCHS = ["convnet", "stnet", "coordconv", "stcoordconv"]


def _digits(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    images[:, 6:22, 12:16] = 255  # a bar: enough to see where it went
    return images | torch.randint(0, 30, (n, 28, 28), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("kind", list(KINDS))
def test_distortion_is_deterministic_and_batch_independent(kind, monkeypatch):
    images = _digits()
    a = distort(images, kind, torch.Generator().manual_seed(3))
    b = distort(images, kind, torch.Generator().manual_seed(3))
    monkeypatch.setattr("harness.data.distorted.BATCH", 7)
    c = distort(images, kind, torch.Generator().manual_seed(3))
    side = KINDS[kind]
    assert a.shape == (40, side, side) and a.dtype == torch.uint8
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(a, distort(images, kind, torch.Generator().manual_seed(4)))
    assert a.float().mean() > 5  # the digit survives the warp


def test_distortions_change_the_images():
    images = _digits()
    for kind in ("r", "p", "e"):
        assert (distort(images, kind, torch.Generator().manual_seed(0)).float() - images.float()).abs().mean() > 1


@pytest.mark.parametrize("name,side", [("mnist_r", 28), ("mnist_rts", 42), ("mnist_p", 28), ("mnist_e", 28)])
def test_distorted_loader_caches_and_trains_each_model(fake_root, monkeypatch, tmp_path, name, side):
    monkeypatch.setenv("STBENCH_CACHE_DIR", str(tmp_path / "cache"))
    dataset = DATASETS[name]
    dataset.prepare(fake_root, download=False)
    cached = list((tmp_path / "cache").glob(f"{name}-*.pt"))
    assert len(cached) == 1 and not list((tmp_path / "cache").glob("*.tmp"))
    splits = dataset.load(fake_root, val_size=100, train_limit=64, test_limit=50)
    again = dataset.load(fake_root, val_size=100, train_limit=64, test_limit=50)
    assert torch.equal(splits.train_x, again.train_x) and torch.equal(splits.test_y, again.test_y)
    assert splits.in_shape == (1, side, side) and splits.num_classes == 10
    assert len(splits.train_y) == 64 and len(splits.val_y) == 100 and len(splits.test_y) == 50
    assert dataset.split_sizes(fake_root) == (600, 200)
    for arch in ARCHS:
        _train_one_epoch(arch, name, splits)


def _train_one_epoch(arch, dataset, splits, **training):
    trial = {"architecture": arch, "dataset": dataset, "seed": 0, "model_options": {},
             "training": {"epochs": 1, "batch_size": 32, "optimizer": "sgd", "lr": 0.01, "momentum": 0.5,
                          "weight_decay": 0.0, **training}}
    metrics = list(Trainer(trial, splits).run())[-1]
    assert metrics["status"] == "complete" and 0 <= metrics["test_acc"] <= 1
    return metrics


def test_distorted_cache_falls_back_when_the_data_folder_is_read_only(tmp_path, monkeypatch):
    from harness.data.distorted import cache_dir

    monkeypatch.delenv("STBENCH_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir(tmp_path) == tmp_path / "stbench-cache"
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert cache_dir(ro) == tmp_path / "home" / ".cache" / "stbench"
    finally:
        ro.chmod(0o755)
