"""Distorted MNIST, the four protocols of the spatial-transformer paper (Jaderberg et al., 2015, Table 1).

* ``R``   rotation uniform in ±90°, 28×28.
* ``RTS`` rotation ±45°, scale 0.7–1.2, placed at a random position on a 42×42 canvas.
* ``P``   scale 0.75–1.0, then each corner moved by N(0, 5 px): a projective warp, 28×28.
* ``E``   scale 0.75–1.0, then a thin-plate-spline warp whose 4×4 control grid moves by N(0, 1.5 px), 28×28.

Every image is drawn from MNIST with a fixed seed per split, so every architecture sees the same images.
All four are one inverse map per image (output pixel → source pixel) evaluated with ``grid_sample`` on whole
batches; the whole 70,000-image set takes seconds. The result is cached as uint8 in
``<data_dir>/stbench-cache/mnist_<kind>-<hash>.pt`` (written atomically; ``$STBENCH_CACHE_DIR`` or
``~/.cache/stbench`` when the data folder is read-only (no write bit)). ``prepare`` fills the cache before trials start.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..tasks import CLASSIFICATION
from .base import ImageSplits, carve, check_protocol, first
from .mnist import MNIST, IDXImageDataset

CACHE_ENV = "STBENCH_CACHE_DIR"
GENERATOR_VERSION = 1  # bump when the generation changes: old cache files are then ignored
SRC = 28  # MNIST side
BATCH = 5000
KINDS = {"r": 28, "rts": 42, "p": 28, "e": 28}  # kind → canvas side
SPLIT_SEEDS = {"train": 7_001, "test": 7_002}


def _pixel_grid(side: int) -> torch.Tensor:
    """(side*side, 2) centred pixel-centre coordinates (x, y), in pixels."""
    c = torch.arange(side, dtype=torch.float32) - (side - 1) / 2
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)


def _uniform(g: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return torch.rand(n, generator=g) * (high - low) + low


def _sample(images: torch.Tensor, source_px: torch.Tensor, side: int) -> torch.Tensor:
    """Bilinear sample of (N, 28, 28) uint8 images at (N, side*side, 2) centred source pixel coordinates."""
    grid = (source_px * (2.0 / SRC)).view(len(images), side, side, 2)  # align_corners=False units
    out = F.grid_sample(images.float().unsqueeze(1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.squeeze(1).round_().clamp_(0, 255).to(torch.uint8)


def _similarity_params(kind: str, g: torch.Generator, n: int) -> dict:
    if kind == "r":
        return {"angle": _uniform(g, n, -90, 90), "scale": torch.ones(n), "shift": torch.zeros(n, 2)}
    angle, scale = _uniform(g, n, -45, 45), _uniform(g, n, 0.7, 1.2)
    room = ((KINDS["rts"] - SRC * scale) / 2).clamp(min=0).unsqueeze(1)  # keep the scaled digit's box on the canvas
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * room
    return {"angle": angle, "scale": scale, "shift": shift}


def _similarity(images, p, side):
    """Output u = s·R·x + t, so the source of u is x = Rᵀ(u − t)/s."""
    a = torch.deg2rad(p["angle"])
    cos, sin = torch.cos(a), torch.sin(a)
    rot_t = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)  # Rᵀ, (N, 2, 2)
    u = _pixel_grid(side).unsqueeze(0) - p["shift"].unsqueeze(1)
    src = torch.einsum("nij,npj->npi", rot_t, u) / p["scale"].view(-1, 1, 1)
    return _sample(images, src, side)


def _projective_params(g, n):
    return {"scale": _uniform(g, n, 0.75, 1.0), "noise": torch.randn(n, 4, 2, generator=g) * 5.0}


def _homographies(dst: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) H with H·dst ∝ src for four point pairs per image (a batched 8×8 solve)."""
    x, y = dst[..., 0], dst[..., 1]
    X, Y = src[..., 0], src[..., 1]
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    rows_x = torch.stack([x, y, one, zero, zero, zero, -X * x, -X * y], -1)
    rows_y = torch.stack([zero, zero, zero, x, y, one, -Y * x, -Y * y], -1)
    a = torch.cat([rows_x, rows_y], 1).double()
    b = torch.cat([X, Y], 1).double()
    h = torch.linalg.solve(a, b)
    return torch.cat([h, torch.ones(len(h), 1, dtype=h.dtype)], 1).view(-1, 3, 3).float()


def _projective(images, p, side):
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]) * (SRC / 2)
    dst = corners * p["scale"].view(-1, 1, 1) + p["noise"]  # where each source corner lands
    h = _homographies(dst, corners.expand_as(dst))
    u = torch.cat([_pixel_grid(side), torch.ones(side * side, 1)], 1)
    q = torch.einsum("nij,pj->npi", h, u)
    return _sample(images, q[..., :2] / q[..., 2:].clamp(min=1e-6), side)


def _elastic_params(g, n):
    return {"scale": _uniform(g, n, 0.75, 1.0), "noise": torch.randn(n, 16, 2, generator=g) * 1.5}


def _tps_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d2 = torch.cdist(a, b).pow(2)
    return 0.5 * d2 * torch.log(d2.clamp(min=1e-12))  # r² log r, zero at r = 0


def _elastic(images, p, side):
    """A thin-plate spline through the 16 moved control points (output) → their grid positions (source)."""
    n = len(images)
    c = torch.linspace(-1, 1, 4) * (SRC / 2 - 0.5)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)  # (16, 2), source positions
    dst = grid * p["scale"].view(-1, 1, 1) + p["noise"]  # (N, 16, 2), where they land in the output
    dst64 = dst.double()
    k = _tps_kernel(dst64, dst64)
    ones = torch.ones(n, 16, 1, dtype=torch.float64)
    poly = torch.cat([ones, dst64], 2)  # (N, 16, 3)
    top = torch.cat([k, poly], 2)
    bottom = torch.cat([poly.transpose(1, 2), torch.zeros(n, 3, 3, dtype=torch.float64)], 2)
    rhs = torch.cat([grid.double().expand(n, -1, -1), torch.zeros(n, 3, 2, dtype=torch.float64)], 1)
    coef = torch.linalg.solve(torch.cat([top, bottom], 1), rhs).float()  # (N, 19, 2)
    u = _pixel_grid(side).expand(n, -1, -1)
    basis = torch.cat([_tps_kernel(u, dst), torch.ones(n, side * side, 1), u], 2)  # (N, P, 19)
    return _sample(images, basis @ coef, side)


def distort(images: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """(N, 28, 28) uint8 → (N, side, side) uint8 under protocol ``kind``; parameters come from ``generator``,
    all drawn before any image is warped, so the result does not depend on the batch size."""
    if kind not in KINDS:
        raise ValueError(f"unknown distortion {kind!r}; allowed: {', '.join(KINDS)}")
    n, side = len(images), KINDS[kind]
    if kind in ("r", "rts"):
        params, warp = _similarity_params(kind, generator, n), _similarity
    elif kind == "p":
        params, warp = _projective_params(generator, n), _projective
    else:
        params, warp = _elastic_params(generator, n), _elastic
    out = [warp(images[i:i + BATCH], {k: v[i:i + BATCH] for k, v in params.items()}, side)
           for i in range(0, n, BATCH)]
    return torch.cat(out) if out else torch.empty(0, side, side, dtype=torch.uint8)


def cache_dir(data_dir: Path) -> Path:
    """``$STBENCH_CACHE_DIR``, else ``<data_dir>/stbench-cache`` when writable, else ``~/.cache/stbench``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    preferred = Path(data_dir) / "stbench-cache"
    if _writable(preferred) if preferred.is_dir() else _writable(Path(data_dir)):
        return preferred
    return Path.home() / ".cache" / "stbench"


def _writable(folder: Path) -> bool:
    """Writable and meant to be: a folder without any write bit is read-only data, even to root."""
    try:
        return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)
    except OSError:
        return False


@dataclass(frozen=True)
class DistortedMNIST:
    """MNIST under one distortion protocol; the official train/test split, validation carved from train."""

    protocols = ("standard",)  # the distortions are the paper's protocols; the splits have one

    name: str
    kind: str
    source: IDXImageDataset = MNIST
    convergence_target: float | None = None
    """Validation accuracy at which the report stops the convergence clock: one every architecture reaches well
    before its ceiling under the dataset's reference protocol, so it measures speed, not the final accuracy."""

    cache: Optional[Path] = None  # where the generated images are kept; None: ``cache_dir(data_dir)``

    task = CLASSIFICATION
    num_classes = 10

    def with_cache(self, folder: Path) -> "DistortedMNIST":
        """The same dataset reading its generated images from ``folder`` (e.g. the cache a run recorded)."""
        return dataclasses.replace(self, cache=Path(folder))

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return (1, KINDS[self.kind], KINDS[self.kind])

    def _cache_file(self, data_dir: Path) -> Path:
        n_train, n_test = self.source.split_sizes(data_dir)
        key = f"{self.kind}|{KINDS[self.kind]}|{SPLIT_SEEDS}|{n_train}|{n_test}|v{GENERATOR_VERSION}"
        return (self.cache or cache_dir(data_dir)) / f"{self.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.pt"

    def prepare(self, data_dir: Path, download: bool = True) -> None:
        """MNIST present and well-formed, then the distorted set generated and cached."""
        self.source.prepare(data_dir, download=download)
        self._images(data_dir)

    def split_sizes(self, data_dir: Path) -> tuple[int, int]:
        return self.source.split_sizes(data_dir)

    def _generate(self, data_dir: Path) -> dict:
        out = {}
        for split, train in (("train", True), ("test", False)):
            images, labels = self.source.read(data_dir, train=train)
            g = torch.Generator().manual_seed(SPLIT_SEEDS[split])
            out[f"{split}_x"] = distort(images, self.kind, g)
            out[f"{split}_y"] = labels
            out["classes"] = list(self.source.classes)
        pixels = out["train_x"].float().div_(255.0)
        out["mean"], out["std"] = pixels.mean().item(), pixels.std().item()
        return out

    def _images(self, data_dir: Path) -> dict:
        path = self._cache_file(data_dir)
        if path.is_file():
            try:
                return torch.load(path, weights_only=True)
            except Exception:  # a damaged file: generate again
                pass
        data = self._generate(data_dir)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as f:
                torch.save(data, f)
            os.chmod(f.name, 0o644)
            os.replace(f.name, path)  # atomic: concurrent trials never read half a file
        except OSError as e:
            raise UserError(f"{self.name}: cannot write the cache {path} ({e.strerror}); "
                            f"set ${CACHE_ENV} to a writable folder") from None
        return data

    def load(self, data_dir: Path, val_size: int, split_seed: int = 0, train_limit: int | None = None,
             test_limit: int | None = None, protocol: str = "standard") -> ImageSplits:
        check_protocol(self, protocol)
        data = self._images(Path(data_dir))
        train_idx, val_idx = carve(len(data["train_y"]), val_size, split_seed, train_limit)
        test_x, test_y = first(data["test_x"], test_limit), first(data["test_y"], test_limit)

        def norm(x):
            return ((x.float().div_(255.0) - data["mean"]) / data["std"]).unsqueeze(1).contiguous()

        return ImageSplits(
            train_x=norm(data["train_x"][train_idx]), train_y=data["train_y"][train_idx],
            val_x=norm(data["train_x"][val_idx]), val_y=data["train_y"][val_idx],
            test_x=norm(test_x), test_y=test_y, classes=data["classes"],
        )


MNIST_R = DistortedMNIST("mnist_r", "r", convergence_target=0.95)  # STN paper's CNN: 1.2 % error on R
MNIST_RTS = DistortedMNIST("mnist_rts", "rts", convergence_target=0.90)  # paper: 0.8 % error; 10k images: 80 %
MNIST_P = DistortedMNIST("mnist_p", "p", convergence_target=0.95)  # paper's CNN: 1.5 % error on P
MNIST_E = DistortedMNIST("mnist_e", "e", convergence_target=0.95)  # paper's CNN: 1.4 % error on E
