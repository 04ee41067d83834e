"""``stbench plan``: what a run would do, and how long it would take here, without starting Ray.

Every trial of the space is listed as done / to run / failed (from the store, read only). The wall time of
what is left comes from epoch times already in the store for the same architecture × dataset on this
hardware when there are any, else from a calibration: a few timed training steps per architecture on
random inputs of the dataset's shape, with the trial's thread count. Trials are then packed onto the
slots the resources allow (longest first), as Ray Tune would run them.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from . import plugins
from .data import DATASETS, ImageSplits
from .data.cub import FOLDER as CUB_FOLDER
from .driver import cluster_address, done_statuses, ray_connection, select, stack_device
from .errors import UserError
from .durations import duration
from .provenance import cpu_model, hardware_label
from .space import SearchSpace
from .store import ResultsStore
from .trial import Status, Trial, TrainingSettings, group_seeds

RAY_START_S = 5.0  # ray.init + shutdown, measured 4–7 s here (shared/notes/ray-facts.md)
TRIAL_START_S = 2.0  # a trial actor's start-up and its data load, on top of its epochs
CALIBRATION_STEPS = 5
TRIAL_COLUMNS = ["trial_id", "status", "stage", "architecture", "dataset", "config_json", "device", "cpu_model",
                 "gpu_model"]


@dataclass
class PlannedTrial:
    architecture: str
    dataset: str
    seed: int
    trial_id: str
    state: str  # done | to run | failed
    epochs: int
    seconds: float | None = None  # estimated, for trials to run


@dataclass
class Plan:
    space: str
    trials: list[PlannedTrial]
    slots: int
    stacks: int
    wall_s: float | None
    source: str  # how the epoch times were obtained
    hardware: str  # the device the epoch times hold for (a hardware label: "GPU NVIDIA H200", "CPU AMD EPYC")
    notes: list[str] = field(default_factory=list)
    runs_on: str = "this machine"  # where the slots are: this machine, or the Ray cluster at --address

    def counts(self) -> dict[str, int]:
        out = {"done": 0, "to run": 0, "failed": 0}
        for t in self.trials:
            out[t.state] += 1
        return out

    def to_json(self) -> str:
        return json.dumps({"space": self.space, "counts": self.counts(), "slots": self.slots,
                           "stacked_trials": self.stacks, "wall_s": self.wall_s, "estimate_source": self.source,
                           "hardware": self.hardware, "runs_on": self.runs_on, "notes": self.notes, "trials": [asdict(t) for t in self.trials]},
                          indent=2)

    def to_text(self) -> str:
        c = self.counts()
        lines = [f"space {self.space}: {len(self.trials)} trials; {c['done']} done, {c['to run']} to run, "
                 f"{c['failed']} failed", ""]
        header = ("architecture", "dataset", "seed", "trial id", "state", "epochs", "estimate")
        rows = [(t.architecture, t.dataset, str(t.seed), t.trial_id, t.state, str(t.epochs),
                 duration(t.seconds) if t.seconds is not None else "") for t in self.trials]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in [header, *rows]]
        lines.append("")
        if c["to run"] == 0:
            lines.append("nothing to run: every trial is in the store")
        elif self.wall_s is None:
            lines.append("estimate: not available (" + "; ".join(self.notes) + ")")
        else:
            stacked = f" as {self.stacks} stacked trials" if self.stacks < c["to run"] else ""
            lines.append(f"estimate: about {duration(self.wall_s)} of wall time for {c['to run']} trials{stacked} "
                         f"on {self.slots} concurrent slot(s) of {self.runs_on}")
            lines.append(f"it holds for {self.hardware}: epoch times {self.source}")
            lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def make_plan(space: SearchSpace, *, select_by: dict, results_dir: Path, data_dir: Path, retry_errored: bool = False,
              max_concurrent: int | None = None, estimate: bool = True, address: str | None = None) -> Plan:
    """``address`` (else ``$RAY_ADDRESS``): plan for that running Ray cluster's slots and devices, read from it
    (nothing is started there); without one, for this machine, as a local run."""
    trials = select(space.trials(_tuned_values(space, results_dir)), **select_by)
    # a model that cannot take its dataset's input is refused here as in a run (one forward pass on meta tensors)
    plugins.check_inputs(plugins.pairs_to_check(trials), stack=space.stack_sizes(stack_device(space)))
    store = ResultsStore.check(results_dir, must_exist=True) if ResultsStore(results_dir).exists() else None
    # read once, only the columns used: states here, epoch times below
    store_trials = store.read("trials", columns=TRIAL_COLUMNS) if store is not None else None
    done = set(store_trials.loc[store_trials["status"].isin(done_statuses(retry_errored)), "trial_id"]) \
        if store_trials is not None else set()
    failed = set(store_trials.loc[store_trials["status"] == Status.ERROR.value, "trial_id"]) \
        if store_trials is not None else set()
    planned = [PlannedTrial(t.architecture, t.dataset, t.seed, t.trial_id,
                            "done" if t.trial_id in done else "failed" if t.trial_id in failed else "to run",
                            t.training.epochs) for t in trials]
    pending = [t for t in trials if t.trial_id not in done]
    device = stack_device(space)
    units = group_seeds(pending, space.stack_sizes(device))
    target = cluster_address(address)
    devices = cluster_devices(target) if target and pending and estimate else local_devices(device == "cuda")
    slots = _slots(space, max_concurrent, devices)
    hardware = _hardware(device)
    plan = Plan(space.name, planned, slots, len(units), None, "", hardware, runs_on=devices.where)
    if not pending or not estimate:
        return plan
    if space.tune is not None:
        plan.notes.append("the tuning stage runs first and is not included in the estimate")
    per_epoch, plan.source, plan.hardware = _epoch_seconds(space, pending, store, store_trials, data_dir, hardware,
                                                           devices, plan.notes)
    if per_epoch is None:
        return plan
    by_id = {p.trial_id: p for p in planned}
    durations = []
    for unit in units:
        seconds = per_epoch[(unit.architecture, unit.dataset)] * unit.training.epochs
        for seed in unit.seeds:
            by_id[unit.seed_id(seed)].seconds = seconds
        durations.append(seconds * len(unit.seeds) + TRIAL_START_S)  # a stack counted as its seeds in turn
    if any(len(u.seeds) > 1 for u in units):
        plan.notes.append("stacked trials are estimated as their seeds one after another (an upper bound)")
    plan.wall_s = RAY_START_S + _pack(durations, slots)
    return plan


def _pack(durations: list[float], slots: int) -> float:
    """Longest first onto the least-loaded slot: the makespan."""
    load = [0.0] * max(1, slots)
    for d in sorted(durations, reverse=True):
        i = load.index(min(load))
        load[i] += d
    return max(load)


@dataclass(frozen=True)
class Devices:
    """What a run would train on: this machine, or a running Ray cluster read at plan time. GPU models as
    each source names them: torch's device name here, Ray's ``accelerator_type`` on a cluster (``H200``)."""
    where: str
    cpus: float
    gpus: float
    gpu_models: tuple[str, ...] = ()
    cpu_model: str | None = None  # known here only: Ray does not report its nodes' CPU models


def local_devices(gpu: bool) -> Devices:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    gpus, models = 0, ()
    if gpu:
        import torch  # lazy: plan reads the store before it needs torch or Optuna, and often never does

        gpus = torch.cuda.device_count()
        models = tuple(sorted({torch.cuda.get_device_name(i) for i in range(gpus)}))
    return Devices("this machine", cpus, gpus, models, cpu_model())


def cluster_devices(address: str) -> Devices:
    """The alive nodes of the Ray cluster at ``address``, read by joining it for a moment as a driver that
    starts nothing there (an unreachable address is the run's one-line error, in seconds)."""
    import ray  # lazy: only planning for a cluster needs Ray

    with ray_connection(address, verbose=0):
        return describe_cluster(address, [n for n in ray.nodes() if n.get("Alive")])


def describe_cluster(address: str, nodes: list[dict]) -> Devices:
    """``ray.nodes()`` entries → the cluster's CPUs, GPUs and GPU models (Ray's ``accelerator_type:X``)."""
    cpus = sum(n["Resources"].get("CPU", 0.0) for n in nodes)
    gpus = sum(n["Resources"].get("GPU", 0.0) for n in nodes)
    models = tuple(sorted({k.split(":", 1)[1] for n in nodes for k in n["Resources"]
                           if k.startswith("accelerator_type:")}))
    kinds = f" ({', '.join(models)})" if models else ""
    return Devices(f"the Ray cluster at {address}: {len(nodes)} node(s), {cpus:g} CPUs, {gpus:g} GPUs{kinds}",
                   cpus, gpus, models)


def run_hardware(device: str, devices: Devices) -> list[str]:
    """The hardware labels the run's epochs would be timed on, as far as the plan knows them ([]: unknown)."""
    if device == "cuda":
        return [f"GPU {m}" for m in devices.gpu_models]
    return [hardware_label("cpu", devices.cpu_model, None)] if devices.cpu_model else []


def same_hardware(stored: str, wanted: str) -> bool:
    """A stored trial's label is the wanted device's: equal, or (a cluster's GPU, named by Ray's short
    accelerator type, ``GPU H200``) its model inside the full name torch recorded (``GPU NVIDIA H200``)."""
    norm = lambda label: "".join(c for c in label.upper() if c.isalnum())  # noqa: E731
    kind, _, model = wanted.partition(" ")
    return stored == wanted or (stored.startswith(kind + " ") and bool(model) and norm(model) in norm(stored))


def _slots(space: SearchSpace, max_concurrent: int | None, devices: Devices) -> int:
    """Trials at once, as Ray Tune packs them: the CPUs and GPUs over what each trial asks for (on a cluster,
    its totals, as if one pool: a trial that fits no single node is the run's concern)."""
    slots = max(1, math.floor(devices.cpus / space.resources.cpu + 1e-9))
    if space.resources.gpu > 0:
        slots = min(slots, max(1, math.floor(devices.gpus / space.resources.gpu + 1e-9)))
    return min(slots, max_concurrent) if max_concurrent else slots


def _hardware(device: str) -> str:
    """This machine's label for ``device``, the same as its trials' rows will get (where a calibration runs)."""
    if device == "cuda":
        import torch  # lazy: plan reads the store before it needs torch or Optuna, and often never does

        if torch.cuda.is_available():
            return hardware_label("cuda", None, torch.cuda.get_device_name(0))
    return hardware_label("cpu", cpu_model(), None)


def _tuned_values(space: SearchSpace, results_dir: Path) -> dict | None:
    """The tuned values of finished studies, read from the store's Optuna storage (never created here)."""
    if space.tune is None:
        return None
    store = ResultsStore(results_dir)
    if not store.optuna_path.is_file():
        return None
    import optuna  # lazy: plan reads the store before it needs torch or Optuna, and often never does

    from . import tuning

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = {}
    for arch, dataset in tuning.cells(space):
        try:
            study = optuna.load_study(study_name=tuning.study_name(space, arch, dataset),
                                      storage=store.optuna_url(create=False))
        except KeyError:
            continue
        if tuning.trials_left(study, space.tune.trials) == 0:
            cell = tuning.summarise(study, arch, dataset, tuning.default_point(space, dataset))
            out[(arch, dataset)] = cell.as_tuned()
    return out


def _epoch_seconds(space, pending: list[Trial], store, store_trials, data_dir, here: str, devices: Devices, notes):
    """(architecture, dataset) → seconds per epoch (training + evaluation), where the figures came from, and the
    hardware they hold for: the store's epochs on the hardware the run would use, else a calibration here."""
    sizes = {}
    for name in sorted({t.dataset for t in pending}):
        training = space.training_for(name)
        try:
            n_train, _ = DATASETS[name].split_sizes(data_dir)
        except UserError as e:  # planning comes before the download: the published split size will do
            n_train = published_train_size(DATASETS[name])
            if n_train is None:
                notes.append(f"{name}: {str(e).splitlines()[0]}")
                return None, "", here
            notes.append(f"data not found for {name} ({str(e).splitlines()[0]}); estimated from its declared "
                         f"shape {'×'.join(map(str, DATASETS[name].in_shape))}, {DATASETS[name].num_classes} "
                         f"outputs and its published {n_train:,} training images")
        fit = min(training.train_limit or n_train, n_train - training.val_size)
        sizes[name] = (fit, 2 * min(training.val_size, fit))  # validation + train-eval images per epoch
    holds = _stored_hardware(space, store_trials, here, devices, notes)
    stored = _stored_rates(store, store_trials, holds)
    out, calibrated = {}, []
    for t in {(t.architecture, t.dataset): t for t in pending}.values():
        fit, evaluated = sizes[t.dataset]
        rate = stored.get((t.architecture, t.dataset, t.training.batch_size))
        if rate is None:
            rate = _calibrate(t, space.resources.cpu, here)
            calibrated.append(t.architecture)
        train_s, eval_s = rate
        out[(t.architecture, t.dataset)] = fit * train_s + evaluated * eval_s
    wanted = run_hardware(stack_device(space), devices)
    if calibrated and wanted and not any(same_hardware(here, w) for w in wanted):
        notes.append(f"the run would train on {' / '.join(wanted)}, and the store has no epochs of "
                     f"{'it' if len(wanted) == 1 else 'them'} for {', '.join(sorted(set(calibrated)))}: those times "
                     f"are calibrated here, on {here}, and will differ there")
    if not calibrated:
        where = "this hardware's" if holds == here else f"{holds}'s"
        return out, f"from {where} epochs already in the store", holds
    if len(calibrated) == len(out):
        return out, f"from a calibration of {CALIBRATION_STEPS} training steps per architecture", here
    return out, (f"from the store's epochs on {holds} where it has them, else a calibration here "
                 f"({', '.join(sorted(set(calibrated)))})"), (holds if holds == here else f"{holds} and {here}")


def _stored_hardware(space, store_trials, here: str, devices: Devices, notes) -> str:
    """Whose stored epochs to scale: the hardware the run would use when the store has epochs of it, else
    (a GPU asked for, none here and none named) the store's one GPU model, else this machine's."""
    labels = sorted(_labels(store_trials))
    wanted = run_hardware(stack_device(space), devices)
    match = next((label for w in wanted for label in labels if same_hardware(label, w)), None)
    if match is not None:
        return match
    if stack_device(space) == "cuda" and not here.startswith("GPU") and not wanted:
        gpus = [label for label in labels if label.startswith("GPU ")]
        if len(gpus) == 1:
            notes.append(f"{devices.where} has no GPU: the times are scaled from the store's epochs on {gpus[0]}; "
                         f"on another GPU model they differ")
            return gpus[0]
        notes.append(f"the space asks for {space.resources.gpu:g} GPU per trial and {devices.where} has none: the "
                     f"estimate holds for {here}, not for the GPUs a run would use; plan on a GPU node, or pass "
                     f"--address of the GPU cluster")
    elif stack_device(space) == "cpu" and devices.cpu_model is None:
        notes.append(f"Ray does not report the CPU model of {devices.where}: the times hold for {here}")
    return here


def _labels(store_trials) -> set[str]:
    """The hardware labels of the store's benchmark trials."""
    if store_trials is None or store_trials.empty:
        return set()
    t = store_trials[store_trials["stage"] == "benchmark"]
    return {label for k in set(zip(t.device, t.cpu_model, t.gpu_model)) if (label := hardware_label(*k))}


# The official training-split sizes of the datasets whose files may be absent when a user plans (a synthetic
# dataset, generated in memory, always knows its size): MNIST and Fashion-MNIST 60,000 (LeCun et al.; Xiao et
# al. 2017), CUB-200-2011 5,994 (Wah et al. 2011). Keyed by the folder the files live in.
PUBLISHED_TRAIN_SIZES = {"MNIST": 60_000, "FashionMNIST": 60_000, CUB_FOLDER: 5_994}


def published_train_size(dataset) -> int | None:
    """The dataset's published training-split size, without reading its files (distorted MNIST: MNIST's)."""
    source = getattr(dataset, "source", dataset)
    folder = getattr(source, "folder", None) or (CUB_FOLDER if source.name.startswith("cub200") else None)
    return PUBLISHED_TRAIN_SIZES.get(folder)


def _stored_rates(store: ResultsStore | None, trials, hardware: str) -> dict:
    """(architecture, dataset, batch size) → (train seconds per image, evaluation seconds per image),
    means over this hardware's stored benchmark trials of each trial's median epoch. One pass over the
    epochs table (grouped once), so a store of 100,000 trials plans in seconds."""
    if store is None or trials.empty:
        return {}
    trials = trials[trials["stage"] == "benchmark"]
    labels = {k: hardware_label(*k) for k in set(zip(trials.device, trials.cpu_model, trials.gpu_model))}
    trials = trials[[labels[k] == hardware for k in zip(trials.device, trials.cpu_model, trials.gpu_model)]]
    if trials.empty:
        return {}
    # filtered in Arrow, grouped on plain object strings: pandas' Arrow-backed strings iterate per element
    epochs = store.read_arrow("epochs", columns=["trial_id", "images_per_s", "eval_time_s"])
    epochs = epochs.filter(pc.is_in(epochs["trial_id"], value_set=pa.array(trials["trial_id"].unique(), pa.string())))
    if not len(epochs):
        return {}
    column = lambda name: pd.Series(epochs[name].to_numpy(zero_copy_only=False))  # noqa: E731
    per_trial = pd.DataFrame({"trial_id": column("trial_id").astype(object), "train_s": 1 / column("images_per_s"),
                              "eval_s": column("eval_time_s")}).groupby("trial_id").median()
    configs = {c: _batch_and_evaluated(c) for c in set(trials["config_json"])}  # clones share a few configurations
    known = trials[[configs[c] is not None for c in trials["config_json"]]]
    if known.empty:
        return {}
    rows = pd.DataFrame({"trial_id": known["trial_id"], "architecture": known["architecture"],
                         "dataset": known["dataset"], "batch": [configs[c][0] for c in known["config_json"]],
                         "evaluated": [configs[c][1] for c in known["config_json"]]}).join(per_trial, on="trial_id",
                                                                                            how="inner")
    rows["eval_s"] = rows["eval_s"] / rows["evaluated"]
    means = rows.groupby(["architecture", "dataset", "batch"], dropna=False)[["train_s", "eval_s"]].mean()
    return {k: (float(r.train_s), float(r.eval_s)) for k, r in zip(means.index, means.itertuples())}


def _batch_and_evaluated(config_json) -> tuple | None:
    """A stored trial's batch size and images evaluated per epoch (validation + train-eval), or None."""
    try:
        training = TrainingSettings.from_dict(json.loads(config_json)["training"])
        return training.batch_size, 2 * training.val_size
    except (TypeError, ValueError, KeyError):
        return None


def _calibrate(trial: Trial, cpus: float, here: str) -> tuple[float, float]:
    """Seconds per training image and per evaluated image: a few timed steps on random inputs, on the device
    ``here`` labels (this machine's GPU when the space asks for one and it has one, else its CPU)."""
    import torch  # lazy: plan reads the store before it needs torch or Optuna, and often never does

    from .train import Trainer

    device = "cuda" if here.startswith("GPU") else "cpu"
    splits = _shape_only_splits(trial)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cpus)))
    try:
        trainer = Trainer(trial, splits.to(device), device, test=False)
        batch = trial.training.batch_size
        x = torch.randn(batch, *splits.in_shape, device=device)
        y = splits.train_y[:1].expand(batch, *splits.train_y.shape[1:]).clone().to(device)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)  # GPU kernels run asynchronously

        def step():
            loss = trainer.task.loss(trainer._forward(x), y)
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainer.optimizer.step()

        trainer.model.train()
        step()  # warm-up
        sync()
        t0 = time.perf_counter()
        for _ in range(CALIBRATION_STEPS):
            step()
        sync()
        train_s = (time.perf_counter() - t0) / (CALIBRATION_STEPS * batch)
        trainer.model.eval()
        with torch.inference_mode():
            xe = torch.randn(4 * batch, *splits.in_shape, device=device)
            trainer._forward(xe)
            sync()
            t0 = time.perf_counter()
            trainer._forward(xe)
            sync()
            eval_s = (time.perf_counter() - t0) / len(xe)
        return train_s, eval_s
    finally:
        torch.set_num_threads(threads)


def _shape_only_splits(trial: Trial):
    """Splits of one zero image of the dataset's declared shape: what the trainer needs to build the model."""
    import torch  # lazy: plan reads the store before it needs torch or Optuna, and often never does

    dataset = DATASETS[trial.dataset]
    x = torch.zeros(1, *dataset.in_shape)
    regression = dataset.task.name == "regression"
    y = torch.zeros(1, dataset.num_classes) if regression else torch.zeros(1, dtype=torch.long)
    return ImageSplits(x, y, x, y, x, y, classes=[str(i) for i in range(dataset.num_classes)], task=dataset.task)
