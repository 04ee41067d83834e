"""Architecture registry: a name maps to a builder ``(in_shape, num_classes, **options) -> nn.Module``.

Adding an architecture is one file with a builder and one line here.
"""

from __future__ import annotations

from typing import Callable, Iterator

from torch import nn

from .convnet import convnet, coordconv
from .resnext import resnext, stresnext
from .stn import STModel, stcoordconv, stnet

MODELS: dict[str, Callable[..., nn.Module]] = {
    "convnet": convnet,
    "stnet": stnet,
    "coordconv": coordconv,
    "stcoordconv": stcoordconv,
    "resnext": resnext,
    "stresnext": stresnext,
}


def build_model(name: str, in_shape: tuple[int, int, int], num_classes: int, **options) -> nn.Module:
    try:
        builder = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; allowed: {', '.join(sorted(MODELS))}") from None
    return builder(tuple(in_shape), num_classes, **options)


def localization_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The spatial transformer's parameters, or [] for a model without one."""
    get: Callable[[], Iterator[nn.Parameter]] | None = getattr(model, "localization_parameters", None)
    return list(get()) if get else []


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "STModel", "build_model", "count_parameters", "localization_parameters"]
