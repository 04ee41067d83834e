"""examples/own_model end to end, from a directory that is not the project's: a user model in a file outside
the package, tv:resnet18 and its st / coordconv wrappers on the example's generated 3x32x32 dataset, locally
and on a multi-node cluster, then the report."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import kill_tree
from harness.store import ResultsStore, verify
from ray_cluster import ENV, LocalRayCluster

REPO = Path(__file__).resolve().parent.parent
SPACE = REPO / "examples" / "own_model" / "space.yaml"
SMALL = ["--set", "training.seeds=1", "--set", "training.epochs=1", "--set", "datasets.blobs.train_limit=128",
         "--set", "datasets.blobs.val_size=100", "--set", "datasets.blobs.test_limit=100"]
ARCHITECTURES = {"tiny", "st(tiny)", "coordconv(tiny)", "tv:resnet18", "st(tv:resnet18)", "coordconv(tv:resnet18)"}


def stbench(cwd: Path, *args, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m harness ARGS`` from ``cwd`` (not the project), killed with what it started if it hangs."""
    proc = subprocess.Popen([sys.executable, "-m", "harness", *map(str, args)], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": "", **(env or {})})
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill_tree(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
def test_own_model_example_runs_from_elsewhere_and_reports(tmp_path):
    done = stbench(tmp_path, "run", "--space", SPACE, "--results-dir", "results", "--data-dir", "data", "--quiet", *SMALL)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    trials = ResultsStore(tmp_path / "results").trials()
    assert set(trials.architecture) == ARCHITECTURES and set(trials.status) == {"complete"}
    assert verify(tmp_path / "results")[0] == []
    again = stbench(tmp_path, "run", "--space", SPACE, "--results-dir", "results", "--data-dir", "data", "--quiet", *SMALL)
    assert again.returncode == 0 and "6 already in" in again.stdout, again.stdout + again.stderr
    report = stbench(tmp_path, "report", "--results-dir", "results", "--out", "report")
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    assert any((tmp_path / "report").iterdir())


@pytest.mark.slow
def test_own_model_example_on_a_multi_node_cluster(tmp_path):
    with LocalRayCluster(workers=2, cpus_per_worker=1) as cluster:
        done = stbench(tmp_path, "run", "--space", SPACE, "--results-dir", "results", "--data-dir", "data", "--quiet",
                       "--address", cluster.address, *SMALL,
                       env={k: ENV[k] for k in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED")})
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        trials = ResultsStore(tmp_path / "results").trials()
        assert set(trials.architecture) == ARCHITECTURES and set(trials.status) == {"complete"}
        assert trials.node_id.nunique() == 2  # both worker nodes ran user code (the head has no CPUs)
    assert cluster.processes() == []
