"""What a trial's identity hashes for its model and dataset. Model: a built-in's name and options exactly as before (so every
existing id stays), any other name's canonical spec (``Architecture.canonical``: target, wrapper chain, options
with defaults filled in, weights resolved), so the label a space gives a model never changes a result's id
and two labels for the same model share it. Dataset: a built-in's name; a plugin's target and options with the
factory's defaults filled in (``harness.plugins``), so two spaces' different datasets under one label never share
ids."""

from __future__ import annotations

import json
from typing import Any

from . import plugins
from .data import BUILTINS as DATASET_BUILTINS
from .models import ARCHITECTURES, BUILTINS

_cache: dict[tuple, tuple[Any, dict]] = {}


def model_key(architecture: str, options: dict) -> tuple[Any, dict]:
    """(architecture, model_options) as the identity hashes them."""
    if architecture in BUILTINS:
        return architecture, options
    key = (plugins.generation(), architecture, json.dumps(options, sort_keys=True, default=str))
    if key not in _cache:
        _cache[key] = (ARCHITECTURES[architecture].canonical(options), {})
    return _cache[key]


def dataset_key(dataset: str) -> Any:
    """The dataset as the identity hashes it."""
    if dataset in DATASET_BUILTINS:
        return dataset
    entry = plugins.active().get("datasets", {}).get(dataset)
    return entry["canonical"] if entry else dataset
