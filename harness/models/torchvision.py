"""``tv:NAME``: any torchvision classifier, at the dataset's input channels and number of classes.

``weights`` names a torchvision weights enum member (``DEFAULT``, ``IMAGENET1K_V1``, ...) or is None (trained
from scratch). Pretrained weights must already be in torchvision's cache (``$TORCH_HOME``) on machines without
network access. A greyscale input keeps a pretrained first convolution by summing its colour weights (a grey
image is R = G = B, so the pretrained filter's response is unchanged); another channel count gets a fresh first
convolution of the same geometry. The head is replaced by one of ``num_classes`` outputs.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torchvision.models as tvm
from torch import nn


NO_AUX = ("googlenet", "inception_v3")  # their auxiliary heads return a tuple in training: off


@lru_cache(maxsize=1)
def classifier_names() -> list[str]:
    return sorted(tvm.list_models(module=tvm))


def resolve_weights(name: str, weights: str | None) -> str | None:
    """The concrete weights member (``DEFAULT`` → ``IMAGENET1K_V1``, for example) or None."""
    if weights in (None, "", "none", "None"):
        return None
    enum = tvm.get_model_weights(name)
    try:
        return enum[str(weights).split(".")[-1]].name
    except KeyError:
        allowed = ["DEFAULT", *(w.name for w in enum)]
        raise ValueError(f"weights: {weights!r} is not a weight of {name}; allowed: {', '.join(allowed)}") from None


def build(name: str, in_shape: tuple[int, int, int], num_classes: int, weights: str | None = None) -> nn.Module:
    weights = resolve_weights(name, weights)
    extra = {"aux_logits": False} if name in NO_AUX else {}
    if weights is None:
        model = tvm.get_model(name, weights=None, num_classes=num_classes, **extra)
    else:
        model = tvm.get_model(name, weights=weights, **({"aux_logits": True} if extra else {}))
        if extra:  # pretrained inception/googlenet are built with aux heads; drop them
            model.aux_logits = False
            for aux in ("AuxLogits", "aux1", "aux2"):
                if hasattr(model, aux):
                    setattr(model, aux, None)
        replace_head(model, num_classes)
    adapt_input(model, in_shape[0])
    return model


def _last(model: nn.Module, kind) -> tuple[nn.Module, str, nn.Module] | None:
    found = None
    for name, m in model.named_modules():
        if isinstance(m, kind) and name:
            found = name
    if found is None:
        return None
    parent, _, child = found.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    return owner, child, getattr(owner, child)


def replace_head(model: nn.Module, num_classes: int) -> None:
    """The last Linear (or, for SqueezeNet, the last 1×1 convolution) re-made with ``num_classes`` outputs."""
    found = _last(model, nn.Linear)
    if found is not None:
        owner, child, head = found
        setattr(owner, child, nn.Linear(head.in_features, num_classes, bias=head.bias is not None))
        return
    owner, child, head = _last(model, nn.Conv2d)
    setattr(owner, child, nn.Conv2d(head.in_channels, num_classes, head.kernel_size, head.stride))


def adapt_input(model: nn.Module, channels: int) -> None:
    """The first convolution takes ``channels`` input channels (summed colour weights for a grey input)."""
    first = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first[1].in_channels == channels:
        return
    name, conv = first
    new = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, conv.bias is not None, conv.padding_mode)
    if channels == 1 and conv.in_channels == 3 and conv.groups == 1:
        with torch.no_grad():
            new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
