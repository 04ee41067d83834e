"""The shipped sbatch template against a real SLURM (issue 23): a Ray head and a worker as job steps, the
benchmark through --address, the store on the (here: local) shared filesystem, W&B offline, Ray stopped at the
end, and the same job submitted again continues instead of starting over."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import psutil
import pytest

from conftest import space_yaml
from harness.store import ResultsStore, verify
from ray_cluster import free_port
from slurm_cluster import SlurmCluster, available

pytestmark = pytest.mark.slow
REPO = __import__("pathlib").Path(__file__).resolve().parent.parent
NODE_LINE = re.compile(r"stbench: Ray node (\w+) on \S+: (\d+) CPU, (\d+) GPU")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    why = available()
    if why:
        pytest.skip(why)
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


def submit(slurm, tmp_path, results, data, log):
    env = {**slurm.env, "STBENCH_SPACE": str(tmp_path / "space.yaml"), "STBENCH_RESULTS": str(results),
           "STBENCH_DATA_DIR": str(data), "STBENCH_PYTHON": sys.executable, "STBENCH_RAY": shutil.which("ray"),
           "STBENCH_RAY_PORT": str(free_port()), "PYTHONPATH": str(REPO), "RAY_ADDRESS": ""}
    cmd = ["sbatch", "--wait", "--nodes=1", "--cpus-per-task=2", "--time=20", f"--output={log}",
           f"--chdir={tmp_path}", str(REPO / "cluster.slurm")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    return done.returncode, log.read_text() if log.exists() else done.stderr


def test_the_sbatch_template_runs_the_benchmark_on_a_ray_cluster_inside_the_allocation(slurm, tmp_path, mnist_root):
    (tmp_path / "space.yaml").write_text(space_yaml(training={"seeds": 2, "epochs": 1}))
    results = tmp_path / "results"
    rc, out = submit(slurm, tmp_path, results, mnist_root, tmp_path / "job1.log")
    assert rc == 0, out[-4000:] + slurm.logs()
    nodes = {m[1]: int(m[2]) for m in NODE_LINE.finditer(out)}
    assert sorted(nodes.values()) == [0, 2], out  # the head (schedules only) and a worker with the job's CPUs
    worker = next(n for n, cpus in nodes.items() if cpus)
    trials = ResultsStore(results).trials()
    assert len(trials) == 2 and set(trials.status) == {"complete"}
    assert set(trials.node_id) == {worker}  # trials ran on the worker the job step started
    assert verify(results)[0] == []
    assert f"wandb sync {results}/wandb/wandb/offline-run-*" in out and "stbench: Ray stopped" in out
    job = re.search(r"stbench: job (\d+)", out)[1]
    assert not [p for p in psutil.process_iter(["cmdline"]) if f"stbench-ray-{job}" in " ".join(p.info["cmdline"] or [])]

    rc, again = submit(slurm, tmp_path, results, mnist_root, tmp_path / "job2.log")  # a requeued job: same command
    assert rc == 0 and "2 already in" in again, again[-3000:]
    assert len(ResultsStore(results).trials()) == 2
