"""The Ray and W&B surfaces the driver's callbacks build on are still there, with the shape they assume.

A Tune upgrade that renames a callback hook would not fail anything: the hook would silently never be
called (no rows in the store, no progress line, no W&B runs). These tests fail first, naming the version.
The harness uses no private Ray member; keep it that way (the last test checks the source).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import ray
from ray import tune

from harness.callbacks import StoreCallback
from harness.progress import ProgressCallback
from harness.tracking import WandbCallback

WHERE = f"ray {ray.__version__}"
HARNESS = Path(__file__).resolve().parent.parent / "harness"


@pytest.mark.parametrize("callback", [StoreCallback, ProgressCallback, WandbCallback])
def test_every_hook_the_callbacks_define_is_one_tune_calls(callback):
    for name, fn in inspect.getmembers(callback, inspect.isfunction):
        if not name.startswith("on_") or name.startswith("on_trial_start_"):
            continue
        base = getattr(tune.Callback, name, None)
        assert base is not None, f"{WHERE}: tune.Callback has no hook {name!r} ({callback.__name__} defines it)"
        ours, theirs = inspect.signature(fn).parameters, inspect.signature(base).parameters
        assert list(ours)[:len(theirs) - 1] == [p for p in theirs if p != "info"][:len(ours) - 1], \
            f"{WHERE}: tune.Callback.{name}{inspect.signature(base)} differs from {callback.__name__}.{name}"


def test_public_ray_apis_the_wandb_writer_uses():
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    assert "soft" in inspect.signature(NodeAffinitySchedulingStrategy).parameters, WHERE
    assert issubclass(ray.exceptions.GetTimeoutError, Exception), WHERE
    assert callable(ray.get_runtime_context().get_node_id), WHERE


def test_wandb_allows_concurrent_runs_in_one_process():
    import wandb

    params = inspect.signature(wandb.init).parameters
    assert "reinit" in params, f"wandb {wandb.__version__}: wandb.init(reinit=...) is gone"
    assert "create_new" in inspect.getsource(wandb.sdk.wandb_settings), \
        f"wandb {wandb.__version__}: reinit='create_new' (concurrent runs, what RunWriter needs) is gone"


def test_the_harness_uses_no_private_ray_member():
    private = re.compile(r"\bray(?:\.\w+)*\._\w+|from ray[\w.]* import [^\n]*\b_\w+")
    for path in HARNESS.rglob("*.py"):
        hits = private.findall(path.read_text())
        assert not hits, f"{path.name} uses private Ray members {hits}; they change without notice"


def test_a_local_ray_started_by_the_driver_prestarts_no_idle_workers():
    """Tune's trial actors carry a runtime env, so Ray's prestarted workers are never theirs; the driver turns
    the prestart off (``RAY_prestart_worker_first_driver``). If a Ray upgrade renames that setting, the two
    idle workers come back: this fails first, naming the version."""
    from conftest import run_cli

    code = """
import time, psutil
from harness.driver import ray_connection
with ray_connection(None, verbose=0):
    time.sleep(3)
    idle = [p for p in psutil.Process().children(recursive=True) if "ray::IDLE" in " ".join(p.cmdline())]
print("IDLE", len(idle))
"""
    out = run_cli(["-c", code], script="", env={"RAY_AUTH_MODE": "disabled"}, timeout=120)
    assert "IDLE 0" in out.stdout, f"{WHERE}: {out.stdout[-500:]} {out.stderr[-1500:]}"
