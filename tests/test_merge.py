"""``stbench merge`` (issue 23): stores of one space written by separate jobs become one; identical copies kept
once, differing ones refused in one line before anything is written; sources never changed."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import run_cli, snapshot, space_yaml
from harness.cli import stbench
from harness.store import ResultsStore, now, verify

IDS = {"run_id": "r1", "architecture": "convnet", "dataset": "mnist", "stage": "benchmark"}


def job(root, run_id, seeds, unfinished=None):
    """A store as one job of a space leaves it: its seeds' trials finished (2 epochs, best weights)."""
    store = ResultsStore.open(root)
    store.put_run({"run_id": run_id, "space": "test", "space_yaml": space_yaml(), "started_at": now()})
    for seed in seeds:
        trial_id = f"{seed:016x}"
        store.put_epochs(trial_id, [{**IDS, "run_id": run_id, "trial_id": trial_id, "seed": seed, "epoch": e,
                                     "val_acc": 0.5 + seed / 100 + e / 10, "reported_at": now()} for e in (1, 2)])
        store.put_trial({**IDS, "run_id": run_id, "trial_id": trial_id, "seed": seed, "status": "complete",
                         "epochs_completed": 2, "test_acc": 0.9 + seed / 100, "finished_at": now()})
        store.put_checkpoint(trial_id, f"weights of {seed}".encode())
    if unfinished is not None:
        trial_id = f"{unfinished:016x}"
        store.put_epochs(trial_id, [{**IDS, "run_id": run_id, "trial_id": trial_id, "seed": unfinished, "epoch": 1,
                                     "reported_at": now()}])
    return store


def sorted_table(store, table, key):
    return store.read(table).drop(columns="merged_from").sort_values(key).reset_index(drop=True)


def test_two_jobs_merge_into_one_store_with_each_row_s_source(tmp_path, capsys):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    job(a, "ra", [0, 1], unfinished=4)
    job(b, "rb", [2, 3])
    shutil.copy(a / "trials" / f"{1:016x}.parquet", b / "trials")  # seed 1 also in b, identical (a copied store)
    for f in (a / "epochs" / f"{1:016x}").iterdir():
        (b / "epochs" / f"{1:016x}").mkdir(exist_ok=True)
        shutil.copy(f, b / "epochs" / f"{1:016x}")
    before = snapshot(a), snapshot(b)
    assert stbench(["merge", str(a), str(b), "--into", str(c)]) == 0
    assert "merged 2 store(s)" in capsys.readouterr().out
    assert (snapshot(a), snapshot(b)) == before  # the sources are only read
    merged = ResultsStore(c)
    trials = merged.trials().set_index("trial_id")
    assert sorted(trials.index) == [f"{s:016x}" for s in range(4)]
    where = {t: json.loads(v) for t, v in trials["merged_from"].items()}
    assert where[f"{0:016x}"] == [str(a.resolve())] and where[f"{2:016x}"] == [str(b.resolve())]
    assert where[f"{1:016x}"] == sorted([str(a.resolve()), str(b.resolve())])
    runs = merged.runs().set_index("run_id")
    assert json.loads(runs.loc["ra", "merged_from"]) == [str(a.resolve())]
    expected = pd.concat([ResultsStore(a).epochs(), ResultsStore(b).epochs()]).drop_duplicates(["trial_id", "epoch"])
    got = merged.epochs()
    assert len(got) == len(expected) == 4 * 2 + 1
    pd.testing.assert_frame_equal(got.sort_values(["trial_id", "epoch"]).reset_index(drop=True),
                                  expected.sort_values(["trial_id", "epoch"]).reset_index(drop=True))
    assert merged.checkpoint_path(f"{3:016x}").read_bytes() == b"weights of 3"
    assert (c / "epochs" / f"{4:016x}" / "000001.parquet").exists()  # the unfinished trial stays loose
    assert verify(c)[0] == []
    snap = snapshot(c)
    assert stbench(["merge", str(a), str(b), "--into", str(c)]) == 0  # again: nothing new
    assert {k: v for k, v in snapshot(c).items() if k != ".lock"} == {k: v for k, v in snap.items() if k != ".lock"}


@pytest.mark.parametrize("what", ["trial row", "epoch row", "missing epoch"])
def test_a_trial_that_differs_between_stores_is_refused_in_one_line_and_nothing_is_written(tmp_path, capsys, what):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    job(a, "ra", [0, 1])
    job(b, "rb", [1, 2])  # seed 1 run twice: other timestamps, other rows
    trial = f"{1:016x}"
    shutil.copy(a / "trials" / f"{trial}.parquet", b / "trials")
    shutil.rmtree(b / "epochs" / trial)
    shutil.copytree(a / "epochs" / trial, b / "epochs" / trial)
    if what == "trial row":
        table = pq.read_table(b / "trials" / f"{trial}.parquet").to_pandas()
        ResultsStore(b).put_trial({**table.iloc[0].to_dict(), "test_acc": 0.5})
        expected = f"trial {trial} differs between {a.resolve()} and {b.resolve()} (column test_acc)"
    elif what == "epoch row":
        row = ResultsStore(b).trial_epochs(trial).iloc[1].to_dict()
        ResultsStore(b).put_epochs(trial, [{**row, "val_acc": 0.1}])
        expected = f"epoch row of trial {trial} differs between {a.resolve()} and {b.resolve()} (column val_acc)"
    else:
        (b / "epochs" / trial / "000002.parquet").unlink()
        expected = f"trial {trial} differs between {a.resolve()} and {b.resolve()} (epoch 2 is in one only)"
    before = snapshot(a), snapshot(b)
    assert stbench(["merge", str(a), str(b), "--into", str(c)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: merge: {expected}; nothing written"], err
    assert not c.exists() and (snapshot(a), snapshot(b)) == before


def test_bad_merge_arguments_are_one_line(tmp_path, capsys):
    a = tmp_path / "a"
    job(a, "ra", [0])
    assert stbench(["merge", str(a), "--into", str(a)]) == 2
    assert stbench(["merge", str(tmp_path / "nothing"), "--into", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: merge: --into") and "is not a results store" in err[1] and len(err) == 2


@pytest.mark.slow
def test_one_space_run_as_two_jobs_merges_into_the_store_one_run_would_have_left(tmp_path, mnist_root):
    """Seeds 0 and 1 of a space run by two separate invocations (two stores), merged: a rerun into the merged
    store has nothing to do, and the report reads it."""
    space = tmp_path / "space.yaml"
    space.write_text(space_yaml(training={"seeds": 2, "epochs": 1}))
    stores = [tmp_path / "job0", tmp_path / "job1"]
    for seed, store in enumerate(stores):
        result = run_cli(["--space", str(space), "--results-dir", str(store), "--data-dir", str(mnist_root),
                          "--seeds", str(seed), "--quiet", "--wandb-mode", "disabled"])
        assert result.rc == 0, result.stderr
    merged = tmp_path / "merged"
    result = run_cli(["-m", "harness", "merge", *map(str, stores), "--into", str(merged)], script="")
    assert result.rc == 0, result.stderr
    trials = ResultsStore(merged).trials()
    assert sorted(trials["seed"]) == [0, 1] and set(trials["status"]) == {"complete"}
    assert {json.loads(v)[0] for v in trials["merged_from"]} == {str(s.resolve()) for s in stores}
    assert verify(merged)[0] == []
    rerun = run_cli(["--space", str(space), "--results-dir", str(merged), "--data-dir", str(mnist_root), "--quiet"])
    assert rerun.rc == 0 and "2 of 2 trials already in the store" in rerun.stdout, rerun.stdout + rerun.stderr
    report = run_cli(["-m", "analysis.report", "--results-dir", str(merged), "--out", str(tmp_path / "report"),
                      "--no-checkpoints"], script="")
    assert report.rc == 0 and "report: 2 trials" in report.stdout, report.stderr
