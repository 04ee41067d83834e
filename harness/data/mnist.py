"""MNIST and Fashion-MNIST, in torchvision's layout.

Files live where torchvision expects them (``<data_dir>/MNIST/raw``,
``<data_dir>/FashionMNIST/raw``). They are checked, and downloaded (through torchvision) when missing
and allowed, by ``prepare`` in the driver before any trial starts; ``load``
runs inside each trial, reads them with ``idx.read_idx`` (no torchvision import) and returns normalised tensors.

Two protocols (``Training.protocol``):

* ``standard``: validation is a seeded slice of the official training set; the official test set is used once.
* ``study``: the reference study's: train on all training images, evaluate every epoch on the first half of
  ``random_split(test, [5000, 5000], generator=torch.Generator().manual_seed(42))`` (the same call, so the same
  5,000 images), keep the second half as the test set used once, and normalise with MNIST's constants for
  Fashion-MNIST too, as the study did. Its curves are then comparable with the study's published ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError
from ..tasks import CLASSIFICATION
from .base import DATA_DIR_ENV, ImageSplits, first, validation_split
from .idx import check_idx, read_idx

STUDY_SPLIT_SEED = 42  # the reference study's generator seed for halving the official test set

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
    folder: str  # torchvision's class (and folder) name: MNIST, FashionMNIST
    mean: float
    std: float
    classes: tuple[str, ...]  # torchvision's class names for the dataset, as the report shows them
    convergence_target: float | None = None
    """Validation accuracy at which the report stops the convergence clock: one every architecture reaches well
    before its ceiling under the dataset's reference protocol, so it measures speed, not the final accuracy."""
    protocols = ("standard", "study")
    task = CLASSIFICATION
    in_shape = (1, 28, 28)
    num_classes = 10

    @property
    def torchvision_class(self) -> type:
        """Imported when data is read: the driver and ``stbench plan`` need only the declarations."""
        import torchvision  # lazy: a second of CPU per process, for the download path only

        return getattr(torchvision.datasets, self.folder)

    def raw_dir(self, data_dir: Path) -> Path:
        return Path(data_dir) / self.folder / "raw"

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
                            f"${DATA_DIR_ENV} at the folder holding {self.folder}/raw")
        counts = {}
        for fname, ndim in FILES.items():
            counts[fname] = check_idx(raw / fname, ndim, shape=(28, 28) if ndim == 3 else ())
        for split in ("train", "t10k"):
            if counts[f"{split}-images-idx3-ubyte"] != counts[f"{split}-labels-idx1-ubyte"]:
                raise UserError(f"{self.name}: {raw}/{split}-images-idx3-ubyte and its labels file disagree on the number of items")

    def read(self, data_dir: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(images uint8 (N, 28, 28), labels int64 (N,)) of the official training or test set."""
        split = "train" if train else "t10k"
        raw = self.raw_dir(data_dir)
        return (read_idx(raw / f"{split}-images-idx3-ubyte", 3, shape=(28, 28)),
                read_idx(raw / f"{split}-labels-idx1-ubyte", 1).long())

    def split_sizes(self, data_dir: Path) -> tuple[int, int]:
        """(official train size, official test size), read from the file headers."""
        raw = self.raw_dir(data_dir)
        return check_idx(raw / "train-labels-idx1-ubyte", 1), check_idx(raw / "t10k-labels-idx1-ubyte", 1)

    def load(self, data_dir: Path, val_size: int, split_seed: int = 0,
             train_limit: int | None = None, test_limit: int | None = None,
             protocol: str = "standard") -> ImageSplits:
        """``study``: ``val_size`` and ``split_seed`` are not used; ``test_limit`` cuts each test half."""
        train, test = self.read(data_dir, train=True), self.read(data_dir, train=False)  # (images, labels) each
        if protocol == "study":
            train_idx = torch.arange(len(train[1]))
            val_idx, test_idx = study_test_halves(len(test[1]))
            val_src, test_src = test, test
            mean, std = MNIST_MEAN, MNIST_STD
        elif protocol == "standard":
            train_idx, val_idx = validation_split(len(train[1]), val_size, split_seed)
            test_idx = torch.arange(len(test[1]))
            val_src, test_src = train, test
            mean, std = self.mean, self.std
        else:
            raise ValueError(f"protocol: {protocol!r}; allowed: {', '.join(self.protocols)}")
        train_idx, test_idx = first(train_idx, train_limit), first(test_idx, test_limit)
        if protocol == "study":
            val_idx = first(val_idx, test_limit)
        return ImageSplits(
            train_x=normalise(train[0][train_idx], mean, std), train_y=train[1][train_idx],
            val_x=normalise(val_src[0][val_idx], mean, std), val_y=val_src[1][val_idx],
            test_x=normalise(test_src[0][test_idx], mean, std), test_y=test_src[1][test_idx],
            classes=list(self.classes),
        )


def study_test_halves(n_test: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference study's halves of the official test set: (evaluation indices, test indices), in the order
    ``random_split`` gives them. The same call as the study's (``[5000, 5000]`` for 10,000 images)."""
    first = n_test // 2
    val, test = torch.utils.data.random_split(range(n_test), [first, n_test - first],
                                              generator=torch.Generator().manual_seed(STUDY_SPLIT_SEED))
    return torch.tensor(val.indices, dtype=torch.long), torch.tensor(test.indices, dtype=torch.long)


def normalise(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 (N, 28, 28) → float32 (N, 1, 28, 28), the same arithmetic as ToTensor + Normalize."""
    return ((images.float().div_(255.0) - mean) / std).unsqueeze(1).contiguous()


MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


MNIST = IDXImageDataset("mnist", "MNIST", mean=MNIST_MEAN, std=MNIST_STD,
                        classes=("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six",
                                 "7 - seven", "8 - eight", "9 - nine"),
                        convergence_target=0.98)  # the study's CNNs end near 99 %
FASHION_MNIST = IDXImageDataset("fashion_mnist", "FashionMNIST", mean=0.2860, std=0.3530,
                                classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                         "Sneaker", "Bag", "Ankle boot"),
                                convergence_target=0.85)  # the study's CNNs end near 90 %
