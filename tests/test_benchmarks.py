"""The benchmark scripts run end to end on tiny settings and print their ratios (never asserting a speed)."""

import re
from pathlib import Path

import pytest

from conftest import run_cli


def run_script(name: str, data_dir: Path, *args: str) -> str:
    """A benchmark script as a subprocess; it (and any Ray it started) is killed if it outlives the test."""
    done = run_cli(args, script=f"benchmarks/{name}", env={"STBENCH_DATA_DIR": str(data_dir)}, timeout=600)
    assert done.rc == 0, done.stderr[-3000:]
    return done.stdout


def test_throughput_defaults_to_the_reference_studys_four_architectures(mnist_root):
    out = run_script("throughput.py", mnist_root, "--images", "128", "--repeats", "1", "--warmup-batches", "1",
                     "--trials", "1", "--stack", "1")  # the rows asserted here; stacked ones have their own test
    rows = [line.split()[0] for line in out.splitlines() if line.split()[1:2] == ["reference"]]
    assert rows == ["convnet", "stnet", "coordconv", "stcoordconv"]
    assert "met for" in out and "resnext" not in out


def test_throughput_measures_concurrent_trials_and_switches(mnist_root):
    out = run_script("throughput.py", mnist_root, "--images", "128", "--repeats", "1", "--warmup-batches", "1",
                     "--architectures", "stnet", "--trials", "2", "--variants", "default,channels_last")
    for label in ("harness", "+channels_last", "harness, 2 trials", "+channels_last, 2 trials", "harness, stacked 2",
                  "harness, 2 trials, stacked 2"):
        assert re.search(rf"^\s+{re.escape(label)}\s+[\d,]+\s+[\d.]+x ", out, re.M), label  # img/s and ratio


def test_throughput_rejects_unknown_names():
    done = run_cli(["--architectures", "vgg"], script="benchmarks/throughput.py", timeout=300)
    assert done.rc == 2 and "--architectures: unknown 'vgg'; allowed: convnet" in done.stderr


@pytest.mark.slow
def test_overhead_prints_the_ratio_and_rays_start_up_apart(mnist_root):
    out = run_script("overhead.py", mnist_root, "--trials", "1", "--architectures", "convnet", "--train-limit", "256",
                     "--epochs", "1", "--repeats", "1")
    assert "<- harness / plain wall time" in out
    assert "Ray start-up (ray.init)" in out
    assert "of which start-up, until the first trial trains" in out
    assert re.search(r"harness / script: [\d.]+x", out)  # against the same loop as a fresh process too


def test_gpu_check_runs_on_a_cpu_in_its_quick_mode(mnist_root):
    """The GPU check cannot run here on a GPU; its quick mode on the CPU proves the script and its table."""
    out = run_script("gpu_check.py", mnist_root, "--data-dir", str(mnist_root), "--device", "cpu", "--quick",
                     "--no-compile", "--trials", "1", "--stack", "2", "--architectures", "stnet", "--images", "128")
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0].startswith("| architecture | reference img/s | 1 trial img/s | stacked 2 img/s")
    assert table[2].startswith("| stnet | ") and "(stack 2)" in table[2] and table[-1].startswith("| **study**")
    assert "Best projection:" in out and "QUICK smoke run" in out


def test_the_benchmarks_training_defaults_are_the_spaces(monkeypatch):
    """throughput.py spells Training's defaults out (the GPU check runs without pydantic): they must not drift."""
    import sys

    from harness.space import Training

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    monkeypatch.delitem(sys.modules, "throughput", raising=False)
    from throughput import TRAINING_DEFAULTS

    assert TRAINING_DEFAULTS == {k: f.default for k, f in Training.model_fields.items() if k != "seeds"}
