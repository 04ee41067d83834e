"""A user's own classifier, outside the stbench package: any ``(in_shape, num_classes, **options) -> nn.Module``.

It has BatchNorm on purpose: ``coordconv(tiny)`` keeps it valid (the coordinate term starts at zero).
"""

from torch import nn


def tiny_cnn(in_shape, num_classes, width: int = 16):
    c, h, w = in_shape
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes),
    )
