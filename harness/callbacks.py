"""The door between Ray Tune and the results store: a Tune callback running in the driver.

Trials only report metrics and checkpoints; this callback turns each report into
store rows. Because it runs in the driver process, it works unchanged when
trials run on other nodes of a cluster.
"""

from __future__ import annotations

import io
import json

import torch
from ray import tune

from .store import EPOCHS, ResultsStore, now
from .train import STATE_FILE, effective_loc_lr, trained_with

EPOCH_METRICS = [c for c in EPOCHS.names
                 if c not in ("trial_id", "run_id", "architecture", "dataset", "seed", "stage", "reported_at")]
WHERE = ("hostname", "node_ip", "node_id", "device", "cpu_model", "gpu_model")


class StoreCallback(tune.Callback):
    def __init__(self, store: ResultsStore, run_id: str, space_name: str, provenance: dict):
        self.store = store
        self.run_id = run_id
        self.space_name = space_name
        self.provenance = provenance
        self.restarts: dict[str, int] = {}

    def _ids(self, trial) -> dict:
        t = trial.config["trial"]
        if t.get("stage") == "tune":  # one Optuna trial: the cell's config is shared, the sampled values are its own
            return {"trial_id": f"tune-{t['study_key']}-{trial.trial_id}", "run_id": self.run_id,
                    "architecture": t["architecture"], "dataset": t["dataset"], "seed": None, "stage": "tune"}
        return {"trial_id": t["trial_id"], "run_id": self.run_id, "architecture": t["architecture"],
                "dataset": t["dataset"], "seed": t["seed"], "stage": "benchmark"}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epoch" not in result:
            return
        row = {**self._ids(trial), **{k: result.get(k) for k in EPOCH_METRICS}, "reported_at": now()}
        self.store.put_epochs(row["trial_id"], [row])

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        """Remember the trial's newest checkpoint, so a rerun after a driver crash resumes from it."""
        self.store.put_resume(self._ids(trial)["trial_id"], checkpoint_uri(checkpoint),
                              (trial.last_result or {}).get("epoch"))

    def on_trial_recover(self, iteration, trials, trial, **info):
        trial_id = self._ids(trial)["trial_id"]
        self.restarts[trial_id] = self.restarts.get(trial_id, 0) + 1

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        ids = self._ids(trial)
        status = result.get("status", "complete")
        self._finish(trial, status="stopped" if status == "running" else status, result=result)  # a scheduler's stop
        self._save_best_weights(trial, ids["trial_id"])

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, status="error", result=trial.last_result or {}, error=_error_line(trial))

    def _finish(self, trial, status: str, result: dict, error: str | None = None) -> None:
        ids = self._ids(trial)
        training = trained_with(trial.config)
        epochs = self.store.trial_epochs(ids["trial_id"])
        row = {
            **ids, "space": self.space_name, "status": status, "error": error,
            "epochs_completed": int(epochs["epoch"].max()) if len(epochs) else 0,
            "diverged_epoch": result.get("diverged_epoch"),
            "best_epoch": result.get("best_epoch"),
            "best_val_acc": result.get("best_val_acc", result.get("objective")),  # tuning: the seeds' mean
            "test_loss": result.get("test_loss"), "test_acc": result.get("test_acc"),
            "num_params": result.get("num_params"), "restarts": self.restarts.get(ids["trial_id"], 0),
            "train_time_s": float(epochs["train_time_s"].sum()) if len(epochs) else None,
            "eval_time_s": float(epochs["eval_time_s"].sum()) if len(epochs) else None,
            "config_json": json.dumps({**trial.config["trial"], "training": training}, sort_keys=True),
            "study": (trial.config["trial"].get("tuning") or {}).get("study") or trial.config["trial"].get("study"),
            "lr_tuned": ids["stage"] == "tune" or bool(trial.config["trial"].get("tuning")),
            "loc_lr": effective_loc_lr(training), "lr": training["lr"],
            **{k: result.get(k) for k in WHERE},
            **self.provenance, "finished_at": now(),
        }
        self.store.put_trial(row)

    def _save_best_weights(self, trial, trial_id: str) -> None:
        checkpoint = trial.checkpoint
        if checkpoint is None:
            return
        with checkpoint.as_directory() as d:
            state = torch.load(f"{d}/{STATE_FILE}", map_location="cpu", weights_only=True)
        if state.get("best_state") is None:
            return
        buf = io.BytesIO()
        torch.save({"state_dict": state["best_state"], "best_epoch": state["best_epoch"],
                    "model_spec": state["model_spec"], "trial": trial.config["trial"]}, buf)
        self.store.put_checkpoint(trial_id, buf.getvalue())


def checkpoint_uri(checkpoint: tune.Checkpoint) -> str:
    """A location any node can open with ``tune.Checkpoint(uri)``: a local path, or e.g. ``s3://bucket/key``."""
    kind = checkpoint.filesystem.type_name
    return checkpoint.path if kind == "local" else f"{kind}://{checkpoint.path}"


def _error_line(trial) -> str:
    """The last line of the trial's error (normally 'SomeError: message'), without the traceback."""
    try:
        text = str(trial.get_error() or "")
    except Exception:  # the error file may be on a node that is gone
        text = ""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:2000] if lines else "trial failed (no error message recorded)"
