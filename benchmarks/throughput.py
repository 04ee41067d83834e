"""Training throughput: the harness trainer against a faithful re-creation of the reference loop.

Both sides train the same models (``harness.models.build_model``) with the same batch size on the same
number of images, in one process on one machine, interleaved repeat by repeat so that load from other
processes hits both alike; warm-up is excluded and the median of the repeats is reported.

* harness: ``harness.train.Trainer`` (``harness.runner.make_runner``) on tensors resident on the device, one epoch of ``--images`` training
  images per repeat; the time is the trainer's own ``train_time_s`` (the training loop, including the
  epoch's one host sync, excluding validation). The first epoch is the warm-up.
* reference: the PyTorch spatial-transformer tutorial's loop: torchvision's ``MNIST`` with a per-image
  ``ToTensor()`` + ``Normalize((0.1307,), (0.3081,))``, ``DataLoader(batch_size=64, shuffle=True,
  num_workers=4)``, ``log_softmax`` + ``nll_loss``, SGD (lr 0.01, momentum 0.5) and a ``loss.item()`` per
  batch. Each repeat opens a fresh loader iterator (as every epoch does), trains ``--warmup-batches``
  untimed batches (worker start-up, first calls) and then times as many images as the harness side.
* ceiling: the model's bare forward, backward and optimizer step on batches already resident as tensors, no
  metrics, in the same processes and threads as the harness rows: what the kernels allow. The harness's ratio
  to it is the distance left to the hardware, measured rather than argued from a profile.

Both sides run with torch's default number of intra-op threads (the machine's physical cores), as the tutorial
does: the reference is one training run with the machine to itself, the harness one trial given every CPU.
``--threads 1`` compares one core's worth (what a one-CPU trial of the shipped spaces gets).

    python benchmarks/throughput.py                       # quick: about a minute on 2 CPU cores
    python benchmarks/throughput.py --images 12800 --repeats 5 --variants default,channels_last,channels_last+bf16
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's harness, not an installed one

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from torchvision import transforms  # noqa: E402

from harness.data import DATASETS  # noqa: E402
from harness.data.base import resolve_data_dir  # noqa: E402
from harness.models import MODELS, build_model  # noqa: E402
from harness.provenance import cpu_model  # noqa: E402
from harness.contract import DEFAULT_STACK  # noqa: E402
from harness.runner import make_runner  # noqa: E402
from harness.trial import Trial  # noqa: E402
from harness.errors import run_reporting_user_errors  # noqa: E402

try:
    import psutil  # a Ray dependency; the GPU check may run where it is missing
except ImportError:  # then the reference's CPU seconds leave out its DataLoader workers
    psutil = None

BATCH = 64
LR, MOMENTUM = 0.01, 0.5  # the PyTorch MNIST / spatial-transformer tutorials
NUM_WORKERS = 4
REFERENCE_ARCHS = ("convnet", "stnet", "coordconv", "stcoordconv")  # the models the reference loop trained
VARIANTS = {  # harness variants: Training switches on top of the defaults
    "default": {},
    "channels_last": {"channels_last": True},
    "compile": {"compile": True},
    "bf16": {"precision": "bf16"},
}


def workers_cpu(workers) -> float:
    """User + system CPU seconds of the DataLoader's worker processes so far."""
    return sum(sum(w.cpu_times()[:2]) for w in workers)


# Training's defaults (harness/space.py), spelt out so that this script needs no pydantic (see gpu_check.py)
TRAINING_DEFAULTS = {"stack": None, "epochs": 20, "batch_size": 64, "optimizer": "sgd", "lr": 0.01, "momentum": 0.0,
                     "weight_decay": 0.0, "loc_lr": None, "loc_lr_mult": None, "val_size": 5000, "split_seed": 0,
                     "train_limit": None, "test_limit": None, "protocol": "standard", "precision": "fp32",
                     "channels_last": False, "compile": False}


def plain_trial(arch: str, dataset: str = "mnist", seed: int = 0, **training) -> Trial:
    """A trial config as ``SearchSpace.trials()`` makes it (without the id), from Training's defaults."""
    unknown = set(training) - set(TRAINING_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown training keys {sorted(unknown)}")
    return Trial(architecture=arch, dataset=dataset, seeds=(seed,), training={**TRAINING_DEFAULTS, **training})


# -- reference side --------------------------------------------------------------------------------
class ReferenceLoop:
    """The tutorial's training loop for one architecture; ``measure()`` is one timed repeat."""

    def __init__(self, arch: str, data_dir: Path, device: torch.device, images: int, warmup_batches: int):
        dataset = torchvision.datasets.MNIST(str(data_dir), train=True, download=False, transform=transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]))
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=NUM_WORKERS)
        torch.manual_seed(0)
        self.device = device
        self.model = build_model(arch, (1, 28, 28), 10).to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.batches = images // BATCH
        self.warmup = warmup_batches
        if self.warmup + self.batches > len(self.loader):
            raise SystemExit(f"--images {images} + --warmup-batches {warmup_batches} exceed one MNIST epoch "
                             f"({len(self.loader)} batches)")

    def measure(self) -> tuple[float, float]:
        """(images per second, CPU seconds per 1000 images, workers included) after the warm-up batches."""
        self.model.train()
        running_loss = 0.0
        it = iter(self.loader)  # a new epoch: workers start, the sampler reshuffles
        for batch_idx, (data, target) in enumerate(it):
            if batch_idx == self.warmup:
                workers = [psutil.Process(w.pid) for w in it._workers] if psutil else []
                t0, cpu0 = time.perf_counter(), time.process_time() + workers_cpu(workers)
            if batch_idx == self.warmup + self.batches:
                break
            data, target = data.to(self.device), target.to(self.device)
            self.optimizer.zero_grad()
            output = F.log_softmax(self.model(data), dim=1)
            loss = F.nll_loss(output, target)
            loss.backward()
            self.optimizer.step()
            running_loss += loss.item()  # the per-batch host sync of the reference loop
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() + workers_cpu(workers) - cpu0
        del it  # shut the workers down outside the timed window
        return self.batches * BATCH / elapsed, cpu / (self.batches * BATCH) * 1000


# -- harness side ----------------------------------------------------------------------------------
class HarnessLoop:
    """``Trainer`` on resident tensors (``stack`` > 1: ``StackedTrainer``, seeds 0..stack-1 as one vmapped
    model); each ``measure()`` trains one more epoch of ``images`` images (per seed)."""

    def __init__(self, arch: str, splits, device: torch.device, images: int, repeats: int, switches: dict,
                 stack: int = 1):
        trial = plain_trial(arch, epochs=repeats + 1, batch_size=BATCH, lr=LR, momentum=MOMENTUM,
                            val_size=len(splits.val_y), train_limit=images, test_limit=len(splits.test_y),
                            **switches)
        self.trainer = make_runner(trial.with_seeds(range(stack)), splits, device)
        self.images = len(splits.train_y) * stack
        self.epochs = self.trainer.run()
        first = self._next()  # warm-up epoch (and, with compile, the compilation)
        self.warmup_s = first["train_time_s"] * stack

    def _next(self) -> dict:
        return next(iter(next(self.epochs).values())).as_dict()  # seed 0's record (a stack reports each seed's)

    def measure(self) -> tuple[float, float]:
        """(images per second, CPU seconds per 1000 images); validation is a single batch, so it barely counts.
        A stacked seed's ``images_per_s`` is its images over its share of the stack's time: the stack's rate."""
        cpu0 = time.process_time()
        metrics = self._next()
        return metrics["images_per_s"], (time.process_time() - cpu0) / self.images * 1000


class CeilingLoop:
    """The ceiling under any training loop on this machine: the model's bare forward, backward and optimizer step
    on batches already resident as tensors (sliced once, in order), no metrics, no per-epoch evaluation, one
    host sync at the end of the epoch. The harness row's distance to it is what the harness itself costs."""

    def __init__(self, arch: str, splits, device: torch.device, images: int, repeats: int, switches: dict,
                 stack: int = 1):
        torch.manual_seed(0)
        self.device = device
        self.model = build_model(arch, splits.in_shape, splits.num_classes).to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        x, y = splits.train_x, splits.train_y
        self.batches = [(x[i:i + BATCH].clone(), y[i:i + BATCH].clone()) for i in range(0, len(y) - BATCH + 1, BATCH)]
        self.images = len(self.batches) * BATCH
        self.warmup_s = self._epoch()

    def _epoch(self) -> float:
        self.model.train()
        sync(self.device)
        t0 = time.perf_counter()
        for xb, yb in self.batches:
            loss = F.cross_entropy(self.model(xb), yb)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        sync(self.device)
        return time.perf_counter() - t0

    def measure(self) -> tuple[float, float]:
        cpu0 = time.process_time()
        seconds = self._epoch()
        return self.images / seconds, (time.process_time() - cpu0) / self.images * 1000


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def harness_splits(data_dir: Path, images: int, device: torch.device):
    """MNIST cut to epochs of ``images`` training images; one validation/test batch keeps evaluation negligible."""
    return DATASETS["mnist"].load(data_dir, val_size=BATCH, train_limit=images, test_limit=BATCH).to(device)


def interleaved(sides: dict, repeats: int, before=lambda: None) -> dict[str, list]:
    """Each side's ``measure()`` once per repeat, alternating which side goes first (so load from other
    processes hits both); ``before`` runs before each measurement; the sides are closed afterwards."""
    measured = {side: [] for side in sides}
    order = list(sides.items())
    for r in range(repeats):
        for side, loop in (order if r % 2 == 0 else order[::-1]):
            before()
            measured[side].append(loop.measure())
    for loop in sides.values():
        getattr(loop, "close", lambda: None)()
    return measured


def _trial_worker(conn, arch, data_dir, device, images, repeats, switches, threads, stack, loop_class) -> None:
    """One concurrent harness trial in a process of its own, as Ray runs trials: ``threads`` torch threads,
    its own copy of the data; trains one epoch per message and answers with ``measure()`` (of a
    ``HarnessLoop``, or of a ``CeilingLoop`` for the ceiling row of the same shape)."""
    torch.set_num_threads(threads)
    device = torch.device(device)
    warnings.filterwarnings("ignore", message="There is a performance drop")  # affine_grid under vmap
    loop = loop_class(arch, harness_splits(Path(data_dir), images, device), device, images, repeats, switches, stack)
    conn.send(loop.warmup_s)
    while conn.recv():
        conn.send(loop.measure())


class ConcurrentHarness:
    """``trials`` harness trials training at the same time, each in its own process with ``threads`` torch
    threads: how the harness fills a machine. ``measure()`` gives their summed images per second."""

    def __init__(self, trials: int, threads: int, arch, data_dir, device, images, repeats, switches, stack=1,
                 loop_class=HarnessLoop):
        ctx = multiprocessing.get_context("spawn")
        self.conns, self.procs = [], []
        for _ in range(trials):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_trial_worker, daemon=True, args=(
                child, arch, str(data_dir), str(device), images, repeats, switches, threads, stack, loop_class))
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        self.warmup_s = max(c.recv() for c in self.conns)
        self.images = images * stack

    def measure(self) -> tuple[float, float]:
        for c in self.conns:  # all start together
            c.send(True)
        each = [c.recv() for c in self.conns]  # (img/s, CPU s per 1k images) per trial
        slowest = max(self.images / s for s, _ in each)
        return len(each) * self.images / slowest, statistics.mean(c for _, c in each)

    def close(self) -> None:
        for c, proc in zip(self.conns, self.procs):
            c.send(False)
            proc.join(timeout=30)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=6400, help="timed images per repeat, both sides (multiple of 64)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per side and architecture (median reported)")
    p.add_argument("--warmup-batches", type=int, default=10, help="untimed batches per reference repeat")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help="torch intra-op threads, both sides (default: torch's own default, %(default)s here, which is "
                        "what the tutorial ran with; the harness side is then one trial given the whole machine)")
    p.add_argument("--trials", type=int, default=None,
                   help="also measure this many harness trials training at once, sharing the threads (default: one "
                        "per thread on CPU, 4 on a GPU as reference.yaml's 0.25 GPU per trial; 1 = off)")
    p.add_argument("--architectures", default=",".join(REFERENCE_ARCHS),
                   help=f"comma-separated, of {', '.join(MODELS)} (default: the reference study's four)")
    p.add_argument("--variants", default="default",
                   help=f"harness variants, comma-separated, each one of {', '.join(VARIANTS)} or several joined by +")
    p.add_argument("--stack", default=None,
                   help="also measure seed-stacked trials: comma-separated seeds per stack (default: the device's "
                        f"default stack {DEFAULT_STACK}, at least 2; 1 = off), alone and filling the machine")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/raw (default: $STBENCH_DATA_DIR or ./datasets)")
    p.add_argument("--json", type=Path, help="also write the raw measurements here")
    args = p.parse_args(argv)

    images = args.images // BATCH * BATCH
    archs = args.architectures.split(",")
    for arch in archs:
        if arch not in MODELS:
            p.error(f"--architectures: unknown {arch!r}; allowed: {', '.join(MODELS)}")
    variants = args.variants.split(",")
    switches = {}
    for name in variants:
        unknown = [part for part in name.split("+") if part not in VARIANTS]
        if unknown:
            p.error(f"--variants: unknown {unknown[0]!r}; allowed: {', '.join(VARIANTS)}, joined by + to combine")
        switches[name] = {k: v for part in name.split("+") for k, v in VARIANTS[part].items()}
    device = torch.device(args.device)
    trials = args.trials if args.trials is not None else (4 if device.type == "cuda" else args.threads)
    if trials < 1:
        p.error(f"--trials: must be at least 1, got {trials}")
    trial_threads = max(1, args.threads // trials)  # each concurrent trial's share
    try:
        stacks = [int(k) for k in (args.stack or str(max(2, DEFAULT_STACK.get(device.type, 1)))).split(",")]
    except ValueError:
        p.error(f"--stack: comma-separated whole numbers >= 1, got {args.stack!r}")
    if min(stacks) < 1:
        p.error(f"--stack: each must be at least 1, got {args.stack!r}")
    stacks = [k for k in stacks if k > 1]
    data_dir = resolve_data_dir(args.data_dir)
    DATASETS["mnist"].prepare(data_dir, download=False)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # 4 workers on a 2-core machine
    warnings.filterwarnings("ignore", message="There is a performance drop")  # affine_grid under vmap (stacked)

    # rows: (label, variant, concurrent trials, seeds per trial); one trial gets every thread, `trials` share them
    def label(v: str, n: int, k: int) -> str:
        return ("harness" if v == "default" else "+" + v) + (f", {n} trials" if n > 1 else "") + \
            (f", stacked {k}" if k > 1 else "")

    shapes = [(n, k) for n in sorted({1, trials}) for k in [1, *stacks]]
    rows = [(label(v, n, k), v, n, k) for n, k in shapes for v in variants
            if k == 1 or not {"compile", "channels_last"} & set(switches[v])]  # neither works under vmap
    # the ceiling, in the same processes and threads as the harness's unstacked rows
    ceilings = {n: "ceiling" + (f", {n} trials" if n > 1 else "") for n in sorted({1, trials})}
    rows += [(name, "default", n, 1) for n, name in ceilings.items()]
    print(f"stbench throughput: {images} images per repeat, {args.repeats} repeats (median), warm-up excluded, "
          f"batch {BATCH}, SGD lr {LR} momentum {MOMENTUM}")
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else cpu_model()}, "
          f"{os.cpu_count()} CPUs), torch {torch.__version__}; reference: torch threads {args.threads}, DataLoader "
          f"num_workers={NUM_WORKERS} (1 thread each); harness: 1 trial with {args.threads} threads"
          + (f", and {trials} concurrent trials with {trial_threads} each" if trials > 1 else ""))
    load_before = os.getloadavg()[0]
    splits = harness_splits(data_dir, images, device)

    t_start = time.perf_counter()
    results = {a: {"reference": [], **{label: [] for label, *_ in rows}} for a in archs}
    warmups = {}
    for arch in archs:
        sides = {"reference": ReferenceLoop(arch, data_dir, device, images, args.warmup_batches)}
        for label, v, n, k in rows:
            kind = CeilingLoop if label in ceilings.values() else HarnessLoop
            sides[label] = (kind(arch, splits, device, images, args.repeats, switches[v], k) if n == 1 else
                            ConcurrentHarness(n, trial_threads, arch, data_dir, device, images, args.repeats,
                                              switches[v], k, loop_class=kind))
        warmups[arch] = {label: loop.warmup_s for label, loop in sides.items() if label != "reference"}
        results[arch] = interleaved(sides, args.repeats)
        print(f"  {arch}: done ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr, flush=True)

    speed = {a: {k: statistics.median(x[0] for x in v) for k, v in r.items()} for a, r in results.items()}
    cpu = {a: {k: statistics.median(x[1] for x in v) for k, v in r.items()} for a, r in results.items()}
    w = max(len(x) for x in ["reference", *results[archs[0]]])
    header = (f"{'architecture':<12} {'side':<{w}} {'img/s':>8} {'ratio':>6} {'paired':>10}"
              f" {'CPU s/1k img':>13} {'ratio':>6}")
    print(f"\n{header}\n{'-' * len(header)}")
    for a in archs:
        print(f"{a:<12} {'reference':<{w}} {speed[a]['reference']:>8,.0f} {'':>6} {'':>10} {cpu[a]['reference']:>13.3f}")
        for label, *_ in rows:
            paired = [h[0] / r[0] for h, r in zip(results[a][label], results[a]["reference"])]
            print(f"{'':<12} {label:<{w}} {speed[a][label]:>8,.0f}"
                  f" {speed[a][label] / speed[a]['reference']:>5.2f}x {min(paired):>4.2f}-{max(paired):.2f}"
                  f" {cpu[a][label]:>13.3f} {cpu[a]['reference'] / cpu[a][label]:>5.2f}x")
    print(f"\nratio = harness / reference, medians; paired = range of the per-repeat ratios. CPU s/1k img = CPU\n"
          f"seconds per 1000 images, the reference's DataLoader workers included; its ratio is reference / harness.\n"
          f"'+x' rows: the harness with switch x on; 'N trials' rows: N harness trials training at once in\n"
          f"processes of their own (how a benchmark run fills the machine), img/s summed over them; 'stacked K':\n"
          f"each trial trains K seeds as one vmapped model (harness/stacked.py), img/s summed over its seeds.\n"
          f"Load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; {time.perf_counter() - t_start:.0f} s.")
    print("\ndistance to the ceiling (harness img/s / ceiling img/s, same processes and threads; paired = range of the "
          "per-repeat ratios):")
    for a in archs:
        for n, ceiling in ceilings.items():
            harness = [lab for lab, v, m, k in rows if m == n and k == 1 and lab not in ceilings.values()]
            for lab in harness:
                paired = [h[0] / c[0] for h, c in zip(results[a][lab], results[a][ceiling])]
                print(f"  {a:<12} {lab:<{w}} {speed[a][lab] / speed[a][ceiling]:>5.2f} of the ceiling "
                      f"({min(paired):.2f}-{max(paired):.2f}); ceiling / reference {speed[a][ceiling] / speed[a]['reference']:.2f}x")
    goal = 20 if device.type == "cuda" else 3
    for label, *_ in rows:
        if label in ceilings.values():
            continue
        met = [a for a in archs if speed[a][label] / speed[a]["reference"] >= goal]
        print(f"goal (issue 9) >= {goal}x img/s on {device.type}, {label}: met for {len(met)} of {len(archs)} architectures")
    if any(v != "default" for v in variants):
        for label, v, n, k in rows:
            if label in ceilings.values():
                continue
            extra = [warmups[a][label] - images * k / speed[a][label] * n for a in archs]
            print(f"warm-up epoch beyond a steady one, {label}: " + ", ".join(f"{a} {e:.1f} s" for a, e in zip(archs, extra)))
    if args.json:
        args.json.write_text(json.dumps({"images": images, "repeats": args.repeats, "threads": args.threads,
                                         "trials": trials, "device": str(device), "results": results,
                                         "warmup_s": warmups}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_reporting_user_errors(main))
