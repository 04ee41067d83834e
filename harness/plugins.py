"""A search space's own architectures and datasets: resolved, checked, and carried to every Ray worker.

A target is ``"file.py:NAME"`` (a file, relative to the space file) or ``"pkg.mod:NAME"`` (an importable module);
an installed package can also offer names through the entry-point groups ``stbench.architectures`` and
``stbench.datasets``, of which only the names a space uses are loaded. Everything is checked before Ray starts
and each problem is one line naming the field: a target that does not resolve, a missing package (with the
``pip install`` that fixes it), a builder with the wrong signature, an option it does not take, a dataset that is
not a ``Dataset``, and (``check_inputs``) a model that cannot take the dataset's input.

Workers get the same plugins from ``carry``: the trainable Ray pickles holds each plugin file's text (so a
plugin file needs no shared filesystem and no copy on the nodes) and a package's module name (an installed
package must be installed on every node). The code's fingerprint (a file's sha256, a package's version) is
provenance, not identity.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib
import inspect
import json
import sys
import types
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch.func import functional_call, stack_module_state, vmap

from .data import BUILTINS as BUILTIN_DATASETS
from .data import DATASETS
from .data import PLUGINS as DATASET_PLUGINS
from .errors import UserError
from .models import BUILTINS as BUILTIN_ARCHITECTURES
from .models import PLUGINS as ARCHITECTURE_PLUGINS
from .models import build_model
from .models.spec import WRAPPER, Architecture

GROUPS = {"architectures": "stbench.architectures", "datasets": "stbench.datasets"}
DATASET_ATTRIBUTES = ("name", "task", "in_shape", "num_classes", "convergence_target", "protocols", "prepare",
                      "split_sizes", "load")

_active: dict = {}  # the carried form of what is registered now (see ``carried``)
_generation = [0]


class PluginError(UserError):
    pass


# -- loading targets ------------------------------------------------------------------------------------
def split_target(target: str, where: str) -> tuple[str, str]:
    module, sep, attr = target.rpartition(":")
    if not sep or not module or not attr.isidentifier():
        raise PluginError(f"{where}: {target!r} is not a target; allowed: \"file.py:NAME\" (relative to the space "
                          "file) or \"package.module:NAME\"")
    return module, attr


def _file_module(path: str, source: str) -> types.ModuleType:
    """The module a plugin file's text defines, registered in ``sys.modules`` (dataclasses and pickling need it)
    under a name from its content, so the same file loads once and two different ones never collide."""
    digest = hashlib.sha256(source.encode()).hexdigest()
    name = f"stbench_plugin_{Path(path).stem}_{digest[:12]}"
    if name not in sys.modules:
        module = types.ModuleType(name)
        module.__file__ = path
        sys.modules[name] = module
        try:
            exec(compile(source, path, "exec"), module.__dict__)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def _top_package(module: str) -> str:
    return module.split(".")[0]


def fingerprint_module(module: str) -> dict:
    top = _top_package(module)
    dists = metadata.packages_distributions().get(top) or []
    versions = {}
    for dist in dists:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return {"module": module, "packages": versions}


def load(target: str, where: str, base_dir: Path | None = None, source: str | None = None) -> tuple[Any, dict]:
    """The object a target names and its code's fingerprint. ``source`` (on a worker): the file's text."""
    module_name, attr = split_target(target, where)
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if source is None:
                path = path if path.is_absolute() else (base_dir or Path.cwd()) / path
                try:
                    source = path.read_text()
                except OSError as e:
                    raise PluginError(f"{where}: cannot read {path}: {e.strerror}") from None
            module = _file_module(str(path), source)
            fingerprint = {"file": module_name, "sha256": hashlib.sha256(source.encode()).hexdigest()}
        else:
            module = importlib.import_module(module_name)
            fingerprint = fingerprint_module(module_name)
    except PluginError:
        raise
    except ModuleNotFoundError as e:
        missing = _top_package(e.name or module_name)
        raise PluginError(f"{where}: {target!r} needs the module {e.name!r}, which is not installed; fix: "
                          f"pip install {missing}") from None
    except Exception as e:  # the user's code failed on import: say where, in one line
        raise PluginError(f"{where}: importing {target!r} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        public = sorted(n for n in vars(module) if not n.startswith("_"))
        raise PluginError(f"{where}: {module_name} has no {attr!r}; allowed: {', '.join(public) or 'nothing'}") from None
    return obj, {**fingerprint, "source": source} if source is not None and module_name.endswith(".py") else fingerprint


def entry_point(group: str, name: str):
    found = [ep for ep in metadata.entry_points(group=group) if ep.name == name]
    return found[0] if found else None


# -- checking what a target is -------------------------------------------------------------------------
def check_builder(builder: Any, where: str, options: Mapping[str, Any]) -> None:
    """``(in_shape, num_classes, **options) -> nn.Module``, taking every option given."""
    if not callable(builder):
        raise PluginError(f"{where}: {builder!r} is not callable; allowed: a builder (in_shape, num_classes, **options)")
    try:
        sig = inspect.signature(builder)
    except (TypeError, ValueError):
        return  # a builtin or C callable: nothing to check
    try:
        sig.bind((1, 28, 28), 10)
    except TypeError as e:
        raise PluginError(f"{where}: {getattr(builder, '__name__', builder)}{sig} has the wrong signature ({e}); "
                          "allowed: (in_shape, num_classes, **options)") from None
    check_options(builder, sig, where, options, skip=2)


def check_options(fn: Callable, sig: inspect.Signature, where: str, options: Mapping[str, Any], skip: int = 0) -> None:
    params = list(sig.parameters.values())[skip:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    allowed = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise PluginError(f"{where}: {getattr(fn, '__name__', fn)} takes no option {unknown[0]!r}; "
                          f"allowed: {', '.join(allowed) or 'none'}")


def defaults(obj: Any) -> dict:
    """A factory's keyword defaults (none for a dataset object)."""
    if not callable(obj) or all(hasattr(obj, a) for a in DATASET_ATTRIBUTES) and not isinstance(obj, type):
        return {}
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def make_dataset(obj: Any, where: str, options: Mapping[str, Any], name: str):
    """A ``Dataset`` object, or a factory (class or function) called with ``options`` to make one."""
    if isinstance(obj, type) or (callable(obj) and not all(hasattr(obj, a) for a in DATASET_ATTRIBUTES)):
        try:
            check_options(obj, inspect.signature(obj), f"{where}.options", options)
        except (TypeError, ValueError):
            pass
        try:
            obj = obj(**options)
        except PluginError:
            raise
        except Exception as e:
            raise PluginError(f"{where}.target: calling it with options {dict(options)} failed: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}") from None
    elif options:
        raise PluginError(f"{where}.options: the target is a dataset object, not a factory, so it takes no options")
    missing = [a for a in DATASET_ATTRIBUTES if not hasattr(obj, a)]
    if missing:
        raise PluginError(f"{where}.target: {type(obj).__name__} is not a Dataset (it lacks {', '.join(missing)}); allowed: "
                          "an object of harness.data.Dataset's contract, or a factory returning one")
    return obj


# -- registering ---------------------------------------------------------------------------------------
def _architecture(builder, target: str, options: Mapping[str, Any]):
    if options:  # the plugin entry's options: defaults under the space's model_options
        builder = functools.partial(builder, **options)  # its signature shows them as the new defaults
    return Architecture(builder, localization=bool(getattr(builder, "localization", False)), target=target)


def wanted_names(architectures: list[str]) -> list[str]:
    """The base names inside wrapper expressions: ``st(coordconv(tiny))`` → ``tiny``."""
    out = []
    for name in architectures:
        name = str(name).strip()
        while (m := WRAPPER.fullmatch(name)):
            name = m.group(2).strip()
        out.append(name)
    return out


def resolve(plugins, architectures: list[str], datasets: list[str], base_dir: Path | None) -> dict:
    """The carried form of everything the space uses: plugin entries, and the entry points it names."""
    carried: dict = {"architectures": {}, "datasets": {}}
    entries = {"architectures": dict(plugins.architectures), "datasets": dict(plugins.datasets)}
    builtin = {"architectures": BUILTIN_ARCHITECTURES, "datasets": BUILTIN_DATASETS}
    used = {"architectures": wanted_names(architectures), "datasets": list(datasets)}
    for kind, names in used.items():
        for name in names:
            if name in entries[kind] or name in builtin[kind] or name.startswith("tv:"):
                continue
            ep = entry_point(GROUPS[kind], name)
            if ep is not None:
                entries[kind][name] = types.SimpleNamespace(target=ep.value, options={})
    for kind, table in entries.items():
        for name, ref in table.items():
            where = f"plugins.{kind}.{name}"
            if name in builtin[kind]:
                raise PluginError(f"{where}: {name!r} is a built-in {kind[:-1]}; allowed: another name")
            obj, fingerprint = load(ref.target, f"{where}.target", base_dir)
            options = dict(ref.options or {})
            if kind == "architectures":
                check_builder(obj, f"{where}.target", options)
            else:
                make_dataset(obj, where, options, name)
            carried[kind][name] = {"target": ref.target, "options": options, "fingerprint": fingerprint,
                                   "canonical": {"target": ref.target, "options": {**defaults(obj), **options}}}
    return carried


def activate(carried: Mapping) -> None:
    """Register a carried plugin set (replacing the previous one) in the model and dataset registries."""
    architectures, datasets = {}, {}
    for name, entry in carried.get("architectures", {}).items():
        obj, _ = load(entry["target"], f"plugins.architectures.{name}.target",
                      source=entry["fingerprint"].get("source"))
        architectures[name] = _architecture(obj, entry["target"], entry["options"])
    for name, entry in carried.get("datasets", {}).items():
        obj, _ = load(entry["target"], f"plugins.datasets.{name}.target", source=entry["fingerprint"].get("source"))
        datasets[name] = make_dataset(obj, f"plugins.datasets.{name}", entry["options"], name)
    ARCHITECTURE_PLUGINS.clear(); ARCHITECTURE_PLUGINS.update(architectures)
    DATASET_PLUGINS.clear(); DATASET_PLUGINS.update(datasets)
    _active.clear(); _active.update({k: dict(carried.get(k, {})) for k in ("architectures", "datasets")})
    _generation[0] += 1  # canonical specs computed for the previous set are stale (``harness.identity``)


def generation() -> int:
    """Bumped whenever the registered plugin set changes."""
    return _generation[0]


def active() -> dict:
    """The carried form of the registered plugins (empty when the space has none)."""
    return {k: v for k, v in _active.items() if v}


def fingerprints() -> dict:
    """Per plugin, where its code came from (sha256 of a file, version of a package): provenance, not identity."""
    return {f"{kind}.{name}": {k: v for k, v in e["fingerprint"].items() if k != "source"}
            for kind, table in active().items() for name, e in table.items()}


def used_by(trial) -> list[str]:
    """The plugins (``architectures.NAME``, ``datasets.NAME``) a trial's results depend on."""
    carried = active()
    names = [f"architectures.{n}" for n in wanted_names([trial.architecture]) if n in carried.get("architectures", {})]
    return names + ([f"datasets.{trial.dataset}"] if trial.dataset in carried.get("datasets", {}) else [])


def stale_ids(store, trials) -> set[str]:
    """Ids of the stored results among ``trials`` that ran other plugin code than now: a plugin they use has
    another fingerprint in their run's provenance (or none recorded)."""
    current = fingerprints()
    using = {t.trial_id: used_by(t) for t in trials}
    using = {k: v for k, v in using.items() if v}
    if not using:
        return set()
    rows, runs = store.trials(), store.runs()
    recorded = {r.run_id: json.loads(r.provenance_json or "{}").get("plugins", {}) for r in runs.itertuples()}
    stale = set()
    for row in rows[rows["trial_id"].isin(set(using))].itertuples():
        then = recorded.get(row.run_id, {})
        if any(then.get(name) != current.get(name) for name in using[row.trial_id]):
            stale.add(row.trial_id)
    return stale


# -- carrying to workers -------------------------------------------------------------------------------
def carry(trainable: Callable) -> Callable:
    """``trainable`` itself when no plugins are active, else a function that registers them first on the
    worker (Ray pickles it with the plugin files' text) and then runs the trainable."""
    carried = active()
    if not carried:
        return trainable

    @functools.wraps(trainable)
    def with_plugins(config):
        if active() != carried:
            activate(carried)
        return trainable(config)

    return with_plugins


# -- the model takes the dataset's input ----------------------------------------------------------------
def pairs_to_check(trials) -> list[tuple[str, str, dict]]:
    """(architecture, dataset, model options) of the trials, each once, leaving out built-in models on
    built-in datasets (those are known to fit)."""
    seen: dict[tuple, tuple[str, str, dict]] = {}
    for t in trials:
        if t.architecture in BUILTIN_ARCHITECTURES and t.dataset in BUILTIN_DATASETS:
            continue
        seen.setdefault((t.architecture, t.dataset, repr(sorted(t.model_options.items()))),
                        (t.architecture, t.dataset, dict(t.model_options)))
    return list(seen.values())


def check_inputs(pairs: list[tuple[str, str, dict]], stack: Mapping[str, int] | None = None) -> None:
    """One forward pass on the meta device (no memory, no compute) per (architecture, dataset, options) with
    the dataset's declared input shape, and, where the dataset's seeds are stacked (``stack``: seeds per trial
    by dataset), one through the vmapped stack the trainer would build. Pretrained weights are not loaded
    for it (the shapes are the same). A model whose forward needs real values (``.item()``) is tried on the
    CPU with a batch of zeros instead."""
    for architecture, dataset, options in pairs:
        d = DATASETS[dataset]
        shape, classes = tuple(int(s) for s in d.in_shape), int(d.num_classes)
        opts = {k: v for k, v in options.items() if k != "weights"}
        try:
            _try(lambda device: _forward(architecture, shape, classes, opts, device), classes)
        except Exception as e:
            raise PluginError(f"architectures: {architecture} cannot take datasets.{dataset}'s input "
                              f"{'x'.join(map(str, shape))} ({_short(e)})") from None
        k = int((stack or {}).get(dataset, 1))
        if k > 1:
            try:
                _try(lambda device: _stacked_forward(architecture, shape, classes, opts, device), classes)
            except Exception as e:
                raise PluginError(f"training.stack: {architecture} cannot be trained as a stack of {k} seeds on "
                                  f"{dataset} ({_short(e)}); allowed: stack: 1 for it (datasets.{dataset}.stack: 1)"
                                  ) from None


def _short(e: Exception) -> str:
    return str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__


def _try(forward: Callable, classes: int) -> None:
    try:
        out = forward("meta")
    except Exception as e:
        if "meta" not in str(e):
            raise
        out = forward("cpu")  # the forward needs values: a real one, on zeros
    if not hasattr(out, "shape") or tuple(out.shape)[-2:] != (2, classes):
        got = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
        raise ValueError(f"output {got}, expected (batch, {classes})")


def _forward(architecture: str, shape: tuple, classes: int, options: dict, device: str):
    with torch.device(device):
        return build_model(architecture, shape, classes, **options).eval()(torch.zeros((2, *shape)))


def _stacked_forward(architecture: str, shape: tuple, classes: int, options: dict, device: str):
    """Two seeds through ``vmap(functional_call)`` in training mode, as ``harness.stacked`` runs them."""
    with torch.device(device):
        models = [build_model(architecture, shape, classes, **options) for _ in range(2)]
        params, buffers = stack_module_state(models)
        base = copy.deepcopy(models[0]).to("meta").train()
        one = lambda p, b, x: functional_call(base, (p, b), (x,))  # noqa: E731
        return vmap(one, randomness="different")(params, buffers, torch.zeros((2, 2, *shape)))
