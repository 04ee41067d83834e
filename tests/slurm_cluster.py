"""A real single-node SLURM cluster (Debian's slurm-wlm and munge) for the tests, started as root in a temporary
folder with its own ports, stopped by its own pid files (see ../shared/notes/slurm-facts.md)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from ray_cluster import free_port

PACKAGES = ("slurm-wlm", "munge")


def available() -> str | None:
    """None when SLURM can run here (installing it as root with apt when missing), else why not."""
    if all(shutil.which(c) for c in ("sbatch", "slurmctld", "slurmd", "munged")):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "SLURM is not installed and cannot be (needs root and apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        if subprocess.run(cmd, env=env, capture_output=True, timeout=900).returncode != 0:
            return f"`{' '.join(cmd)}` failed"
    return None


def _munge_works() -> bool:
    probe = subprocess.run("munge -n | unmunge", shell=True, capture_output=True, timeout=30)
    return probe.returncode == 0


class SlurmCluster:
    """slurmctld + slurmd for this machine, configured in ``folder`` (``SLURM_CONF`` points the clients at it)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.conf = folder / "slurm.conf"
        self.munged_pid: int | None = None

    @property
    def env(self) -> dict:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def __enter__(self) -> "SlurmCluster":
        self.folder.mkdir(parents=True, exist_ok=True)
        self._start_munge()
        host = socket.gethostname().split(".")[0]
        cpus = os.cpu_count() or 1
        free_mib = int(subprocess.run(["free", "-m"], capture_output=True, text=True).stdout.split("\n")[1].split()[6])
        for d in ("state", "spool"):
            (self.folder / d).mkdir(exist_ok=True)
        self.conf.write_text("\n".join([
            "ClusterName=stbenchtest", f"SlurmctldHost={host}", "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
            f"StateSaveLocation={self.folder}/state", f"SlurmdSpoolDir={self.folder}/spool",
            f"SlurmctldPidFile={self.folder}/slurmctld.pid", f"SlurmdPidFile={self.folder}/slurmd.pid",
            f"SlurmctldLogFile={self.folder}/ctld.log", f"SlurmdLogFile={self.folder}/d.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core", "JobAcctGatherType=jobacct_gather/none", "MpiDefault=none",
            "ReturnToService=2", "JobRequeue=1",
            f"NodeName={host} CPUs={cpus} RealMemory={max(1024, free_mib - 1024)} State=UNKNOWN",
            f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
        try:
            subprocess.run(["slurmctld"], env=self.env, check=True, capture_output=True, timeout=60)
            subprocess.run(["slurmd"], env=self.env, check=True, capture_output=True, timeout=60)
            deadline = time.monotonic() + 60
            while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True,
                                               text=True).stdout:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the SLURM node never became idle: {self.logs()}")
                time.sleep(1)
        except Exception:
            self.stop()
            raise
        return self

    def _start_munge(self) -> None:
        if _munge_works():
            return
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            shutil.chown(key, "munge", "munge")
            key.chmod(0o400)
        run = Path("/run/munge")
        run.mkdir(parents=True, exist_ok=True)
        shutil.chown(run, "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged", "--force"], check=True, timeout=60)
        pid_file = run / "munged.pid"
        self.munged_pid = int(pid_file.read_text()) if pid_file.exists() else None

    def logs(self) -> str:
        return "\n".join(p.read_text()[-2000:] for p in (self.folder / "ctld.log", self.folder / "d.log") if p.exists())

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        for name in ("slurmd", "slurmctld"):
            pid_file = self.folder / f"{name}.pid"
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text()), signal.SIGTERM)
                except (ProcessLookupError, ValueError):
                    pass
        if self.munged_pid:
            try:
                os.kill(self.munged_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
