"""Kill it anywhere, feed it garbage: nothing lost, nothing duplicated, every error clear (issue 6)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import psutil
import pytest

from conftest import kill_tree, space_yaml
from harness.cli import main
from harness.errors import UserError
from harness.store import SCHEMA_VERSION, ResultsStore, find_damage, verify

REPO = Path(__file__).resolve().parent.parent
RAY_LOG = re.compile(r"^(\x1b\[\d+m)?\(\S+ pid=")

RELIABILITY = {"name": "reliability", "architectures": ["convnet", "stnet"], "training": {"epochs": 4, "seeds": 2}}
SPACE = space_yaml(RELIABILITY)


@pytest.fixture()
def space_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return path


def start(space_file, results, data, *extra, env=None) -> subprocess.Popen:
    """The researcher's command, as its own process (with its own local Ray) that the test can kill."""
    cmd = [sys.executable, "run_benchmark.py", "--space", str(space_file), "--results-dir", str(results),
           "--data-dir", str(data), "--quiet", "--max-concurrent", "1", *extra]
    log = open(results.parent / f"log-{time.monotonic_ns()}.txt", "w")
    return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "RAY_ADDRESS": "", **(env or {})})


@contextmanager
def running(space_file, results, data, *extra, env=None):
    """``start`` for the length of a block; the driver and its Ray are killed at its end, whatever happened."""
    proc = start(space_file, results, data, *extra, env=env)
    try:
        yield proc
    finally:
        kill_tree(proc)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"benchmark exited early with {proc.returncode}"
        assert time.monotonic() < deadline, "timed out waiting for the benchmark"
        time.sleep(0.05)


def n_files(directory: Path) -> int:
    return len(list(directory.glob("*.parquet"))) if directory.exists() else 0


def epoch_rows(results: Path) -> int:
    return len(ResultsStore(results).epochs()) if (results / "epochs").exists() else 0


def summary(results: Path):
    store = ResultsStore(results)
    trials = store.trials().set_index("trial_id").sort_index()
    epochs = store.epochs()
    return (trials[["status", "epochs_completed", "test_acc", "best_epoch"]],
            sorted(zip(epochs.trial_id, epochs.epoch)), epochs.set_index(["trial_id", "epoch"]).val_acc.sort_index())


@pytest.mark.slow
def test_driver_killed_at_any_moment_then_rerun_equals_an_uninterrupted_run(ray_local, space_file, tmp_path, mnist_root):
    reference = tmp_path / "reference"
    assert main(["--space", str(space_file), "--results-dir", str(reference), "--data-dir", str(mnist_root), "--quiet"]) == 0

    results = tmp_path / "killed"
    # 1. during a trial: some epochs stored, no trial finished yet
    with running(space_file, results, mnist_root) as proc:
        wait_for(lambda: epoch_rows(results) >= 2 and n_files(results / "trials") == 0, proc)
    assert verify(results)[0] == []

    # 2. between trials: two trials finished
    with running(space_file, results, mnist_root) as proc:
        wait_for(lambda: n_files(results / "trials") >= 2, proc)

    # 3. during a store write: killed after a table's temporary file is written, before its rename
    with running(space_file, results, mnist_root, env={"STBENCH_FAULT_KILL_AT_WRITE": "4"}) as proc:
        assert proc.wait(timeout=120) == -signal.SIGKILL
    assert any("orphaned partial file" in p for p in verify(results)[0])
    assert find_damage(results) == []  # a partial file is swept by the next run, not damage

    # 4. rerun to the end
    with running(space_file, results, mnist_root) as proc:
        assert proc.wait(timeout=300) == 0
    problems, counts = verify(results)
    assert problems == [] and counts["status_complete"] == 4

    got_trials, got_keys, got_val = summary(results)
    want_trials, want_keys, want_val = summary(reference)
    assert got_keys == want_keys  # same trials and epochs: no duplicates, no gaps
    assert got_trials.equals(want_trials)  # resumed training is bit-for-bit the uninterrupted one
    assert got_val.equals(want_val)
    assert len(ResultsStore(results).runs()) == 4


def _worker_processes(proc):
    names = ("ImplicitFunc", "trainable")
    return [p for p in psutil.Process(proc.pid).children(recursive=True)
            if p.name().startswith("ray::") and any(n in p.name() for n in names)]


@pytest.mark.slow
def test_worker_killed_mid_trial_is_retried_from_its_checkpoint(tmp_path, mnist_root):
    space = tmp_path / "one.yaml"
    space.write_text(space_yaml(RELIABILITY, architectures=["convnet"],
                                training={"seeds": 1, "epochs": 8, "train_limit": 4000}))
    results = tmp_path / "results"
    with running(space, results, mnist_root) as proc:
        wait_for(lambda: epoch_rows(results) >= 2, proc)
        before = ResultsStore(results).epochs().set_index("epoch").reported_at
        workers = _worker_processes(proc)
        assert len(workers) == 1
        workers[0].kill()
        assert proc.wait(timeout=300) == 0
    store = ResultsStore(results)
    trial = store.trials().iloc[0]
    assert trial.status == "complete" and trial.restarts == 1 and trial.epochs_completed == 8
    after = store.epochs().set_index("epoch").reported_at
    assert sorted(after.index) == list(range(1, 9))
    assert after.loc[before.index].equals(before)  # epochs before the kill were neither recomputed nor rewritten
    assert verify(results)[0] == []


@pytest.mark.slow
def test_divergence_is_recorded_and_the_benchmark_goes_on(ray_local, tmp_path, fake_root):
    # at lr 1e6 MNIST training diverges; the Fashion-MNIST trials of the same benchmark go on and finish
    space = tmp_path / "diverge.yaml"
    space.write_text(space_yaml(RELIABILITY, training={"seeds": 1, "train_limit": 300},
                                datasets={"mnist": {"lr": 1.0e+6, "momentum": 0.9}, "fashion_mnist": {}}))
    results = tmp_path / "results"
    assert main(["--space", str(space), "--results-dir", str(results), "--data-dir", str(fake_root), "--quiet"]) == 0
    trials = ResultsStore(results).trials()
    mnist, fashion = trials[trials.dataset == "mnist"], trials[trials.dataset == "fashion_mnist"]
    assert len(mnist) == 2 and set(mnist.status) == {"diverged"} and mnist.diverged_epoch.ge(1).all()
    assert mnist.test_acc.isna().all()  # a diverged trial has no test result to report
    assert len(fashion) == 2 and set(fashion.status) == {"complete"}
    assert verify(results)[0] == []


BAD_SPACES = {
    "malformed YAML": ("name: [x\n", "malformed YAML at line"),
    "wrong type": (space_yaml(RELIABILITY, training={"epochs": "four"}), "training.epochs: Input should be a valid integer"),
    "unknown key": (space_yaml(RELIABILITY, shedule="asha"), "shedule: unknown key; allowed: name"),
    "unknown architecture": (space_yaml(RELIABILITY, architectures=["convnet", "vit"]), "architectures.1: Input should be 'convnet'"),
    "unknown dataset": (space_yaml(RELIABILITY, {"datasets": None}, datasets={"cifar10": {}}), "datasets.cifar10: Input should be 'mnist', 'fashion_mnist'"),
    "zero epochs": (space_yaml(RELIABILITY, training={"epochs": 0}), "training.epochs: Input should be greater than or equal to 1 (got 0)"),
    "negative batch size": (space_yaml(RELIABILITY, training={"batch_size": -8}), "training.batch_size: Input should be greater than or equal to 1 (got -8)"),
    "zero seeds": (space_yaml(RELIABILITY, training={"seeds": 0}), "seeds: must be a count ≥ 1"),
    "GPU trials without a GPU": (space_yaml(RELIABILITY, resources={"cpu": 1, "gpu": 0.5}), "resources.gpu: 0.5 GPU per trial, but this machine has no GPU"),
    "batch larger than split": (space_yaml(RELIABILITY, training={"batch_size": 5000}), "datasets.mnist.batch_size: 5000 is larger than the training split (300 images); allowed: 1..300"),
}


def _damage(kind: str, data: Path) -> None:
    raw = data / "MNIST" / "raw"
    if kind == "missing":
        (raw / "t10k-labels-idx1-ubyte").unlink()
    elif kind == "truncated":
        path = raw / "train-images-idx3-ubyte"
        path.write_bytes(path.read_bytes()[:-100])
    elif kind == "corrupt":
        path = raw / "train-labels-idx1-ubyte"
        path.write_bytes(b"\x00\x00\x08\x03" + path.read_bytes()[4:])


@pytest.mark.parametrize("case", [*BAD_SPACES, "missing data", "truncated data", "corrupt data",
                                  "results dir is a file", "results dir not writable", "incompatible store",
                                  "no cluster at address", "dashboard url as address", "negative GPU override"])
def test_bad_input_is_one_line_nonzero_no_traceback_and_writes_nothing(case, tmp_path, capsys):
    if case == "GPU trials without a GPU":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    from conftest import write_fake_mnist

    data = write_fake_mnist(tmp_path / "data")
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    results = tmp_path / "results"
    extra: list[str] = []
    expected = {"missing data": "mnist: missing t10k-labels-idx1-ubyte",
                "truncated data": "train-images-idx3-ubyte is", "corrupt data": "bad IDX magic number 0x00000803",
                "results dir is a file": "is a file, not a directory", "results dir not writable": "is not writable",
                "incompatible store": f"schema version {SCHEMA_VERSION + 7}",
                "no cluster at address": "--address 127.0.0.1:9: no Ray cluster answered",
                "dashboard url as address": "job-submission URL",
                "negative GPU override": "--cpu/--gpu: Input should be greater than or equal to 0"}.get(case)
    if case in BAD_SPACES:
        text, expected = BAD_SPACES[case]
        space.write_text(text)
    elif case.endswith("data"):
        _damage(case.split()[0], data)
    elif case == "results dir is a file":
        results.write_text("")
    elif case == "results dir not writable":
        results = Path("/sys/stbench-results") if os.geteuid() == 0 else Path("/proc/stbench-results")
    elif case == "incompatible store":
        results.mkdir()
        (results / "store.json").write_text(f'{{"schema_version": {SCHEMA_VERSION + 7}}}')
    elif case == "no cluster at address":
        extra = ["--address", "127.0.0.1:9"]
    elif case == "dashboard url as address":
        extra = ["--address", "http://127.0.0.1:8265"]
    elif case == "negative GPU override":
        extra = ["--gpu", "-1"]
    before = sorted(results.rglob("*")) if results.is_dir() else None

    code = main(["--space", str(space), "--results-dir", str(results), "--data-dir", str(data), *extra])
    # Ray forwards other processes' output ("(pid=…) …") into this one; judge only what stbench printed
    err = "".join(line for line in capsys.readouterr().err.splitlines(keepends=True) if not RAY_LOG.match(line))
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert expected in err, err
    assert (sorted(results.rglob("*")) if results.is_dir() else None) == before  # nothing written


def test_debug_shows_the_traceback(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("name: [x\n")
    with pytest.raises(UserError, match="malformed YAML"):
        main(["--space", str(space), "--debug"])


def test_a_second_driver_on_the_same_store_is_refused(tmp_path):
    store = ResultsStore.open(tmp_path)
    with store.lock():
        with pytest.raises(UserError, match="is being written by another benchmark;"):
            with ResultsStore(tmp_path).lock():
                pass
    with store.lock():  # released: a later run gets it
        pass


@pytest.mark.slow
def test_secrets_in_the_environment_never_reach_the_store(ray_local, tmp_path, mnist_root, monkeypatch):
    secret = "sk-stbench-test-secret-4f9a1c"
    for name in ("WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN"):
        monkeypatch.setenv(name, secret)
    space = tmp_path / "s.yaml"
    space.write_text(space_yaml(RELIABILITY, architectures=["convnet"], training={"seeds": 1}))
    results = tmp_path / "results"
    assert main(["--space", str(space), "--results-dir", str(results), "--data-dir", str(mnist_root), "--quiet"]) == 0
    leaked = [p for p in results.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == []


@pytest.mark.slow
def test_an_errored_trial_is_recorded_kept_on_rerun_and_retried_on_request(ray_local, tmp_path, fake_root, capsys):
    # A real failure inside the trial: MNIST training labels that are a well-formed IDX file (the pre-flight check
    # passes) but hold class numbers up to 255, so the loss raises "IndexError: Target … is out of bounds".
    labels = fake_root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    good = labels.read_bytes()
    labels.write_bytes(good[:8] + bytes(min(b * 30, 255) for b in good[8:]))
    space = tmp_path / "errored.yaml"
    space.write_text(space_yaml(RELIABILITY, architectures=["convnet"], max_failures=0,
                                training={"seeds": 1, "epochs": 1, "train_limit": 300},
                                datasets={"mnist": {}, "fashion_mnist": {}}))
    results = tmp_path / "results"
    argv = ["--space", str(space), "--results-dir", str(results), "--data-dir", str(fake_root), "--quiet"]

    assert main(argv) == 1  # a trial in error: exit status 1, the other trial still finished
    trials = ResultsStore(results).trials().set_index("dataset")
    assert trials.status.to_dict() == {"mnist": "error", "fashion_mnist": "complete"}
    assert "IndexError: Target" in trials.loc["mnist", "error"] and "\n" not in trials.loc["mnist", "error"]
    errored = trials.loc["mnist", "trial_id"]
    capsys.readouterr()

    assert main(argv) == 0  # by default an errored trial is kept, not rerun
    assert "2 of 2 trials already in the store" in capsys.readouterr().out
    assert ResultsStore(results).trials().set_index("dataset").status.mnist == "error"

    labels.write_bytes(good)  # the cause fixed: retry it
    assert main(argv + ["--retry-errored"]) == 0
    trials = ResultsStore(results).trials().set_index("dataset")
    assert trials.status.to_dict() == {"mnist": "complete", "fashion_mnist": "complete"}
    assert trials.loc["mnist", "trial_id"] == errored and pd.isna(trials.loc["mnist", "error"])
    assert verify(results)[0] == []
