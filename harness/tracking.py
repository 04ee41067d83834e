"""Weights & Biases: one W&B run per trial, all written by one logging actor of the driver's node.

W&B never runs inside a trial, nor in the driver's own loop. What a benchmark needs: runs grouped
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

import ray
from ray import tune
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .trial import Stage, Trial
from .wandb_writer import RunWriter, redact

DEFAULT_PROJECT = "stbench"


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


def warn(message: str) -> None:
    print(f"stbench: warning: {redact(message)}", file=sys.stderr, flush=True)


def make_callback(settings: WandbSettings, directory: Path, group: str, job_type: str = "benchmark"):
    """The Tune callback for ``settings`` writing under ``directory`` (the store's ``wandb/``), or None when
    W&B is disabled or cannot even be set up."""
    mode = effective_mode(settings)
    if mode == "disabled":
        return None
    try:
        import wandb  # noqa: F401 - fail here, once, if W&B is missing or broken

        directory.mkdir(parents=True, exist_ok=True)
        return WandbCallback(settings, mode, directory, group, job_type)
    except Exception as e:  # wandb missing or broken: the benchmark does not depend on it
        warn(f"W&B logging is off for this run: {type(e).__name__}: {e}")
        return None


def run_labels(trial: Trial, tune_trial_id: str, group: str | None) -> dict:
    """W&B name, tags and group of one Tune trial's run."""
    tags = [trial.architecture, trial.dataset, *(f"seed={s}" for s in trial.seeds)]
    if trial.stage is Stage.TUNE:
        return {"name": f"{trial.name}-{tune_trial_id}", "group": f"{group}-tune-{trial.study_key}",
                "tags": ["tune", f"study={trial.study}", *tags]}
    return {"name": trial.name, "tags": tags, "group": group}


# Tune's bookkeeping in every result, not a metric of the trial.
NOT_LOGGED = {"config", "done", "should_checkpoint", "trial_id", "date", "timestamp", "pid", "hostname", "node_ip",
              "node_id", "trial_key", "checkpoint_dir_name", "experiment_tag", "time_since_restore",
              "iterations_since_restore", "timesteps_since_restore"}


def loggable(result: dict, prefix: str = "") -> dict:
    """A Tune result as W&B history: nested dicts flattened with '/', numbers only, bookkeeping left out."""
    out = {}
    for key, value in result.items():
        if not prefix and key in NOT_LOGGED:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(loggable(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value
    return out


class WandbCallback(tune.Callback):
    """A W&B run per Tune trial, all written by ONE logging actor for the whole invocation.

    Tune's own ``WandbLoggerCallback`` starts two actor processes per trial (a logger and its queue), each
    with its own W&B service: on a small machine that costs a share of a core per trial. Here every call is
    fire-and-forget to one actor holding concurrent runs (``reinit="create_new"``), so the driver never
    waits on W&B during the run; at the end it waits, up to ``upload_timeout_s``, for the actor to finish
    every run, and reports what went wrong in one warning. Whatever W&B does, the benchmark goes on.
    """

    def __init__(self, settings: WandbSettings, mode: str, directory: Path, group: str, job_type: str):
        self.settings, self.mode, self.directory, self.group, self.job_type = settings, mode, directory, group, job_type
        self.writer = None
        self.failed = False
        self.started: set[str] = set()

    def _guard(self, hook: str, fn, *args):
        if self.failed:
            return None
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - W&B is never the reason a benchmark fails
            self.failed = True
            warn(f"W&B logging stopped ({hook}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                 "the benchmark goes on and the results store is complete")
            return None

    def _writer(self):
        if self.writer is None:
            env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIX) and k not in NOT_FORWARDED}
            env.setdefault("WANDB_SILENT", "true")  # its console lines would reach the driver's output
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
            # The W&B settings travel as an argument, not a runtime_env: a worker of another runtime env could
            # not come from Ray's pool of idle workers, and starting one costs seconds of CPU on a small machine.
            self.writer = ray.remote(num_cpus=0, max_restarts=0, scheduling_strategy=here)(RunWriter).remote(env)
        return self.writer

    def on_trial_start(self, iteration, trials, trial, **info):
        self._guard("trial start", self._start, trial)

    def _start(self, trial):
        if trial.trial_id in self.started:  # a retried trial goes on logging to its run
            return
        self.started.add(trial.trial_id)
        t = Trial.from_config(trial.config)
        config = {k: v for k, v in trial.config.items() if k not in ("resume",)}
        config["trial"] = {**config["trial"], "ids": {str(s): i for s, i in t.ids.items()}}
        kwargs = dict(id=trial.trial_id, project=self.settings.project, entity=self.settings.entity, mode=self.mode,
                      dir=str(self.directory), job_type=self.job_type, config=config, allow_val_change=True,
                      **run_labels(t, trial.trial_id, self.group))
        settings = {"init_timeout": self.settings.init_timeout_s, "silent": True, "console": "off"}
        self._writer().start.remote(trial.trial_id, str(trial), kwargs, settings)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.writer is not None:
            one_seed = len((result.get("per_seed") or {})) <= 1
            metrics = loggable({k: v for k, v in result.items() if not (one_seed and k == "per_seed")})
            self._guard("result", lambda: self.writer.log.remote(trial.trial_id, metrics))

    def on_trial_complete(self, iteration, trials, trial, **info):
        if self.writer is not None:
            self._guard("trial end", lambda: self.writer.finish.remote(trial.trial_id, 0))

    def on_trial_error(self, iteration, trials, trial, **info):
        if self.writer is not None:
            self._guard("trial end", lambda: self.writer.finish.remote(trial.trial_id, 1))

    def on_experiment_end(self, trials, **info):
        if self.writer is not None:
            self._guard("experiment end", self._close)

    def _close(self):
        writer, self.writer = self.writer, None
        try:
            errors = ray.get(writer.close.remote(), timeout=self.settings.upload_timeout_s)
        except ray.exceptions.GetTimeoutError:
            errors = {"": f"W&B did not finish writing within {self.settings.upload_timeout_s:.0f} s"}
        except ray.exceptions.RayError as e:  # the logging process itself died
            errors = {"": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"}
        finally:
            ray.kill(writer)
        if errors:
            name, cause = next(iter(errors.items()))
            warn(f"W&B logging failed for trial {name or '(all)'} ({cause}); the benchmark goes on, the results "
                 f"store is complete" + (f"; {len(errors) - 1} more W&B failure(s) of this run not shown" if len(errors) > 1 else ""))
