"""Shared fixtures: dataset folders (the real MNIST where present, else generated IDX files) and one Ray."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from harness.data.idx import write_idx

REPO = Path(__file__).resolve().parent.parent
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # tests start their own clusters; see shared/notes/ray-facts.md


def write_fake_mnist(root: Path, folder: str = "MNIST", n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """Small IDX files in torchvision's layout: class k is a bright bar at row 2k+4, plus noise (learnable)."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"

    def make(n):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 * k + 4: 2 * k + 6, 4:24] = 255
        return images, labels

    for split, n in (("train", n_train), ("t10k", n_test)):
        images, labels = make(n)
        write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """The real MNIST from ../shared/datasets when present, else small generated IDX files."""
    if all((SHARED_DATASETS / "MNIST" / "raw" / f).is_file() for f in IDX_NAMES):
        return SHARED_DATASETS
    return write_fake_mnist(tmp_path_factory.mktemp("data"))


@pytest.fixture()
def fake_root(tmp_path) -> Path:
    """Generated MNIST and Fashion-MNIST folders (Fashion-MNIST is not available offline)."""
    write_fake_mnist(tmp_path, "MNIST")
    write_fake_mnist(tmp_path, "FashionMNIST", seed=1)
    return tmp_path


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session (start-up costs seconds); the driver reuses it."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield ray
    ray.shutdown()
