"""``python run_benchmark.py``: the command line of the benchmark."""

from __future__ import annotations

import argparse
import sys
import time

from .data import DATA_DIR_ENV, resolve_data_dir
from .errors import UserError

EPILOG = f"""
examples:
  python run_benchmark.py                                   # the quick space, local Ray
  python run_benchmark.py --space reference --data-dir ~/data
  python run_benchmark.py --space reference --architectures convnet,stnet --seeds 0,1
  python run_benchmark.py --address auto                    # on a node of a running Ray cluster

data directory: --data-dir, else ${DATA_DIR_ENV}, else ./datasets (downloaded there when missing).
Rerunning the same command continues a benchmark: trials already in the store are skipped.
"""


def _csv(kind):
    def parse(text: str):
        return [kind(v) for v in text.split(",") if v.strip()]
    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_benchmark.py", description="Benchmark Spatial Transformer and CoordConv classifiers with Ray Tune.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default=None, metavar="FILE|NAME",
                   help="search-space YAML, or the name of one in search_spaces/ (default: quick)")
    p.add_argument("--results-dir", default="results", metavar="DIR",
                   help="results store: Parquet tables and best weights (default: ./results)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help=f"dataset root holding MNIST/raw etc. (default: ${DATA_DIR_ENV}, else ./datasets)")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="Ray cluster to join ('auto' on a cluster node, or HOST:PORT); default: $RAY_ADDRESS, else a local Ray")
    p.add_argument("--storage-path", default=None, metavar="URI",
                   help="where Ray Tune keeps checkpoints; on a multi-node cluster storage every node reaches, "
                        "e.g. s3://bucket/stbench (default: $STBENCH_STORAGE_PATH, else RESULTS_DIR/ray)")
    p.add_argument("--cpu", type=float, default=None, metavar="N", help="CPUs per trial (overrides resources.cpu)")
    p.add_argument("--gpu", type=float, default=None, metavar="F",
                   help="GPUs per trial, fractions share a device (overrides resources.gpu; 0 = CPU only)")
    p.add_argument("--max-concurrent", type=int, default=None, metavar="N",
                   help="at most N trials at once (default: as many as the trial resources allow)")
    p.add_argument("--architectures", type=_csv(str), default=None, metavar="A,B",
                   help="run only these architectures of the space")
    p.add_argument("--datasets", type=_csv(str), default=None, metavar="D,E", help="run only these datasets of the space")
    p.add_argument("--seeds", type=_csv(int), default=None, metavar="0,1", help="run only these seeds of the space")
    p.add_argument("--no-download", action="store_true", help="never download datasets; fail if files are missing")
    p.add_argument("--retry-errored", action="store_true",
                   help="run again trials that ended in error in an earlier run (default: keep them)")
    p.add_argument("--wandb-mode", choices=("offline", "online", "disabled"), default=None,
                   help="W&B logging (default: the space's wandb.mode, else offline; runs land in RESULTS_DIR/wandb)")
    p.add_argument("--wandb-project", default=None, metavar="NAME", help="W&B project (default: the space's, else stbench)")
    p.add_argument("--wandb-entity", default=None, metavar="NAME", help="W&B entity (team or user)")
    p.add_argument("--quiet", action="store_true", help="no progress table")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return _main(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to continue; finished trials are kept", file=sys.stderr)
        return 130


def _main(args) -> int:
    from pathlib import Path

    from . import driver
    from .space import load_space

    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise UserError(f"--max-concurrent: must be ≥ 1 (got {args.max_concurrent})")
    space, text = load_space(args.space)
    overrides = {k: v for k, v in (("mode", args.wandb_mode), ("project", args.wandb_project),
                                   ("entity", args.wandb_entity)) if v is not None}
    if overrides:
        space = space.model_copy(update={"wandb": space.wandb.model_copy(update=overrides)})
    resources = {k: v for k, v in (("cpu", args.cpu), ("gpu", args.gpu)) if v is not None}
    if resources:
        from .space import Resources

        try:
            space = space.model_copy(update={"resources": Resources(**{**space.resources.model_dump(), **resources})})
        except ValueError as e:
            raise UserError(f"--cpu/--gpu: {e.errors()[0]['msg']} (got {resources})") from None
    t0 = time.perf_counter()
    select_by = {"architectures": args.architectures, "datasets": args.datasets, "seeds": args.seeds}
    outcome = driver.run(space, text, select_by=select_by, results_dir=Path(args.results_dir),
                         data_dir=resolve_data_dir(args.data_dir), address=args.address,
                         max_concurrent=args.max_concurrent, download=not args.no_download,
                         retry_errored=args.retry_errored, verbose=0 if args.quiet else 1,
                         storage_path=args.storage_path)
    ran = ", ".join(f"{n} {status}" for status, n in sorted(outcome.statuses.items())) or "nothing to run"
    print(f"stbench: run {outcome.run_id} finished in {time.perf_counter() - t0:.0f} s: {ran}; "
          f"{outcome.skipped} of {outcome.total} trials already in the store {Path(args.results_dir).resolve()}")
    failed = outcome.statuses.get("error", 0)
    return 1 if failed else 0
