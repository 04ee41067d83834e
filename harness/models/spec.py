"""Architecture names: the grammar and what each resolves to.

A name is a built-in (``convnet``), a plugin named in the space's ``plugins.architectures``, ``tv:NAME`` (any
torchvision classifier) or a wrapper around a name: ``st(X)``, ``coordconv(X)``, nested freely
(``st(coordconv(tv:resnet18))``). ``model_options`` of such a name go to the outermost wrapper that takes
them, the rest inward. ``Architecture.canonical`` is what a trial's identity hashes for every name that is
not a built-in: the target, the wrapper chain and the options with the builders' defaults filled in and
pretrained weights resolved to their concrete name, never the label.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from torch import nn

from .stn import STModel
from .wrappers import COORDCONV_OPTIONS, ST_OPTIONS, add_coordinates, make_transformer

REQUIRED = "<required>"  # a builder option without a default


@dataclass(frozen=True)
class Architecture:
    builder: Callable[..., nn.Module]
    localization: bool = False  # a spatial transformer whose localization network has its own learning rate
    declared: Mapping[str, Any] | None = field(default=None, compare=False)  # options of a **kwargs builder
    target: str | None = None  # where it comes from, for identity: "harness:convnet", "models.py:tiny", ...
    canonicalise: Callable[[dict], dict] | None = field(default=None, compare=False)

    @property
    def defaults(self) -> dict[str, Any]:
        """The builder's keyword options and their defaults (``REQUIRED`` where there is none)."""
        if self.declared is not None:
            return dict(self.declared)
        params = inspect.signature(self.builder).parameters.values()
        return {p.name: (REQUIRED if p.default is inspect.Parameter.empty else p.default) for p in params
                if p.name not in ("in_shape", "num_classes")
                and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}

    @property
    def options(self) -> list[str]:
        """The builder's keyword options (``model_options`` in a search space)."""
        return list(self.defaults)

    def canonical(self, options: Mapping[str, Any]) -> dict:
        if self.canonicalise is not None:
            return self.canonicalise(dict(options))
        return {"target": self.target, "options": {**self.defaults, **options}}


def builtin(name: str, arch: Architecture) -> Architecture:
    """A registry entry with its identity target filled in."""
    return Architecture(arch.builder, arch.localization, arch.declared, target=f"harness:{name}")


WRAPPER = re.compile(r"(st|coordconv)\((.+)\)")


def _split(options: Mapping[str, Any], own: Mapping[str, Any]) -> tuple[dict, dict]:
    mine = {k: v for k, v in options.items() if k in own}
    return mine, {k: v for k, v in options.items() if k not in own}


def wrap(kind: str, inner: Architecture) -> Architecture:
    own = ST_OPTIONS if kind == "st" else COORDCONV_OPTIONS

    def builder(in_shape, num_classes, **options):
        mine, rest = _split(options, own)
        if kind == "st":  # the transformer first: st(convnet) initialises exactly like stnet
            transformer = make_transformer(tuple(in_shape), **mine)
            return STModel(transformer, inner.builder(tuple(in_shape), num_classes, **rest))
        return add_coordinates(inner.builder(tuple(in_shape), num_classes, **rest), **mine)

    def canonicalise(options):
        mine, rest = _split(options, own)
        return {"wrapper": kind, "options": {**own, **mine}, "inner": inner.canonical(rest)}

    return Architecture(builder, localization=kind == "st" or inner.localization,
                        declared={**inner.defaults, **own}, target=f"{kind}({inner.target})",
                        canonicalise=canonicalise)


def torchvision_architecture(name: str) -> Architecture:
    from . import torchvision as tv  # lazy: torchvision's model zoo is imported only for a tv: name

    if name not in tv.classifier_names():
        raise UnknownArchitecture(f"unknown architecture 'tv:{name}': not a torchvision classifier; allowed: tv: and "
                                  f"one of {', '.join(tv.classifier_names())}")

    def builder(in_shape, num_classes, weights=None):
        return tv.build(name, tuple(in_shape), num_classes, weights)

    def canonicalise(options):
        return {"target": f"torchvision:{name}", "options": {**options, "weights": tv.resolve_weights(
            name, options.get("weights"))}}

    return Architecture(builder, declared={"weights": None}, target=f"torchvision:{name}", canonicalise=canonicalise)


class UnknownArchitecture(KeyError):
    def __str__(self) -> str:
        return self.args[0]


def resolve(name: str, builtins: Mapping[str, Architecture], plugins: Mapping[str, Architecture]) -> Architecture:
    """The architecture a name denotes; ``UnknownArchitecture`` (a ``KeyError``) for one that denotes none."""
    name = name.strip()
    match = WRAPPER.fullmatch(name)
    if match:
        return wrap(match.group(1), resolve(match.group(2), builtins, plugins))
    if name.startswith("tv:"):
        return torchvision_architecture(name[3:])
    if name in builtins:
        return builtins[name]
    if name in plugins:
        return plugins[name]
    known = sorted(builtins) + sorted(plugins)
    raise UnknownArchitecture(f"unknown architecture {name!r}; allowed: {', '.join(known)}, tv:NAME (a torchvision "
                              "classifier), st(X), coordconv(X), or a name in plugins.architectures")
