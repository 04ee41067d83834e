"""Weights & Biases: one W&B run per trial, through Ray Tune's own ``WandbLoggerCallback``.

Tune logs each trial from a small actor process, so W&B never runs inside a
trial. On top of Tune's callback this adds what a benchmark needs: runs grouped
by benchmark run and tagged by architecture, dataset and seed; offline by
default (no account, no network; runs land under the results directory); and
failure isolation: whatever W&B does (no network, bad credentials, an
exception), the trials go on, the results store is complete, and one warning
says what happened. The API key is never logged, stored or printed.
"""

from __future__ import annotations

import netrc
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .trial import Stage, Trial

DEFAULT_PROJECT = "stbench"
MODES = ("offline", "online", "disabled")


@dataclass(frozen=True)
class WandbSettings:
    mode: str = "offline"
    project: str = DEFAULT_PROJECT
    entity: str | None = None
    init_timeout_s: float = 60.0
    upload_timeout_s: float = 120.0

# W&B settings the logging actors must see (self-hosted server, key, entity); mode and dir are passed explicitly.
FORWARDED_ENV_PREFIX = "WANDB_"
NOT_FORWARDED = ("WANDB_MODE", "WANDB_DIR")


def has_credentials() -> bool:
    """An API key in the environment or in ~/.netrc for the W&B host (what ``wandb login`` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def effective_mode(settings: WandbSettings) -> str:
    if settings.mode == "online" and not has_credentials():
        warn("W&B online mode was asked for but no credentials were found (WANDB_API_KEY or `wandb login`); "
             "logging offline instead, upload later with `wandb sync`")
        return "offline"
    return settings.mode


def redact(text: str) -> str:
    key = os.environ.get("WANDB_API_KEY")
    return text.replace(key, "***") if key else text


def warn(message: str) -> None:
    print(f"stbench: warning: {redact(message)}", file=sys.stderr, flush=True)


def make_callback(settings: WandbSettings, directory: Path, group: str, job_type: str = "benchmark"):
    """The Tune callback for ``settings`` writing under ``directory`` (the store's ``wandb/``), or None when
    W&B is disabled or cannot even be set up."""
    mode = effective_mode(settings)
    if mode == "disabled":
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        return _callback_class()(
            project=settings.project, group=group, excludes=["resume"], upload_timeout=int(settings.upload_timeout_s),
            entity=settings.entity, mode=mode, dir=str(directory), job_type=job_type, reinit="finish_previous",
            settings={"init_timeout": settings.init_timeout_s, "silent": True, "console": "off"},
        )
    except Exception as e:  # wandb missing or broken: the benchmark does not depend on it
        warn(f"W&B logging is off for this run: {type(e).__name__}: {e}")
        return None


def run_labels(trial: Trial, tune_trial_id: str, group: str | None) -> dict:
    """W&B name, tags and group of one Tune trial's run."""
    tags = [trial.architecture, trial.dataset, *(f"seed={s}" for s in trial.seeds)]
    if trial.stage is Stage.TUNE:
        return {"name": f"{trial.name}-{tune_trial_id}", "group": f"{group}-tune-{trial.study_key}",
                "tags": ["tune", f"study={trial.study}", *tags]}
    return {"name": trial.name, "tags": tags}


def _callback_class():
    import ray
    from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor

    class QuietLoggingActor(_WandbLoggingActor):
        """Tune's logging actor, returning what went wrong instead of raising it: a raised error would be
        printed as a traceback in the driver's console, and the driver reports it in one line instead."""

        def run(self):
            try:
                super().run()
            except BaseException as e:  # noqa: BLE001 - whatever W&B raises stays inside this process
                lines = str(e).strip().splitlines()
                return redact(f"{type(e).__name__}: {lines[0] if lines else ''}")
            finally:
                # Tune kills this actor as soon as run() returns; W&B's service process may still be writing
                # the run (offline: its .wandb file), so wait for it to shut down first.
                try:
                    self._wandb.teardown()
                except Exception:  # noqa: BLE001 - nothing left to save
                    pass
            return None

    class StbenchWandbCallback(WandbLoggerCallback):
        """Tune's W&B callback with per-trial names and tags, and every driver-side hook made harmless."""

        _logger_actor_cls = QuietLoggingActor

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.failed = False
            self.lost_trials: set[str] = set()

        def _guard(self, hook: str, fn, *args, **kwargs):
            if self.failed:
                return None
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                self.failed = True
                warn(f"W&B logging stopped ({hook}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                     "the benchmark goes on and the results store is complete")
                return None

        def setup(self, *args, **kwargs):
            # Tune asks for an API key unless WANDB_MODE says offline; offline needs none.
            saved = os.environ.get("WANDB_MODE")
            if self.kwargs.get("mode") == "offline":
                os.environ["WANDB_MODE"] = "offline"
            try:
                self._guard("setup", super().setup, *args, **kwargs)
                self._guard("setup", self._make_logger_class)
            finally:
                if saved is None:
                    os.environ.pop("WANDB_MODE", None)
                else:
                    os.environ["WANDB_MODE"] = saved

        def _make_logger_class(self):
            """Tune's logging actor, given every WANDB_* setting of the driver (Tune forwards only the key)."""
            from ray.air.integrations.wandb import _force_on_current_node

            env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIX) and k not in NOT_FORWARDED}
            self._remote_logger_class = ray.remote(
                num_cpus=0, **_force_on_current_node(), runtime_env={"env_vars": env},
                max_restarts=-1, max_task_retries=-1,
            )(self._logger_actor_cls)

        def log_trial_start(self, trial):
            return self._guard("trial start", self._start_run, trial)

        def _start_run(self, trial):
            """A run named and tagged from the typed trial: benchmark trials by seed, tuning trials by study."""
            base = self.kwargs
            self.kwargs = {**base, **run_labels(Trial.from_config(trial.config), trial.trial_id, self.group)}
            try:
                return super().log_trial_start(trial)
            finally:
                self.kwargs = base

        def log_trial_result(self, iteration, trial, result):
            return self._guard("result", super().log_trial_result, iteration, trial, result)

        def log_trial_save(self, trial):
            return self._guard("checkpoint", super().log_trial_save, trial)

        def log_trial_end(self, trial, failed=False):
            return self._guard("trial end", super().log_trial_end, trial, failed)

        def on_experiment_end(self, trials, **info):
            self._guard("experiment end", super().on_experiment_end, trials, **info)

        def __del__(self):
            # Tune's __del__ stops leftover logging actors; at interpreter exit Ray may be gone already
            # (``ray`` is None there), which would print a traceback after a successful run.
            try:
                super().__del__()
            except Exception:  # noqa: BLE001 - nothing left to log
                pass

        def _cleanup_logging_actors(self, timeout: int = 0, kill_on_timeout: bool = False):
            # Tune drops a logging actor's outcome; read it, so a W&B failure is reported once, not hidden.
            futures = list(self._trial_logging_futures.values())
            done, _ = ray.wait(futures, num_returns=len(futures), timeout=timeout)
            for future in done:
                trial = self._logging_future_to_trial[future]
                try:
                    cause = ray.get(future)  # None, or what went wrong inside the logging actor
                except Exception as e:  # the actor process itself died
                    cause = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                if cause:
                    if not self.lost_trials:
                        warn(f"W&B logging failed for trial {trial} ({cause}); the benchmark goes on, the results "
                             "store is complete, and further W&B failures of this run are not repeated")
                    self.lost_trials.add(str(trial))
            super()._cleanup_logging_actors(timeout=0, kill_on_timeout=kill_on_timeout)  # already waited above

    return StbenchWandbCallback
