"""A user's own dataset, outside the stbench package: 3x32x32 images generated on the fly (no files).

Each image is coloured noise with one bright square; the class is the quadrant the square sits in, so where
things are matters (what CoordConv and spatial transformers are about). ``Blobs`` is a factory: the space's
``plugins.datasets.blobs.options`` are its arguments. It follows ``harness.data.Dataset``'s contract: name, task,
in_shape, num_classes, convergence_target, protocols, prepare, split_sizes and load.
"""

from dataclasses import dataclass

import torch

from harness.data import ImageSplits, validation_split
from harness.tasks import CLASSIFICATION

QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")


@dataclass(frozen=True)
class Blobs:
    size: int = 32
    n_train: int = 2000
    n_test: int = 500
    name: str = "blobs"
    convergence_target: float = 0.9
    task = CLASSIFICATION
    num_classes = len(QUADRANTS)
    protocols = ("standard",)  # the splits ``load`` can build (a space's training.protocol picks one)

    @property
    def in_shape(self):
        return (3, self.size, self.size)

    def prepare(self, data_dir, download=True):
        pass  # generated in memory: nothing to download or check

    def split_sizes(self, data_dir):
        return self.n_train, self.n_test

    def _images(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        x = 0.3 * torch.rand(n, 3, self.size, self.size, generator=g)
        y = torch.randint(0, len(QUADRANTS), (n,), generator=g)
        half, side = self.size // 2, max(2, self.size // 6)
        for i in range(n):
            top = int(torch.randint(0, half - side + 1, (1,), generator=g)) + half * int(y[i] // 2)
            left = int(torch.randint(0, half - side + 1, (1,), generator=g)) + half * int(y[i] % 2)
            x[i, :, top:top + side, left:left + side] += torch.rand(3, 1, 1, generator=g) + 0.5
        return (x - 0.5) / 0.5, y

    def load(self, data_dir, val_size, split_seed=0, train_limit=None, test_limit=None, protocol="standard"):
        x, y = self._images(self.n_train, seed=1)
        test_x, test_y = self._images(self.n_test, seed=2)
        train_idx, val_idx = validation_split(self.n_train, val_size, split_seed)
        train_idx = train_idx[:train_limit] if train_limit else train_idx
        return ImageSplits(x[train_idx], y[train_idx], x[val_idx], y[val_idx], test_x[:test_limit or None],
                           test_y[:test_limit or None], classes=list(QUADRANTS))
