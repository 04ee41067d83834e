"""Where a benchmark run's CPU goes: trial training vs the harness's own processes.

Runs a command (default: ``run_benchmark.py`` with the embedded default space) and samples its whole process
tree with psutil every ``--interval`` seconds. Each process's CPU time (user + system) since the previous
sample is charged to what the process was doing at that sample, read from its Ray process title:

* trials: Ray workers running the trainable (``ray::trainable`` / ``ray::ImplicitFunc`` / ``ray::_Inner``);
* Ray workers idle or starting (``ray::IDLE``, ``default_worker.py``: imports before a task arrives);
* Ray services: raylet, GCS server, dashboard and its agents, log monitor, runtime-env agent;
* W&B: the logging actor and wandb's own service processes;
* driver: the command's own process (Tune's loop, the store callback, the progress table).

CPU of a process that exits between samples is lost after its last sample (a short interval keeps that
small); the totals are compared with the run's wall time and the machine's cores.

    python benchmarks/cpu_share.py -- --results-dir /tmp/r --data-dir ~/data     # args after -- go to run_benchmark.py
    python benchmarks/cpu_share.py --cmd "python run_benchmark.py --space tiny" --json share.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
TRIAL_MARKS = ("trainable", "ImplicitFunc", "_Inner", "tuning_trainable")
RAY_SERVICES = ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env", "agent",
                "ray_client_server", "plasma")


def category(proc: psutil.Process, root: int) -> str:
    if proc.pid == root:
        return "driver"
    try:
        cmd = " ".join(proc.cmdline()) or proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "other"
    low = cmd.lower()
    if "wandb" in low:
        return "W&B"
    if cmd.startswith("ray::"):
        if any(m in cmd for m in TRIAL_MARKS):
            return "trials"
        return "Ray workers, idle or starting" if "IDLE" in cmd else f"Ray actors ({cmd.split()[0][5:40]})"
    if "default_worker.py" in cmd or "setup_worker" in cmd:
        return "Ray workers, idle or starting"
    if any(s in low for s in RAY_SERVICES):
        return "Ray services"
    return f"other ({proc.name()[:30]})"


def measure(cmd: list[str], interval: float, env: dict) -> dict:
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    last: dict[int, float] = {}
    procs: dict[int, psutil.Process] = {}
    charged: dict[str, float] = defaultdict(float)
    peak_procs = 0
    output = []

    def sample():
        nonlocal peak_procs
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        peak_procs = max(peak_procs, len(tree))
        for p in tree:
            p = procs.setdefault(p.pid, p)  # keep one object per pid (cpu_times of the same process)
            try:
                times = p.cpu_times()
                cat = category(p, proc.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total = times.user + times.system
            charged[cat] += total - last.get(p.pid, 0.0)
            last[p.pid] = total

    import threading

    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    while proc.poll() is None:
        sample()
        time.sleep(interval)
    reader.join(timeout=5)
    wall = time.perf_counter() - t0
    total = sum(charged.values())
    return {"command": cmd, "rc": proc.returncode, "wall_s": wall, "cpu_s": dict(charged), "cpu_total_s": total,
            "cores": psutil.cpu_count(), "load_before": load0[0], "load_after": os.getloadavg()[0],
            "peak_processes": peak_procs, "output_tail": "".join(output[-15:])}


def report(r: dict) -> str:
    total = r["cpu_total_s"]
    lines = [f"{'where':<40} {'CPU s':>8} {'share':>7}", "-" * 57]
    for cat, s in sorted(r["cpu_s"].items(), key=lambda kv: -kv[1]):
        lines.append(f"{cat:<40} {s:>8.1f} {s / total:>6.1%}")
    harness = total - r["cpu_s"].get("trials", 0.0)
    lines += ["-" * 57, f"{'trials (training)':<40} {r['cpu_s'].get('trials', 0.0):>8.1f} "
              f"{r['cpu_s'].get('trials', 0.0) / total:>6.1%}",
              f"{'harness (everything else)':<40} {harness:>8.1f} {harness / total:>6.1%}",
              f"\nwall {r['wall_s']:.0f} s, {r['cores']} cores: {total / r['wall_s']:.2f} cores busy on average; "
              f"rc {r['rc']}; up to {r['peak_processes']} processes; load average {r['load_before']:.1f} before, "
              f"{r['load_after']:.1f} after (other users' load slows both sides alike)"]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cmd", help="the command to measure (default: python run_benchmark.py ARGS-after---)")
    p.add_argument("--interval", type=float, default=0.25, help="seconds between samples")
    p.add_argument("--json", type=Path, help="also write the measurement here")
    args = p.parse_args(argv)
    cmd = shlex.split(args.cmd) if args.cmd else [sys.executable, "run_benchmark.py", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = measure(cmd, args.interval, env)
    print(r["output_tail"].rstrip())
    print(report(r))
    if args.json:
        args.json.write_text(json.dumps(r, indent=1))
    return 0 if r["rc"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
