"""What every dataset hands the trainer, and where datasets live on disk."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

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

    def to(self, device) -> "ImageSplits":
        moved = {k: getattr(self, k).to(device) for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
        return ImageSplits(classes=self.classes, task=self.task, **moved)


def validation_split(n_train: int, val_size: int, split_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded slice of the official training set: (train indices, validation indices).

    The split seed is independent of the trial seed, so every trial of a benchmark
    validates on the same images.
    """
    if not 0 < val_size < n_train:
        raise ValueError(f"val_size must be between 1 and {n_train - 1}, got {val_size}")
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(split_seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values
