"""Compaction (issue 23): finished trials' loose files packed into a few large ones, with the store's guarantees:
every row read exactly once before, during (a kill -9 at any step) and after; version 1 stores read unchanged."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.store import EPOCHS, PACKS, ResultsStore, find_damage, now, verify

REPO = Path(__file__).resolve().parent.parent
IDS = {"run_id": "r1", "architecture": "convnet", "dataset": "mnist", "stage": "benchmark"}


def epoch(trial_id, seed, e, acc=0.5):
    return {**IDS, "trial_id": trial_id, "seed": seed, "epoch": e, "val_acc": acc, "train_time_s": 1.0 + e,
            "reported_at": now()}


def write_v1_epochs(root: Path, trial_id: str, rows: list[dict]) -> None:
    """A trial's epochs as version 1 wrote them: one file per trial."""
    table = pa.Table.from_pylist([{k: r.get(k) for k in EPOCHS.names} for r in rows], schema=EPOCHS)
    pq.write_table(table, root / "epochs" / f"{trial_id}.parquet")


def make_store(root: Path, n: int = 7, v1: bool = True) -> ResultsStore:
    """``n`` complete trials (3 epochs, a resume pointer each), one errored, one unfinished (a pointer to a
    checkpoint that exists); with ``v1``, in version 1's layout and manifest."""
    store = ResultsStore.open(root)
    store.put_run({"run_id": "r1", "space": "test", "started_at": now()})
    checkpoint = root / "ray" / "ckpt"
    checkpoint.mkdir(parents=True)
    for i in range(n + 2):
        trial_id = f"{i:016x}"
        rows = [epoch(trial_id, i, e) for e in range(1, 4 if i < n + 1 else 2)]
        if v1:
            write_v1_epochs(root, trial_id, rows)
        else:
            store.put_epochs(trial_id, rows)
        if i < n + 1:
            status = "complete" if i < n else "error"
            store.put_trial({**IDS, "trial_id": trial_id, "seed": i, "status": status, "epochs_completed": 3,
                             "test_acc": 0.9 + i / 100})
        store.put_resume(trial_id, str(checkpoint), 1)
    if v1:
        (root / "store.json").write_text(json.dumps({"schema_version": 1, "created_at": now().isoformat()}))
    return ResultsStore(root)


def tables(root: Path) -> dict[str, pd.DataFrame]:
    store = ResultsStore(root)
    keys = {"epochs": ["trial_id", "epoch"], "trials": ["trial_id"], "runs": ["run_id"]}
    return {t: store.read(t).sort_values(k).reset_index(drop=True) for t, k in keys.items()}


def assert_same(a: dict, b: dict) -> None:
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])


def loose(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for d in ("epochs", "trials", "resume") for p in (root / d).rglob("*") if p.is_file()}


@pytest.mark.parametrize("read_batch", [None, 2], ids=["one scan", "scans of 2 files"])
@pytest.mark.parametrize("v1", [True, False], ids=["version 1 store", "version 2 store"])
def test_compaction_keeps_every_row_once_and_leaves_unfinished_trials_loose(tmp_path, monkeypatch, v1, read_batch):
    if read_batch:  # loose files are read in batches (memory bounded at 100,000 trials): the same rows
        monkeypatch.setattr("harness.store.READ_BATCH", read_batch)
    root = tmp_path / "r"
    store = make_store(root, v1=v1)
    before = tables(root)
    assert verify(root)[0] == [] and len(before["trials"]) == 8 and len(before["epochs"]) == 8 * 3 + 1
    assert store.compact(per_pack=3) == {"trials": 7, "packs": 3, "leftovers_deleted": 0}
    assert_same(before, tables(root))
    assert json.loads((root / "store.json").read_text())["schema_version"] == 2
    errored, unfinished = f"{7:016x}", f"{8:016x}"
    left = loose(root)
    assert all(errored in p or unfinished in p for p in left), left  # only the two that may run again
    assert f"resume/{unfinished}.json" in left and f"resume/{errored}.json" in left
    archived = [json.loads(line) for p in sorted((root / PACKS).iterdir())
                for line in (p / "resume.jsonl").read_text().splitlines()]
    assert sorted(a["key"] for a in archived) == [f"{i:016x}" for i in range(7)]
    assert verify(root)[0] == [] and find_damage(root) == []
    assert list(ResultsStore(root).trial_epochs(f"{2:016x}").epoch) == [1, 2, 3]
    some = ResultsStore(root).read("epochs", columns=["val_acc", "trial_id"])
    assert list(some.columns) == ["val_acc", "trial_id"] and len(some) == len(before["epochs"])
    assert ResultsStore(root).compact() == {"trials": 0, "packs": 0, "leftovers_deleted": 0}  # idempotent
    assert_same(before, tables(root))


def test_a_loose_file_supersedes_its_packed_rows_and_identical_leftovers_are_deleted(tmp_path):
    root = tmp_path / "r"
    make_store(root, v1=False)
    trial = f"{1:016x}"
    kept = {p: p.read_bytes() for p in [root / "trials" / f"{trial}.parquet",
                                          *sorted((root / "epochs" / trial).iterdir())]}
    before = tables(root)
    ResultsStore(root).compact()
    for path, data in kept.items():  # what a compaction killed between its rename and its deletions leaves
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    assert_same(before, tables(root))
    assert verify(root)[0] == []
    store = ResultsStore(root)
    store.put_epochs(trial, [epoch(trial, 1, 2, acc=0.99)])  # a newer row wins over the packed one
    assert tables(root)["epochs"].set_index(["trial_id", "epoch"]).loc[(trial, 2), "val_acc"] == 0.99
    assert ResultsStore(root).compact()["leftovers_deleted"] == len(kept) - 1  # the changed epoch file stays
    assert (root / "epochs" / trial / "000002.parquet").exists()
    assert tables(root)["epochs"].set_index(["trial_id", "epoch"]).loc[(trial, 2), "val_acc"] == 0.99
    assert len(tables(root)["epochs"]) == len(before["epochs"])


def test_damaged_packs_are_named_and_a_trial_in_two_packs_is_a_duplicate(tmp_path):
    root = tmp_path / "r"
    make_store(root, v1=False)
    ResultsStore(root).compact(per_pack=4)
    first, second = sorted((root / PACKS).iterdir())
    shutil.copytree(first, root / PACKS / "000009")
    problems, _ = verify(root)
    assert any("appears more than once" in p for p in problems)
    shutil.rmtree(root / PACKS / "000009")
    (second / "resume.jsonl").unlink()
    (first / "notes.txt").write_text("x")
    found = dict(find_damage(root))
    assert found == {f"{PACKS}/{second.name}/resume.jsonl": "is missing from its pack",
                     f"{PACKS}/{first.name}/notes.txt": "is not a file of a pack (a stray file)"}


def compact_killed_at(root: Path, step: int | None) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if step is not None:
        env["STBENCH_FAULT_KILL_AT_WRITE"] = str(step)
    return subprocess.run([sys.executable, "-m", "harness.store", "compact", str(root), "--per-pack", "3"],
                          env=env, cwd=REPO, capture_output=True, timeout=120).returncode


def test_compaction_killed_at_any_step_loses_and_duplicates_nothing(tmp_path):
    """SIGKILL before a pack's rename, just after it, between deletions, at a pack's last deletion and before
    the next pack; the store reads the same at each kill and after a rerun, which finishes the work. With 3
    trials per pack, each pack is its rename (step 1) then 3 deletions per trial (its trial row, its version 1
    epoch file, its resume pointer): steps 1-10, 11-20, 21-24."""
    from harness.store import main as store_main

    original = tmp_path / "original"
    make_store(original, v1=True)
    expected = tables(original)
    for step in (1, 2, 6, 10, 11, 21, 24):
        root = tmp_path / f"k{step}"
        shutil.copytree(original, root)
        assert compact_killed_at(root, step) == -signal.SIGKILL
        assert_same(expected, tables(root))  # a reader (no lock, no sweep) sees every row exactly once
        assert store_main(["compact", str(root)]) == 0
        assert_same(expected, tables(root))
        assert verify(root)[0] == []
        assert all(f"{7:016x}" in p or f"{8:016x}" in p for p in loose(root))
        shutil.rmtree(root)
    assert compact_killed_at(original, 25) == 0  # no 25th step: the compaction ran to its end
    assert_same(expected, tables(original))


def test_a_run_compacts_at_its_end_only_once_many_finished_trials_lie_loose(tmp_path):
    root = tmp_path / "r"
    store = make_store(root, v1=False)
    assert store.loose_finished() == 7
    assert store.compact_if_many(at=8) is None and not (root / PACKS).exists()
    assert store.compact_if_many(at=7) == {"trials": 7, "packs": 1, "leftovers_deleted": 0}
    assert store.loose_finished() == 0


def test_a_misnamed_copy_is_not_packed_so_it_stays_the_one_duplicate_verify_names(tmp_path):
    root = tmp_path / "r"
    make_store(root, v1=False)
    trial = f"{3:016x}"
    (root / "trials" / f"{trial}.parquet").rename(root / "trials" / "copy.parquet")
    before = tables(root)
    ResultsStore(root).compact()
    assert (root / "trials" / "copy.parquet").exists()
    assert_same(before, tables(root))
    assert verify(root)[0] == []
