"""Shared fixtures: dataset folders (the real MNIST where present, else generated IDX files), one Ray, a
search-space builder and the researcher's command run as a subprocess."""

from __future__ import annotations

import copy
import itertools
import os
import struct
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

from harness.data.idx import UBYTE_TYPE

REPO = Path(__file__).resolve().parent.parent
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # tests start their own clusters; see shared/notes/ray-facts.md


def epoch_records(runner, epochs: int | None = None) -> list:
    """A runner's reports as plain dicts, epoch by epoch: for a one-seed runner the seed's record, for several
    seeds {seed: record}. ``epochs`` stops after that many reports (the runner stays resumable)."""
    out = []
    for per_seed in itertools.islice(runner.run(), epochs):
        dicts = {seed: r.as_dict() for seed, r in per_seed.items()}
        out.append(next(iter(dicts.values())) if len(runner.seeds) == 1 else dicts)
    return out


def write_idx(path: Path, array) -> None:
    """Write a uint8 array as an IDX file, the format of MNIST's raw files (Fashion-MNIST is not available offline)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, UBYTE_TYPE, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.tobytes())


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


# -- search spaces -----------------------------------------------------------------------------------
BASE_SPACE = {
    "name": "test",
    "architectures": ["convnet"],
    "training": {"epochs": 2, "lr": 0.05, "momentum": 0.5, "seeds": 1, "val_size": 300, "train_limit": 2000,
                 "test_limit": 300},
    "datasets": {"mnist": {}},
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def space_dict(*layers: dict, **overrides) -> dict:
    """``BASE_SPACE`` with each of ``layers``, then ``overrides``, merged in: a dict merges into a dict key by
    key, None deletes a key, anything else replaces it. ``space_dict(training={"epochs": 4})`` keeps the other
    training keys; a test file's own base is a layer: ``space_dict(RELIABILITY, training={"seeds": 1})``."""
    out = BASE_SPACE
    for layer in (*layers, overrides):
        out = _merge(out, layer)
    return out


def space_yaml(*layers: dict, **overrides) -> str:
    """A search-space YAML text (see ``space_dict``)."""
    return yaml.safe_dump(space_dict(*layers, **overrides), sort_keys=False)


# -- the command line as a subprocess ----------------------------------------------------------------
@dataclass
class CliResult:
    rc: int
    stdout: str
    stderr: str


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process, every descendant it still has, and whatever is left in its process group (a
    local Ray's raylet and workers), so a failing test leaves nothing running."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group the process led (start_new_session=True)
    except (ProcessLookupError, PermissionError):
        pass


def run_cli(args, *, env: dict | None = None, timeout: float = 600, script: str = "run_benchmark.py") -> CliResult:
    """``python run_benchmark.py ARGS`` from the repository root, in its own session with a fresh local Ray
    (``RAY_ADDRESS`` cleared), ended in any case: its process tree is killed when it times out or the test
    fails while it runs."""
    cmd = [sys.executable, *([script] if script else []), *map(str, args)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "RAY_ADDRESS": "", **(env or {})})
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        kill_tree(proc)
    return CliResult(proc.returncode, stdout, stderr)


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes, to assert that a refused run changed nothing."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
