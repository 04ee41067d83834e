"""How the results store's readers scale with the number of trials: the table of issue 23, for any N.

A store from a default run (``--source``, else one made here by ``stbench run`` of the quick space) is cloned
to N trials: trial i is a copy of source trial i mod n with its own trial id and seed, its epoch rows and
its resume pointer. Each N is written in up to three layouts:

* ``loose``: one file per trial per table, a resume pointer per trial, schema version 1 (how every store was
  written before compaction; ``--loose-max`` caps the N written this way, as writing 100,000 × 3 small
  files takes long);
* ``compacted``: that loose store after ``stbench store compact`` (timed: the ``compact`` column);
* ``packed``: the same rows written straight into packs (what ``compact`` produces, without writing the
  loose files first), for the N above ``--loose-max``.

Each command then runs in a fresh process, as a user would run it, timed from start to exit, with its peak
resident memory (``wait4``): the pre-flight damage check every run does before it starts
(``ResultsStore.check``), ``stbench plan``, ``stbench verify`` and ``stbench report --no-checkpoints``.
``--code DIR`` runs the commands from another checkout (e.g. the main branch, for a before/after table;
an old checkout reads only the ``loose`` layout).

    python benchmarks/store_scale.py --trials 100,1000,10000,100000
    python benchmarks/store_scale.py --trials 1000 --code /work/main --layouts loose
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's harness, not an installed one

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from harness.store import EPOCHS, PACK_TRIALS, RESUME_ARCHIVE, RUNS, TRIALS, ResultsStore  # noqa: E402

COMMANDS = ("pre-flight", "plan", "verify", "report")


def source_store(work: Path, source: str | None, data_dir: str | None) -> Path:
    """The store to clone: ``--source``, else a default run of the quick space made once under ``work``."""
    if source:
        return Path(source)
    root = work / "source"
    if not (root / "store.json").exists() or ResultsStore(root).trials().empty:
        cmd = [sys.executable, "-m", "harness", "run", "--space", "quick", "--results-dir", str(root), "--quiet"]
        subprocess.run(cmd + (["--data-dir", data_dir] if data_dir else []), check=True, cwd=REPO, env=_env(REPO))
    return root


def clone(source: Path, n: int) -> dict[str, pa.Table]:
    """The source's tables grown to ``n`` trials (trial i from source trial i mod k), ids and seeds unique."""
    store = ResultsStore(source)
    trials = pa.Table.from_pandas(store.trials(), schema=TRIALS, preserve_index=False)
    epochs = pa.Table.from_pandas(store.epochs(), schema=EPOCHS, preserve_index=False)
    k = len(trials)
    seeds = pc.max(trials["seed"]).as_py() + 1
    pick = pa.array([i % k for i in range(n)])
    out_trials = trials.take(pick)
    ids = pa.array([f"{i:016x}" for i in range(n)])
    out_trials = out_trials.set_column(0, "trial_id", ids)
    new_seed = pc.add(out_trials["seed"], pa.array([(i // k) * seeds for i in range(n)]))
    out_trials = out_trials.set_column(out_trials.schema.get_field_index("seed"), "seed", new_seed)
    # every clone's epoch rows: the source trial's rows, under the clone's id and seed
    rows_of = {t: [] for t in trials["trial_id"].to_pylist()}
    for j, t in enumerate(epochs["trial_id"].to_pylist()):
        rows_of[t].append(j)
    source_ids = trials["trial_id"].to_pylist()
    take, owner = [], []
    for i in range(n):
        js = rows_of[source_ids[i % k]]
        take += js
        owner += [i] * len(js)
    out_epochs = epochs.take(pa.array(take))
    owner = pa.array(owner)
    out_epochs = out_epochs.set_column(0, "trial_id", ids.take(owner))
    out_epochs = out_epochs.set_column(out_epochs.schema.get_field_index("seed"), "seed", new_seed.take(owner))
    runs = pa.Table.from_pandas(store.runs(), schema=RUNS, preserve_index=False)
    return {"trials": out_trials, "epochs": out_epochs, "runs": runs}


def write_loose(root: Path, tables: dict[str, pa.Table]) -> None:
    """Version 1's layout: a file per trial per table and a resume pointer per trial."""
    for d in ("epochs", "trials", "runs", "checkpoints", "resume"):
        (root / d).mkdir(parents=True)
    _manifest(root, 1)
    for row in range(len(tables["runs"])):
        pq.write_table(tables["runs"].slice(row, 1), root / "runs" / f"{tables['runs']['run_id'][row]}.parquet")
    trials, epochs = tables["trials"], tables["epochs"]
    ids = trials["trial_id"].to_pylist()
    pointer = _pointer(root)
    for i, trial_id in enumerate(ids):
        pq.write_table(trials.slice(i, 1), root / "trials" / f"{trial_id}.parquet")
        (root / "resume" / f"{trial_id}.json").write_text(json.dumps({**pointer, "members": [trial_id]}))
    start, epoch_ids = 0, epochs["trial_id"].to_pylist()
    while start < len(epoch_ids):  # clones' rows are contiguous per trial
        end = start
        while end < len(epoch_ids) and epoch_ids[end] == epoch_ids[start]:
            end += 1
        pq.write_table(epochs.slice(start, end - start), root / "epochs" / f"{epoch_ids[start]}.parquet")
        start = end


def write_packed(root: Path, tables: dict[str, pa.Table]) -> None:
    """What ``stbench store compact`` leaves, written directly: packs of ``PACK_TRIALS`` trials."""
    for d in ("epochs", "trials", "runs", "checkpoints", "resume", "packs"):
        (root / d).mkdir(parents=True)
    _manifest(root, 2)
    for row in range(len(tables["runs"])):
        pq.write_table(tables["runs"].slice(row, 1), root / "runs" / f"{tables['runs']['run_id'][row]}.parquet")
    trials, epochs = tables["trials"], tables["epochs"]
    pointer = _pointer(root)
    for seq, start in enumerate(range(0, len(trials), PACK_TRIALS), 1):
        chunk = trials.slice(start, PACK_TRIALS)
        pack = root / "packs" / f"{seq:06d}"
        pack.mkdir()
        pq.write_table(epochs.filter(pc.is_in(epochs["trial_id"], chunk["trial_id"])), pack / "epochs.parquet",
                       row_group_size=256_000)
        pq.write_table(chunk, pack / "trials.parquet", row_group_size=64_000)
        (pack / RESUME_ARCHIVE).write_text("".join(json.dumps({**pointer, "members": [t], "key": t}) + "\n"
                                                  for t in chunk["trial_id"].to_pylist()))


def _manifest(root: Path, version: int) -> None:
    (root / "store.json").write_text(json.dumps({"schema_version": version, "created_at": "2026-12-04T00:00:00+00:00"}))


def _pointer(root: Path) -> dict:
    return {"checkpoint": str(root.resolve() / "ray" / "gone" / "checkpoint_000002"), "epoch": 3,
            "at": "2026-12-04T00:00:00+00:00"}  # a finished trial's stale pointer, as a run leaves it


def _env(code: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(code), "RAY_AUTH_MODE": "disabled"}


def timed(cmd: list[str], code: Path) -> tuple[float, float, int, float]:
    """(wall seconds, peak RSS in MiB, exit status, CPU seconds) of one fresh process. The CPU seconds (user +
    system) hold on a machine shared with other work; the wall seconds are what a user waits."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=code, env=_env(code), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        print(f"  {' '.join(cmd[2:5])}…: exit {proc.returncode}: {proc.stderr.read().decode()[-300:]}", file=sys.stderr)
    return wall, usage.ru_maxrss / 1024, proc.returncode, usage.ru_utime + usage.ru_stime


def measure(root: Path, code: Path, data_dir: str | None, out: Path, skip: set[str] = frozenset()) -> dict[str, tuple]:
    py = sys.executable
    data = ["--data-dir", data_dir] if data_dir else []
    commands = {
        "pre-flight": [py, "-c", f"from harness.store import ResultsStore; ResultsStore.check({str(root)!r})"],
        "plan": [py, "-m", "harness", "plan", "--space", "quick", "--results-dir", str(root), *data],
        "verify": [py, "-m", "harness.store", "verify", str(root)],
        "report": [py, "-m", "analysis.report", "--results-dir", str(root), "--out", str(out), "--no-checkpoints"],
    }
    return {name: timed(cmd, code) if name not in skip else (float("nan"), 0.0, 0, float("nan"))
            for name, cmd in commands.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", default="100,1000,10000", help="comma-separated store sizes (default 100,1000,10000)")
    p.add_argument("--source", help="a store from a default run to clone (default: one made here)")
    p.add_argument("--data-dir", help="dataset root for the source run and for plan (default: the run's own)")
    p.add_argument("--work", help="where the clones are written (default: a temporary directory, removed)")
    p.add_argument("--code", default=str(REPO), help="the checkout the commands run from (default: this one)")
    p.add_argument("--layouts", default="loose,compacted,packed", help="which layouts to measure")
    p.add_argument("--skip", default="", help="commands not to run, e.g. report (comma-separated)")
    p.add_argument("--loose-max", type=int, default=10_000, help="largest N written loose (default 10000)")
    args = p.parse_args(argv)
    sizes = [int(v) for v in args.trials.split(",") if v.strip()]
    layouts = set(args.layouts.split(","))
    skip = set(filter(None, args.skip.split(",")))
    code = Path(args.code).resolve()
    work = Path(args.work or tempfile.mkdtemp(prefix="store-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    source = source_store(work, args.source, args.data_dir)
    data_dir = args.data_dir or ResultsStore(source).runs()["data_dir"].dropna().iloc[-1]
    print(f"source: {source} ({len(ResultsStore(source).trials())} trials); commands from {code}; "
          f"CPU: {_cpu()}, {os.cpu_count()} cores")
    print("each cell: wall seconds (CPU seconds, user + system, of that process)")
    print("| trials | layout | pre-flight | plan | verify | report | compact (its peak RSS) | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        tables = clone(source, n)
        plans = [("loose", write_loose)] if n <= args.loose_max and layouts & {"loose", "compacted"} else []
        if "packed" in layouts and (n > args.loose_max or "compacted" not in layouts):
            plans.append(("packed", write_packed))
        for layout, writer in plans:
            root = work / f"{layout}-{n}"
            t0 = time.perf_counter()
            writer(root, tables)
            built = time.perf_counter() - t0
            rows = []
            if layout != "loose" or "loose" in layouts:
                rows.append((layout, measure(root, code, data_dir, work / "report", skip), ""))
            if layout == "loose" and "compacted" in layouts:
                wall, rss, status, cpu = timed([sys.executable, "-m", "harness.store", "compact", str(root)], code)
                cell = f"{wall:.1f} s ({cpu:.1f}), {rss:.0f} MiB" + ("" if status == 0 else f", exit {status}")
                name = "compacted" if status == 0 else "loose, compaction failed"  # never a loose row as compacted
                rows.append((name, measure(root, code, data_dir, work / "report", skip), cell))
            for name, m, compact in rows:
                cells = " | ".join(f"{m[c][0]:.1f} s ({m[c][3]:.1f})" + ("" if m[c][2] == 0 else f" exit {m[c][2]}")
                                   for c in COMMANDS)
                print(f"| {n:,} | {name} | {cells} | {compact} | {max(v[1] for v in m.values()):.0f} |", flush=True)
            print(f"  (built {layout} in {built:.0f} s)", file=sys.stderr)
            _remove(root)
    if not args.work:
        _remove(work)
    return 0


def _cpu() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
