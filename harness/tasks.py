"""What a trial learns: the loss and the definition of a correct prediction, chosen by the dataset.

The trainer asks ``splits.task`` for both, so classification and regression share the loop, the
metric names (``*_loss``, ``*_acc``), the store and the analysis.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Classification:
    """Cross-entropy on logits; correct = the arg-max is the label."""

    name: str = "classification"

    def loss(self, out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return F.cross_entropy(out, y, reduction=reduction)

    def correct(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (out.argmax(1) == y).sum()

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        return out.argmax(1)


@dataclass(frozen=True)
class Regression:
    """Targets in pixels; the model predicts them scaled to about [-1, 1] (``(y - offset) / scale``).

    Loss: mean squared error per image, in the scaled units. Correct: every coordinate, scaled back
    and rounded, is the exact target pixel, the CoordConv paper's accuracy.
    """

    offset: float
    scale: float
    name: str = "regression"

    def loss(self, out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        per_image = F.mse_loss(out, (y - self.offset) / self.scale, reduction="none").mean(1)
        return {"mean": per_image.mean, "sum": per_image.sum, "none": lambda: per_image}[reduction]()

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        return torch.round(out * self.scale + self.offset)

    def correct(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.predict(out) == y).all(1).sum()


CLASSIFICATION = Classification()
