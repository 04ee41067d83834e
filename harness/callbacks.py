"""The door between Ray Tune and the results store: a Tune callback running in the driver.

Trials only report metrics and checkpoints; this callback turns each report into store rows, one per
seed under that seed's own id (a seed-stacked trial reports several seeds at once). Because it runs
in the driver process, it works unchanged when trials run on other nodes of a cluster.
"""

from __future__ import annotations

import json
from pathlib import Path

from ray import tune

from .contract import CHECKPOINT_FILE, Checkpoint, EpochRecord
from .store import ResultsStore, now
from .trial import Stage, Status, Trial

EPOCH_METRICS = EpochRecord.names(stored=True)  # the epoch table's metric columns
WHERE = ("hostname", "node_ip", "node_id", "device", "cpu_model", "gpu_model")


def seed_results(trial: Trial, result: dict) -> dict[int | None, dict]:
    """seed → that seed's metrics of this report (a tuning trial's one averaged result under None); a seed
    the report does not carry (no report yet) maps to {}."""
    if trial.stage is Stage.TUNE:
        return {None: result}
    per_seed = result.get("per_seed") or {}
    return {seed: per_seed.get(str(seed), {}) for seed in trial.seeds}


class StoreCallback(tune.Callback):
    def __init__(self, store: ResultsStore, run_id: str, space_name: str, provenance: dict):
        self.store = store
        self.run_id = run_id
        self.space_name = space_name
        self.provenance = provenance
        self.restarts: dict[str, int] = {}
        self.last: dict[str, dict] = {}  # row id → that seed's newest metrics (a diverged seed stops reporting)

    def _ids(self, trial: Trial, seed: int | None, tune_trial) -> dict:
        return {"trial_id": trial.row_id(seed, tune_trial.trial_id), "run_id": self.run_id,
                "architecture": trial.architecture, "dataset": trial.dataset, "seed": seed,
                "stage": trial.stage.value}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        t = Trial.from_config(trial.config)
        for seed, metrics in seed_results(t, result).items():
            if "epoch" not in metrics:
                continue
            ids = self._ids(t, seed, trial)
            if self.last.get(ids["trial_id"], {}).get("epoch") == metrics["epoch"]:
                continue  # a stopped seed repeats its last epoch while the others go on
            self.last[ids["trial_id"]] = metrics
            row = {**ids, **{k: metrics.get(k) for k in EPOCH_METRICS}, "reported_at": now()}
            self.store.put_epochs(row["trial_id"], [row])

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        """Remember the trial's newest checkpoint, so a rerun after a driver crash resumes from it."""
        t = Trial.from_config(trial.config)
        self.store.put_resume(t.trial_id, checkpoint_uri(checkpoint), (trial.last_result or {}).get("epoch"),
                              members=sorted(t.ids.values()))

    def on_trial_recover(self, iteration, trials, trial, **info):
        key = Trial.from_config(trial.config).trial_id
        self.restarts[key] = self.restarts.get(key, 0) + 1

    def on_trial_complete(self, iteration, trials, trial, **info):
        t = Trial.from_config(trial.config)
        for seed, metrics in seed_results(t, trial.last_result or {}).items():
            metrics = metrics or self.last.get(t.row_id(seed, trial.trial_id), {})
            status = metrics.get("status", Status.COMPLETE.value)
            # a seed still "running" when Tune completes the trial was stopped by a scheduler (ASHA)
            self._finish(t, seed, trial, Status.STOPPED.value if status == Status.RUNNING.value else status, metrics)
        self._save_best_weights(t, trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        t = Trial.from_config(trial.config)
        error = _error_line(trial)
        for seed, metrics in seed_results(t, trial.last_result or {}).items():
            self._finish(t, seed, trial, Status.ERROR.value, metrics, error=error)

    def _finish(self, t: Trial, seed: int | None, tune_trial, status: str, result: dict, error: str | None = None):
        ids = self._ids(t, seed, tune_trial)
        result = self.last.get(ids["trial_id"], {}) | result if status == Status.ERROR.value else result
        epochs = self.store.trial_epochs(ids["trial_id"])
        row = {
            **ids, "space": self.space_name, "status": status, "error": error,
            "epochs_completed": int(epochs["epoch"].max()) if len(epochs) else 0,
            "diverged_epoch": result.get("diverged_epoch"),
            "best_epoch": result.get("best_epoch"),
            "best_val_acc": result.get("best_val_acc", result.get("objective")),  # tuning: the seeds' mean
            "test_loss": result.get("test_loss"), "test_acc": result.get("test_acc"),
            "num_params": result.get("num_params"), "restarts": self.restarts.get(t.trial_id, 0),
            "train_time_s": float(epochs["train_time_s"].sum()) if len(epochs) else None,
            "eval_time_s": float(epochs["eval_time_s"].sum()) if len(epochs) else None,
            "config_json": json.dumps((t if seed is None else t.with_seeds([seed])).record(), sort_keys=True, default=str),
            "study": t.study, "lr_tuned": t.lr_tuned, "loc_lr": t.loc_lr, "lr": t.training.lr,
            "stack": len(t.seeds) if t.stage is Stage.BENCHMARK else None,
            **{k: (tune_trial.last_result or {}).get(k) for k in WHERE},
            **self.provenance, "finished_at": now(),
        }
        self.store.put_trial(row)

    def _save_best_weights(self, t: Trial, tune_trial) -> None:
        """Each seed's best-validation weights into the store (``Checkpoint.for_seed``): what the analysis reloads."""
        if t.stage is not Stage.BENCHMARK or tune_trial.checkpoint is None:
            return
        with tune_trial.checkpoint.as_directory() as d:
            saved = Checkpoint.load(Path(d) / CHECKPOINT_FILE)
        for seed, best in saved.best.items():
            if best.get("state_dict") is None:
                continue
            copy = saved.for_seed(int(seed), t.with_seeds([int(seed)]).record())
            self.store.put_checkpoint(t.seed_id(int(seed)), copy.to_bytes())


def checkpoint_uri(checkpoint: tune.Checkpoint) -> str:
    """A location any node can open with ``tune.Checkpoint(uri)``: a local path, or e.g. ``s3://bucket/key``."""
    kind = checkpoint.filesystem.type_name
    return checkpoint.path if kind == "local" else f"{kind}://{checkpoint.path}"


def _error_line(trial) -> str:
    """The last line of the trial's error (normally 'SomeError: message'), without the traceback."""
    try:  # Tune has not synced the error to storage yet when on_trial_error runs: read the local copy first
        local = trial.error_file
        text = Path(local).read_text() if local and Path(local).is_file() else str(trial.get_error() or "")
    except Exception:  # the error file may be on a node that is gone
        text = ""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:2000] if lines else "trial failed (no error message recorded)"
