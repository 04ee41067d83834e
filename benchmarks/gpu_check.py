"""GPU check: train each architecture on the GPU through the Trainer, measure throughput, project the study.

One script for the day a CUDA machine is at hand. It needs PyTorch (with torchvision, which reads MNIST) and
numpy only: no Ray, Optuna, W&B or pydantic (``harness.models``, ``harness.data``, ``harness.train`` and
``harness.stacked`` import without them). It reads MNIST from ``--data-dir`` (the folder holding
``MNIST/raw``), keeps every tensor resident on the device, and in under 8 minutes on one GPU prints one
Markdown table, per architecture:

* img/s of the PyTorch tutorial's DataLoader loop (reference), one harness trial, ``--trials`` concurrent
  trials sharing the GPU (processes of their own, as Ray runs them at ``resources.gpu: 0.25``), one trial
  stacking ``--stack`` seeds as one vmapped model (harness/stacked.py), and ``compile`` (torch.compile of the
  model; ``--no-compile`` skips it), each with its ratio to the reference, measured interleaved;
* one full epoch (55,000 training + 5,000 validation + 5,000 training-evaluation images) through the Trainer,
  unstacked and stacked (seconds per seed);
* the wall time of ``search_spaces/reference.yaml`` (4 architectures; MNIST 20 epochs x 10 seeds and
  Fashion-MNIST 30 epochs x 5, same image count) on this one GPU, projected from those epoch times: trials one
  after another, and stacks of seeds one after another.

    python benchmarks/gpu_check.py --data-dir ~/data                     # on the GPU machine (< 8 min)
    python benchmarks/gpu_check.py --data-dir ~/data --device cpu --quick   # smoke run anywhere (~2 min)
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # throughput.py, its sibling
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's harness

import torch  # noqa: E402

from throughput import (BATCH, LR, MOMENTUM, REFERENCE_ARCHS, ConcurrentHarness, HarnessLoop,  # noqa: E402
                        ReferenceLoop, harness_splits, interleaved, plain_trial, sync)

from harness.data import DATASETS  # noqa: E402
from harness.provenance import cpu_model  # noqa: E402
from harness.runner import make_runner  # noqa: E402

# search_spaces/reference.yaml, spelt out (PyYAML may be missing here): dataset -> (epochs, seeds)
STUDY = {"mnist": (20, 10), "fashion_mnist": (30, 5)}
STUDY_GPU_HOURS = 1.7  # what the reference study's own loop needed (issue 17)


def study_protocol() -> dict[str, tuple[int, int]]:
    """(epochs, seeds) per dataset from search_spaces/reference.yaml when PyYAML is there, else ``STUDY``."""
    try:
        import yaml
    except ImportError:
        return dict(STUDY)
    space = yaml.safe_load((Path(__file__).resolve().parent.parent / "search_spaces" / "reference.yaml").read_text())
    return {d: (v["epochs"], v["seeds"]) for d, v in space["datasets"].items()}


def full_epoch_seconds(arch: str, data, device: torch.device, stack: int) -> float:
    """Seconds of one full epoch (training + validation + training-evaluation) per seed, after a warm-up
    epoch; ``stack`` > 1: the stack's epoch divided by its seeds."""
    trial = plain_trial(arch, epochs=2, batch_size=BATCH, lr=LR, momentum=MOMENTUM, val_size=len(data.val_y))
    trainer = make_runner(trial.with_seeds(range(stack)), data, device, test=False)
    epochs = trainer.run()
    next(epochs)  # warm-up: first calls, cuDNN's algorithm search, allocator
    sync(device)
    t0 = time.perf_counter()
    next(epochs)
    sync(device)
    return (time.perf_counter() - t0) / stack


def fmt_rate(rate: float, ref: float | None) -> str:
    if rate is None or not math.isfinite(rate):
        return "-"
    return f"{rate:,.0f}" + (f" ({rate / ref:.1f}x)" if ref else "")


def fmt_s(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="folder holding MNIST/raw")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke run")
    p.add_argument("--quick", action="store_true", help="tiny sizes: proves the script runs (numbers meaningless)")
    p.add_argument("--architectures", default=",".join(REFERENCE_ARCHS))
    p.add_argument("--images", type=int, default=None, help="timed images per throughput repeat (default 12800)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved throughput repeats (default 3)")
    p.add_argument("--trials", type=int, default=4, help="concurrent trials sharing the device (reference.yaml: 4)")
    p.add_argument("--stack", default="5,10", help="seeds per stack, comma-separated (divisors of 10 and 5 fit the study)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    p.add_argument("--budget", type=float, default=450, help="seconds; later measurements are skipped past it")
    p.add_argument("--out", type=Path, help="also write the table here")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device visible to PyTorch; use --device cpu --quick for a smoke run",
              file=sys.stderr)
        return 2
    archs = args.architectures.split(",")
    stacks = [int(k) for k in args.stack.split(",")]
    images = args.images or (256 if args.quick else 12800)
    repeats = args.repeats or (1 if args.quick else 3)
    data_dir = Path(args.data_dir).expanduser().resolve()
    DATASETS["mnist"].prepare(data_dir, download=False)
    warnings.filterwarnings("ignore", message="There is a performance drop")  # affine_grid under vmap
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    t_start = time.perf_counter()
    over = lambda: time.perf_counter() - t_start > args.budget  # noqa: E731
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    print(f"gpu_check: {device} ({name}), torch {torch.__version__}, {os.cpu_count()} CPUs"
          + (" -- QUICK smoke run, numbers meaningless" if args.quick else ""), file=sys.stderr, flush=True)

    # full epochs, the study's sizes (quick: 1,024 training images)
    full = DATASETS["mnist"].load(data_dir, val_size=512 if args.quick else 5000,
                                  train_limit=1024 if args.quick else None).to(device)
    # throughput: epochs of `images` images, one batch of evaluation
    cut = harness_splits(data_dir, images, device)

    rows, skipped = {}, []
    for arch in archs:
        row = rows[arch] = {}
        if over():
            skipped.append(arch)
            continue
        sides = {"reference": ReferenceLoop(arch, data_dir, device, images, warmup_batches=2 if args.quick else 10),
                 "1 trial": HarnessLoop(arch, cut, device, images, repeats, {})}
        if args.trials > 1:
            sides[f"{args.trials} trials"] = ConcurrentHarness(args.trials, 1, arch, data_dir, device, images,
                                                                repeats, {})
        for k in stacks:
            sides[f"stacked {k}"] = HarnessLoop(arch, cut, device, images, repeats, {}, stack=k)
        if not args.no_compile:
            try:
                sides["compile"] = HarnessLoop(arch, cut, device, images, repeats, {"compile": True})
            except Exception as e:  # no compiler tool-chain here: say so and go on
                print(f"  {arch}: compile failed ({type(e).__name__}: {str(e).splitlines()[0][:120]})", file=sys.stderr)
        measured = interleaved(sides, repeats, before=lambda: sync(device))
        row.update({s: statistics.median(img_s for img_s, _ in v) for s, v in measured.items()})
        row["epoch 1 trial"] = full_epoch_seconds(arch, full, device, 1)
        best = max(stacks, key=lambda k: row[f"stacked {k}"])
        row["stack"] = best
        row["epoch stacked"] = full_epoch_seconds(arch, full, device, best)
        print(f"  {arch}: done ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr, flush=True)

    protocol = study_protocol()
    epochs_per_arch = sum(e * s for e, s in protocol.values())
    scale = 1.0 if not args.quick else (55000 + 10000) / (1024 + 1024)  # quick: per-image scaling, rough
    sides = ["reference", "1 trial", *([f"{args.trials} trials"] if args.trials > 1 else []),
             *[f"stacked {k}" for k in stacks], *([] if args.no_compile else ["compile"])]
    head = ["architecture", *[f"{s} img/s" for s in sides], "epoch s, 1 trial", "epoch s per seed, stacked",
            "study, trials in turn", *([f"study, {args.trials} at once"] if args.trials > 1 else []), "study, stacked"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    totals = {"seq": 0.0, "concurrent": 0.0, "stacked": 0.0}
    for arch in archs:
        row = rows[arch]
        if not row:
            lines.append(f"| {arch} | " + " | ".join(["skipped (budget)"] + [""] * (len(head) - 2)) + " |")
            continue
        seq = epochs_per_arch * row["epoch 1 trial"] * scale
        k = row["stack"]
        stacked = sum(e * math.ceil(s / k) * k for e, s in protocol.values()) * row["epoch stacked"] * scale
        concurrent = seq * row["1 trial"] / row[f"{args.trials} trials"] if args.trials > 1 else seq
        totals["seq"] += seq
        totals["concurrent"] += concurrent
        totals["stacked"] += stacked
        cells = [fmt_rate(row.get(s), None if s == "reference" else row["reference"]) for s in sides]
        lines.append(f"| {arch} | " + " | ".join(cells) + f" | {row['epoch 1 trial']:.2f} | "
                     f"{row['epoch stacked']:.2f} (stack {k}) | {fmt_s(seq)} | "
                     + (f"{fmt_s(concurrent)} | " if args.trials > 1 else "") + f"{fmt_s(stacked)} |")
    best_total = min(totals.values())
    lines.append(f"| **study** ({epochs_per_arch} epochs per architecture) | " + " | ".join([""] * len(sides))
                 + f" | | | **{fmt_s(totals['seq'])}** | "
                 + (f"**{fmt_s(totals['concurrent'])}** | " if args.trials > 1 else "") + f"**{fmt_s(totals['stacked'])}** |")
    table = "\n".join(lines)
    notes = (f"\n{device} ({name}), torch {torch.__version__}; img/s: median of {repeats} interleaved repeats of "
             f"{images} images, batch {BATCH}; ratios to the reference loop. Study = search_spaces/reference.yaml "
             f"({', '.join(f'{d} {e} epochs x {s} seeds' for d, (e, s) in protocol.items())}) projected from the "
             f"full-epoch times (+ the test set, negligible); 'at once': trials in turn scaled by the measured "
             f"concurrent/1-trial throughput; stacks of the best measured size, one after another.\n"
             f"Best projection: {fmt_s(best_total)} on one device (goal: <= 5 min; the study's own loop: about "
             f"{STUDY_GPU_HOURS} GPU-hours, so {STUDY_GPU_HOURS * 3600 / best_total:.0f}x).\n"
             + (f"Skipped past the {args.budget:.0f} s budget: {', '.join(skipped)}.\n" if skipped else "")
             + ("QUICK smoke run: sizes cut, projections scaled per image, numbers meaningless.\n" if args.quick else "")
             + f"Measured in {time.perf_counter() - t_start:.0f} s.")
    print(table + "\n" + notes)
    if args.out:
        args.out.write_text(table + "\n" + notes + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
