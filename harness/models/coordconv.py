"""CoordConv (Liu et al., 2018): a convolution that also sees where it is.

Two channels holding the x and y pixel coordinates, scaled to [-1, 1], are
concatenated to the input before an ordinary convolution; ``with_r`` adds a third
channel with the distance from the centre. Nothing else is learnt, so every
parameter of the layer is the wrapped convolution's.
"""

from __future__ import annotations

import torch
from torch import nn


def coordinate_channels(batch: int, height: int, width: int, with_r: bool = False,
                        device=None, dtype=None) -> torch.Tensor:
    """(batch, 2 or 3, H, W): x varies along the width, y along the height, both in [-1, 1]."""
    ys = torch.linspace(-1.0, 1.0, height, device=device, dtype=dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    channels = [xx, yy]
    if with_r:
        channels.append(torch.sqrt(xx**2 + yy**2))
    return torch.stack(channels).unsqueeze(0).expand(batch, -1, -1, -1)


class CoordConv2d(nn.Module):
    """Drop-in replacement for ``nn.Conv2d`` taking the same arguments plus ``with_r``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, with_r: bool = False, **conv_kwargs):
        super().__init__()
        self.with_r = with_r
        extra = 3 if with_r else 2
        self.conv = nn.Conv2d(in_channels + extra, out_channels, kernel_size, **conv_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        coords = coordinate_channels(n, h, w, self.with_r, device=x.device, dtype=x.dtype)
        return self.conv(torch.cat([x, coords], dim=1))
