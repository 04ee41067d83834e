"""The private Ray members harness/tracking.py builds on are still there, with the shape it assumes.

tracking.py subclasses Tune's W&B logging actor and callback to make W&B failures harmless; a Ray upgrade that
renames any of these would break that quietly (a W&B problem ending a benchmark again). This test fails first,
naming the Ray version. Keep the lists in step with tracking.py.
"""

from __future__ import annotations

import inspect

import pytest
import ray

WHERE = f"ray {ray.__version__}: harness/tracking.py relies on"


def _wandb_module():
    try:
        import ray.air.integrations.wandb as module
    except ImportError as e:  # pragma: no cover - the message is the point
        pytest.fail(f"{WHERE} ray.air.integrations.wandb, which no longer imports ({e})")
    return module


def _source(obj) -> str:
    return inspect.getsource(obj)


def test_private_module_members_exist():
    module = _wandb_module()
    for name in ("_WandbLoggingActor", "_force_on_current_node", "WandbLoggerCallback"):
        assert hasattr(module, name), f"{WHERE} ray.air.integrations.wandb.{name}, which is gone"
    options = module._force_on_current_node()  # the options dict form, used in ray.remote(**options)
    assert isinstance(options, dict), f"{WHERE} _force_on_current_node() returning a dict, got {type(options)}"


def test_logging_actor_has_run_and_its_wandb_handle():
    actor = _wandb_module()._WandbLoggingActor
    assert callable(getattr(actor, "run", None)), f"{WHERE} _WandbLoggingActor.run, which is gone"
    assert "self._wandb" in _source(actor.__init__), f"{WHERE} _WandbLoggingActor._wandb (set in __init__)"


def test_callback_members_and_their_use():
    callback = _wandb_module().WandbLoggerCallback
    assert getattr(callback, "_logger_actor_cls", None) is _wandb_module()._WandbLoggingActor, \
        f"{WHERE} WandbLoggerCallback._logger_actor_cls (the class attribute naming its actor)"
    instance = callback(project="stbench-probe", mode="offline")
    for name in ("kwargs", "_remote_logger_class", "_trial_logging_futures", "_logging_future_to_trial"):
        assert hasattr(instance, name), f"{WHERE} WandbLoggerCallback().{name}, which is gone"
    for hook in ("setup", "log_trial_start", "log_trial_result", "log_trial_save", "log_trial_end",
                 "on_experiment_end", "_cleanup_logging_actors"):
        assert callable(getattr(callback, hook, None)), f"{WHERE} WandbLoggerCallback.{hook}, which is gone"
    params = inspect.signature(callback._cleanup_logging_actors).parameters
    assert {"timeout", "kill_on_timeout"} <= set(params), \
        f"{WHERE} WandbLoggerCallback._cleanup_logging_actors(timeout, kill_on_timeout); it takes {list(params)}"
    # What tracking.py sets must still be what Tune reads when it starts a trial's logging actor:
    start = _source(callback._start_logging_actor) if hasattr(callback, "_start_logging_actor") else ""
    for used in ("self._remote_logger_class", "self._logger_actor_cls", "self._trial_logging_futures",
                 "self._logging_future_to_trial"):
        assert used in start, f"{WHERE} WandbLoggerCallback._start_logging_actor reading {used}"
    assert "self.kwargs" in _source(callback.log_trial_start), \
        f"{WHERE} WandbLoggerCallback.log_trial_start building wandb.init's arguments from self.kwargs"
