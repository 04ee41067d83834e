"""ResNeXt-50 (32×4d) for fine-grained birds, plain or behind a spatial transformer.

``resnext`` is torchvision's ``resnext50_32x4d`` with a ``num_classes`` head, trained from scratch by
default; ``pretrained: true`` starts from torchvision's ImageNet weights, which must already be in
torchvision's cache (``$TORCH_HOME``) on machines without network access. ``stresnext`` puts a spatial
transformer in front: its localization network looks at a ``loc_size``² downsampled copy of the input
(cheap) and the predicted affine transform, identity at initialisation, resamples the full-size input.

Not the reference study's model of the same name: its ``stresnext`` was StNet, a video action-recognition network
(SE-ResNeXt-50 with temporal blocks) with no spatial transformer, and its ``resnext`` kept a 1000-way head for
200 classes. Ours is what the name promises (a spatial transformer in front of ResNeXt-50, a 200-way head), so its
birds figures (``search_spaces/birds_seed.yaml``) answer the question the study meant to ask, not the one it ran.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .stn import SpatialTransformer, STModel


def resnext(in_shape=(3, 224, 224), num_classes: int = 200, pretrained: bool = False) -> nn.Module:
    # lazy: torchvision costs every process that imports the model registry a second; only ResNeXt needs it
    from torchvision.models import ResNeXt50_32X4D_Weights, resnext50_32x4d

    if pretrained:
        model = resnext50_32x4d(weights=ResNeXt50_32X4D_Weights.IMAGENET1K_V2)
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    else:
        model = resnext50_32x4d(weights=None, num_classes=num_classes)
    if in_shape[0] != 3:  # grey-scale or other inputs: a fresh stem with the same geometry
        model.conv1 = nn.Conv2d(in_shape[0], 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


class DownsampledTransformer(SpatialTransformer):
    """A spatial transformer whose localization network sees the input resized to ``loc_size``²."""

    def __init__(self, in_shape, loc_size: int = 64):
        super().__init__((in_shape[0], loc_size, loc_size))
        self.loc_size = loc_size

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        small = F.interpolate(x, size=(self.loc_size, self.loc_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return super().theta(small)


def stresnext(in_shape=(3, 224, 224), num_classes: int = 200, pretrained: bool = False, loc_size: int = 64) -> STModel:
    return STModel(DownsampledTransformer(in_shape, loc_size), resnext(in_shape, num_classes, pretrained))
