"""Search spaces: a YAML file, validated by a typed schema, expanded into trial configs.

Validation happens before Ray starts, and every problem becomes one line naming
the field, what was wrong and the allowed values. A trial's identity is a hash of
everything that changes its result (architecture, dataset, seed, model options,
training hyper-parameters), so the same trial run twice has the same id.
"""

from __future__ import annotations

import copy
import dataclasses
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin, get_type_hints

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator
from pydantic_core import PydanticCustomError

from . import plugins as plugin_registry
from .contract import DEFAULT_STACK, TrainingSettings
from .data import DATASETS
from .data import PLUGINS as DATASET_PLUGINS
from .errors import UserError
from .models import ARCHITECTURES
from .models import PLUGINS as ARCHITECTURE_PLUGINS
from .trial import Trial

REPO_ROOT = Path(__file__).resolve().parent.parent


def _spaces_dir() -> Path:
    """``search_spaces/`` of a checkout (or an editable install), else the installed package data."""
    here = REPO_ROOT / "search_spaces"
    if here.is_dir():
        return here
    return Path(str(files("harness.search_spaces")))


SPACES_DIR = _spaces_dir()
DEFAULT_SPACE = "quick"


def _known(registry, plugins: dict, extra: str):
    """A name the registry resolves (built-ins, the grammar, the active space's plugins), else the same
    'not allowed' line a Literal gives."""
    def check(name: str) -> str:
        try:
            registry[name]
        except KeyError:
            names = ", ".join([*registry, *plugins])  # the built-ins, then the active space's plugins
            hint = extra if any(c in name for c in "(:") else ""  # the grammar's forms, for a name that tried one
            raise PydanticCustomError("literal_error", "not allowed", {"expected": names + hint}) from None
        return name

    return AfterValidator(check)


ArchitectureName = Annotated[str, _known(ARCHITECTURES, ARCHITECTURE_PLUGINS, ", tv:NAME, st(X), coordconv(X) or "
                                                                             "a name in plugins.architectures")]
DatasetName = Annotated[str, _known(DATASETS, DATASET_PLUGINS, "")]

Strict = ConfigDict(extra="forbid")


def check_seeds(seeds) -> None:
    if (isinstance(seeds, int) and seeds < 1) or (
        isinstance(seeds, list) and (not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds))
    ):
        raise ValueError(f"seeds: must be a count ≥ 1 or a non-empty list of distinct seeds ≥ 0 (got {seeds!r})")


def seed_list(seeds: int | list[int], first: int = 0) -> list[int]:
    """A count n means seeds first .. first+n-1; a list is taken as it is."""
    return list(range(first, first + seeds)) if isinstance(seeds, int) else list(seeds)


class _TrainingChecks(BaseModel):
    """The cross-field rules of the training settings; the fields come from ``TrainingSettings``."""

    model_config = Strict

    @model_validator(mode="after")
    def _one_loc_lr(self):
        if self.loc_lr is not None and self.loc_lr_mult is not None:
            raise ValueError("give loc_lr or loc_lr_mult, not both")
        check_seeds(self.seeds)
        if (self.stack or 1) > 1 and (self.compile or self.channels_last):
            raise ValueError(f"stack: {self.stack} cannot be combined with compile or channels_last (neither works "
                             "under vmap); set stack: 1 or turn the switch off")
        return self

    def seed_list(self) -> list[int]:
        return seed_list(self.seeds)

    def settings(self) -> TrainingSettings:
        """The typed settings a trial carries (everything but the seeds, which are the trial's)."""
        return TrainingSettings(**self.model_dump(exclude={"seeds"}))


def _schema_of(settings: type, base: type[BaseModel]) -> type[BaseModel]:
    """The pydantic model of a settings dataclass: each field's type, default, bounds and description as the
    dataclass declares them (so the defaults live in one place), plus the seeds."""
    hints = get_type_hints(settings)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        meta = dict(f.metadata)
        fields[f.name] = (hints[f.name], Field(f.default, description=meta.pop("description", "") or None, **meta))
        if f.name == "loc_lr_mult":  # where the seeds always stood in the YAML's field order
            fields["seeds"] = (Union[int, list[int]], Field(1, description="a count (seeds 0..n-1) or a list"))
    return create_model("Training", __base__=base, __doc__=settings.__doc__, **fields)


Training = _schema_of(TrainingSettings, _TrainingChecks)


def _partial(model: type[BaseModel]) -> type[BaseModel]:
    """The same fields, all optional and unset by default: a per-dataset override."""
    fields = {
        name: (Optional[Annotated[(f.annotation, *f.metadata)]] if f.metadata else Optional[f.annotation], None)
        for name, f in model.model_fields.items()
    }
    return create_model(f"{model.__name__}Override", __config__=Strict, **fields)


TrainingOverride = _partial(Training)


class Resources(BaseModel):
    """What one trial asks Ray for; fractional GPUs let small trials share a device."""

    model_config = Strict

    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)


class Range(BaseModel):
    """A search range for one learning rate (log-uniform by default)."""

    model_config = Strict

    low: float = Field(gt=0)
    high: float = Field(gt=0)
    log: bool = True

    @model_validator(mode="after")
    def _ordered(self):
        if self.low >= self.high:
            raise ValueError(f"low must be below high (got low={self.low}, high={self.high})")
        return self


class Tuning(BaseModel):
    """An Optuna study per architecture × dataset that tunes the localization network's learning rate
    (absolute ``loc_lr`` or ``loc_lr_mult`` × lr) and optionally the main ``lr``, before the benchmark."""

    model_config = Strict

    architectures: Optional[list[ArchitectureName]] = Field(
        None, description="default: every architecture of the space that has a spatial transformer")
    trials: int = Field(20, ge=1, description="Optuna trials per architecture × dataset")
    seeds: Union[int, list[int]] = Field(3, description="each Optuna trial averages these seeds (a count: 1000, 1001, ...)")
    loc_lr: Optional[Range] = None
    loc_lr_mult: Optional[Range] = None
    lr: Optional[Range] = None
    epochs: Optional[int] = Field(None, ge=1, description="epochs of a tuning trial (default: the benchmark's)")
    train_limit: Optional[int] = Field(None, ge=1)
    scheduler: Literal["none", "asha"] = "none"
    grace_period: int = Field(1, ge=1, description="ASHA: epochs before a trial may be stopped")
    max_concurrent: Optional[int] = Field(None, ge=1)
    sampler_seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _one_target(self):
        if (self.loc_lr is None) == (self.loc_lr_mult is None):
            raise ValueError("give exactly one of loc_lr (absolute range) or loc_lr_mult (multiplier range)")
        check_seeds(self.seeds)
        return self

    def seed_list(self) -> list[int]:
        return seed_list(self.seeds, first=1000)  # apart from the benchmark's seeds 0, 1, ...

    def ranges(self) -> dict[str, Range]:
        return {k: getattr(self, k) for k in ("loc_lr", "loc_lr_mult", "lr") if getattr(self, k) is not None}


class Decide(BaseModel):
    """Seeds until decided (``harness/decide.py``): seeds run in rounds, and each comparison with a baseline stops
    once an anytime-valid test decides it (different, equivalent within ±margin) or the budget is spent."""

    model_config = Strict

    baselines: list[ArchitectureName] = Field(default_factory=lambda: ["convnet"], min_length=1)
    metric: Literal["test_acc", "best_val_acc"] = "test_acc"
    margin: float = Field(0.005, gt=0, lt=1, description="equivalence margin, a fraction (0.005 = ±0.5 pp)")
    alpha: float = Field(0.05, gt=0, lt=1, description="family-wise error over all comparisons and rounds")
    budget: int = Field(20, ge=2, description="seeds per cell at most")
    round: Optional[int] = Field(None, ge=1, description="seeds per round (default: the seed stack, at least 2)")
    first: Optional[int] = Field(None, ge=2, description="seeds of the first round (default: one round)")

    def decide_checks(self, architectures: list[str]) -> None:
        missing = [b for b in self.baselines if b not in architectures]
        if missing:
            raise ValueError(f"decide.baselines: {', '.join(missing)} is not among the space's architectures; "
                             f"allowed: {', '.join(architectures)}")
        if not [a for a in architectures if a not in self.baselines]:
            raise ValueError("decide.baselines: every architecture is a baseline; nothing to compare")
        if self.first is not None and self.first > self.budget:
            raise ValueError(f"decide.first: {self.first} is above the budget of {self.budget} seeds")


class Wandb(BaseModel):
    """Weights & Biases: offline by default (no account, no network); ``disabled`` turns it off."""

    model_config = Strict

    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = Field("stbench", min_length=1)
    entity: Optional[str] = None
    init_timeout_s: float = Field(60.0, gt=0, description="how long a trial's W&B run may take to start")


class PluginRef(BaseModel):
    """A space's own architecture or dataset: ``file.py:NAME`` (relative to the space file) or ``pkg.mod:NAME``."""

    model_config = Strict

    target: str = Field(min_length=3, description='"file.py:NAME" or "package.module:NAME"')
    options: dict[str, Any] = Field({}, description="architectures: builder defaults; datasets: factory arguments")


class Plugins(BaseModel):
    model_config = Strict

    architectures: dict[str, PluginRef] = {}
    datasets: dict[str, PluginRef] = {}


class SearchSpace(BaseModel):
    model_config = Strict

    name: str = Field(min_length=1)
    description: str = ""
    architectures: list[ArchitectureName] = Field(min_length=1)
    datasets: dict[DatasetName, TrainingOverride] = Field(min_length=1)  # type: ignore[valid-type]
    training: Training = Training()
    model_options: dict[ArchitectureName, dict[str, Any]] = {}
    resources: Resources = Resources()
    max_failures: int = Field(2, ge=0)
    wandb: Wandb = Wandb()
    tune: Optional[Tuning] = None
    decide: Optional[Decide] = None
    # convergence targets (validation accuracy) for the report, over each dataset's own convergence_target
    targets: dict[DatasetName, Annotated[float, Field(gt=0, le=1)]] = {}  # type: ignore[valid-type]
    plugins: Plugins = Plugins()  # registered before the rest is validated (``activate_plugins``)
    # the report's comparisons (``harness.baselines``): default convnet, and st(X) / coordconv(X) against X
    baselines: dict[ArchitectureName, Union[ArchitectureName, list[ArchitectureName]]] = {}

    @model_validator(mode="after")
    def _baselines_in_space(self):
        for arch, bases in self.baselines.items():
            for name in [arch, *([bases] if isinstance(bases, str) else bases)]:
                if name not in self.architectures:
                    raise ValueError(f"baselines.{arch}: {name} is not among the space's architectures; allowed: "
                                     f"{', '.join(self.architectures)}")
        return self

    @model_validator(mode="after")
    def _tunable_architectures(self):
        if self.tune is None:
            return self
        names = self.tune.architectures if self.tune.architectures is not None else self.architectures
        with_stn = [a for a in names if ARCHITECTURES[a].localization]
        if self.tune.architectures is not None and len(with_stn) != len(names):
            bad = sorted(set(names) - set(with_stn))
            raise ValueError(f"tune.architectures: {', '.join(bad)} has no localization network to tune; "
                             f"allowed: architectures with a spatial transformer")
        missing = sorted(set(names) - set(self.architectures))
        if missing:
            raise ValueError(f"tune.architectures: {', '.join(missing)} is not among the space's architectures")
        if not with_stn:
            raise ValueError("tune: none of the space's architectures has a spatial transformer to tune")
        self.tune.architectures = with_stn
        return self

    @model_validator(mode="after")
    def _decide_baselines(self):
        if self.decide is not None:
            self.decide.decide_checks(list(self.architectures))
        return self

    @model_validator(mode="after")
    def _known_model_options(self):
        for arch, options in self.model_options.items():
            allowed = ARCHITECTURES[arch].options
            unknown = sorted(set(options) - set(allowed))
            if unknown:
                raise ValueError(f"model_options.{arch}: unknown option {unknown[0]!r}; allowed: {', '.join(allowed) or 'none'}")
        for arch in self.architectures:  # what identity hashes must resolve too (pretrained weights' names)
            try:
                ARCHITECTURES[arch].canonical(self.model_options.get(arch, {}))
            except ValueError as e:
                raise ValueError(f"model_options.{arch}.{e}") from None
        return self

    @model_validator(mode="after")
    def _known_protocols(self):
        for dataset in self.datasets:
            try:
                protocol = self.training_for(dataset).protocol
            except ValidationError:  # reported field by field by parse_space
                continue
            allowed = DATASETS[dataset].protocols
            if protocol not in allowed:
                raise ValueError(f"datasets.{dataset}.protocol: {protocol!r} is not defined for {dataset}; "
                                 f"allowed: {', '.join(allowed)}")
        return self

    def training_for(self, dataset: str) -> Training:
        """Defaults merged with the dataset's overrides (validated again as a whole)."""
        override = self.datasets[dataset].model_dump(exclude_none=True)
        return Training.model_validate({**self.training.model_dump(), **override})

    def trials(self, tuned: dict[tuple[str, str], dict] | None = None) -> list[Trial]:
        """The grid architecture × dataset × seed, one single-seed ``Trial`` each (grouped into stacks later,
        once finished seeds are set aside).

        ``tuned`` maps (architecture, dataset) to ``{"study": name, "params": {...}}`` from the tuning
        stage; those trials train with the tuned values (a different identity) and say where they came from.
        """
        out = []
        for dataset in self.datasets:
            training = self.training_for(dataset)
            hyper = training.settings()
            for architecture in self.architectures:
                tuning = (tuned or {}).get((architecture, dataset))
                cell = hyper.replace(**tuning["params"]) if tuning else hyper
                for seed in training.seed_list():
                    out.append(Trial(architecture=architecture, dataset=dataset, seeds=(seed,), training=cell,
                                     model_options=dict(self.model_options.get(architecture, {})),
                                     study=tuning["study"] if tuning else None,
                                     tuned=dict(tuning["params"]) if tuning else None))
        return out

    def stack_sizes(self, device: str) -> dict[str, int]:
        """Seeds per Tune trial for each dataset: ``stack`` where the space sets it, else the device's default."""
        def size(t: Training) -> int:  # compile and channels_last do not work under vmap: never stacked
            return t.stack or (1 if t.compile or t.channels_last else DEFAULT_STACK[device])

        return {d: size(self.training_for(d)) for d in self.datasets}


def resolve_space_path(space: str | Path | None) -> Path:
    """A path to a YAML file, or the name of one in ``search_spaces/``."""
    space = space or DEFAULT_SPACE
    path = Path(space)
    if path.suffix in (".yaml", ".yml"):
        return path
    candidate = SPACES_DIR / f"{space}.yaml"
    if candidate.is_file():
        return candidate
    names = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
    raise UserError(f"--space: no search space named {space!r}; allowed: a YAML path or one of the {len(names)} "
                    f"shipped spaces below\n  {', '.join(names)}")  # the list grows: its own line


def load_space(space: str | Path | None = None, overrides: list[str] | tuple = ()) -> tuple[SearchSpace, str]:
    """Read and validate a search space, ``--set KEY=VALUE`` overrides applied first; return it with its
    YAML text (kept as provenance; the overrides are recorded beside it)."""
    path = resolve_space_path(space)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"--space: cannot read {path}: {e.strerror}") from None
    try:
        text = data.decode("utf-8")  # strict: a binary file is refused here, not half-parsed
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not a text YAML file (byte {e.start} is not UTF-8)") from None
    return parse_space(text, source=str(path), overrides=overrides), text


def parse_space(text: str, source: str = "<search space>", overrides: list[str] | tuple = ()) -> SearchSpace:
    try:
        raw = yaml.safe_load(text)
    except yaml.reader.ReaderError as e:  # control characters: binary data that happens to decode
        raise UserError(f"{source}: not a text YAML file (character #x{e.character:04x} at position {e.position})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{source}: malformed YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else f"a YAML {type(raw).__name__}"
        raise UserError(f"{source}: not a text YAML file of a mapping (name, architectures, datasets, ...); got {got}")
    raw = apply_overrides(raw, overrides)
    activate_plugins(raw, source)
    try:
        space = SearchSpace.model_validate(raw)
        for dataset in space.datasets:
            try:
                space.training_for(dataset)
            except ValidationError as e:
                raise UserError(f"{source}: {format_errors(e, Training, prefix=('datasets', dataset))}") from None
    except ValidationError as e:
        raise UserError(f"{source}: {format_errors(e, SearchSpace)}") from None
    return space


def activate_plugins(raw: dict, source: str) -> None:
    """The space's plugins (and the entry points it names) resolved, checked and registered, so that the rest
    of the space validates against them; a space without any leaves the registries to the built-ins."""
    try:
        plugins = Plugins.model_validate(raw.get("plugins") or {})
    except ValidationError as e:
        raise UserError(f"{source}: {format_errors(e, Plugins, prefix=('plugins',))}") from None
    architectures = raw.get("architectures") if isinstance(raw.get("architectures"), list) else []
    datasets = list(raw["datasets"]) if isinstance(raw.get("datasets"), dict) else []
    base_dir = Path(source).resolve().parent if Path(source).suffix in (".yaml", ".yml") else Path.cwd()
    try:
        carried = plugin_registry.resolve(plugins, [str(a) for a in architectures], [str(d) for d in datasets], base_dir)
    except plugin_registry.PluginError as e:
        raise UserError(f"{source}: {e}") from None
    plugin_registry.activate(carried)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=VALUE`` → (["a", "b", "c"], VALUE parsed as a YAML scalar or flow collection)."""
    key, sep, value = text.partition("=")
    path = [p.strip() for p in key.split(".")]
    if not sep or not all(path):
        raise UserError(f"--set {text}: expected KEY=VALUE with a dotted key, e.g. training.epochs=1")
    try:
        return path, yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        raise UserError(f"--set {text}: the value is not a YAML scalar or flow list/mapping") from None


def apply_overrides(raw: dict, overrides: list[str] | tuple) -> dict:
    """The space with each ``--set`` applied, before validation: an unknown key or a bad value then fails
    exactly as it would in the YAML. A dataset the space does not train cannot be added this way."""

    raw = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for depth, part in enumerate(path[:-1]):
            if path[:depth] == ["datasets"] and part not in (node or {}):
                known = ", ".join(node or {}) or "none"
                raise UserError(f"--set {text}: datasets.{part} is not in the space; allowed: {known}")
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"--set {text}: {'.'.join(path[:depth + 1])} is not a mapping")
            node = child
        node[path[-1]] = value
    return raw


def format_errors(error: ValidationError, model: type[BaseModel], prefix: tuple = ()) -> str:
    """All of pydantic's errors on one line: ``field.path: what is wrong (got X); allowed: ...``."""
    parts = []
    for err in error.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or "-" in p)))
        field = ".".join(str(p) for p in prefix + loc)
        if err["type"] == "extra_forbidden":
            allowed = _fields_at(model, loc[:-1])
            parts.append(f"{field}: unknown key; allowed: {', '.join(allowed)}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        if err["type"] == "literal_error":  # pydantic's "Input should be 'a', 'b' or 'c'", shorter
            allowed = err.get("ctx", {}).get("expected", "").replace("'", "").replace(" or ", ", ")
            parts.append(f"{field}: {got!r} is not allowed; allowed: {allowed}")
            continue
        shown = "" if err["type"] == "missing" or isinstance(got, (dict, list)) else f" (got {got!r})"
        parts.append(f"{field}: {msg}{shown}" if field else f"{msg}{shown}")
    seen = list(dict.fromkeys(parts))  # a union reports each branch; keep each message once
    if len(seen) == 1 or len("; ".join(seen)) < 150:
        return "; ".join(seen)
    return f"{seen[0]} (and {len(seen) - 1} more problem(s), below)" + "".join(f"\n  {p}" for p in seen[1:])


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (nested) model found at ``loc``, for 'unknown key' messages."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part)
            if field is None:
                return []
            tp = field.annotation
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        elif get_origin(tp) is list:
            tp = get_args(tp)[0]
    tp = _unwrap(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _unwrap(tp: Any) -> Any:
    """Optional[X] / Annotated[X, ...] → X, where X is the one model among the members."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) is Union:
        models = [a for a in get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(models) == 1:
            return models[0]
    return tp
