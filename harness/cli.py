"""The command line: ``stbench run | plan | report | verify`` (``python run_benchmark.py`` = ``stbench run``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .data import DATA_DIR_ENV, resolve_data_dir
from .errors import UserError
from .trial import Status

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


def _space_args(p: argparse.ArgumentParser) -> None:
    """What ``run`` and ``plan`` share: the space, its overrides, the store, the data and the selection."""
    p.add_argument("--space", default=None, metavar="FILE|NAME",
                   help="search-space YAML, or the name of one in search_spaces/ (default: quick)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a key of the space before validation, e.g. training.epochs=1, "
                        "datasets.mnist.lr=0.02, resources.gpu=0.25 (repeatable; values are YAML)")
    p.add_argument("--results-dir", default="results", metavar="DIR",
                   help="results store: Parquet tables and best weights (default: ./results)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help=f"dataset root holding MNIST/raw etc. (default: ${DATA_DIR_ENV}, else ./datasets)")
    p.add_argument("--cpu", type=float, default=None, metavar="N", help="CPUs per trial (overrides resources.cpu)")
    p.add_argument("--gpu", type=float, default=None, metavar="F",
                   help="GPUs per trial, fractions share a device (overrides resources.gpu; 0 = CPU only)")
    p.add_argument("--max-concurrent", type=int, default=None, metavar="N",
                   help="at most N trials at once (default: as many as the trial resources allow)")
    p.add_argument("--architectures", type=_csv(str), default=None, metavar="A,B",
                   help="run only these architectures of the space")
    p.add_argument("--datasets", type=_csv(str), default=None, metavar="D,E", help="run only these datasets of the space")
    p.add_argument("--seeds", type=_csv(int), default=None, metavar="0,1", help="run only these seeds of the space")
    p.add_argument("--retry-errored", action="store_true",
                   help="run again trials that ended in error in an earlier run (default: keep them)")
    p.add_argument("--until-decided", action="store_true",
                   help="run seeds in rounds until each comparison with the baseline is decided (the space's "
                        "decide: section, else its defaults: convnet, test accuracy, ±0.5 pp, α 0.05, 20 seeds)")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def parser(prog: str = "run_benchmark.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="Benchmark Spatial Transformer and CoordConv classifiers with Ray Tune.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _space_args(p)
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="Ray cluster to join ('auto' on a cluster node, or HOST:PORT); default: $RAY_ADDRESS, else a local Ray")
    p.add_argument("--storage-path", default=None, metavar="URI",
                   help="where Ray Tune keeps checkpoints; on a multi-node cluster storage every node reaches, "
                        "e.g. s3://bucket/stbench (default: $STBENCH_STORAGE_PATH, else RESULTS_DIR/ray)")
    p.add_argument("--no-download", action="store_true", help="never download datasets; fail if files are missing")
    p.add_argument("--retry-stale", action="store_true",
                   help="run again finished trials whose plugin code (file sha256, package version) changed since")
    p.add_argument("--wandb-mode", choices=("offline", "online", "disabled"), default=None,
                   help="W&B logging (default: the space's wandb.mode, else $WANDB_MODE, else offline; "
                        "runs land in RESULTS_DIR/wandb)")
    p.add_argument("--wandb-project", default=None, metavar="NAME",
                   help="W&B project (default: the space's, else $WANDB_PROJECT, else stbench)")
    p.add_argument("--wandb-entity", default=None, metavar="NAME", help="W&B entity (default: the space's, else $WANDB_ENTITY)")
    p.add_argument("--verbose", action="store_true", help="Ray Tune's trial table and the trial processes' output as well as the progress line")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def plan_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stbench plan", description="List every trial of a space as done / to run / failed and estimate the "
        "wall time of what is left on this machine (or the Ray cluster at --address), without starting Ray.")
    _space_args(p)
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="plan for this running Ray cluster: its CPUs, GPUs and GPU models, read from it, nothing "
                        "started ('auto' on a cluster node, or HOST:PORT; default: $RAY_ADDRESS, else this machine)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _guarded(run, args) -> int:
    try:
        return run(args)
    except UserError as e:
        if args.debug:
            raise
        first, *rest = str(e).splitlines() or [""]
        print(f"error: {first}", file=sys.stderr)
        for line in rest:
            print(f"  {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to continue; finished trials are kept", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    """``python run_benchmark.py`` = ``stbench run``."""
    return _guarded(_run, parser().parse_args(argv))


COMMANDS = {
    "run": "train the search space's trials (skipping those already in the store)",
    "plan": "list the trials and estimate the wall time, without starting Ray",
    "report": "turn a results store into a report (HTML, Markdown, figures, tables)",
    "verify": "check a results store's integrity",
    "merge": "combine stores written by separate jobs: `stbench merge A B ... --into C`",
    "store": "store maintenance: `stbench store compact DIR` packs finished trials into a few large files",
}


def stbench(argv: list[str] | None = None) -> int:
    """The ``stbench`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: stbench {run,plan,report,verify,merge,store} [options]   (stbench COMMAND --help for each)\n\n" + "\n".join(
        f"  {name:8s} {what}" for name, what in COMMANDS.items())
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "run":
        return _guarded(_run, parser(prog="stbench run").parse_args(rest))
    if command == "plan":
        return _guarded(_plan, plan_parser().parse_args(rest))
    if command == "report":
        # lazy: each subcommand loads only its own room (plan and --help start without Ray)
        from analysis.report import main as report

        return report(rest)
    if command == "verify":
        from .store import main as store_main

        return store_main(["verify", *rest])
    if command == "merge":
        from .merge import main as merge_main

        return merge_main(rest)
    if command == "store":
        from .store import main as store_main

        return store_main(rest)
    print(f"error: stbench: unknown command {command!r}; allowed: {', '.join(COMMANDS)}", file=sys.stderr)
    return 2


def load_with_overrides(args):
    """The space with ``--set`` overrides and ``--cpu`` / ``--gpu`` applied, validated."""
    # lazy: each subcommand loads only its own room (plan and --help start without Ray)
    from .space import Resources, load_space

    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise UserError(f"--max-concurrent: must be ≥ 1 (got {args.max_concurrent})")
    space, text = load_space(args.space, overrides=args.overrides)
    resources = {k: v for k, v in (("cpu", args.cpu), ("gpu", args.gpu)) if v is not None}
    if resources:
        try:
            space = space.model_copy(update={"resources": Resources(**{**space.resources.model_dump(), **resources})})
        except ValueError as e:
            raise UserError(f"--cpu/--gpu: {e.errors()[0]['msg']} (got {resources})") from None
    return space, text


WANDB_ENV = {"mode": "WANDB_MODE", "project": "WANDB_PROJECT", "entity": "WANDB_ENTITY"}


def wandb_settings(space, args):
    """Each W&B setting from its flag, else the space (where it sets it), else W&B's own environment variable."""
    chosen = {}
    for key, env in WANDB_ENV.items():
        flag = getattr(args, f"wandb_{key}")
        if flag is not None:
            chosen[key] = flag
        elif key not in space.wandb.model_fields_set and os.environ.get(env):
            chosen[key] = os.environ[env]
    if not chosen:
        return space
    from .space import Wandb  # lazy: each subcommand loads only its own room (plan and --help start without Ray)

    try:
        return space.model_copy(update={"wandb": Wandb(**{**space.wandb.model_dump(), **chosen})})
    except ValueError as e:
        raise UserError(f"W&B settings: {e.errors()[0]['msg']} (got {chosen}); allowed modes: offline, online, disabled") from None


def selection(args) -> dict:
    return {"architectures": args.architectures, "datasets": args.datasets, "seeds": args.seeds}


def _run(args) -> int:
    from . import driver

    space, text = load_with_overrides(args)
    space = wandb_settings(space, args)
    t0 = time.perf_counter()
    outcome = driver.run(space, text, select_by=selection(args), results_dir=Path(args.results_dir),
                         data_dir=resolve_data_dir(args.data_dir), address=args.address,
                         max_concurrent=args.max_concurrent, download=not args.no_download,
                         retry_errored=args.retry_errored, verbose=0 if args.quiet else 2 if args.verbose else 1,
                         storage_path=args.storage_path, overrides=args.overrides, until_decided=args.until_decided,
                         retry_stale=args.retry_stale)
    ran = ", ".join(f"{n} {status}" for status, n in sorted(outcome.statuses.items())) or "nothing to run"
    print(f"stbench: run {outcome.run_id} finished in {time.perf_counter() - t0:.0f} s: {ran}; "
          f"{outcome.skipped} of {outcome.total} trials already in the store {Path(args.results_dir).resolve()}")
    failed = outcome.statuses.get(Status.ERROR.value, 0)
    return 1 if failed else 0


def _plan(args) -> int:
    from .plan import make_plan

    space, _ = load_with_overrides(args)
    decided = args.until_decided or space.decide is not None
    if decided:  # the plan lists the budget's trials (the most a decision can take) and the expected seeds
        from . import decide

        decide.check_selection(space, selection(args))
        space = decide.budget_space(space, decide.config(space).budget)
    plan = make_plan(space, select_by=selection(args), results_dir=Path(args.results_dir),
                     data_dir=resolve_data_dir(args.data_dir), retry_errored=args.retry_errored,
                     max_concurrent=args.max_concurrent, address=args.address)
    lines = []
    if decided:
        from .store import ResultsStore

        root = Path(args.results_dir)
        stored = ResultsStore.check(root, must_exist=True).trials() if (root / "store.json").is_file() else None
        lines = decide.plan_for(space, stored, args.architectures)
    if args.json:
        print(json.dumps({**json.loads(plan.to_json()), "decide": lines}, indent=2) if decided else plan.to_json())
    else:
        print("\n".join([plan.to_text(), *lines]))
    return 0
