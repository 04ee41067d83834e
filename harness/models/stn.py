"""Spatial transformer (Jaderberg et al., 2015) in front of a classifier.

The localization network regresses the 6 parameters of an affine transform; its
last layer starts at zero weight and identity bias, so an untrained transformer
passes its input through unchanged. ``STModel.transform`` exposes the warped input
for analysis, and ``localization_parameters`` lets the trainer give the
localization network its own learning rate.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .convnet import conv_pool_size, convnet, coordconv

IDENTITY_AFFINE = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class SpatialTransformer(nn.Module):
    """conv c→8 (k7) → maxpool 2 → ReLU → conv 8→10 (k5) → maxpool 2 → ReLU → FC →32 → ReLU → FC 32→6."""

    def __init__(self, in_shape: tuple[int, int, int] = (1, 28, 28)):
        super().__init__()
        c, h, w = in_shape
        self.localization = nn.Sequential(
            nn.Conv2d(c, 8, kernel_size=7), nn.MaxPool2d(2), nn.ReLU(True),
            nn.Conv2d(8, 10, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(True),
        )
        h2 = conv_pool_size(conv_pool_size(h, 7), 5)
        w2 = conv_pool_size(conv_pool_size(w, 7), 5)
        self.fc_loc = nn.Sequential(nn.Linear(10 * h2 * w2, 32), nn.ReLU(True), nn.Linear(32, 6))
        nn.init.zeros_(self.fc_loc[2].weight)
        with torch.no_grad():
            self.fc_loc[2].bias.copy_(torch.tensor(IDENTITY_AFFINE))

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, 2, 3) affine matrices predicted for a batch."""
        return self.fc_loc(torch.flatten(self.localization(x), 1)).view(-1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(self.theta(x), list(x.size()), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)


class STModel(nn.Module):
    def __init__(self, transformer: SpatialTransformer, classifier: nn.Module):
        super().__init__()
        self.stn = transformer
        self.classifier = classifier

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """What the classifier sees: the input after the spatial transformer."""
        return self.stn(x)

    def localization_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.stn.parameters()
        inner = getattr(self.classifier, "localization_parameters", None)  # st(st(X)): both transformers
        if inner is not None:
            yield from inner()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.stn(x))


def stnet(in_shape=(1, 28, 28), num_classes: int = 10) -> STModel:
    return STModel(SpatialTransformer(in_shape), convnet(in_shape, num_classes))


def stcoordconv(in_shape=(1, 28, 28), num_classes: int = 10, with_r: bool = False) -> STModel:
    return STModel(SpatialTransformer(in_shape), coordconv(in_shape, num_classes, with_r=with_r))
