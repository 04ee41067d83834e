"""Reading IDX files (the MNIST family's format), checked first.

A truncated or corrupt file would fail with an assertion or a reshape error deep in a parser; checking the
header and size first turns that into a one-line error that names the file. The reader is ours, not
torchvision's dataset class: importing torchvision costs each trial process about a second of CPU, ten times
the time it takes to read MNIST.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError

UBYTE_TYPE = 0x08


def check_idx(path: Path, ndim: int, count: int | None = None, shape: tuple[int, ...] | None = None) -> int:
    """Validate an uncompressed unsigned-byte IDX file; return its item count."""
    try:
        with open(path, "rb") as f:
            header = f.read(4 + 4 * ndim)
    except OSError as e:
        raise UserError(f"cannot read dataset file {path}: {e.strerror}") from None
    if len(header) < 4 + 4 * ndim:
        raise UserError(f"dataset file {path} is truncated (no complete IDX header); delete it and download again")
    zero, dtype, dims = struct.unpack(">HBB", header[:4])
    if zero != 0 or dtype != UBYTE_TYPE or dims != ndim:
        raise UserError(
            f"dataset file {path} has a bad IDX magic number 0x{header[:4].hex()} "
            f"(expected 0x0000080{ndim}); it is corrupt or not an IDX file"
        )
    sizes = struct.unpack(f">{ndim}I", header[4:])
    if shape is not None and tuple(sizes[1:]) != shape:
        raise UserError(f"dataset file {path} holds items of shape {tuple(sizes[1:])}, expected {shape}")
    if count is not None and sizes[0] != count:
        raise UserError(f"dataset file {path} holds {sizes[0]} items, expected {count}")
    n_bytes = len(header) + math.prod(sizes)
    actual = path.stat().st_size
    if actual != n_bytes:
        raise UserError(f"dataset file {path} is {actual} bytes, expected {n_bytes}: truncated or corrupt; delete it and download again")
    return sizes[0]


def read_idx(path: Path, ndim: int, shape: tuple[int, ...] | None = None):
    """The items of an unsigned-byte IDX file as a uint8 tensor of shape (count, *item shape), after
    ``check_idx``; the same array torchvision's MNIST classes hold in ``.data`` / ``.targets``."""

    count = check_idx(path, ndim, shape=shape)
    with open(path, "rb") as f:
        header = f.read(4 + 4 * ndim)
        sizes = struct.unpack(f">{ndim}I", header[4:])
        data = np.frombuffer(f.read(), dtype=np.uint8)
    return torch.from_numpy(data.copy()).reshape(count, *sizes[1:])
