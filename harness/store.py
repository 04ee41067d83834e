"""The results store: a directory of Parquet files, the benchmark's source of truth.

Layout (``SCHEMA_VERSION`` in ``store.json``)::

    store.json                  schema version, creation time
    epochs/<trial_id>/<epoch>.parquet  one row per trial × epoch, a file per epoch (an epoch adds a file)
    epochs/<trial_id>.parquet   all of a trial's epochs in one file (how version 1 wrote them; still read)
    trials/<trial_id>.parquet   one row per finished trial (complete, diverged or error)
    packs/<seq>/                finished trials compacted (``compact``): epochs.parquet, trials.parquet
                                and resume.jsonl (their resume pointers), thousands of trials per pack
    runs/<run_id>.parquet       one row per benchmark invocation: search space, provenance
    checkpoints/<trial_id>.pt   the best-validation weights of each finished trial
    resume/<trial_key>.json     where the trial's latest Ray Tune checkpoint is, for a rerun to resume from
    ray/                        Ray Tune's experiment directories (unless --storage-path points elsewhere)
    optuna/studies.db           the tuning stage's Optuna studies (SQLite)
    wandb/                      W&B's run files (offline runs: wandb/wandb/offline-run-*)
    .lock                       held by the one driver writing here

One file per trial (and epoch) keeps writes small and makes duplicates impossible
by construction: an epoch's file is only ever replaced by a retry of that epoch,
and rows are added, never removed. Readers grow with the file count, so finished
trials are packed into a few large files (``compact``: at the end of a run that
leaves many, or ``stbench store compact``). A pack appears in one directory rename;
the loose files it replaces are deleted only after it, and a loose file always
supersedes a packed row of the same trial (and epoch), so a compaction killed at any
moment leaves every row readable exactly once. Every write goes to a hidden temporary file that
is then renamed over the target, so a reader, or a run killed mid-write, never
sees half a file; pyarrow's dataset reader skips the hidden files, and the next
writer sweeps them away. Only the driver writes here (through a Tune callback),
so trials on other nodes need no access to this directory; a lock file keeps a
second driver out while one is writing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .contract import FINISHED, EpochRecord
from .errors import UserError

SCHEMA_VERSION = 2  # 2: per-epoch files and packs; version 1 stores (one epoch file per trial) are read as they are
READ_VERSIONS = (1, 2)
TMP_PREFIX = ".tmp-"
PACKS = "packs"
PACK_TABLES = ("epochs", "trials")  # the tables whose finished trials are packed (runs are few)
RESUME_ARCHIVE = "resume.jsonl"  # a pack's copy of its trials' resume pointers (finished trials never resume)
PACK_TRIALS = 20_000  # trials per pack: bounds the memory of a compaction and of reading one pack
READ_BATCH = 1_000  # loose files per dataset scan (see _read_files)
COMPACT_AT = 256  # a run compacts at its end once this many finished trials lie in loose files

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
    ("merged_from", pa.string()),  # `stbench merge`: JSON list of the source stores that held this row
    ("code_json", pa.string()),  # the plugin code it ran (file sha256 / package version): provenance, not identity
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
    ("merged_from", pa.string()),  # `stbench merge`: JSON list of the source stores that held this row
])

TABLES = {"epochs": EPOCHS, "trials": TRIALS, "runs": RUNS}
OTHER_ENTRIES = ("checkpoints", "resume", "ray", "optuna", "wandb", PACKS, ".lock")
# Columns added to a table after SCHEMA_VERSION 1 went out: files written before may lack them (the reader
# fills them with nulls), so they are not damage. A column added later goes here, or SCHEMA_VERSION goes up.
ADDED_COLUMNS: dict[str, set[str]] = {"epochs": set(), "trials": {"stack", "merged_from", "code_json"},
                                      "runs": {"planned_json", "overrides_json", "data_dir", "merged_from"}}
VERIFY_HINT = "python -m harness.store verify"
OPTUNA_FILE = "optuna/studies.db"  # the tuning stage's studies (``optuna_url``)


def now() -> datetime:
    return datetime.now(timezone.utc)


class ResultsStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._version_checked = False
        self._pack_id_cache: dict[str, set[str]] = {}

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
            if version not in READ_VERSIONS:
                raise UserError(
                    f"--results-dir: {root} holds a results store of schema version {version}; this stbench "
                    f"reads versions {', '.join(map(str, READ_VERSIONS))}; use another --results-dir"
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

    @property
    def optuna_path(self) -> Path:
        return self.root.resolve() / OPTUNA_FILE

    def optuna_url(self, create: bool = True) -> str:
        """The SQLite storage of the tuning stage's Optuna studies (its folder created on first use, unless
        ``create`` is False: a reader such as ``stbench plan`` changes nothing)."""
        if create:
            self.optuna_path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.optuna_path}"

    def exists(self) -> bool:
        """Whether a store has been created here (its manifest exists)."""
        return (self.root / "store.json").is_file()

    def lock(self) -> "StoreLock":
        """Exclusive writer lock for a benchmark run; released by the kernel if the process dies."""
        return StoreLock(self.root / ".lock")

    def sweep_partials(self) -> list[Path]:
        """Delete hidden temporary files (and unfinished packs) left by a writer that was killed mid-write
        (call under the lock)."""
        swept = [*self.root.glob(f"{TMP_PREFIX}*"), *self.root.glob(f"*/{TMP_PREFIX}*"),
                 *self.root.glob(f"epochs/*/{TMP_PREFIX}*")]
        for p in swept:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        return swept

    def _upgrade(self) -> None:
        """Mark a version 1 store as version 2 before writing what version 1 readers cannot read (per-epoch
        files, packs), so an older stbench refuses it in one line instead of misreading it."""
        if self._version_checked:
            return
        manifest = self.root / "store.json"
        info = json.loads(manifest.read_text())
        if info.get("schema_version") != SCHEMA_VERSION:
            self._atomic_write_bytes(manifest, json.dumps(
                {**info, "schema_version": SCHEMA_VERSION, "upgraded_at": now().isoformat()}, indent=2).encode())
        self._version_checked = True

    # -- writing ------------------------------------------------------------------------------
    def put_epochs(self, trial_id: str, rows: list[dict]) -> list[dict]:
        """Add epoch rows for one trial, a file per epoch: an epoch already stored is replaced (a retried
        epoch), the others are never rewritten."""
        self._upgrade()
        directory = self.root / "epochs" / trial_id
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            _fsync(directory.parent)
        for row in rows:
            self._write_file(directory / f"{int(row['epoch']):06d}.parquet", EPOCHS, [row])
        return rows

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
        self._write_file(self.root / table / f"{name}.parquet", TABLES[table], rows)

    def _write_file(self, target: Path, schema: pa.Schema, rows: list[dict]) -> None:
        arrow = pa.Table.from_pylist([{k: _clean(r.get(k)) for k in schema.names} for r in rows], schema=schema)
        with _atomic(target, fault_point=True) as tmp:
            pq.write_table(arrow, tmp)

    def _atomic_write_bytes(self, target: Path, data: bytes) -> None:
        with _atomic(target) as tmp:
            tmp.write_bytes(data)

    # -- reading ------------------------------------------------------------------------------
    def read(self, table: str, columns: list[str] | None = None) -> pd.DataFrame:
        """A whole table as a DataFrame with the store's columns, or only ``columns`` (empty, with columns, if
        nothing is stored): packs and loose files together, a loose row superseding a packed one of the same
        trial (and epoch)."""
        return self.read_arrow(table, columns).to_pandas()

    def read_arrow(self, table: str, columns: list[str] | None = None) -> pa.Table:
        """``read`` as an Arrow table, for readers that filter and group at scale (no pandas strings)."""
        for attempt in range(3):
            try:
                return self._read_arrow(table, columns)
            except FileNotFoundError:  # a compaction (another process) deleted a loose file after it was listed
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _read_arrow(self, table: str, columns: list[str] | None = None) -> pa.Table:
        schema = TABLES[table]
        if columns is not None:  # the key columns too: they decide which rows supersede which
            keep = [c for c in schema.names if c in {*columns, "trial_id", "epoch", "run_id"}]
            out = self._read_arrow_schema(table, pa.schema([schema.field(c) for c in keep]))
            return out.select(list(columns))
        return self._read_arrow_schema(table, schema)

    def _read_arrow_schema(self, table: str, schema: pa.Schema) -> pa.Table:
        files, per_epoch = _loose_files(self.root / table, table)
        # a file supersedes only rows of the trial it is named after: a misnamed copy is a duplicate (verify)
        names = {f.stem for f in files} | {f.parent.name for f in per_epoch}
        loose = _read_files(files, schema)
        if per_epoch:  # version 1 whole-trial epoch files under version 2 per-epoch ones: the newer wins
            dirs = {f.parent.name for f in per_epoch}
            shadowed = [f for f in files if f.stem in dirs]
            newer = _read_files(per_epoch, schema)
            if shadowed:
                loose = pa.concat_tables([_read_files([f for f in files if f.stem not in dirs], schema),
                                          _superseded(_read_files(shadowed, schema), newer, table, dirs)])
            loose = pa.concat_tables([loose, newer])
        packs = [p / f"{table}.parquet" for p in self.pack_dirs()] if table in PACK_TABLES else []
        if not packs:
            return loose
        return pa.concat_tables([_superseded(_read_files(packs, schema), loose, table, names), loose])

    def pack_dirs(self) -> list[Path]:
        """The store's packs, oldest first (hidden ones are unfinished and not part of the store)."""
        directory = self.root / PACKS
        if not directory.is_dir():
            return []
        return sorted(p for p in directory.iterdir() if not p.name.startswith((".", "_")) and p.is_dir())

    def epochs(self) -> pd.DataFrame:
        return self.read("epochs")

    def trials(self) -> pd.DataFrame:
        return self.read("trials")

    def runs(self) -> pd.DataFrame:
        return self.read("runs")

    def trial_epochs(self, trial_id: str) -> pd.DataFrame:
        return pd.DataFrame(self._trial_rows(trial_id), columns=EPOCHS.names)

    def _trial_rows(self, trial_id: str) -> list[dict]:
        """One trial's epoch rows by epoch: from its pack, its whole-trial file, its per-epoch files, each
        later source replacing the earlier's rows of the same epoch."""
        by_epoch: dict[int, dict] = {}
        for pack in self.pack_dirs():
            if trial_id in self._pack_ids(pack):
                rows = pq.read_table(pack / "epochs.parquet", schema=EPOCHS,
                                     filters=[("trial_id", "=", trial_id)]).to_pylist()
                by_epoch.update({r["epoch"]: r for r in rows})
        whole = self.root / "epochs" / f"{trial_id}.parquet"
        if whole.exists():
            by_epoch.update({r["epoch"]: r for r in pq.read_table(whole, schema=EPOCHS).to_pylist()})
        directory = self.root / "epochs" / trial_id
        if directory.is_dir():
            files = sorted(p for p in directory.glob("*.parquet") if not p.name.startswith((".", "_")))
            by_epoch.update({r["epoch"]: r for r in _read_files(files, EPOCHS).to_pylist()})
        return [by_epoch[e] for e in sorted(by_epoch)]

    def _pack_ids(self, pack: Path) -> set[str]:
        """The trial ids of a pack (packs never change, so each is read once per store object)."""
        if pack.name not in self._pack_id_cache:
            column = pq.read_table(pack / "trials.parquet", columns=["trial_id"])["trial_id"]
            self._pack_id_cache[pack.name] = set(column.to_pylist())
        return self._pack_id_cache[pack.name]

    def finished_trial_ids(self, statuses=FINISHED) -> set[str]:
        trials = self.trials()
        return set(trials.loc[trials["status"].isin(statuses), "trial_id"])

    # -- compaction ---------------------------------------------------------------------------
    def loose_finished(self) -> int:
        """How many finished trials lie in loose files (what ``compact`` would pack), from file names and
        one read of the loose trial files."""
        files, _ = _loose_files(self.root / "trials", "trials")
        if not files:
            return 0
        rows = _read_files(files, pa.schema([TRIALS.field("status")]))
        return int(pc.sum(_finished(rows)).as_py() or 0)

    def compact_if_many(self, at: int = COMPACT_AT) -> dict | None:
        """What a run does at its end (under its lock): compact once ``at`` finished trials lie loose."""
        return self.compact() if self.loose_finished() >= at else None

    def compact(self, per_pack: int = PACK_TRIALS) -> dict:
        """Pack finished trials' loose files (trial row, epoch rows, resume pointers) into packs of at most
        ``per_pack`` trials; call under the lock. Never loses or duplicates a row, whenever it is killed:
        a pack is written in a hidden directory and renamed into place in one step, and only then are the
        loose files it holds deleted; loose leftovers of a packed trial (a kill during the deletions) are
        deleted by the next compaction once checked identical to the pack. Errored trials stay loose (a
        ``--retry-errored`` run rewrites them)."""
        self._upgrade()
        packed = set().union(*(self._pack_ids(p) for p in self.pack_dirs()))
        leftovers = self._delete_leftovers(packed)
        files, _ = _loose_files(self.root / "trials", "trials")
        trials = _read_files(files, TRIALS)
        finished = trials.filter(_finished(trials))
        # only rows in the file named after their trial: that file is the one deleted once they are packed
        finished = finished.filter(pc.is_in(finished["trial_id"], pa.array([f.stem for f in files], pa.string())))
        finished = finished.filter(pc.invert(pc.is_in(finished["trial_id"], pa.array(sorted(packed), pa.string()))))
        ids = sorted(finished["trial_id"].to_pylist())
        pointers = self._pointers()
        done_ids = packed | set(ids)
        out = {"trials": 0, "packs": 0, "leftovers_deleted": leftovers}
        archived: set[str] = set()
        for start in range(0, len(ids), per_pack):
            chunk = set(ids[start:start + per_pack])
            rows = finished.filter(pc.is_in(finished["trial_id"], pa.array(sorted(chunk))))
            epoch_files = self._epoch_files(chunk)
            whole = [f for f in epoch_files if f.parent.name == "epochs"]
            newer = [f for f in epoch_files if f.parent.name != "epochs"]
            newer_rows = _read_files(newer, EPOCHS)
            epochs = pa.concat_tables([_superseded(_read_files(whole, EPOCHS), newer_rows, "epochs", chunk),
                                       newer_rows])
            epochs = epochs.sort_by([("trial_id", "ascending"), ("epoch", "ascending")])
            mine = {k: v for k, v in pointers.items() if k not in archived
                    and set(v[1].get("members") or [k]) <= done_ids and set(v[1].get("members") or [k]) & chunk}
            archived |= set(mine)
            self._write_pack(rows.sort_by("trial_id"), epochs, [v[1] | {"key": k} for k, v in sorted(mine.items())])
            for path in [*(self.root / "trials" / f"{i}.parquet" for i in sorted(chunk)), *epoch_files,
                         *(path for path, _ in mine.values())]:
                _fault_point()
                path.unlink(missing_ok=True)
            for i in chunk:
                _remove_empty_dir(self.root / "epochs" / i)
            for directory in ("trials", "epochs", "resume"):
                _fsync(self.root / directory)
            out["trials"] += len(chunk)
            out["packs"] += 1
        return out

    def _write_pack(self, trials: pa.Table, epochs: pa.Table, pointers: list[dict]) -> Path:
        """Write a pack under a hidden name and rename it into place: the one step that makes it visible."""
        directory = self.root / PACKS
        directory.mkdir(exist_ok=True)
        existing = [int(p.name) for p in self.pack_dirs() if p.name.isdigit()]
        target = directory / f"{max(existing, default=0) + 1:06d}"
        tmp = directory / f"{TMP_PREFIX}{target.name}-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            pq.write_table(epochs.cast(EPOCHS), tmp / "epochs.parquet", row_group_size=256_000)
            pq.write_table(trials.cast(TRIALS), tmp / "trials.parquet", row_group_size=64_000)
            (tmp / RESUME_ARCHIVE).write_text("".join(json.dumps(p, sort_keys=True) + "\n" for p in pointers))
            for name in ("epochs.parquet", "trials.parquet", RESUME_ARCHIVE):
                _fsync(tmp / name)
            _fsync(tmp)
            _fault_point()
            os.rename(tmp, target)
            _fsync(directory)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return target

    def _epoch_files(self, ids: set[str]) -> list[Path]:
        """The loose epoch files of these trials: whole-trial files and per-epoch files."""
        out = []
        for i in sorted(ids):
            whole = self.root / "epochs" / f"{i}.parquet"
            if whole.is_file():
                out.append(whole)
            directory = self.root / "epochs" / i
            if directory.is_dir():
                out += sorted(p for p in directory.glob("*.parquet") if not p.name.startswith((".", "_")))
        return out

    def _pointers(self) -> dict[str, tuple[Path, dict]]:
        out = {}
        for path in (self.root / "resume").glob("*.json") if (self.root / "resume").is_dir() else []:
            try:
                out[path.stem] = (path, json.loads(path.read_text()))
            except (ValueError, OSError):
                continue  # damage, refused before a run; never packed
        return out

    def _delete_leftovers(self, packed: set[str]) -> int:
        """Delete loose files of trials already packed that match their pack row for row (what a compaction
        killed between its rename and its deletions leaves); any that differ are kept (a loose row wins)."""
        if not packed:
            return 0
        trial_files, _ = _loose_files(self.root / "trials", "trials")
        loose_trials = [p for p in trial_files if p.stem in packed]
        loose_epochs = [p for p in (self.root / "epochs").iterdir() if p.name.removesuffix(".parquet") in packed
                        and not p.name.startswith((".", "_"))] if (self.root / "epochs").is_dir() else []
        pointers = {k: v for k, v in self._pointers().items() if k in packed}
        if not (loose_trials or loose_epochs or pointers):
            return 0
        ids = {p.stem for p in loose_trials} | {p.name.removesuffix(".parquet") for p in loose_epochs}
        packed_trials = {r["trial_id"]: r for p in self.pack_dirs() if ids & self._pack_ids(p) for r in
                         pq.read_table(p / "trials.parquet", schema=TRIALS,
                                       filters=[("trial_id", "in", sorted(ids))]).to_pylist()}
        deleted = 0
        for path in loose_trials:
            if pq.read_table(path, schema=TRIALS).to_pylist() == [packed_trials.get(path.stem)]:
                path.unlink()
                deleted += 1
        for i in sorted({p.name.removesuffix(".parquet") for p in loose_epochs}):
            in_pack = {r["epoch"]: r for p in self.pack_dirs() if i in self._pack_ids(p) for r in
                       pq.read_table(p / "epochs.parquet", schema=EPOCHS, filters=[("trial_id", "=", i)]).to_pylist()}
            for path in self._epoch_files({i}):
                rows = pq.read_table(path, schema=EPOCHS).to_pylist()
                if rows and all(in_pack.get(r["epoch"]) == r for r in rows):
                    path.unlink()
                    deleted += 1
            _remove_empty_dir(self.root / "epochs" / i)
        for key, (path, _) in pointers.items():
            archived = {json.loads(line)["key"] for p in self.pack_dirs() if key in self._pack_ids(p)
                        for line in (p / RESUME_ARCHIVE).read_text().splitlines() if line.strip()}
            if key in archived:
                path.unlink()
                deleted += 1
        return deleted


def _loose_files(directory: Path, table: str) -> tuple[list[Path], list[Path]]:
    """A table folder's loose Parquet files: (top-level files, per-epoch files in trial folders). Hidden
    files (the atomic writer's partials) are left out, as pyarrow's reader leaves them."""
    top, nested = [], []
    if not directory.is_dir():
        return top, nested
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith((".", "_")):
                continue
            if entry.name.endswith(".parquet") and entry.is_file():
                top.append(Path(entry.path))
            elif table == "epochs" and entry.is_dir():
                with os.scandir(entry.path) as inner:
                    nested += [Path(e.path) for e in inner if e.name.endswith(".parquet")
                               and not e.name.startswith((".", "_"))]
    return sorted(top), sorted(nested)


def _read_files(files: list[Path], schema: pa.Schema) -> pa.Table:
    """The files' rows under ``schema``, scanned ``READ_BATCH`` files at a time: one dataset over 10,000 small
    files held 1.8 GiB outside Arrow's pool (per-file state the scan keeps until the dataset goes), so the
    memory of reading a loose store grew with its file count; by batches it stays under 400 MiB."""
    if not files:
        return schema.empty_table()
    parts = []
    for start in range(0, len(files), READ_BATCH):
        batch = files[start:start + READ_BATCH]
        table = ds.dataset([str(f) for f in batch], format="parquet", schema=schema).to_table()
        parts.append(table.combine_chunks() if len(batch) > 1 else table)  # one chunk, not one per file
    return parts[0] if len(parts) == 1 else pa.concat_tables(parts)


def _finished(rows: pa.Table) -> pa.Array:
    """Which rows of a trials table (or of its ``status`` column) belong to finished trials."""
    return pc.is_in(rows["status"], value_set=pa.array(list(FINISHED)))


def _superseded(older: pa.Table, newer: pa.Table, table: str, names: set[str]) -> pa.Table:
    """``older`` without the rows ``newer`` replaces: the same trial (trials), the same trial and epoch
    (epochs), for the trials in ``names`` (those whose own files ``newer`` was read from)."""
    if not len(newer) or not len(older) or not names:
        return older
    newer = newer.filter(pc.is_in(newer["trial_id"], pa.array(sorted(names), pa.string())))
    ids = pc.unique(newer["trial_id"])
    overlap = pc.is_in(older["trial_id"], ids)
    if not pc.any(overlap).as_py():
        return older
    if table != "epochs":
        return older.filter(pc.invert(overlap))
    keys = set(zip(newer["trial_id"].to_pylist(), newer["epoch"].to_pylist()))
    candidates = older.filter(overlap)
    keep = pa.array([(t, e) not in keys for t, e in zip(candidates["trial_id"].to_pylist(),
                                                        candidates["epoch"].to_pylist())])
    return pa.concat_tables([older.filter(pc.invert(overlap)), candidates.filter(keep)])


def _remove_empty_dir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # absent, or not empty (a file this compaction kept)


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
        self.path = path
        self._lock = FileLock(str(path), timeout=0)

    def __enter__(self) -> "StoreLock":
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

    Reads only Parquet footers and resume pointers, so it is cheap enough to run before every run (a
    compacted store has few files; see ``ResultsStore.compact``); it
    never changes anything. Hidden files (the atomic writer's ``.tmp-*`` partials) are left to
    ``sweep_partials``. Found damage: a Parquet file that is empty, cut short or not Parquet at all;
    one whose columns are not its table's (another schema, another table's file); a stray file or folder
    in a table folder (the table reader would try to parse it) or in a pack, a pack missing a file or with
    a resume pointer that is not JSON
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
            if table == "epochs" and path.is_dir() and not path.name.startswith((".", "_")):
                paths = sorted(path.iterdir())  # a trial's per-epoch files
            else:
                paths = [path]
            for path in paths:
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
    for pack in sorted((root / PACKS).iterdir()) if (root / PACKS).is_dir() else []:
        if pack.name.startswith((".", "_")):
            continue  # an unfinished pack: swept by the next writer
        if not pack.is_dir():
            damage.append((str(pack.relative_to(root)), "is not a pack of finished trials (a stray file)"))
            continue
        expected = {f"{t}.parquet" for t in PACK_TABLES} | {RESUME_ARCHIVE}
        for path in sorted(pack.iterdir()):
            rel = str(path.relative_to(root))
            if path.name not in expected:
                damage.append((rel, "is not a file of a pack (a stray file)"))
            elif path.name == RESUME_ARCHIVE:
                continue  # read by no run or report (verify parses it): not parsed before every run
            else:
                table = path.name.removesuffix(".parquet")
                reason = _parquet_damage(path, TABLES[table], ADDED_COLUMNS[table])
                if reason:
                    damage.append((rel, reason))
                elif table == "trials":
                    trial_files.append(path)
        for name in sorted(expected - {p.name for p in pack.iterdir()}):
            damage.append((str((pack / name).relative_to(root)), "is missing from its pack"))
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
            rows = _read_files(trial_files, pa.schema([TRIALS.field("trial_id"), TRIALS.field("status")]))
            finished = set(rows.filter(_finished(rows))["trial_id"].to_pylist())
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
    names = set(found.names)  # (``.names`` builds a new list on every access)
    missing = [n for n in schema.names if n not in names and n not in added]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        return f"has another schema (no column {shown})"
    wrong = [f.name for f in schema if f.name in names and found.field(f.name).type not in (f.type, pa.null())]
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
    for pack in store.pack_dirs():
        try:
            [json.loads(line) for line in (pack / RESUME_ARCHIVE).read_text().splitlines() if line.strip()]
        except (ValueError, OSError, UnicodeDecodeError):
            problems.append(f"{pack / RESUME_ARCHIVE} is unreadable (not JSON lines of resume pointers)")
    orphans = sorted({*root.glob(f"{TMP_PREFIX}*"), *root.glob(f"*/{TMP_PREFIX}*"),
                      *root.glob(f"epochs/*/{TMP_PREFIX}*")} - {*root.glob(f"ray/{TMP_PREFIX}*")})
    problems += [f"{p}: orphaned partial file (a write was interrupted; safe to delete)" for p in orphans]
    if problems:
        return problems, {}
    epochs, trials = store.epochs(), store.trials()
    dup = epochs[epochs.duplicated(["trial_id", "epoch"], keep=False)]
    problems += [f"epochs: trial {t} epoch {e} appears more than once" for t, e in
                 sorted(set(zip(dup.trial_id, dup.epoch)))]
    problems += [f"trials: trial {t} appears more than once" for t in sorted(set(trials.trial_id[trials.trial_id.duplicated()]))]
    # epochs 1..n exactly once each ⇔ count = max = n and min = 1 (the duplicates are reported above)
    stats = epochs.groupby("trial_id").epoch.agg(["count", "min", "max", "nunique"])
    gapped = set(stats.index[(stats["min"] != 1) | (stats["max"] != stats["count"]) | (stats["nunique"] != stats["count"])])
    counted = trials.trial_id.map(stats["count"]).fillna(0).astype(int)
    wrong = trials[trials.status.isin(FINISHED) & (counted != trials.epochs_completed)].trial_id
    suspects = set(trials.trial_id) & gapped | set(wrong)
    by_trial = epochs[epochs.trial_id.isin(suspects)].groupby("trial_id").epoch.apply(sorted).to_dict()
    for row in trials[trials.trial_id.isin(suspects)].itertuples():
        got = by_trial.get(row.trial_id, [])
        if got != list(range(1, len(got) + 1)):
            problems.append(f"epochs: trial {row.trial_id} has gaps (epochs {got})")
        if row.status in FINISHED and len(got) != row.epochs_completed:
            problems.append(f"trials: trial {row.trial_id} says {row.epochs_completed} epochs, the epochs table has {len(got)}")
    counts = {"trials": len(trials), "epoch_rows": len(epochs), "runs": len(store.runs()),
              **{f"status_{k}": int(v) for k, v in trials.status.value_counts().items()}}
    return problems, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.store", description="Inspect a results store.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("verify", help="check schema, uniqueness, gaps and partial files; exit 1 on any problem").add_argument("dir")
    compact = sub.add_parser("compact", help="pack finished trials' files into a few large ones (readers stay fast)")
    compact.add_argument("dir")
    compact.add_argument("--per-pack", type=int, default=PACK_TRIALS, metavar="N",
                         help=f"at most N trials per pack (default {PACK_TRIALS}; bounds the memory used)")
    args = parser.parse_args(argv)
    if args.command == "compact":
        return _compact_command(args.dir, args.per_pack)
    problems, counts = verify(args.dir)
    for problem in problems:
        print(f"problem: {problem}")
    if problems:
        print(f"{args.dir}: {len(problems)} problem(s)")
        return 1
    print(f"{args.dir}: ok ({', '.join(f'{k} {v}' for k, v in counts.items())})")
    return 0


def _compact_command(directory: str, per_pack: int) -> int:
    """``stbench store compact DIR``: under the writer lock, after sweeping partial files, as a run does."""
    try:
        if per_pack < 1:
            raise UserError(f"--per-pack: must be ≥ 1 (got {per_pack})")
        store = ResultsStore.check(directory, must_exist=True)
        with store.lock():
            store.sweep_partials()
            done = store.compact(per_pack)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{directory}: packed {done['trials']} finished trial(s) into {done['packs']} pack(s)"
          + (f"; deleted {done['leftovers_deleted']} file(s) an interrupted compaction had already packed"
             if done["leftovers_deleted"] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
