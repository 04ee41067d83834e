"""A non-editable install works on its own: the wheel carries the shipped spaces, and ``stbench plan`` finds
them by name from another directory."""

from __future__ import annotations

import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def fresh_env(tmp_path: Path) -> Path:
    """A fresh environment that sees the installed dependencies but not this checkout. Its dependencies are this
    interpreter's own site-packages, named in a .pth file: ``venv --system-site-packages`` would expose the
    *base* interpreter's instead, which inside a virtual environment lacks what the venv installed (torch...).
    A path line in a .pth only extends sys.path: the outer editable install's finder is not loaded."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    inner = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    outer = [p for p in dict.fromkeys([*site.getsitepackages(), site.getusersitepackages()]) if Path(p).is_dir()]
    (Path(inner) / "_outer_site_packages.pth").write_text("".join(f"{p}\n" for p in outer))
    return venv


@pytest.mark.slow
def test_wheel_ships_the_spaces_and_plans_from_elsewhere(tmp_path, mnist_root):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(REPO), "-w", str(wheels)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("stbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {p.name for p in (REPO / "search_spaces").glob("*.yaml")}
    assert {Path(n).name for n in names if n.startswith("harness/search_spaces/")} >= shipped
    assert "analysis/result_analysis.ipynb" in names

    venv = fresh_env(tmp_path)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import harness; print(harness.__file__)"], cwd=elsewhere,
                           capture_output=True, text=True, check=True).stdout
    assert str(venv) in where  # the wheel's copy, not the checkout
    out = subprocess.run([str(venv / "bin" / "stbench"), "plan", "--space", "quick", "--json", "--data-dir",
                          str(mnist_root), "--results-dir", str(elsewhere / "results")],
                         cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert '"to run": 8' in out.stdout


@pytest.mark.slow
def test_own_model_example_runs_from_an_installed_wheel(tmp_path):
    """examples/own_model copied next to nothing of the checkout, run by the wheel's stbench: the plugin files
    are loaded relative to the space, their dataset imports the installed harness."""
    import os
    import shutil

    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(REPO), "-w", str(wheels)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("stbench-*.whl")
    venv = fresh_env(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}  # not this checkout
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True,
                   capture_output=True, timeout=300, env=env)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(REPO / "examples" / "own_model", elsewhere / "own_model")
    small = ["--set", "training.seeds=1", "--set", "training.epochs=1", "--set", "datasets.blobs.train_limit=64",
             "--set", "datasets.blobs.val_size=50", "--set", "datasets.blobs.test_limit=50"]
    out = subprocess.run([str(venv / "bin" / "stbench"), "run", "--space", "own_model/space.yaml", "--results-dir",
                          "results", "--quiet", "--architectures", "tiny,st(tiny)", *small],
                         cwd=elsewhere, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "2 complete" in out.stdout
