"""``stbench merge A B ... --into C``: one store from several, for a benchmark run as several jobs or machines.

A trial (its trial row and all its epoch rows) or a run found in several sources is kept once when every
copy is identical, and the merge is refused, in one line and before anything is written, when two copies
differ. The sources are only read (never locked, swept or upgraded); a source another benchmark is still
writing is refused, as its tables are not final. Each trial and run row records in ``merged_from`` the
sources that held it (a JSON list of absolute paths; an epoch row comes from its trial's sources).

The finished trials go into ``C`` as one pack (``ResultsStore.compact``'s layout, appearing in one rename),
their best weights are copied; the epochs of unfinished trials go in loose, so a run in ``C`` continues
them. Resume pointers and Optuna studies are not merged: an unfinished trial restarts in ``C``, and a tuning
stage run in ``C`` starts its studies afresh. ``C`` may be an existing store: its rows count as a source,
and merging the same sources again adds nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa

from .errors import UserError
from .store import EPOCHS, TRIALS, ResultsStore, StoreLock

SOURCE = "_source"  # the column naming a row's source while merging
MERGED = "merged_from"


def merge(sources: list[str | Path], into: str | Path) -> dict:
    """Merge ``sources`` into the store ``into``; returns counts of what was added."""
    paths = [Path(s).resolve() for s in sources]
    target_path = Path(into).resolve()
    if len(paths) < 1:
        raise UserError("merge: name at least one source store (stbench merge A B ... --into C)")
    if target_path in paths:
        raise UserError(f"merge: --into {into} is also a source; merge into a new or another store")
    if len(set(paths)) < len(paths):
        raise UserError("merge: a source store is named twice")
    stores = [ResultsStore.check(p, must_exist=True) for p in paths]
    for store in stores:
        if (store.root / ".lock").exists():
            with StoreLock(store.root / ".lock"):  # a live run's tables are not final: refused in one line
                pass
    target = ResultsStore.check(target_path)
    existing = (target_path / "store.json").exists()
    labelled = [(str(target_path), target)] * existing + [(str(p), s) for p, s in zip(paths, stores)]
    frames = {t: _with_source([(label, s.read(t)) for label, s in labelled], t) for t in ("runs", "trials", "epochs")}
    runs = _unique(frames["runs"], ["run_id"], "run")
    trials = _unique(frames["trials"], ["trial_id"], "trial")
    epochs = _unique_epochs(frames["epochs"])

    have = {t: set(target.read(t)[k]) if existing else set() for t, k in (("runs", "run_id"), ("trials", "trial_id"),
                                                                       ("epochs", "trial_id"))}
    new_runs = runs[~runs["run_id"].isin(have["runs"])]
    new_trials = trials[~trials["trial_id"].isin(have["trials"])]
    finished_epochs = epochs[epochs["trial_id"].isin(set(new_trials["trial_id"]))]
    loose_epochs = epochs[~epochs["trial_id"].isin(set(trials["trial_id"]) | have["epochs"])]

    target.create()
    with target.lock():
        target.sweep_partials()
        for row in new_runs.to_dict("records"):
            target.put_run(row)
        copied = 0
        for row in new_trials.itertuples():
            for label in json.loads(row.merged_from):
                source = ResultsStore(label).checkpoint_path(row.trial_id)
                if source.is_file():
                    target.put_checkpoint(row.trial_id, source.read_bytes())
                    copied += 1
                    break
        if len(new_trials):
            target._upgrade()
            target._write_pack(_arrow(new_trials, TRIALS), _arrow(finished_epochs, EPOCHS), [])
        for trial_id, rows in loose_epochs.groupby("trial_id"):
            target.put_epochs(trial_id, rows.drop(columns=[MERGED], errors="ignore").to_dict("records"))
    return {"runs": len(new_runs), "trials": len(new_trials), "epoch_rows": len(finished_epochs) + len(loose_epochs),
            "checkpoints": copied, "sources": len(paths)}


def _with_source(frames: list[tuple[str, pd.DataFrame]], table: str) -> pd.DataFrame:
    """The tables of every source stacked, each row labelled with its source."""
    out = pd.concat([f.assign(**{SOURCE: label}) for label, f in frames], ignore_index=True)
    if MERGED not in out.columns:
        out[MERGED] = None
    return out


def _content(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in (SOURCE, MERGED)]


def _unique(frame: pd.DataFrame, key: list[str], what: str) -> pd.DataFrame:
    """One row per key; a key whose copies differ in any column is refused, naming the column and sources."""
    distinct = frame.drop_duplicates(subset=_content(frame))
    clash = distinct[distinct.duplicated(key, keep=False)]
    if len(clash):
        first = clash[clash[key[0]] == clash[key[0]].iloc[0]]
        a, b = first.iloc[0], first.iloc[1]
        column = next(c for c in _content(frame) if not _same(a[c], b[c]))
        raise UserError(f"merge: {what} {a[key[0]]} differs between {a[SOURCE]} and {b[SOURCE]} (column {column}); "
                        "nothing written")
    sources = frame.groupby(key[0])[[SOURCE, MERGED]].apply(_sources)
    out = distinct.drop_duplicates(key).copy()
    out[MERGED] = out[key[0]].map(sources)
    return out.drop(columns=[SOURCE]).reset_index(drop=True)


def _unique_epochs(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per trial × epoch, and a trial's epochs the same in every source that holds any of them."""
    unique = _unique(frame, ["trial_id", "epoch"], "epoch row of trial")
    held = frame.groupby("trial_id")[SOURCE].nunique()
    per_epoch = frame.drop_duplicates(["trial_id", "epoch", SOURCE]).groupby(["trial_id", "epoch"])[SOURCE].nunique()
    short = per_epoch[per_epoch.values < held.reindex(per_epoch.index.get_level_values(0)).values]
    if len(short):
        trial_id, epoch = short.index[0]
        holders = sorted(set(frame.loc[frame["trial_id"] == trial_id, SOURCE]))
        missing = sorted(set(holders) - set(frame.loc[(frame["trial_id"] == trial_id) & (frame["epoch"] == epoch), SOURCE]))
        raise UserError(f"merge: trial {trial_id} differs between {holders[0] if holders[0] != missing[0] else holders[1]} "
                        f"and {missing[0]} (epoch {epoch} is in one only); nothing written")
    return unique


def _sources(group: pd.DataFrame) -> str:
    """The sources holding a key, with those a merged source had recorded for it."""
    labels = set(group[SOURCE])
    for earlier in group[MERGED].dropna():
        labels |= set(json.loads(earlier))
    return json.dumps(sorted(labels))


def _same(a, b) -> bool:
    """Equal, counting two missing values as equal (as ``drop_duplicates`` does)."""
    if pd.isna(a) or pd.isna(b):
        return bool(pd.isna(a) and pd.isna(b))
    return bool(a == b)


def _arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pandas(frame.reindex(columns=schema.names), schema=schema, preserve_index=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="stbench merge", description="Combine results stores written by separate "
                                "jobs or machines into one; the sources are only read.")
    p.add_argument("sources", nargs="+", metavar="STORE", help="the stores to merge")
    p.add_argument("--into", required=True, metavar="DIR", help="the store to write (new, or an existing one)")
    args = p.parse_args(argv)
    try:
        done = merge(args.sources, args.into)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"merged {done['sources']} store(s) into {args.into}: {done['trials']} trials, {done['epoch_rows']} "
          f"epoch rows, {done['runs']} runs and {done['checkpoints']} best-weight files added")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
