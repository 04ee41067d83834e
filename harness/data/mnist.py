"""MNIST and Fashion-MNIST through torchvision's dataset classes.

Files live where torchvision expects them (``<data_dir>/MNIST/raw``,
``<data_dir>/FashionMNIST/raw``). They are checked, and downloaded when missing
and allowed, by ``prepare`` in the driver before any trial starts; ``load``
runs inside each trial and returns normalised tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision

from ..errors import UserError
from .base import DATA_DIR_ENV, ImageSplits, validation_split
from .idx import check_idx

FILES = {
    "train-images-idx3-ubyte": 3,
    "train-labels-idx1-ubyte": 1,
    "t10k-images-idx3-ubyte": 3,
    "t10k-labels-idx1-ubyte": 1,
}


@dataclass(frozen=True)
class IDXImageDataset:
    """A 28×28 grey-scale, 10-class dataset in the MNIST IDX layout."""

    name: str
    torchvision_class: type
    mean: float
    std: float

    def raw_dir(self, data_dir: Path) -> Path:
        return Path(data_dir) / self.torchvision_class.__name__ / "raw"

    def _missing(self, data_dir: Path) -> list[str]:
        return [f for f in FILES if not (self.raw_dir(data_dir) / f).is_file()]

    def prepare(self, data_dir: Path, download: bool = True) -> None:
        """Make sure the files are present and well-formed; raise UserError otherwise."""
        raw = self.raw_dir(data_dir)
        if self._missing(data_dir) and download:
            try:
                self.torchvision_class(root=str(data_dir), train=True, download=True)
                self.torchvision_class(root=str(data_dir), train=False, download=True)
            except Exception as e:  # no network, proxy, disk full: all mean "put the files there yourself"
                first = str(e).splitlines()[0][:60] if str(e).strip() else ""
                reason = f"download failed: {type(e).__name__}" + (f": {first}" if first else "")
            else:
                reason = "the download did not provide them"
        else:
            reason = "download disabled"
        missing = self._missing(data_dir)
        if missing:
            what = ("no IDX files" if len(missing) == len(FILES) else
                    f"missing {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
            raise UserError(f"{self.name}: {what} in {raw} ({reason}); copy them there or point --data-dir / "
                            f"${DATA_DIR_ENV} at the folder holding {self.torchvision_class.__name__}/raw")
        counts = {}
        for fname, ndim in FILES.items():
            counts[fname] = check_idx(raw / fname, ndim, shape=(28, 28) if ndim == 3 else ())
        for split in ("train", "t10k"):
            if counts[f"{split}-images-idx3-ubyte"] != counts[f"{split}-labels-idx1-ubyte"]:
                raise UserError(f"{self.name}: {raw}/{split}-images-idx3-ubyte and its labels file disagree on the number of items")

    def split_sizes(self, data_dir: Path) -> tuple[int, int]:
        """(official train size, official test size), read from the file headers."""
        raw = self.raw_dir(data_dir)
        return check_idx(raw / "train-labels-idx1-ubyte", 1), check_idx(raw / "t10k-labels-idx1-ubyte", 1)

    def load(self, data_dir: Path, val_size: int, split_seed: int = 0,
             train_limit: int | None = None, test_limit: int | None = None) -> ImageSplits:
        train = self.torchvision_class(root=str(data_dir), train=True, download=False)
        test = self.torchvision_class(root=str(data_dir), train=False, download=False)
        train_idx, val_idx = validation_split(len(train.targets), val_size, split_seed)
        if train_limit:
            train_idx = train_idx[:train_limit]
        test_x, test_y = test.data, test.targets
        if test_limit:
            test_x, test_y = test_x[:test_limit], test_y[:test_limit]
        return ImageSplits(
            train_x=self._normalise(train.data[train_idx]), train_y=train.targets[train_idx].long(),
            val_x=self._normalise(train.data[val_idx]), val_y=train.targets[val_idx].long(),
            test_x=self._normalise(test_x), test_y=test_y.long(),
            classes=list(train.classes),
        )

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 28, 28) → float32 (N, 1, 28, 28), the same arithmetic as ToTensor + Normalize."""
        return ((images.float().div_(255.0) - self.mean) / self.std).unsqueeze(1).contiguous()


MNIST = IDXImageDataset("mnist", torchvision.datasets.MNIST, mean=0.1307, std=0.3081)
FASHION_MNIST = IDXImageDataset("fashion_mnist", torchvision.datasets.FashionMNIST, mean=0.2860, std=0.3530)
