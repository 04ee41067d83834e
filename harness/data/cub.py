"""CUB-200-2011 (Wah et al., 2011) in its official folder layout, read by DataLoader workers.

``<data_dir>/CUB_200_2011/`` holds ``images/``, ``images.txt``, ``image_class_labels.txt``,
``train_test_split.txt``, ``bounding_boxes.txt`` and ``classes.txt``. The official train/test split is
kept; validation is a seeded slice of the official training images. ``protocol: study`` instead splits all the images
80/10/10 at random (train / validation / test) with ``random_split``'s generator seeded 42, the reference study's birds
protocol (it split an image-folder dataset, which lists files sorted by path; so do we, so the split is of the same
list, though the study's exact call is not known to us, only its proportions and seed). Images are optionally cropped to
their bounding box, then resized to 224×224 with ImageNet normalisation; training adds the standard
random-resized crop and horizontal flip. 11,788 images do not fit as one tensor on a small machine,
so ``load`` returns ``LoaderSplits`` (decoded per batch by worker processes) instead of ``ImageSplits``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..errors import UserError
from ..tasks import CLASSIFICATION
from .base import LoaderSplits, first, validation_split

FOLDER = "CUB_200_2011"
FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt", "classes.txt")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _table(path: Path) -> dict[int, list[str]]:
    """``id value...`` lines → {id: [values]}."""
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            first, *rest = line.split()
            rows[int(first)] = rest
    return rows


class CUBImages(torch.utils.data.Dataset):
    """(path, label, box) records → (transformed image, label)."""

    def __init__(self, records: list[tuple[Path, int, tuple[float, float, float, float] | None]], transform):
        self.records, self.transform = records, transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        path, label, box = self.records[i]
        with Image.open(path) as im:
            image = im.convert("RGB")
        if box is not None:
            x, y, w, h = box
            image = image.crop((int(x), int(y), int(round(x + w)), int(round(y + h))))
        return self.transform(image), label


@dataclass(frozen=True)
class CUB:
    name: str
    bbox_crop: bool = False
    image_size: int = 224
    num_workers: int | None = None  # None: min(8, the CPUs this process may use)
    convergence_target: float | None = None
    """Validation accuracy at which the report stops the convergence clock: one every architecture reaches well
    before its ceiling under the dataset's reference protocol, so it measures speed, not the final accuracy.
    CUB (200 classes): from-scratch ResNeXt-50 runs end near 55–65 %, ImageNet-pretrained near 85 %, and
    cropping to the box adds points; not measured here."""
    protocols = ("standard", "study")
    task = CLASSIFICATION
    num_classes = 200

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    def root(self, data_dir: Path) -> Path:
        return Path(data_dir) / FOLDER

    def prepare(self, data_dir: Path, download: bool = True) -> None:
        """The official files present and consistent; CUB is never downloaded (it needs a licence click)."""
        root = self.root(data_dir)
        missing = [f for f in FILES if not (root / f).is_file()] + ([] if (root / "images").is_dir() else ["images/"])
        if missing:
            raise UserError(f"{self.name}: missing {', '.join(missing)} in {root}; unpack CUB_200_2011.tgz into "
                            f"--data-dir (or $STBENCH_DATA_DIR) so that {FOLDER}/images.txt exists")
        images, labels, split = (_table(root / f) for f in FILES[:3])
        if not (set(images) == set(labels) == set(split)):
            raise UserError(f"{self.name}: images.txt, image_class_labels.txt and train_test_split.txt in {root} "
                            "disagree on the image ids")

    def split_sizes(self, data_dir: Path) -> tuple[int, int]:
        split = _table(self.root(data_dir) / "train_test_split.txt")
        n_train = sum(v[0] == "1" for v in split.values())
        return n_train, len(split) - n_train

    def transforms(self):
        from torchvision import transforms as T  # lazy: torchvision costs a trial process a second to import

        norm = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        resize = int(round(self.image_size * 256 / 224))
        train = T.Compose([T.RandomResizedCrop(self.image_size, scale=(0.25, 1.0)), T.RandomHorizontalFlip(), *norm])
        test = T.Compose([T.Resize(resize), T.CenterCrop(self.image_size), *norm])
        return train, test

    def load(self, data_dir: Path, val_size: int, split_seed: int = 0,
             train_limit: int | None = None, test_limit: int | None = None,
             protocol: str = "standard") -> LoaderSplits:
        root = self.root(data_dir)
        images, labels, split, boxes, classes = (_table(root / f) for f in FILES)
        class_ids = sorted(classes)
        index = {c: i for i, c in enumerate(class_ids)}

        def record(i):
            box = tuple(float(v) for v in boxes[i]) if self.bbox_crop else None
            return root / "images" / images[i][0], index[int(labels[i][0])], box

        if protocol == "study":
            fit_ids, val_ids, test_ids = study_split(images)
        else:
            train_ids = sorted(i for i, v in split.items() if v[0] == "1")
            test_ids = sorted(i for i, v in split.items() if v[0] != "1")
            fit_idx, val_idx = validation_split(len(train_ids), val_size, split_seed)
            fit_ids = [train_ids[i] for i in fit_idx.tolist()]
            val_ids = [train_ids[i] for i in val_idx.tolist()]
        fit_ids, test_ids = first(fit_ids, train_limit), first(test_ids, test_limit)
        fit = [record(i) for i in fit_ids]
        val = [record(i) for i in val_ids]
        train_tf, test_tf = self.transforms()
        workers = self.num_workers if self.num_workers is not None else min(8, len(os.sched_getaffinity(0)))
        return LoaderSplits(
            train=CUBImages(fit, train_tf), val=CUBImages(val, test_tf),
            test=CUBImages([record(i) for i in test_ids], test_tf), train_eval=CUBImages(fit, test_tf),
            classes=[" ".join(classes[c]) for c in class_ids], in_shape=(3, self.image_size, self.image_size),
            num_workers=workers,
        )


STUDY_FRACTIONS, STUDY_SEED = (0.8, 0.1, 0.1), 42


def study_split(images: dict[int, list[str]]) -> tuple[list[int], list[int], list[int]]:
    """The study's 80/10/10 random split of every image (ids, listed by path as an image folder lists them)."""
    ids = sorted(images, key=lambda i: images[i][0])
    parts = torch.utils.data.random_split(range(len(ids)), list(STUDY_FRACTIONS),
                                          generator=torch.Generator().manual_seed(STUDY_SEED))
    return tuple([ids[j] for j in part.indices] for part in parts)


CUB200 = CUB("cub200", convergence_target=0.50)
CUB200_BBOX = CUB("cub200_bbox", bbox_crop=True, convergence_target=0.60)
