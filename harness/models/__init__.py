"""Architecture registry: a name maps to a builder ``(in_shape, num_classes, **options) -> nn.Module`` and
what the rest of the harness needs to know without building it (``Architecture``).

Adding a built-in architecture is one file with a builder and one line here. Every other name the grammar of
``harness/models/spec.py`` allows (``st(X)``, ``coordconv(X)``, ``tv:NAME``, a space's plugins) resolves on
lookup: ``ARCHITECTURES[name]`` works for all of them, iterating it lists the built-ins.
"""

from __future__ import annotations

from typing import Callable, Iterator

from torch import nn

from .convnet import convnet, coordconv
from .regressor import conv_regressor, coordconv_regressor
from .resnext import resnext, stresnext
from .spec import Architecture, UnknownArchitecture, builtin, resolve
from .stn import STModel, stcoordconv, stnet

BUILTINS: dict[str, Architecture] = {name: builtin(name, a) for name, a in {
    "convnet": Architecture(convnet),
    "stnet": Architecture(stnet, localization=True),
    "coordconv": Architecture(coordconv),
    "stcoordconv": Architecture(stcoordconv, localization=True),
    "resnext": Architecture(resnext),
    "stresnext": Architecture(stresnext, localization=True),
    "coordconv_regressor": Architecture(coordconv_regressor), "conv_regressor": Architecture(conv_regressor),
}.items()}
# Plugin architectures of the active search space (``harness.plugins.activate`` fills it).
PLUGINS: dict[str, Architecture] = {}


class _Registry(dict):
    """The built-ins, plus every other name the grammar allows, resolved when looked up."""

    def __missing__(self, name: str) -> Architecture:
        return resolve(name, BUILTINS, PLUGINS)


ARCHITECTURES: dict[str, Architecture] = _Registry(BUILTINS)
MODELS: dict[str, Callable[..., nn.Module]] = {name: a.builder for name, a in BUILTINS.items()}


def build_model(name: str, in_shape: tuple[int, int, int], num_classes: int, **options) -> nn.Module:
    try:
        architecture = ARCHITECTURES[name]
    except UnknownArchitecture as e:
        raise ValueError(str(e)) from None
    return architecture.builder(tuple(in_shape), num_classes, **options)


def localization_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The spatial transformer's parameters, or [] for a model without one."""
    get: Callable[[], Iterator[nn.Parameter]] | None = getattr(model, "localization_parameters", None)
    return list(get()) if get else []


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["ARCHITECTURES", "Architecture", "BUILTINS", "MODELS", "PLUGINS", "STModel", "build_model",
           "count_parameters", "localization_parameters"]
