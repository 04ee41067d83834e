"""Harness overhead: the same trials through the harness and as a plain sequential Python loop, in one run.

* plain: ``for trial in trials: Trainer(trial, load_splits(trial, data_dir)).run()`` in this process, with
  as many torch threads as a trial gets CPUs; nothing is saved.
* script: the same plain loop as a fresh Python process (``overhead.py --plain-once``), timed from its start to
  its exit: what a training script of one's own costs when run from the shell (Python, torch and the data
  loaded, torch's first-use imports paid again), the like-for-like baseline for a harness invocation, which
  also starts a fresh trial process.
* harness: ``harness.driver.run`` on a local Ray started by this script: Ray Tune, one actor at a time
  (``max_concurrent=1``, so both sides do the same sequential work), a checkpoint and a report per epoch,
  the store callback, the Parquet store, the best weights and an offline W&B run per trial (``--wandb
  disabled`` leaves W&B out, to see its share).

Ray's start-up (``ray.init``) and shut-down are paid once per invocation, not per trial: they are timed and
printed apart from the ratio. Repeats alternate the two sides, so load from other processes hits both.

    python benchmarks/overhead.py                                        # quick: 4 short trials, ~1 minute
    python benchmarks/overhead.py --train-limit 55000 --epochs 3 --repeats 2   # trials of about 30 s
    python benchmarks/overhead.py --trials 200 --train-limit 500 --epochs 1 --val-size 500 --test-limit 500 \
        --repeats 1                                                     # 200 one-second trials: the sustained rate

With 20 trials or more it also prints the sustained rate: trials per second over successive windows of the run
(from the trials' finish times in the store) next to the plain loop's, and the driver process's CPU seconds per
trial (Tune's loop, the callbacks, the store writes), to compare with Ray Tune's own scalability figure: 10,000
one-second trials on one 16-CPU node in 715 s against 625 s ideal, +14 % (docs.ray.io, "Scalability and Overhead
Benchmarks for Ray Tune").
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's harness, not an installed one
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])  # Ray workers too
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # do not leave ~/.ray/auth_token behind (see ray-facts)
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")

import torch  # noqa: E402

from harness import driver  # noqa: E402
from harness.data.base import resolve_data_dir  # noqa: E402
from harness.space import SearchSpace  # noqa: E402
from harness.train import Trainer, load_splits, pick_device  # noqa: E402
from harness.errors import run_reporting_user_errors  # noqa: E402


def plain_loop(trials: list, data_dir: Path, threads: int) -> list[float]:
    """The trials one after another in this process; returns each trial's training + evaluation seconds."""
    torch.set_num_threads(threads)
    device = pick_device()
    seconds = []
    for trial in trials:
        t0 = time.perf_counter()
        splits = load_splits(trial, data_dir).to(device)
        for _ in Trainer(trial, splits, device).run():
            pass
        seconds.append(time.perf_counter() - t0)
    return seconds


def first_training_start(results: Path) -> float:
    """When the run's first epoch began training (epoch time stamp minus its training and evaluation seconds)."""
    from harness.store import ResultsStore

    epochs = ResultsStore(results).epochs()
    begun = [r.reported_at.timestamp() - r.train_time_s - r.eval_time_s for r in epochs.itertuples()]
    return min(begun)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=4,
                   help="trials per side and repeat (rounded up to a whole number of seeds per architecture)")
    p.add_argument("--architectures", default="convnet,stnet", help="cycled over the trials (seeds 0, 1, ...)")
    p.add_argument("--train-limit", type=int, default=4000, help="training images per epoch (55000: full MNIST)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--val-size", type=int, default=5000, help="validation images evaluated per epoch")
    p.add_argument("--test-limit", type=int, default=10000, help="test images evaluated at the end of a trial")
    p.add_argument("--repeats", type=int, default=2, help="timed repeats per side (median reported)")
    p.add_argument("--threads", type=int, default=1, help="CPUs per trial = torch threads, both sides")
    p.add_argument("--wandb", choices=["offline", "disabled"], default="offline",
                   help="the harness side's W&B mode (offline: as `python run_benchmark.py` runs by default)")
    p.add_argument("--stack", type=int, default=1,
                   help="the harness side stacks this many seeds per Tune trial (Training.stack; the plain side "
                        "trains seeds one by one)")
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/raw (default: $STBENCH_DATA_DIR or ./datasets)")
    p.add_argument("--plain-once", action="store_true", help=argparse.SUPPRESS)  # the script side's process
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)

    archs = args.architectures.split(",")
    seeds = -(-args.trials // len(archs))
    gpu = 1.0 if torch.cuda.is_available() else 0.0
    space = SearchSpace.model_validate({
        "name": "overhead", "architectures": archs, "datasets": {"mnist": {}},
        "training": {"epochs": args.epochs, "batch_size": 64, "lr": 0.01, "momentum": 0.5, "seeds": seeds,
                     "val_size": args.val_size, "train_limit": args.train_limit, "test_limit": args.test_limit,
                     "stack": args.stack},
        "resources": {"cpu": args.threads, "gpu": gpu}, "wandb": {"mode": args.wandb},
    })
    trials = sorted(space.trials(), key=lambda t: (t.seed, archs.index(t.architecture)))  # the whole grid, unstacked
    data_dir = resolve_data_dir(args.data_dir)
    if args.plain_once:  # the script side: the plain loop once in this fresh process, nothing printed
        plain_loop(trials, data_dir, args.threads)
        return 0
    print(f"stbench overhead: {len(trials)} trials ({', '.join(archs)}; {args.epochs} epochs of {args.train_limit} "
          f"images, validation {args.val_size}, test {args.test_limit}), {args.repeats} repeats per side, {args.threads} CPU / torch "
          f"thread(s) per trial, one trial at a time, device {pick_device()}, {os.cpu_count()} CPUs, harness W&B {args.wandb}"
          + (f", harness stacking {args.stack} seeds per Tune trial" if args.stack > 1 else ""))

    import ray

    tmp = Path(tempfile.mkdtemp(prefix="stbench-overhead-"))
    rows, startups, rates, driver_cpu = [], [], [], []
    try:
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=max(args.threads, os.cpu_count() or 1), num_gpus=int(gpu),
                 include_dashboard=False, configure_logging=False, log_to_driver=False, _temp_dir=str(tmp / "ray"))
        startup = time.perf_counter() - t0
        for r in range(args.repeats):
            for side in (("plain", "harness", "script") if r % 2 == 0 else ("script", "harness", "plain")):
                t0 = time.perf_counter()
                if side == "plain":
                    per_trial = plain_loop(trials, data_dir, args.threads)
                elif side == "script":
                    subprocess.run([sys.executable, __file__, *argv, "--data-dir", str(data_dir), "--plain-once"],
                                   check=True, stdout=subprocess.DEVNULL)
                else:
                    started, cpu0 = time.time(), _cpu_seconds()
                    outcome = driver.run(space, "overhead benchmark", results_dir=tmp / f"results-{r}", data_dir=data_dir,
                                         max_concurrent=1, download=False, verbose=0)
                    if outcome.statuses != {"complete": len(trials)}:
                        raise SystemExit(f"harness trials did not all complete: {outcome.statuses}")
                    driver_cpu.append(_cpu_seconds() - cpu0)
                    startups.append(first_training_start(tmp / f"results-{r}") - started)
                    rates.append(finish_times(tmp / f"results-{r}"))
                rows.append((r, side, time.perf_counter() - t0, per_trial if side == "plain" else None))
                print(f"  repeat {r + 1} {side}: {rows[-1][2]:.1f} s", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        ray.shutdown()
        shutdown = time.perf_counter() - t0
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

    plain = [s for _, side, s, _ in rows if side == "plain"]
    harness = [s for _, side, s, _ in rows if side == "harness"]
    script = [s for _, side, s, _ in rows if side == "script"]
    trial_s = statistics.median(x for _, side, _, per in rows if side == "plain" for x in per)
    P, H = statistics.median(plain), statistics.median(harness)
    overhead = (H - P) / len(trials)
    X = statistics.median(script)
    print(f"\n{'repeat':<8} {'plain s':>9} {'harness s':>10} {'ratio':>7} {'script s':>9} {'harness / script':>17}")
    for r in range(args.repeats):
        print(f"{r + 1:<8} {plain[r]:>9.1f} {harness[r]:>10.1f} {harness[r] / plain[r]:>6.3f}x {script[r]:>9.1f} "
              f"{harness[r] / script[r]:>16.3f}x")
    print(f"{'median':<8} {P:>9.1f} {H:>10.1f} {H / P:>6.3f}x {X:>9.1f} {H / X:>16.3f}x   <- harness / plain wall time")
    print(f"\nmedian trial (plain): {trial_s:.1f} s; harness overhead per trial: {overhead:+.2f} s")
    print(f"Ray start-up (ray.init): {startup:.1f} s, shut-down: {shutdown:.1f} s, once per invocation, not in the ratio;"
          f" with them: {(H + startup + shutdown) / P:.3f}x")
    print(f"script: the plain loop as a fresh process (a script of one's own from the shell: Python, torch, the data and "
          f"torch's first-use imports each time), from its start to its exit: {X:.1f} s; harness / script: {H / X:.3f}x, "
          f"with Ray's start-up and shut-down {(H + startup + shutdown) / X:.3f}x")
    S = statistics.median(startups)
    print(f"of which start-up, until the first trial trains: {S:.1f} s, once per invocation (Tune's set-up, the trial "
          f"process's start, its Python, Ray and torch imports); after it: {(H - S - P) / len(trials):+.2f} s per "
          f"trial, {(H - S) / P:.3f}x")
    if trial_s < 30:
        print(f"projected for {len(trials)} trials of 30 s each (the same total overhead): "
              f"{(len(trials) * 30 + H - P) / (len(trials) * 30):.3f}x")
    print("(the plain loop paid its imports before its timer started and keeps its data and warmed-up kernels\n"
          " from one repeat to the next; each harness invocation starts a fresh trial process)")
    cpu = statistics.median(driver_cpu)
    print(f"driver process CPU (Tune's loop, callbacks, store writes, W&B hand-off): {cpu:.1f} s, "
          f"{1000 * cpu / len(trials):.0f} ms per trial")
    if len(trials) >= 20:
        plain_per_trial = [per for _, side, _, per in rows if side == "plain"][0]
        print_rates(rates[0], {(t.architecture, t.seed): x for t, x in zip(trials, plain_per_trial)})
    return 0


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process (the driver: Tune's loop and every callback run here)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def finish_times(results: Path) -> list[tuple[float, str, int]]:
    """The harness trials' (finish time, architecture, seed), in the order they finished."""
    from harness.store import ResultsStore

    t = ResultsStore(results).trials()
    return sorted((f.timestamp(), a, int(s)) for f, a, s in zip(t["finished_at"], t["architecture"], t["seed"]))


def print_rates(finished: list[tuple[float, str, int]], plain: dict[tuple[str, int], float], windows: int = 4) -> None:
    """Trials per second over successive windows of the run, against the plain loop's time for the same trials (Tune
    runs them in its own order: architecture by architecture): a per-trial cost that grows with the number of
    trials (Tune's bookkeeping, the store) shows as a rising ratio."""
    n = len(finished)
    edges = [round(i * n / windows) for i in range(windows + 1)]
    print(f"\nsustained rate, one trial at a time ({n} trials; the first window starts at its first finish, after "
          "the start-up):")
    print(f"{'trials':<12} {'plain /s':>9} {'harness /s':>11} {'harness time / plain':>21}")
    for a, b in zip(edges, edges[1:]):
        lo = max(a, 1)  # each window's span starts at the finish before it (the first: at its own first finish)
        span = finished[b - 1][0] - finished[lo - 1][0]
        same = [plain[(arch, seed)] for _, arch, seed in finished[lo:b]]
        harness, plain_rate = len(same) / span, len(same) / sum(same)
        print(f"{f'{a + 1}-{b}':<12} {plain_rate:>9.2f} {harness:>11.2f} {plain_rate / harness:>20.3f}x")


if __name__ == "__main__":
    raise SystemExit(run_reporting_user_errors(main))
