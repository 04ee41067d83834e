"""Garbage in, damage on disk: one short line, exit status 2, no traceback, and the store left byte for byte
as it was (issue 13). The store here is written by the store's own writer, as a run would leave it."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest

from conftest import run_cli, snapshot, space_yaml
from harness.cli import main
from harness.store import ResultsStore, find_damage, now, verify
from harness.store import main as store_main

FINISHED, UNFINISHED = "a" * 16, "b" * 16


def make_store(root, ray_checkpoint):
    """One finished trial (2 epochs), one interrupted after epoch 1 with a resume pointer to its checkpoint."""
    store = ResultsStore.open(root)
    ids = {"run_id": "r1", "architecture": "convnet", "dataset": "mnist", "stage": "benchmark"}
    store.put_run({"run_id": "r1", "space": "test", "space_yaml": space_yaml(), "started_at": now()})
    for trial_id, seed, epochs in ((FINISHED, 0, 2), (UNFINISHED, 1, 1)):
        store.put_epochs(trial_id, [{**ids, "trial_id": trial_id, "seed": seed, "epoch": e, "val_acc": 0.5,
                                     "reported_at": now()} for e in range(1, epochs + 1)])
    store.put_trial({**ids, "trial_id": FINISHED, "seed": 0, "status": "complete", "epochs_completed": 2})
    ray_checkpoint.mkdir(parents=True)
    store.put_resume(UNFINISHED, str(ray_checkpoint), 1)
    return store


def damage(case: str, results, space, data):
    """Apply one fault; return the text the error line must contain."""
    trials, epochs = results / "trials" / f"{FINISHED}.parquet", results / "epochs" / UNFINISHED / "000001.parquet"
    pointer = results / "resume" / f"{UNFINISHED}.json"
    if case == "garbage space file":
        space.write_bytes(os.urandom(64) + b"\xff\xfe")
        return f"{space}: not a text YAML file (byte"
    if case == "space file of control characters":
        space.write_bytes(b"name: \x00\x01\x02")
        return "not a text YAML file (character #x0000"
    if case == "empty space file":
        space.write_bytes(b"")
        return "not a text YAML file of a mapping (name, architectures, datasets, ...); got an empty file"
    if case == "empty data dir":
        data.mkdir()
        return "mnist: no IDX files in"
    if case == "truncated Parquet":
        trials.write_bytes(trials.read_bytes()[: trials.stat().st_size // 2])
        return f"trials/{FINISHED}.parquet is unreadable (truncated Parquet file); move it aside or run"
    if case == "zero-byte Parquet":
        epochs.write_bytes(b"")
        return f"epochs/{UNFINISHED}/000001.parquet is unreadable (zero-byte file)"
    if case == "not Parquet":
        (results / "runs" / "r1.parquet").write_text("run_id,space\nr1,test\n")
        return "runs/r1.parquet is unreadable (not a Parquet file)"
    if case == "another table's file":
        (results / "trials" / f"{UNFINISHED}.parquet").write_bytes(epochs.read_bytes())
        return f"trials/{UNFINISHED}.parquet has another schema (no column space, study, lr_tuned and"
    if case == "another column type":
        table = pq.read_table(trials)
        column = table.column("epochs_completed").cast("string")
        pq.write_table(table.set_column(table.schema.get_field_index("epochs_completed"), "epochs_completed", column),
                       trials)
        return "has another schema (column epochs_completed is string, not int64)"
    if case == "stray file":
        (results / "epochs" / "notes.txt").write_text("my notes")
        return "epochs/notes.txt is not a Parquet file of this table (a stray file)"
    if case == "Optuna studies not SQLite":
        (results / "optuna").mkdir()
        (results / "optuna" / "studies.db").write_bytes(b"\x00" * 100)
        return "optuna/studies.db is not an SQLite database"
    if case == "corrupt store.json":
        (results / "store.json").write_text('{"schema_version": ')
        return "store.json is unreadable or corrupt"
    if case == "unreadable resume pointer":
        pointer.write_bytes(pointer.read_bytes()[:10])
        return f"resume/{UNFINISHED}.json is an unreadable resume pointer"
    if case == "resume pointer to a lost checkpoint":
        (results / "ray" / "ckpt" / "checkpoint_000000").rmdir()
        return f"resume/{UNFINISHED}.json points at checkpoint ray/ckpt/checkpoint_000000, which no longer"
    raise AssertionError(case)


SUBPROCESS = ("garbage space file", "truncated Parquet", "zero-byte Parquet", "unreadable resume pointer", "empty data dir")
IN_PROCESS = ("space file of control characters", "empty space file", "not Parquet", "another table's file",
              "another column type", "stray file", "corrupt store.json", "Optuna studies not SQLite", "resume pointer to a lost checkpoint")


@pytest.mark.parametrize("case", SUBPROCESS + IN_PROCESS)
def test_refused_in_one_short_line_and_the_store_is_left_as_it_was(case, tmp_path, mnist_root, capsys):
    results, space, data = tmp_path / "results", tmp_path / "space.yaml", mnist_root
    make_store(results, results / "ray" / "ckpt" / "checkpoint_000000")
    space.write_text(space_yaml())
    if case == "empty data dir":
        data = tmp_path / "empty"
    expected = damage(case, results, space, data)
    before = snapshot(results)
    args = ["--space", space, "--results-dir", results, "--data-dir", data, "--no-download", "--quiet"]
    if case in SUBPROCESS:  # the researcher's command, exactly
        done = run_cli(args, timeout=300)
        rc, err = done.rc, done.stderr
        assert done.stdout == ""
    else:
        rc, err = main(list(map(str, args))), capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert len(err) - err.count(str(tmp_path)) * len(str(tmp_path)) < 200, err  # short, but for the test's long paths
    assert expected in err, err
    assert snapshot(results) == before  # nothing written, moved, dropped or repaired


def test_verify_reports_every_damaged_file_and_changes_nothing(tmp_path, mnist_root, capsys):
    results = tmp_path / "results"
    make_store(results, results / "ray" / "ckpt" / "checkpoint_000000")
    space, data = tmp_path / "space.yaml", mnist_root
    for case in ("truncated Parquet", "zero-byte Parquet", "stray file", "unreadable resume pointer"):
        damage(case, results, space, data)
    before = snapshot(results)
    assert len(find_damage(results)) == 4
    assert store_main(["verify", str(results)]) == 1
    out = capsys.readouterr().out
    for name in (f"trials/{FINISHED}.parquet", f"epochs/{UNFINISHED}/000001.parquet", "epochs/notes.txt",
                 f"resume/{UNFINISHED}.json"):
        assert sum(name in line for line in out.splitlines() if line.startswith("problem: ")) == 1, out
    assert out.splitlines()[-1].endswith(": 4 problem(s)")
    assert snapshot(results) == before


def test_a_sound_store_passes_the_check_and_its_finished_trials_keep_stale_pointers(tmp_path):
    results = tmp_path / "results"
    store = make_store(results, results / "ray" / "ckpt" / "checkpoint_000000")
    assert find_damage(results) == [] and verify(results)[0] == []
    # a finished trial never resumes: a pointer of it to a checkpoint since cleaned away is no damage
    store.put_resume(FINISHED, str(results / "ray" / "gone"), 2)
    store.put_resume("tune-abc-1", str(results / "ray" / "gone"), 1)  # tuning trials never resume from pointers
    (results / "epochs" / ".tmp-x-123.parquet").write_bytes(b"half")  # an interrupted write: swept, not damage
    assert find_damage(results) == []
    ResultsStore.check(results)


def test_an_unfinished_trial_with_a_remote_checkpoint_is_not_probed(tmp_path):
    results = tmp_path / "results"
    store = make_store(results, results / "ray" / "ckpt" / "checkpoint_000000")
    store.put_resume(UNFINISHED, "s3://bucket/stbench/ckpt/checkpoint_000000", 1)
    assert json.loads((results / "resume" / f"{UNFINISHED}.json").read_text())["checkpoint"].startswith("s3://")
    assert find_damage(results) == []


@pytest.mark.parametrize("case", ["many space problems", "no such space", "empty data dir", "malformed YAML",
                                  "unreachable cluster"])
def test_errors_are_one_short_first_line(case, tmp_path, mnist_root, capsys):
    """The line after ``error:`` stays under 200 characters (not counting the user's own paths); what does
    not fit (every problem of a space after the first) goes to the lines below it."""
    space, data = tmp_path / "space.yaml", mnist_root
    space.write_text(space_yaml())
    extra = []
    if case == "many space problems":
        space.write_text(space_yaml(architectures=["foo", "bar"], training={"epoch": 3}, bogus=1))
    elif case == "no such space":
        space = "no-such-space"
    elif case == "empty data dir":
        data = tmp_path / "empty"
    elif case == "malformed YAML":
        space.write_text("name: [x\n")
    elif case == "unreachable cluster":
        extra = ["--address", "127.0.0.1:9"]
    rc = main([*map(str, ["--space", space, "--results-dir", tmp_path / "r", "--data-dir", data, "--no-download"]),
               *extra])
    err = capsys.readouterr().err
    first, *rest = err.splitlines()
    assert rc == 2 and first.startswith("error: ") and "Traceback" not in err
    assert len(first.replace(str(tmp_path), "")) < 200, first
    assert bool(rest) == (case in ("many space problems", "no such space")), err
    assert all(line.startswith("  ") for line in rest)
    if case == "many space problems":
        assert "(and 3 more problem(s), below)" in first
    if case == "no such space":
        assert "quick" in rest[0].split(", ")
    assert not (tmp_path / "r").exists()
