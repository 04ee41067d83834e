import json
from datetime import datetime, timezone

import pytest

from harness.errors import UserError
from harness.store import SCHEMA_VERSION, TMP_PREFIX, ResultsStore


def epoch_row(trial, epoch, acc=0.5):
    return {"trial_id": trial, "run_id": "r1", "architecture": "convnet", "dataset": "mnist", "seed": 0,
            "epoch": epoch, "train_loss": 1.0, "train_acc": acc, "val_loss": 1.0, "val_acc": acc,
            "train_time_s": 1.0, "eval_time_s": 0.1, "images_per_s": 100.0, "reported_at": datetime.now(timezone.utc)}


def test_round_trip_and_one_row_per_trial_and_epoch(tmp_path):
    store = ResultsStore.open(tmp_path / "r")
    store.put_epochs("a", [epoch_row("a", 1)])
    store.put_epochs("a", [epoch_row("a", 2)])
    store.put_epochs("a", [epoch_row("a", 2, acc=0.9)])  # a retried epoch replaces, never duplicates
    store.put_epochs("b", [epoch_row("b", 1)])
    store.put_trial({"trial_id": "a", "run_id": "r1", "architecture": "convnet", "dataset": "mnist", "seed": 0,
                     "status": "complete", "test_acc": 0.97, "num_params": 21840, "git_dirty": False})
    epochs = ResultsStore.open(tmp_path / "r", create=False).epochs()
    assert sorted(zip(epochs.trial_id, epochs.epoch)) == [("a", 1), ("a", 2), ("b", 1)]
    assert epochs.set_index(["trial_id", "epoch"]).loc[("a", 2), "val_acc"] == 0.9
    trials = store.trials()
    assert trials.loc[0, "test_acc"] == 0.97 and trials.loc[0, "num_params"] == 21840
    assert store.finished_trial_ids() == {"a"}
    assert not list((tmp_path / "r").rglob(f"{TMP_PREFIX}*"))


def test_empty_store_reads_as_empty_tables_with_columns(tmp_path):
    store = ResultsStore.open(tmp_path)
    assert store.epochs().empty and "val_acc" in store.epochs().columns
    assert store.trials().empty and "status" in store.trials().columns


def test_readers_ignore_half_written_files(tmp_path):
    store = ResultsStore.open(tmp_path)
    store.put_epochs("a", [epoch_row("a", 1)])
    (tmp_path / "epochs" / f"{TMP_PREFIX}a-123.parquet").write_bytes(b"PAR1 half a file")
    assert len(store.epochs()) == 1


def test_results_dir_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(UserError, match="is a file, not a directory"):
        ResultsStore.open(target)


def test_incompatible_schema_version_is_refused(tmp_path):
    ResultsStore.open(tmp_path)
    (tmp_path / "store.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(UserError, match=f"schema version {SCHEMA_VERSION + 1}"):
        ResultsStore.open(tmp_path)


def test_verify_passes_a_sound_store_and_names_each_problem(tmp_path):
    from harness.store import main, verify

    store = ResultsStore.open(tmp_path)
    store.put_epochs("a", [epoch_row("a", 1), epoch_row("a", 2)])
    store.put_trial({"trial_id": "a", "run_id": "r1", "status": "complete", "epochs_completed": 2})
    assert verify(tmp_path) == ([], {"trials": 1, "epoch_rows": 2, "runs": 0, "status_complete": 1})
    assert main(["verify", str(tmp_path)]) == 0

    store._write_table("epochs", "copy-of-a", [epoch_row("a", 2)])  # a duplicated row
    store._write_table("epochs", "b", [epoch_row("b", 2)])
    store.put_trial({"trial_id": "b", "run_id": "r1", "status": "complete", "epochs_completed": 1})
    (tmp_path / "trials" / f"{TMP_PREFIX}c.parquet").write_bytes(b"half")
    problems, _ = verify(tmp_path)
    assert any("orphaned partial file" in p for p in problems)
    (tmp_path / "trials" / f"{TMP_PREFIX}c.parquet").unlink()
    problems, _ = verify(tmp_path)
    assert "epochs: trial a epoch 2 appears more than once" in problems
    assert "epochs: trial b has gaps (epochs [2])" in problems
    assert main(["verify", str(tmp_path)]) == 1
