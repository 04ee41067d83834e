"""The reference study's small CNN (the PyTorch spatial-transformer tutorial's classifier).

conv 1→10 (k5) → maxpool 2 → ReLU → conv 10→20 (k5) → Dropout2d → maxpool 2 → ReLU
→ FC 320→50 → ReLU → dropout → FC 50→10, for 28×28 inputs; the flattened size
follows the input shape, so the same code serves larger canvases. ``conv`` picks
the convolution type, which is all that separates ``convnet`` from ``coordconv``. ``dropout: false``
drops both dropout layers, for regression to the exact pixel (Not-so-Clevr), where they only add noise.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .coordconv import CoordConv2d


def conv_pool_size(size: int, kernel: int, pool: int = 2) -> int:
    """Spatial size after a valid convolution and a max-pool (floor division, like PyTorch)."""
    out = (size - kernel + 1) // pool
    if out < 1:
        raise ValueError(f"input size {size} is too small for a {kernel}x{kernel} convolution and {pool}x pooling")
    return out


class ConvNet(nn.Module):
    def __init__(self, in_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10,
                 conv: Callable[..., nn.Module] = nn.Conv2d, dropout: bool = True):
        super().__init__()
        self.dropout = dropout
        c, h, w = in_shape
        self.conv1 = conv(c, 10, kernel_size=5)
        self.conv2 = conv(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d() if dropout else nn.Identity()
        h2 = conv_pool_size(conv_pool_size(h, 5), 5)
        w2 = conv_pool_size(conv_pool_size(w, 5), 5)
        self.fc1 = nn.Linear(20 * h2 * w2, 50)
        self.fc2 = nn.Linear(50, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training and self.dropout)
        return self.fc2(x)  # logits; the loss applies log-softmax


def convnet(in_shape=(1, 28, 28), num_classes: int = 10, dropout: bool = True) -> ConvNet:
    return ConvNet(in_shape, num_classes, dropout=dropout)


def coordconv(in_shape=(1, 28, 28), num_classes: int = 10, with_r: bool = False, dropout: bool = True) -> ConvNet:
    return ConvNet(in_shape, num_classes, conv=partial(CoordConv2d, with_r=with_r), dropout=dropout)
