"""The W&B logging actor's class, in a module of its own that imports only the standard library.

Ray unpickles an actor's class by importing its module in the actor's process: were ``RunWriter`` in
``harness.tracking`` (the Tune callback, which needs Ray Tune and the trial schema, hence torch), the logging
process would import Ray Tune and torch, seconds of CPU spent beside the first trial's own start-up, for a
class that needs neither. ``wandb`` itself is imported at the first run's start.
"""

from __future__ import annotations

import logging
import os


def redact(text: str) -> str:
    """``text`` with the W&B API key (if one is set) replaced by ***: no key is ever logged or printed."""
    key = os.environ.get("WANDB_API_KEY")
    return text.replace(key, "***") if key else text


class RunWriter:
    """The logging actor: concurrent W&B runs in one process. Errors are collected, never raised, so a
    W&B problem is reported once by the driver instead of as a traceback from an actor. After a run fails
    to start, later runs are not attempted (an unreachable server would cost ``init_timeout`` each)."""

    def __init__(self, env: dict[str, str]):

        os.environ.update(env)  # before wandb is imported: it reads its settings from the environment

        logging.getLogger("wandb").setLevel(logging.ERROR)
        self.runs: dict = {}
        self.names: dict[str, str] = {}
        self.errors: dict[str, str] = {}

    def _failed(self, key: str, e: BaseException) -> None:
        lines = str(e).strip().splitlines()
        self.errors.setdefault(self.names.get(key, key), redact(f"{type(e).__name__}: {lines[0] if lines else ''}"))

    def start(self, key: str, name: str, kwargs: dict, settings: dict) -> None:
        import wandb  # lazy, as every W&B import here: seconds to import, needed only in the logging actor

        self.names[key] = name
        if self.errors:
            self.errors.setdefault(name, "not started after an earlier W&B failure")
            return
        try:
            self.runs[key] = wandb.init(reinit="create_new", settings=wandb.Settings(**settings), **kwargs)
        except BaseException as e:  # noqa: BLE001 - stays inside this process
            self._failed(key, e)

    def log(self, key: str, metrics: dict) -> None:
        run = self.runs.get(key)
        if run is not None:
            try:
                run.log(metrics)
            except BaseException as e:  # noqa: BLE001
                self._failed(key, e)

    def finish(self, key: str, exit_code: int) -> None:
        run = self.runs.pop(key, None)
        if run is not None:
            try:
                run.finish(exit_code=exit_code)
            except BaseException as e:  # noqa: BLE001
                self._failed(key, e)

    def close(self) -> dict[str, str]:
        for key in list(self.runs):
            self.finish(key, 1)  # trials the driver never saw end
        try:
            import wandb  # lazy, as every W&B import here: seconds to import, needed only in the logging actor

            wandb.teardown()  # wait for W&B's service to write everything (offline: the .wandb files)
        except BaseException as e:  # noqa: BLE001
            self.errors.setdefault("", redact(f"{type(e).__name__}: {e}"))
        return self.errors
