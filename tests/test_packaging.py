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

    # A fresh environment that sees the installed dependencies but not this checkout. Its dependencies are this
    # interpreter's own site-packages, named in a .pth file: ``venv --system-site-packages`` would expose the
    # *base* interpreter's instead, which inside a virtual environment lacks what the venv installed (torch...).
    # A path line in a .pth only extends sys.path: the outer editable install's finder is not loaded.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    inner = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    outer = [p for p in dict.fromkeys([*site.getsitepackages(), site.getusersitepackages()]) if Path(p).is_dir()]
    (Path(inner) / "_outer_site_packages.pth").write_text("".join(f"{p}\n" for p in outer))
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
