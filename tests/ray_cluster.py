"""A real multi-node Ray cluster on this machine, started with `ray start` and torn down by its own process ids."""

from __future__ import annotations

import os
import shutil
import sys
import socket
import subprocess
import tempfile
import time

import psutil

ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}  # see shared/notes/ray-facts.md


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on that this process has not handed out before: the OS may return a port it just
    released, and one `ray start` given the same port for two of its agents refuses to start (seen in CI)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


# Per-node ports that default to fixed numbers: nodes sharing one machine (this cluster's, or any other Ray
# running there, like the tests' own local one) must each get their own, or their agents collide and the
# head's job agent cannot be found (`ray job submit` then fails with "No available agent").
AGENT_PORT_FLAGS = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
                    "metrics-export-port")


class LocalRayCluster:
    """Head (no CPUs: it only schedules) plus ``workers`` worker nodes, each its own raylet."""

    def __init__(self, workers: int = 2, cpus_per_worker: int = 1, port: int | None = None,
                 autoscaling_config: str | None = None, dashboard_port: int | None = None):
        self.workers, self.cpus_per_worker = workers, cpus_per_worker
        self.port = port or free_port()
        self.autoscaling_config, self.dashboard_port = autoscaling_config, dashboard_port
        self.temp_dir = tempfile.mkdtemp(prefix="stbc", dir="/tmp")  # short: Ray's socket paths have a length limit
        self.env = dict(ENV, **({"RAY_FAKE_CLUSTER": "1"} if autoscaling_config else {}))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _ray(self, *args: str, temp_dir: str | None = None) -> None:
        subprocess.run(["ray", "start", *args, f"--temp-dir={temp_dir or self.temp_dir}", "--disable-usage-stats"],
                       env=self.env, check=True, capture_output=True, timeout=120)

    def __enter__(self) -> "LocalRayCluster":
        head = ["--head", f"--port={self.port}", "--num-cpus=0", "--num-gpus=0",
                *(f"--{flag}={free_port()}" for flag in AGENT_PORT_FLAGS)]
        if self.dashboard_port:
            head += ["--include-dashboard=true", f"--dashboard-port={self.dashboard_port}", "--dashboard-host=127.0.0.1"]
        else:
            head += ["--include-dashboard=false"]
        if self.autoscaling_config:
            head += [f"--autoscaling-config={self.autoscaling_config}"]
        try:
            self._ray(*head)
            for i in range(self.workers):
                # Each node its own ports and temp dir (below the cluster's): nodes sharing one would collide on
                # the agents' default ports and garbage-collect each other's job working directories.
                self._ray(f"--address={self.address}", f"--num-cpus={self.cpus_per_worker}",
                          *(f"--{flag}={free_port()}" for flag in AGENT_PORT_FLAGS), temp_dir=f"{self.temp_dir}/w{i}")
            self.wait_for_nodes(1 + self.workers)
        except Exception:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_for_nodes(self, n: int, timeout_s: float = 60.0) -> None:
        """`ray start` returns before a node has registered; wait until ``n`` nodes are alive."""
        probe = ("import ray, time, sys\n"
                 f"ray.init(address='{self.address}', logging_level='ERROR')\n"
                 f"deadline = time.monotonic() + {timeout_s}\n"
                 f"while sum(x['Alive'] for x in ray.nodes()) < {n}:\n"
                 "    assert time.monotonic() < deadline, 'nodes did not register'\n"
                 "    time.sleep(0.2)\n")
        subprocess.run([sys.executable, "-c", probe], env=self.env, check=True, capture_output=True,
                       timeout=timeout_s + 60)

    def processes(self) -> list[psutil.Process]:
        """Every process of this cluster: those naming its temp dir, and all their descendants (Ray's agents
        and workers rename themselves, so their command lines no longer say where they belong)."""
        roots = [p for p in psutil.process_iter(["cmdline"])
                 if any(self.temp_dir in part for part in (p.info["cmdline"] or []))]
        found = {p.pid: p for p in roots}
        for p in roots:
            try:
                found.update({c.pid: c for c in p.children(recursive=True)})
            except psutil.NoSuchProcess:
                pass
        return list(found.values())

    def stop(self) -> None:
        for _ in range(3):  # processes may spawn while we kill: sweep until none is left
            procs = self.processes()
            if not procs:
                break
            for p in procs:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(procs, timeout=10)
            time.sleep(0.5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
