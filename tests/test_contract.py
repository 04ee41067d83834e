"""The training contract (``harness.contract``) and the seam it defines: runner → Tune → store, without Ray.

``StoreCallback`` runs in the driver and reads only what a trainable reports (``per_seed`` records, the
``Checkpoint`` file); here it is fed those directly, as Tune would, so the rows, checkpoints and statuses it
writes are checked in a second instead of through a Ray run.
"""

from __future__ import annotations

import ast
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from ray import tune

from conftest import REPO, space_yaml
from harness.callbacks import EPOCH_METRICS, StoreCallback
from harness.contract import CHECKPOINT_FILE, Checkpoint, EpochRecord, TrainingSettings, average, summarise
from harness.progress import ProgressCallback
from harness.runner import make_runner
from harness.space import Training, parse_space
from harness.store import EPOCHS, ResultsStore
from harness.train import load_splits
from harness.trainables import per_seed_report
from harness.trial import Trial

TRAINING_ROOM = ["harness.contract", "harness.train", "harness.stacked", "harness.runner", "harness.trial",
                 "harness.models", "harness.data", "harness.tasks"]


def test_the_training_room_imports_no_ray_optuna_wandb_or_pydantic():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in TRAINING_ROOM)
            + "bad = sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'optuna', 'wandb', 'pydantic'})\n"
              "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def import_graph() -> dict[str, set[str]]:
    """module → the project modules it imports, at module level or inside functions (relative or absolute;
    ``from pkg import sub`` of a submodule imports the submodule, not the package's ``__init__``)."""
    graph: dict[str, set] = {}
    for package in ("harness", "analysis"):
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            pkg = ".".join(parts[:-1])
            deps = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = pkg.rsplit(".", node.level - 1)[0] if node.level > 1 else pkg
                        target = f"{base}.{node.module}" if node.module else base
                    else:
                        target = node.module or ""
                    if target.split(".")[0] in ("harness", "analysis"):
                        deps |= {f"{target}.{a.name}" for a in node.names}  # submodules, when they are
                        deps.add((target, tuple(a.name for a in node.names)))  # else the module itself
                elif isinstance(node, ast.Import):
                    deps |= {a.name for a in node.names if a.name.split(".")[0] in ("harness", "analysis")}
            graph[name] = deps
    def resolved(deps):
        out = {d for d in deps if isinstance(d, str) and d in graph}
        for d in deps:  # ``from pkg import name``: the package itself only when some name is not a submodule
            if isinstance(d, tuple) and d[0] in graph and any(f"{d[0]}.{n}" not in graph for n in d[1]):
                out.add(d[0])
        return out

    return {m: resolved(deps) - {m} for m, deps in graph.items()}


def test_the_import_graph_has_no_cycle_and_the_schema_imports_no_trainer():
    graph = import_graph()
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                pytest.fail("import cycle: " + " → ".join([*path, m, d]))
            if d not in state:
                visit(d, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    trainers = {"harness.train", "harness.stacked", "harness.runner", "harness.trainables"}
    assert not graph["harness.space"] & trainers
    assert not graph["harness.callbacks"] & {"harness.train", "harness.stacked", "harness.runner"}
    # the training room points down only: never at the Ray side, the driver or the analysis
    ray_side = {"harness.trainables", "harness.callbacks", "harness.progress", "harness.tracking", "harness.driver",
                "harness.tuning", "harness.cli", "harness.plan", "harness.space"}
    for m in ("harness.contract", "harness.train", "harness.stacked", "harness.runner", "harness.trial"):
        assert not graph[m] & ray_side and not any(d.startswith("analysis") for d in graph[m]), m


def test_training_settings_defaults_live_in_the_dataclass_and_the_schema_is_built_from_it():
    assert Training().settings() == TrainingSettings()
    for name in TrainingSettings.field_names():
        assert Training.model_fields[name].default == getattr(TrainingSettings(), name)
    with pytest.raises(ValueError, match="unknown setting 'epoch'"):
        TrainingSettings.from_dict({"epoch": 3})
    assert TrainingSettings.from_dict({"epochs": 3}).val_size == 5000  # an older record: the missing keys' defaults
    trial = Trial("convnet", "mnist", (0,), training={"epochs": 2})
    assert isinstance(trial.training, TrainingSettings) and Trial.from_config(trial.to_config()) == trial


def test_the_store_epoch_table_progress_and_tuning_metrics_come_from_the_record():
    assert list(EPOCH_METRICS) == [c for c in EPOCHS.names
                                   if c not in ("trial_id", "run_id", "architecture", "dataset", "seed", "stage",
                                                "reported_at")]
    assert set(EpochRecord.names(averaged=True)) <= set(EpochRecord.names(stored=True))
    # the table --verbose prints heads the record's column metrics, each also in every result Tune and W&B get
    assert EpochRecord.columns() == {"train_loss": "train loss", "val_acc": "val acc", "images_per_s": "img/s",
                                     "test_acc": "test acc"}
    assert set(EpochRecord.columns()) <= set(EpochRecord.names(shown=True))
    a = EpochRecord(epoch=1, train_loss=1.0, val_acc=0.5, images_per_s=100.0, num_params=7)
    b = EpochRecord(epoch=1, train_loss=3.0, val_acc=0.7, images_per_s=50.0, num_params=7, status="complete")
    line = summarise({0: a, 1: b})
    assert line["train_loss"] == 2.0 and line["images_per_s"] == 150.0 and line["status"] == "running"
    assert "test_acc" not in line  # not reported yet: absent, never NaN
    assert average([a, b])["val_acc"] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="unknown metric 'bogus'"):
        EpochRecord.from_dict({"epoch": 1, "bogus": 2})


def test_a_checkpoint_round_trips_and_is_strict(tmp_path):
    weights = {"w": torch.arange(3.0)}
    saved = Checkpoint(model_spec={"architecture": "convnet"}, best={4: {"state_dict": weights, "best_epoch": 2}},
                       trainer={"epoch": 3})
    back = Checkpoint.load(saved.to_bytes())
    assert back.trainer == {"epoch": 3} and torch.equal(back.best[4]["state_dict"]["w"], weights["w"])
    copy = Checkpoint.load(saved.for_seed(4, {"seeds": [4]}).to_bytes())
    assert copy.trainer is None and copy.seed_weights["best_epoch"] == 2
    torch.save({"version": 1, "model_spec": {}, "best": {}, "extra": 1}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="unknown key 'extra'"):
        Checkpoint.load(tmp_path / "x.pt")
    # the per-seed layout older stores hold is still read
    torch.save({"state_dict": weights, "best_epoch": 1, "model_spec": {"a": 1}, "trial": {"seeds": [2]}}, tmp_path / "old.pt")
    assert Checkpoint.load(tmp_path / "old.pt").best[2]["best_epoch"] == 1


# -- the seam, fed by hand ---------------------------------------------------------------------------------
SEAM = space_yaml(name="seam", architectures=["convnet"],
                  training={"seeds": 2, "epochs": 2, "val_size": 100, "train_limit": 200, "test_limit": 100})


class Reports:
    """What Tune hands the driver's callbacks for one trial: the config, the results, the latest checkpoint."""

    def __init__(self, trial: Trial, tune_id: str = "t0001"):
        self.config = {"trial": trial.to_config()}
        self.trial_id = tune_id
        self.last_result: dict = {}
        self.checkpoint = None
        self.error_file = None
        self._dir = tempfile.mkdtemp()

    def report(self, runner, records) -> dict:
        Checkpoint(model_spec=runner.model_spec, best=runner.best_weights(),
                   trainer=runner.state_dict()).save(Path(self._dir) / CHECKPOINT_FILE)
        self.checkpoint = tune.Checkpoint.from_directory(self._dir)
        self.last_result = {**summarise(records), "per_seed": per_seed_report(records), "hostname": "here"}
        return self.last_result


def feed(store: ResultsStore, trial: Trial, splits, *, poison: int | None = None) -> StoreCallback:
    callback = StoreCallback(store, "run-1", "seam", {"git_commit": "abc"})
    progress = ProgressCallback("seam", 1, trial.training.epochs, stream=open("/dev/null", "w"))
    runner = make_runner(trial, splits, "cpu")
    if poison is not None:  # that seed's weights made infinite: its loss turns non-finite in the first epoch
        with torch.no_grad():
            for weights in runner.params.values():
                weights[poison].fill_(math.inf)
    tune_trial = Reports(trial)
    progress.on_trial_start(0, [], tune_trial)
    for epoch, records in enumerate(runner.run(), start=1):
        result = tune_trial.report(runner, records)
        callback.on_trial_result(epoch, [], tune_trial, result)
        progress.on_trial_result(epoch, [], tune_trial, result)
        callback.on_checkpoint(epoch, [], tune_trial, tune_trial.checkpoint)
    callback.on_trial_complete(epoch, [], tune_trial)
    progress.on_trial_complete(epoch, [], tune_trial)
    assert progress.line().startswith("stbench: seam: 1/1 trials done, 0 running, 0 waiting; 2/2 epochs")
    return callback


@pytest.fixture(scope="module")
def seam_trial(mnist_root):
    trials = parse_space(SEAM).trials()
    stack = trials[0].with_seeds([t.seed for t in trials])
    return stack, load_splits(stack, mnist_root)


def test_the_store_callback_writes_each_seeds_epochs_trial_row_and_checkpoint(tmp_path, seam_trial):
    trial, splits = seam_trial
    store = ResultsStore.open(tmp_path / "r")
    feed(store, trial, splits)
    epochs, trials = store.epochs(), store.trials()
    assert sorted(zip(epochs.seed, epochs.epoch)) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert set(epochs.trial_id) == set(trial.ids.values()) and epochs[list(EPOCH_METRICS)].notna().all().all()
    assert sorted(trials.status) == ["complete", "complete"] and trials.test_acc.between(0, 1).all()
    assert (trials["stack"] == 2).all() and (trials.git_commit == "abc").all() and (trials.hostname == "here").all()
    for seed, seed_id in trial.ids.items():
        saved = Checkpoint.load(store.checkpoint_path(seed_id).read_bytes())
        assert Trial.from_config(saved.trial).seeds == (seed,) and saved.trainer is None
        assert saved.seed_weights["best_epoch"] == int(trials.set_index("seed").best_epoch[seed])
    assert trial.trial_id in store.resume_points()


def test_a_diverged_seed_is_stored_diverged_while_its_stack_mate_completes(tmp_path, seam_trial):
    trial, splits = seam_trial
    store = ResultsStore.open(tmp_path / "r")
    feed(store, trial, splits, poison=1)
    trials = store.trials().set_index("seed")
    assert trials.status[0] == "complete" and trials.status[1] == "diverged"
    assert store.epochs().groupby("seed").epoch.max().to_dict() == {0: 2, 1: 1}
