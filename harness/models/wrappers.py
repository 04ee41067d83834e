"""Generic wrappers around any classifier: ``st(X)`` and ``coordconv(X)``.

``st(X)`` puts the study's identity-initialised affine spatial transformer in front of X; built before X, so
with the same seed ``st(convnet)`` is today's ``stnet`` parameter for parameter. ``coordconv(X)`` gives X's
convolutions coordinate channels as an *additive* term: ``conv(x) + conv_c(coords)`` with ``conv_c``
zero-initialised, so the wrapped network computes exactly what it did (pretrained weights and BatchNorm
statistics stay valid) until training moves ``conv_c``. By linearity this is the same function class as
concatenating the coordinates to the input (today's ``CoordConv2d``), for grouped and depthwise convolutions too
(every group sees the coordinates); only the initialisation differs (see ``tests/test_wrappers.py``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .coordconv import coordinate_channels
from .resnext import DownsampledTransformer
from .stn import SpatialTransformer, STModel

ST_OPTIONS = {"loc_size": None}
COORDCONV_OPTIONS = {"layers": "first", "with_r": False}


def make_transformer(in_shape: tuple[int, int, int], loc_size: int | None = None) -> SpatialTransformer:
    return DownsampledTransformer(in_shape, loc_size) if loc_size else SpatialTransformer(tuple(in_shape))


class CoordTerm(nn.Module):
    """A convolution plus a zero-initialised convolution of the coordinate channels of its input's H×W.

    The coordinate term does not depend on the batch: it is computed for one image and broadcast."""

    def __init__(self, conv: nn.Conv2d, with_r: bool = False):
        super().__init__()
        self.conv, self.with_r = conv, with_r
        self.coord = nn.Conv2d(3 if with_r else 2, conv.out_channels, conv.kernel_size, stride=conv.stride,
                               padding=conv.padding, dilation=conv.dilation, bias=False,
                               padding_mode=conv.padding_mode)
        nn.init.zeros_(self.coord.weight)
        self.coord.to(device=conv.weight.device, dtype=conv.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coords = coordinate_channels(1, x.shape[-2], x.shape[-1], self.with_r, device=x.device, dtype=x.dtype)
        return self.conv(x) + self.coord(coords)


def add_coordinates(model: nn.Module, layers: Literal["first", "all"] = "first", with_r: bool = False) -> nn.Module:
    """``model`` with its first (or every) ``nn.Conv2d`` given a coordinate term, in place. Behind a spatial
    transformer only the classifier's convolutions change (the localization network stays as it is)."""
    if layers not in ("first", "all"):
        raise ValueError(f"layers: {layers!r} is not allowed; allowed: first, all")
    target = model.classifier if isinstance(model, STModel) else model
    convs = [(name, m) for name, m in target.named_modules() if type(m) is nn.Conv2d]
    if not convs:
        raise ValueError("coordconv: the wrapped model has no nn.Conv2d to give coordinates")
    for name, conv in convs[:1] if layers == "first" else convs:
        parent_name, _, child = name.rpartition(".")
        parent = target.get_submodule(parent_name) if parent_name else target
        if not name:  # the model is itself one convolution
            return CoordTerm(conv, with_r)
        setattr(parent, child, CoordTerm(conv, with_r))
    return model
