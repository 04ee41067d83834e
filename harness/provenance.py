"""Where a result came from: code version, library versions, hardware.

Recorded on purpose field by field: nothing is copied from the environment
wholesale, so API keys and tokens can never end up in the store.
"""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("torch", "torchvision", "ray", "optuna")


@lru_cache(maxsize=1)
def code_version() -> dict:
    """Git commit of the harness and whether the working tree had uncommitted changes."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}


@lru_cache(maxsize=1)
def library_versions() -> dict:
    versions = {"python_version": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[f"{name}_version"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[f"{name}_version"] = None
    return versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_info(device: str = "cpu") -> dict:
    """Hardware of the process calling it (a trial reports its own, which may be another node)."""
    info = {"hostname": socket.gethostname(), "cpu_model": cpu_model(), "device": device, "gpu_model": None}
    if device.startswith("cuda"):
        import torch  # lazy: the driver records provenance before (and without) loading torch

        info["gpu_model"] = torch.cuda.get_device_name(torch.device(device))
    return info


def hardware_label(device, cpu_model: str | None, gpu_model: str | None) -> str | None:
    """Where timings were taken, as the plan and the report group them: the GPU model on a GPU, else the CPU
    model; None when the device is unknown (a row from before it was recorded)."""
    if not isinstance(device, str):
        return None
    known = lambda name: name if isinstance(name, str) and name else None  # noqa: E731 - a table's NaN is unknown too
    if device.startswith("cuda"):
        return f"GPU {known(gpu_model) or device}"
    return f"CPU {known(cpu_model) or 'unknown'}"


def driver_provenance() -> dict:
    return {**code_version(), **library_versions(), "platform": platform.platform(), "argv": " ".join(sys.argv)}
