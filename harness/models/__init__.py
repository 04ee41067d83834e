"""Architecture registry: a name maps to a builder ``(in_shape, num_classes, **options) -> nn.Module`` and
what the rest of the harness needs to know without building it (``Architecture``).

Adding an architecture is one file with a builder and one line here.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Iterator

from torch import nn

from .convnet import convnet, coordconv
from .regressor import conv_regressor, coordconv_regressor
from .resnext import resnext, stresnext
from .stn import STModel, stcoordconv, stnet


@dataclass(frozen=True)
class Architecture:
    builder: Callable[..., nn.Module]
    localization: bool = False  # a spatial transformer whose localization network has its own learning rate

    @property
    def options(self) -> list[str]:
        """The builder's keyword options (``model_options`` in a search space)."""
        return [p for p in inspect.signature(self.builder).parameters if p not in ("in_shape", "num_classes")]


ARCHITECTURES: dict[str, Architecture] = {
    "convnet": Architecture(convnet),
    "stnet": Architecture(stnet, localization=True),
    "coordconv": Architecture(coordconv),
    "stcoordconv": Architecture(stcoordconv, localization=True),
    "resnext": Architecture(resnext),
    "stresnext": Architecture(stresnext, localization=True),
    "coordconv_regressor": Architecture(coordconv_regressor), "conv_regressor": Architecture(conv_regressor),
}
MODELS: dict[str, Callable[..., nn.Module]] = {name: a.builder for name, a in ARCHITECTURES.items()}


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


__all__ = ["ARCHITECTURES", "Architecture", "MODELS", "STModel", "build_model", "count_parameters", "localization_parameters"]
