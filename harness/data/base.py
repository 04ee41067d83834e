"""What every dataset hands the trainer, and where datasets live on disk."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol, runtime_checkable

import torch
from torch.utils.data import DataLoader
import torch.utils.data

from ..tasks import CLASSIFICATION

DATA_DIR_ENV = "STBENCH_DATA_DIR"


def resolve_data_dir(cli_value: str | os.PathLike | None = None) -> Path:
    """``--data-dir``, then ``$STBENCH_DATA_DIR``, then ``./datasets``, made absolute for remote workers."""
    value = cli_value or os.environ.get(DATA_DIR_ENV) or "datasets"
    return Path(value).expanduser().resolve()


@dataclass
class ImageSplits:
    """Train / validation / test images as float tensors (N, C, H, W), already normalised, plus targets:
    int64 labels for classification, float (N, target_dim) for regression, where ``classes`` names the
    target's components and ``task`` says how to score them.

    Held whole so the trainer can put them on the trial's device once and batch by index.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    task: Any = CLASSIFICATION

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # -- the trainer's data-source interface (shared with LoaderSplits) --------------------------
    @property
    def n_train(self) -> int:
        return len(self.train_y)

    def train_batches(self, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled training batches, indexed from the tensors where they live."""
        order = torch.randperm(self.n_train, generator=torch.Generator().manual_seed(seed)).to(self.train_x.device)
        for start in range(0, self.n_train, batch_size):
            idx = order[start:start + batch_size]
            yield self.train_x[idx], self.train_y[idx]

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``val``, ``test``, or ``train_eval``: the first min(|val|, |train|) training images."""
        if split == "train_eval":
            k = min(len(self.val_y), self.n_train)
            return tensor_batches(self.train_x[:k], self.train_y[:k], batch_size)
        return tensor_batches(getattr(self, f"{split}_x"), getattr(self, f"{split}_y"), batch_size)

    def to(self, device) -> "ImageSplits":
        moved = {k: getattr(self, k).to(device) for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
        return ImageSplits(classes=self.classes, task=self.task, **moved)


@runtime_checkable
class Dataset(Protocol):
    """What every dataset object offers (adding one = a file with such an object + a line in ``__init__.py``).

    ``task`` (``harness.tasks``) says how outputs are scored; ``in_shape`` and ``num_classes`` (the number of
    outputs: classes, or a regression target's components) let models be built without loading any data;
    ``convergence_target`` is the validation accuracy at which the report stops the convergence clock.
    ``prepare`` checks (downloads, generates) the files before any trial starts; ``load`` runs inside a
    trial, builds the splits of the given ``protocol`` (one of ``protocols``), and returns ``ImageSplits`` (whole tensors) or ``LoaderSplits`` (DataLoader workers).
    """

    name: str
    task: Any
    in_shape: tuple[int, int, int]
    num_classes: int
    convergence_target: float | None
    protocols: tuple[str, ...]  # the splits-and-normalisation protocols ``load`` offers; the first is the default

    def prepare(self, data_dir: Path, download: bool = True) -> None: ...

    def split_sizes(self, data_dir: Path) -> tuple[int, int]: ...

    def load(self, data_dir: Path, val_size: int, split_seed: int = 0, train_limit: int | None = None,
             test_limit: int | None = None, protocol: str = "standard"): ...


def check_protocol(dataset, protocol: str) -> None:
    """A protocol the dataset does not declare is a mistake, never silently the standard one."""
    if protocol not in dataset.protocols:
        raise ValueError(f"protocol: {protocol!r} is not defined for {dataset.name}; allowed: {', '.join(dataset.protocols)}")


def carve(n_train: int, val_size: int, split_seed: int, train_limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The standard protocol's (training, validation) indices into the official training set: the seeded
    validation slice, and the rest cut to ``train_limit`` (the one place every dataset slices the same way)."""
    train_idx, val_idx = validation_split(n_train, val_size, split_seed)
    return first(train_idx, train_limit), val_idx


def first(items, limit: int | None):
    """``items`` cut to ``limit`` (None or 0: all of them)."""
    return items[:limit] if limit else items


def validation_split(n_train: int, val_size: int, split_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded slice of the official training set: (train indices, validation indices).

    The split seed is independent of the trial seed, so every trial of a benchmark
    validates on the same images.
    """
    if not 0 < val_size < n_train:
        raise ValueError(f"val_size must be between 1 and {n_train - 1}, got {val_size}")
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(split_seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values


def tensor_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(y), batch_size):
        yield x[start:start + batch_size], y[start:start + batch_size]


@dataclass
class LoaderSplits:
    """Train / validation / test as map-style datasets read by DataLoader workers, for image sets that do
    not fit in memory as one tensor; the same interface to the trainer as ``ImageSplits``.

    ``train_eval`` is the training images under the evaluation transform. Batches are moved to ``device``
    as they arrive (pinned memory on a GPU)."""

    train: torch.utils.data.Dataset
    val: torch.utils.data.Dataset
    test: torch.utils.data.Dataset
    train_eval: torch.utils.data.Dataset
    classes: list[str]
    in_shape: tuple[int, int, int]
    num_workers: int = 0
    task: Any = CLASSIFICATION
    device: Any = "cpu"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def n_train(self) -> int:
        return len(self.train)

    def to(self, device) -> "LoaderSplits":
        return LoaderSplits(**{**self.__dict__, "device": torch.device(device)})

    def _batches(self, dataset, batch_size: int, generator: torch.Generator | None = None):
        device = torch.device(self.device)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=generator is not None, generator=generator,
                            num_workers=self.num_workers, pin_memory=device.type == "cuda",
                            persistent_workers=False)
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def train_batches(self, batch_size: int, seed: int):
        return self._batches(self.train, batch_size, torch.Generator().manual_seed(seed))

    def eval_batches(self, split: str, batch_size: int):
        if split == "train_eval":
            k = min(len(self.val), len(self.train_eval))
            return self._batches(torch.utils.data.Subset(self.train_eval, range(k)), batch_size)
        return self._batches(getattr(self, split), batch_size)
