"""The results store: a directory of Parquet files, the benchmark's source of truth.

Layout (``SCHEMA_VERSION`` in ``store.json``)::

    store.json                  schema version, creation time
    epochs/<trial_id>.parquet   one row per trial × epoch
    trials/<trial_id>.parquet   one row per finished trial (complete, diverged or error)
    runs/<run_id>.parquet       one row per benchmark invocation: search space, provenance
    checkpoints/<trial_id>.pt   the best-validation weights of each finished trial
    resume/<trial_key>.json     where the trial's latest Ray Tune checkpoint is, for a rerun to resume from
    ray/                        Ray Tune's experiment directories (unless --storage-path points elsewhere)
    optuna/studies.db           the tuning stage's Optuna studies (SQLite)
    wandb/                      W&B's run files (offline runs: wandb/wandb/offline-run-*)
    .lock                       held by the one driver writing here

One file per trial keeps writes small and makes duplicates impossible by
construction: a trial's epoch file is only ever replaced by a superset of itself
(rows are added, never removed). Every write goes to a hidden temporary file that
is then renamed over the target, so a reader, or a run killed mid-write, never
sees half a file; pyarrow's dataset reader skips the hidden files, and the next
writer sweeps them away. Only the driver writes here (through a Tune callback),
so trials on other nodes need no access to this directory; a lock file keeps a
second driver out while one is writing.
"""

from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .contract import FINISHED, EpochRecord
from .errors import UserError

SCHEMA_VERSION = 1
TMP_PREFIX = ".tmp-"

ARROW = {int: pa.int64(), float: pa.float64(), str: pa.string()}
_ID = [("trial_id", pa.string()), ("run_id", pa.string()), ("architecture", pa.string()),
       ("dataset", pa.string()), ("seed", pa.int64())]

EPOCHS = pa.schema(_ID + [
    ("stage", pa.string()),  # "benchmark", or "tune" for a tuning trial (metrics averaged over its seeds)
    *((name, ARROW[EpochRecord.types()[name]]) for name in EpochRecord.names(stored=True)),  # epoch, metrics
    ("reported_at", pa.timestamp("us", tz="UTC")),
])

TRIALS = pa.schema(_ID + [
    ("space", pa.string()),
    ("stage", pa.string()), ("study", pa.string()), ("lr_tuned", pa.bool_()),
    ("loc_lr", pa.float64()), ("lr", pa.float64()),
    ("status", pa.string()), ("error", pa.string()),
    ("epochs_completed", pa.int64()), ("diverged_epoch", pa.int64()),
    ("best_epoch", pa.int64()), ("best_val_acc", pa.float64()),
    ("test_loss", pa.float64()), ("test_acc", pa.float64()),
    ("num_params", pa.int64()), ("restarts", pa.int64()),
    ("train_time_s", pa.float64()), ("eval_time_s", pa.float64()),
    ("config_json", pa.string()),
    ("stack", pa.int64()),  # seeds trained together in one vmapped model (1: alone); a fast-path setting
    ("hostname", pa.string()), ("node_ip", pa.string()), ("node_id", pa.string()),
    ("device", pa.string()), ("cpu_model", pa.string()), ("gpu_model", pa.string()),
    ("git_commit", pa.string()), ("git_dirty", pa.bool_()),
    ("python_version", pa.string()), ("torch_version", pa.string()),
    ("torchvision_version", pa.string()), ("ray_version", pa.string()), ("optuna_version", pa.string()),
    ("finished_at", pa.timestamp("us", tz="UTC")),
])

RUNS = pa.schema([
    ("run_id", pa.string()), ("space", pa.string()), ("space_yaml", pa.string()),
    ("command", pa.string()), ("address", pa.string()),
    ("trials_total", pa.int64()), ("trials_skipped", pa.int64()),
    ("planned_json", pa.string()),  # [{trial_id, architecture, dataset, seed}] every seed this invocation planned
    ("overrides_json", pa.string()),  # the --set KEY=VALUE overrides applied to the space
    ("data_dir", pa.string()),  # the data directory the run read (absolute), for the report's figures
    ("started_at", pa.timestamp("us", tz="UTC")), ("finished_at", pa.timestamp("us", tz="UTC")),
    ("provenance_json", pa.string()),
])

TABLES = {"epochs": EPOCHS, "trials": TRIALS, "runs": RUNS}
OTHER_ENTRIES = ("checkpoints", "resume", "ray", "optuna", "wandb", ".lock")
# Columns added to a table after SCHEMA_VERSION 1 went out: files written before may lack them (the reader
# fills them with nulls), so they are not damage. A column added later goes here, or SCHEMA_VERSION goes up.
ADDED_COLUMNS: dict[str, set[str]] = {"epochs": set(), "trials": {"stack"},
                                      "runs": {"planned_json", "overrides_json", "data_dir"}}
VERIFY_HINT = "python -m harness.store verify"
OPTUNA_FILE = "optuna/studies.db"  # the tuning stage's studies (``optuna_url``)


def now() -> datetime:
    return datetime.now(timezone.utc)


class ResultsStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | os.PathLike, create: bool = True) -> "ResultsStore":
        """Open (and by default create) a store; a clear UserError if the directory cannot serve."""
        store = cls.check(root, must_exist=not create)
        if create:
            store.create()
        return store

    @classmethod
    def check(cls, root: str | os.PathLike, must_exist: bool = False, damage: bool = True) -> "ResultsStore":
        """Everything that can be said about ``root`` without writing to it; with ``damage``, an existing
        store with any file the run would choke on (see ``find_damage``) is refused, naming the first one."""
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise UserError(f"--results-dir: {root} is a file, not a directory; pass a directory path")
        manifest = root / "store.json"
        if manifest.exists():
            try:
                version = json.loads(manifest.read_text())["schema_version"]
            except (ValueError, KeyError, TypeError, OSError):
                raise UserError(f"--results-dir: {manifest} is unreadable or corrupt; restore it from a copy "
                                "or use another directory") from None
            if version != SCHEMA_VERSION:
                raise UserError(
                    f"--results-dir: {root} holds a results store of schema version {version}; this stbench "
                    f"reads and writes version {SCHEMA_VERSION}; use another --results-dir"
                )
        elif must_exist:
            raise UserError(f"{root} is not a results store (no store.json); run the benchmark first or pass the right directory")
        elif root.exists() and any(p.name not in (*TABLES, *OTHER_ENTRIES) for p in root.iterdir()):
            raise UserError(f"--results-dir: {root} is a non-empty directory that is not a results store; "
                            "pass a new or empty directory, or an existing store")
        parent = next((p for p in (root, *root.parents) if p.exists()), None)
        if parent is None or not os.access(parent, os.W_OK):
            raise UserError(f"--results-dir: {root} is not writable; choose a directory you can write to")
        if damage and manifest.exists():
            found = find_damage(root)
            if found:
                path, reason = found[0]
                more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
                raise UserError(f"results store {root}: {path} {reason}{more}; move it aside or run "
                                f"`{VERIFY_HINT} {root}`")
        return cls(root)

    def create(self) -> None:
        root = self.root
        try:
            for table in (*TABLES, "checkpoints", "resume"):
                (root / table).mkdir(parents=True, exist_ok=True)
            probe = root / f"{TMP_PREFIX}probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
            if not (root / "store.json").exists():
                self._atomic_write_bytes(root / "store.json", json.dumps(
                    {"schema_version": SCHEMA_VERSION, "created_at": now().isoformat()}, indent=2).encode())
        except OSError as e:
            raise UserError(f"--results-dir: {root} is not writable ({e.strerror}); choose a directory you can write to") from None

    # -- every path under the results directory comes from here -------------------------------
    @property
    def ray_dir(self) -> Path:
        """Ray Tune's default storage (absolute: trials may run in other working directories)."""
        return self.root.resolve() / "ray"

    @property
    def wandb_dir(self) -> Path:
        return self.root.resolve() / "wandb"

    def optuna_url(self) -> str:
        """The SQLite storage of the tuning stage's Optuna studies (created on first use)."""
        path = self.root.resolve() / OPTUNA_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"

    def lock(self) -> "StoreLock":
        """Exclusive writer lock for a benchmark run; released by the kernel if the process dies."""
        return StoreLock(self.root / ".lock")

    def sweep_partials(self) -> list[Path]:
        """Delete hidden temporary files left by a writer that was killed mid-write (call under the lock)."""
        swept = [p for p in self.root.glob(f"*/{TMP_PREFIX}*")] + list(self.root.glob(f"{TMP_PREFIX}*"))
        for p in swept:
            p.unlink(missing_ok=True)
        return swept

    # -- writing ------------------------------------------------------------------------------
    def put_epochs(self, trial_id: str, rows: list[dict]) -> list[dict]:
        """Add epoch rows for one trial; a row for an epoch already stored replaces it (a retried epoch)."""
        by_epoch = {r["epoch"]: r for r in self._trial_rows(trial_id)}
        by_epoch.update({r["epoch"]: r for r in rows})
        merged = [by_epoch[e] for e in sorted(by_epoch)]
        self._write_table("epochs", trial_id, merged)
        return merged

    def put_trial(self, row: dict) -> None:
        self._write_table("trials", row["trial_id"], [row])

    def put_run(self, row: dict) -> None:
        self._write_table("runs", row["run_id"], [row])

    def checkpoint_path(self, trial_id: str) -> Path:
        return self.root / "checkpoints" / f"{trial_id}.pt"

    def put_checkpoint(self, trial_id: str, data: bytes) -> None:
        self._atomic_write_bytes(self.checkpoint_path(trial_id), data)

    def put_resume(self, trial_id: str, checkpoint_uri: str, epoch: int | None, members: list[str] | None = None) -> None:
        """``trial_id``: the Tune trial's key (a seed's id, or a stack's); ``members``: the seed ids it trains."""
        blob = json.dumps({"checkpoint": checkpoint_uri, "epoch": epoch, "at": now().isoformat(),
                           "members": members or [trial_id]})
        self._atomic_write_bytes(self.root / "resume" / f"{trial_id}.json", blob.encode())

    def resume_points(self) -> dict[str, str]:
        """trial_id → URI of the latest Ray Tune checkpoint an earlier run recorded for it."""
        out = {}
        for path in (self.root / "resume").glob("*.json"):
            try:
                out[path.stem] = json.loads(path.read_text())["checkpoint"]
            except (ValueError, KeyError, OSError):
                continue  # refused by check() before a run; a reader elsewhere just skips it
        return out

    def _write_table(self, table: str, name: str, rows: list[dict]) -> None:
        schema = TABLES[table]
        arrow = pa.Table.from_pylist([{k: _clean(r.get(k)) for k in schema.names} for r in rows], schema=schema)
        with _atomic(self.root / table / f"{name}.parquet", fault_point=True) as tmp:
            pq.write_table(arrow, tmp)

    def _atomic_write_bytes(self, target: Path, data: bytes) -> None:
        with _atomic(target) as tmp:
            tmp.write_bytes(data)

    # -- reading ------------------------------------------------------------------------------
    def read(self, table: str) -> pd.DataFrame:
        """A whole table as a DataFrame with the store's columns (empty, with columns, if nothing is stored)."""
        schema = TABLES[table]
        directory = self.root / table
        if not directory.is_dir() or not any(p.suffix == ".parquet" and not p.name.startswith(TMP_PREFIX)
                                             for p in directory.iterdir()):
            return schema.empty_table().to_pandas()
        return ds.dataset(directory, format="parquet", schema=schema).to_table().to_pandas()

    def epochs(self) -> pd.DataFrame:
        return self.read("epochs")

    def trials(self) -> pd.DataFrame:
        return self.read("trials")

    def runs(self) -> pd.DataFrame:
        return self.read("runs")

    def trial_epochs(self, trial_id: str) -> pd.DataFrame:
        return pd.DataFrame(self._trial_rows(trial_id), columns=EPOCHS.names)

    def _trial_rows(self, trial_id: str) -> list[dict]:
        path = self.root / "epochs" / f"{trial_id}.parquet"
        return pq.read_table(path, schema=EPOCHS).to_pylist() if path.exists() else []

    def finished_trial_ids(self, statuses=FINISHED) -> set[str]:
        trials = self.trials()
        return set(trials.loc[trials["status"].isin(statuses), "trial_id"])


@contextmanager
def _atomic(target: Path, fault_point: bool = False):
    """Yield a hidden temporary path beside ``target``; once the block has written it, flush it and rename it
    over ``target``, so readers see the old file or the new one, never half of one. On failure, no trace."""
    tmp = target.with_name(f"{TMP_PREFIX}{target.stem}-{uuid.uuid4().hex}{target.suffix}")
    try:
        yield tmp
        _fsync(tmp)
        if fault_point:
            _fault_point()
        os.replace(tmp, target)
        _fsync(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


class StoreLock:
    """An exclusive, non-blocking writer lock (``filelock``: portable; released by the OS if the process dies)."""

    def __init__(self, path: Path):
        from filelock import FileLock

        self.path = path
        self._lock = FileLock(str(path), timeout=0)

    def __enter__(self) -> "StoreLock":
        from filelock import Timeout

        try:
            self._lock.acquire()
        except Timeout:
            raise UserError(f"--results-dir: {self.path.parent} is being written by another benchmark; "
                            "wait for it or use another --results-dir") from None
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()


_writes = 0


def _fault_point() -> None:
    """Fault injection for the reliability tests: ``STBENCH_FAULT_KILL_AT_WRITE=N`` SIGKILLs this
    process after the N-th table write has reached its temporary file and before the rename."""
    global _writes
    target = os.environ.get("STBENCH_FAULT_KILL_AT_WRITE")
    if target:
        _writes += 1
        if _writes == int(target):
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


def _clean(value):
    """NaN and pandas' missing markers become null; everything else is stored as given."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def _fsync(path: Path) -> None:
    """Flush a file or directory entry to disk, so a rename survives a crash (best effort on odd filesystems)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def find_damage(root: str | os.PathLike) -> list[tuple[str, str]]:
    """Every file of the store a run or a report would fail on or misread, as (path relative to root, reason).

    Reads only Parquet footers and resume pointers, so it is cheap enough to run before every run; it
    never changes anything. Hidden files (the atomic writer's ``.tmp-*`` partials) are left to
    ``sweep_partials``. Found damage: a Parquet file that is empty, cut short or not Parquet at all;
    one whose columns are not its table's (another schema, another table's file); a stray file or folder
    in a table folder (the table reader would try to parse it); a resume pointer that is not JSON
    naming a checkpoint; a pointer of an unfinished trial to a local checkpoint that no longer exists
    (a moved results directory or a wrong --storage-path: resuming is impossible, and restarting from
    scratch would replace the epoch rows stored so far, so the user decides by moving the pointer aside);
    an Optuna study database that is not SQLite.
    """
    root = Path(root)
    damage: list[tuple[str, str]] = []
    trial_files: list[Path] = []  # the readable ones: they say which trials are finished
    for table, schema in TABLES.items():
        directory = root / table
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            rel = str(path.relative_to(root))
            if path.name.startswith((".", "_")):
                continue  # hidden: skipped by the table reader
            if path.suffix != ".parquet" or not path.is_file():
                damage.append((rel, "is not a Parquet file of this table (a stray file)"))
                continue
            reason = _parquet_damage(path, schema, ADDED_COLUMNS[table])
            if reason:
                damage.append((rel, reason))
            elif table == "trials":
                trial_files.append(path)
    studies = root / OPTUNA_FILE
    if studies.is_file() and studies.stat().st_size and studies.read_bytes()[:16] != b"SQLite format 3\x00":
        damage.append((OPTUNA_FILE, "is not an SQLite database (the tuning stage's Optuna studies)"))
    finished = None
    for path in sorted((root / "resume").glob("*.json")) if (root / "resume").is_dir() else []:
        rel = str(path.relative_to(root))
        try:
            pointer = json.loads(path.read_bytes().decode("utf-8"))
            uri = pointer["checkpoint"]
            if not isinstance(uri, str) or not uri:
                raise TypeError
        except (ValueError, KeyError, TypeError, OSError):
            damage.append((rel, "is an unreadable resume pointer (not JSON naming a checkpoint)"))
            continue
        local = uri.removeprefix("file://")
        if "://" in local or path.stem.startswith("tune-"):
            continue  # remote storage is not probed here; tuning trials never resume from a pointer
        if finished is None:
            finished = {row["trial_id"] for p in trial_files
                        for row in pq.read_table(p, columns=["trial_id", "status"]).to_pylist()
                        if row["status"] in FINISHED}
        members = pointer.get("members") or [path.stem]  # a seed-stacked trial points for all its seeds
        if not set(members) <= finished and not Path(local).exists():
            shown = os.path.relpath(local, root) if Path(local).is_relative_to(root.resolve()) else local
            damage.append((rel, f"points at checkpoint {shown}, which no longer exists"))
    return damage


def _parquet_damage(path: Path, schema: pa.Schema, added: set[str]) -> str | None:
    """Why ``path`` cannot serve as a file of the table with ``schema``, or None."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(max(size - 4, 0))
            tail = f.read(4)
    except OSError as e:
        return f"is unreadable ({e.strerror})"
    if size == 0:
        return "is unreadable (zero-byte file)"
    if head != b"PAR1":
        return "is unreadable (not a Parquet file)"
    if tail != b"PAR1":
        return "is unreadable (truncated Parquet file)"
    try:
        found = pq.read_schema(path)
    except Exception as e:  # pyarrow raises several types for a bad footer
        return f"is unreadable (corrupt Parquet footer: {type(e).__name__})"
    missing = [n for n in schema.names if n not in found.names and n not in added]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        return f"has another schema (no column {shown})"
    wrong = [f.name for f in schema if f.name in found.names
             and found.field(f.name).type not in (f.type, pa.null())]
    if wrong:
        return f"has another schema (column {wrong[0]} is {found.field(wrong[0]).type}, not {schema.field(wrong[0]).type})"
    return None


def verify(root: str | os.PathLike) -> tuple[list[str], dict]:
    """Check a store's integrity: schema, one row per trial × epoch with no gaps, no orphaned partial files.

    Returns (problems, counts); no problems means the store is sound.
    """
    root = Path(root)
    problems: list[str] = []
    try:
        store = ResultsStore.check(root, must_exist=True, damage=False)
    except UserError as e:
        return [str(e)], {}
    problems += [f"{root / path} {reason}" for path, reason in find_damage(root)]
    orphans = sorted(p for p in root.rglob(f"{TMP_PREFIX}*") if "ray" not in p.relative_to(root).parts)
    problems += [f"{p}: orphaned partial file (a write was interrupted; safe to delete)" for p in orphans]
    if problems:
        return problems, {}
    epochs, trials = store.epochs(), store.trials()
    dup = epochs[epochs.duplicated(["trial_id", "epoch"], keep=False)]
    problems += [f"epochs: trial {t} epoch {e} appears more than once" for t, e in
                 sorted(set(zip(dup.trial_id, dup.epoch)))]
    problems += [f"trials: trial {t} appears more than once" for t in sorted(set(trials.trial_id[trials.trial_id.duplicated()]))]
    by_trial = epochs.groupby("trial_id").epoch.apply(sorted).to_dict()
    for row in trials.itertuples():
        got = by_trial.get(row.trial_id, [])
        if got != list(range(1, len(got) + 1)):
            problems.append(f"epochs: trial {row.trial_id} has gaps (epochs {got})")
        if row.status in FINISHED and len(got) != row.epochs_completed:
            problems.append(f"trials: trial {row.trial_id} says {row.epochs_completed} epochs, the epochs table has {len(got)}")
    counts = {"trials": len(trials), "epoch_rows": len(epochs), "runs": len(store.runs()),
              **{f"status_{k}": int(v) for k, v in trials.status.value_counts().items()}}
    return problems, counts


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.store", description="Inspect a results store.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("verify", help="check schema, uniqueness, gaps and partial files; exit 1 on any problem").add_argument("dir")
    args = parser.parse_args(argv)
    problems, counts = verify(args.dir)
    for problem in problems:
        print(f"problem: {problem}")
    if problems:
        print(f"{args.dir}: {len(problems)} problem(s)")
        return 1
    print(f"{args.dir}: ok ({', '.join(f'{k} {v}' for k, v in counts.items())})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
