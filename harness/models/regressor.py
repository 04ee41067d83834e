"""The CoordConv paper's coordinate regressors (Liu et al., 2018, Sec. 4, "supervised coordinate regression").

Fully convolutional, as in the authors' reference code: coordinate channels on the input (``coordconv_regressor``
only), three 1×1 convolutions, two 3×3 convolutions (the last with one channel per output), then a global max-pool
over the whole map gives the outputs; no dense layer, no down-sampling, and, as in that code, no non-linearity
between the convolutions (the max-pool is the only one). Layer widths follow that code (8 channels).

Why the pair shows the paper's effect: every layer is translation-equivariant and the max-pool over the whole map is
translation-invariant, so ``conv_regressor`` gives the same output wherever the object is: it cannot regress a
position at all. With the coordinate channels, the map's maximum sits at the object and carries a linear function of
its coordinates there, which extends to positions never seen in training (the held-out quadrant). The study's
``coordconv`` (a CNN with max-pooling and a dense head) has no such path.

Initialisation as in the authors' code (he-normal weights, zero biases): PyTorch's default starts the object's
response at the max-pool ~100× smaller, too small to win it. Three choices of ours make training reliable in a few
epochs (measured here: with zero "same" padding and random coordinate weights, as in the authors' code, our runs
stayed at the mean prediction for 15 epochs):

* "valid" 3×3 convolutions (no zero padding): the border cannot add position information, so ``conv_regressor`` is
  exactly translation-invariant and the background of the map is flat;
* the first layer's weights on the coordinate channels start at zero: at initialisation the map is flat except around
  the object, so the max-pool picks the object and the gradient reaches the coordinate weights through it; the model
  starts as ``conv_regressor`` and learns how much position to use (as a spatial transformer starts at the identity);
* the last bias starts at minus the response to a one-hot pixel, so predictions start at the centre: otherwise the
  first steps correct the initial offset by shrinking the object's response (at initialisation the whole
  prediction) until the object loses the max-pool to the background, and that coordinate never recovers.

Adam at lr 0.01 can still jump away from an exact solution late in training; the spaces test the best-validation
weights.
"""

from __future__ import annotations

import torch
from torch import nn

from .coordconv import coordinate_channels


class ConvRegressor(nn.Module):
    def __init__(self, in_shape: tuple[int, int, int], outputs: int, coords: bool, width: int = 8,
                 with_r: bool = False):
        super().__init__()
        self.coords, self.with_r = coords, with_r
        channels = in_shape[0] + ((3 if with_r else 2) if coords else 0)
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 1), nn.Conv2d(width, width, 1), nn.Conv2d(width, width, 1),
            nn.Conv2d(width, width, 3), nn.Conv2d(width, outputs, 3),
        )
        for conv in self.body:  # the authors' initialisation (he_normal weights, zero biases)
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        with torch.no_grad():
            if coords:
                self.body[0].weight[:, in_shape[0]:] = 0  # coordinate channels start switched off
            probe = torch.zeros(1, *in_shape)
            probe[0, :, in_shape[1] // 2, in_shape[2] // 2] = 1.0
            self.body[-1].bias -= self(probe)[0]  # a one-hot pixel starts at output 0, the canvas centre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.coords:
            n, _, h, w = x.shape
            x = torch.cat([x, coordinate_channels(n, h, w, self.with_r, device=x.device, dtype=x.dtype)], 1)
        return self.body(x).amax(dim=(2, 3))  # global max-pool: (N, outputs)


def coordconv_regressor(in_shape, num_classes: int, width: int = 8, with_r: bool = False) -> nn.Module:
    """Coordinate channels on the input, then the fully convolutional regressor; ``num_classes`` = outputs (2)."""
    return ConvRegressor(in_shape, num_classes, coords=True, width=width, with_r=with_r)


def conv_regressor(in_shape, num_classes: int, width: int = 8) -> nn.Module:
    """The same network without coordinate channels: the paper's baseline for the effect."""
    return ConvRegressor(in_shape, num_classes, coords=False, width=width)
