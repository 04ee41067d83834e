"""Cluster: cluster.yaml against Ray's own schema, the Dockerfile against the project, and real multi-node runs."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from conftest import run_cli, space_yaml
from harness.store import ResultsStore, verify
from ray_cluster import ENV, LocalRayCluster, free_port, port_is_free
from wandb_offline import read_runs

REPO = Path(__file__).resolve().parent.parent
# Enough work that both worker nodes get trials even when starting a node's first worker process is slow.
CLUSTER = {"name": "cluster", "architectures": ["convnet", "stnet"],
           "training": {"epochs": 3, "seeds": 3, "train_limit": 3000}, "wandb": {"mode": "disabled"}}
SPACE = space_yaml(CLUSTER)


def test_cluster_yaml_validates_against_the_autoscaler_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    fake = yaml.safe_load((REPO / "cluster.fake.yaml").read_text())
    validate_config(fake)  # complete as written (the 2.60 wheel lacks the fake provider's defaults file)
    assert set(fake["available_node_types"]) == set(config["available_node_types"])
    assert config["available_node_types"]["gpu_worker"]["resources"]["GPU"] == 1
    assert config["available_node_types"]["gpu_worker"]["min_workers"] == 0
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0}
    assert any(opt.startswith("-e STBENCH_STORAGE_PATH=s3://") for opt in config["docker"]["run_options"])


def test_cluster_yaml_rejects_what_the_schema_rejects():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config["head_node_type"] = "missing"
    with pytest.raises(ValueError, match="head_node_type. must be one of .available_node_types"):
        validate_config(prepare_config(config))


def _lock() -> dict[str, Requirement]:
    lines = [ln.strip() for ln in (REPO / "requirements.lock").read_text().splitlines()]
    reqs = [Requirement(ln) for ln in lines if ln and not ln.startswith("#")]
    return {r.name.lower(): r for r in reqs}


def test_dockerfile_copies_what_exists_and_pins_what_pyproject_allows():
    dockerfile = (REPO / "Dockerfile").read_text()
    sources = [s for line in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)$", dockerfile, re.M) for s in line.split()[:-1]]
    assert sources and all((REPO / s).exists() for s in sources), sources
    assert "-r requirements.lock" in dockerfile and re.search(r"^USER\s+ray$", dockerfile, re.M)

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lock = _lock()
    for dependency in map(Requirement, project["dependencies"]):
        pin = lock.get(dependency.name.lower())
        assert pin is not None, f"{dependency.name} is not pinned in requirements.lock"
        (version,) = [s.version for s in pin.specifier]
        assert dependency.specifier.contains(version), f"{pin} is outside pyproject's {dependency}"
        assert dependency.extras <= pin.extras

    ray_version = re.search(r"^ARG RAY_VERSION=(\S+)$", dockerfile, re.M).group(1)
    (locked_ray,) = [s.version for s in lock["ray"].specifier]
    assert ray_version == locked_ray
    python = re.search(r"-py3(\d+)-gpu", dockerfile).group(1)
    assert Version(f"3.{python}") in SpecifierSet(project["requires-python"])  # as versions: "3.9" > "3.10" as text


def _run(space_file, results, data, *args, timeout=300):
    """The driver as a subprocess, killed with whatever it started if it outlives ``timeout`` or the test."""
    return run_cli(["--space", space_file, "--results-dir", results, "--data-dir", data, "--quiet", *args],
                   env={k: ENV[k] for k in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED")}, timeout=timeout)


@pytest.mark.slow
def test_benchmark_spreads_over_a_multi_node_cluster(tmp_path, mnist_root):
    space_file = tmp_path / "cluster.yaml"
    space_file.write_text(SPACE)
    with LocalRayCluster(workers=2, cpus_per_worker=1, dashboard_port=free_port()) as cluster:
        results = tmp_path / "results"
        # W&B offline (the shipped default) on a multi-node run: each trial's run is written on the driver's node
        done = _run(space_file, results, mnist_root, "--address", cluster.address, "--wandb-mode", "offline")
        assert done.rc == 0, done.stdout + done.stderr
        assert "warning: W&B" not in done.stderr, done.stderr
        trials = ResultsStore(results).trials()
        assert len(trials) == 6 and set(trials.status) == {"complete"} and verify(results)[0] == []
        assert trials.node_id.nunique() == 2  # the two worker nodes each ran trials (the head has no CPUs)
        # planning for the cluster reads its slots from it (nothing started there)
        plan = run_cli(["-m", "harness", "plan", "--space", space_file, "--results-dir", tmp_path / "empty",
                        "--data-dir", mnist_root, "--address", cluster.address], script="", timeout=120)
        assert plan.rc == 0, plan.stderr
        assert (f"on 2 concurrent slot(s) of the Ray cluster at {cluster.address}: 3 node(s), 2 CPUs, 0 GPUs"
                in plan.stdout), plan.stdout
        assert f"note: Ray does not report the CPU model of the Ray cluster at {cluster.address}" in plan.stdout
        runs = read_runs(results / "wandb")
        assert sorted(i for r in runs for i in r.config["trial"]["ids"].values()) == sorted(trials.trial_id)
        assert all(r.summary.get("test_acc") is not None for r in runs)

        # the other submission path: a Ray job, with the project shipped as its working directory
        submitted = tmp_path / "submitted"
        deadline = time.monotonic() + 90
        while True:
            job = subprocess.run(
                ["ray", "job", "submit", "--address", f"http://127.0.0.1:{cluster.dashboard_port}", "--working-dir",
                 ".", "--", "python", "run_benchmark.py", "--space", str(space_file), "--results-dir", str(submitted),
                 "--data-dir", str(mnist_root), "--quiet"],
                cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
            if "No available agent" not in job.stderr or time.monotonic() > deadline:
                break  # the head's job agent registers a few seconds after `ray start` returns
            time.sleep(3)
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        trials = ResultsStore(submitted).trials()
        assert len(trials) == 6 and set(trials.status) == {"complete"}
        assert trials.node_id.nunique() == 2
    assert cluster.processes() == []  # torn down, by the cluster's own process ids


@pytest.mark.slow
def test_autoscaler_launches_gpu_workers_on_demand(tmp_path, mnist_root):
    if not port_is_free(6379):
        pytest.skip("the fake autoscaler needs port 6379, which is in use")
    space_file = tmp_path / "gpu.yaml"
    space_file.write_text(space_yaml(CLUSTER, training={"seeds": 2}, resources={"cpu": 1, "gpu": 0.5}))
    with LocalRayCluster(workers=0, port=6379, autoscaling_config=str(REPO / "cluster.fake.yaml")) as cluster:
        import ray

        before = subprocess.run([sys.executable, "-c", "import ray; ray.init(address='127.0.0.1:6379'); "
                                 "print('GPUS', sum(n['Resources'].get('GPU', 0) for n in ray.nodes() if n['Alive']))"],
                                env=ENV, capture_output=True, text=True, timeout=120)
        assert re.search(r"^GPUS 0$", before.stdout, re.M), before.stdout  # no GPU node before the benchmark asks
        results = tmp_path / "results"
        done = _run(space_file, results, mnist_root, "--address", cluster.address)
        assert done.rc == 0, done.stdout + done.stderr
        trials = ResultsStore(results).trials()
        assert len(trials) == 4 and set(trials.status) == {"complete"}
        # trials ran on worker nodes the fake provider launched (ids ffff…0001, ffff…0002, …)
        assert all(re.fullmatch(r"f+0*[1-9a-f][0-9a-f]*", n) for n in trials.node_id), set(trials.node_id)
        del ray
    assert cluster.processes() == []
