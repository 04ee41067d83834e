"""Seed stacking (harness/stacked.py): each stacked seed is the experiment the unstacked Trainer runs."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import epoch_records
from harness.contract import Checkpoint
from harness.data import ImageSplits
from harness.models import build_model
from harness.models.convnet import ConvNet
from harness.space import parse_space
from harness.stacked import StackedTrainer
from harness.train import Trainer, load_splits

REPO = Path(__file__).resolve().parent.parent
ARCHS = ["convnet", "stnet", "coordconv", "stcoordconv"]
SPACE = """
name: t
architectures: [convnet, stnet, coordconv, stcoordconv]
training: {epochs: 3, lr: 0.05, momentum: 0.5, loc_lr_mult: 0.5, val_size: 200, train_limit: 400, test_limit: 200}
datasets: {mnist: {}}
"""

pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop")  # affine_grid under vmap


@pytest.fixture(scope="module")
def trials():
    return {t.architecture: t for t in parse_space(SPACE).trials()}


@pytest.fixture(scope="module")
def splits(mnist_root, trials):
    return load_splits(trials["convnet"], mnist_root)


def without_dropout(module: nn.Module) -> nn.Module:
    """Dropout off in every ConvNet inside (the ST models' classifiers too), for a fixed computation."""
    for m in module.modules():
        if isinstance(m, ConvNet):
            m.dropout, m.conv2_drop = False, nn.Identity()
    return module


@pytest.mark.parametrize("arch", ARCHS)
def test_each_stacked_seed_starts_from_its_unstacked_weights_with_the_same_optimizer_groups(trials, splits, arch):
    stack = StackedTrainer(trials[arch].with_seeds([3, 0]), splits)
    for i, seed in enumerate([3, 0]):
        alone = Trainer(trials[arch].with_seeds([seed]), splits)
        expected = alone.model.state_dict()
        got = stack.seed_state_dict(i)
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)
        assert [(g["name"], g["lr"], [tuple(p.shape[1:]) for p in g["params"]]) for g in stack.optimizer.param_groups] \
            == [(g["name"], g["lr"], [tuple(p.shape) for p in g["params"]]) for g in alone.optimizer.param_groups]
    if arch.startswith("st"):
        assert stack.optimizer.param_groups[1]["lr"] == trials[arch].training.effective_loc_lr == 0.025


def cut(splits: ImageSplits, n: int, dtype=torch.float32) -> ImageSplits:
    """The first ``n`` images of each split, in ``dtype`` (float64: the exact run, slow on a CPU)."""
    return ImageSplits(train_x=splits.train_x[:n].to(dtype), train_y=splits.train_y[:n],
                       val_x=splits.val_x[:n].to(dtype), val_y=splits.val_y[:n],
                       test_x=splits.test_x[:n].to(dtype), test_y=splits.test_y[:n], classes=splits.classes)


LOSSES = ("train_loss", "val_loss", "train_eval_loss")


@pytest.mark.parametrize("arch", ARCHS)
def test_a_stacked_seeds_losses_agree_with_its_unstacked_run_to_float_tolerance(trials, splits, arch):
    """Dropout off, the Trainer's own data order. Stacking only reorders float32 arithmetic, so a stacked seed
    is as close to the exact (float64) run as the unstacked float32 run is: the bound is a small multiple of
    the unstacked float32 run's own error (its largest over the epochs and losses: rounding differences grow
    through training, so one value's error is a noisy scale), plus a few float32 roundings of the means."""
    seeds, data = [0, 1], cut(splits, 192)
    trial = trials[arch].with_training(lr=0.01, epochs=2)
    stack = StackedTrainer(trial.with_seeds(seeds), data)
    without_dropout(stack.base)
    stacked = epoch_records(stack)
    for seed in seeds:
        runs = {}
        for name, dtype in (("f32", torch.float32), ("f64", torch.float64)):
            data = cut(splits, 192, dtype)
            trainer = Trainer(trial.with_seeds([seed]), data)
            without_dropout(trainer.model).to(dtype)
            runs[name] = epoch_records(trainer)
        triples = [(s[seed][k], f32[k], f64[k]) for s, f32, f64 in zip(stacked, runs["f32"], runs["f64"]) for k in LOSSES]
        own_error = max(abs(f32 - f64) for _, f32, f64 in triples)  # this computation's float32 error level
        for s, f32, f64 in triples:
            bound = 4 * own_error + 8 * torch.finfo(torch.float32).eps * abs(f64)
            assert abs(s - f64) <= bound, (seed, s, f32, f64, own_error)


def test_stacked_and_unstacked_seeds_reach_statistically_equivalent_accuracy(trials, splits, mnist_root):
    """Dropout on (masks differ), 4 seeds each way: the mean test accuracies differ by less than three
    standard errors of the difference (plus one test image)."""
    trial = trials["convnet"].with_training(epochs=2, train_limit=1000)
    data = load_splits(trial, mnist_root)
    seeds = [0, 1, 2, 3]
    stacked = [m[s].test_acc for m in StackedTrainer(trial.with_seeds(seeds), data).run() for s in seeds
               if m[s].test_acc is not None]
    alone = [epoch_records(Trainer(trial.with_seeds([s]), data))[-1]["test_acc"] for s in seeds]
    assert len(stacked) == len(alone) == 4 and min(stacked + alone) > 0.3  # chance: 0.1
    se = math.sqrt(statistics.variance(stacked) / 4 + statistics.variance(alone) / 4)
    assert abs(statistics.mean(stacked) - statistics.mean(alone)) <= 3 * se + 1 / len(data.test_y)


def test_resuming_a_stack_mid_run_matches_an_uninterrupted_run(trials, splits, tmp_path):
    seeds = [0, 1]
    trial = trials["stnet"].with_seeds(seeds)  # dropout on: the RNG state travels with the checkpoint
    straight = epoch_records(StackedTrainer(trial, splits))
    first = StackedTrainer(trial, splits)
    head = epoch_records(first, epochs=1)[0]
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = StackedTrainer(trial, splits)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    tail = epoch_records(resumed)
    assert [sorted(m) for m in [head, *tail]] == [seeds] * 3
    assert [m[0]["epoch"] for m in tail] == [2, 3]
    for seed in seeds:
        assert [m[seed]["val_loss"] for m in [head, *tail]] == pytest.approx(
            [m[seed]["val_loss"] for m in straight], rel=1e-6)
        assert tail[-1][seed]["test_acc"] == straight[-1][seed]["test_acc"]
    with pytest.raises(ValueError, match="seeds"):
        StackedTrainer(trial.with_seeds([0, 2]), splits).load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))


def test_a_diverging_seed_stops_alone_and_the_others_are_untouched(trials, splits):
    """Seed 1's weights poisoned with inf: it reports ``diverged`` once and then nothing; seeds 0 and 2 train
    exactly as in a clean stack (no NaN leaks through the batched kernels)."""
    trial = trials["stnet"].with_seeds([0, 1, 2])
    clean = epoch_records(StackedTrainer(trial, splits))
    poisoned = StackedTrainer(trial, splits)
    with torch.no_grad():
        poisoned.params["classifier.fc2.weight"][1].fill_(math.inf)
    reports = epoch_records(poisoned)
    assert [sorted(r) for r in reports] == [[0, 1, 2], [0, 2], [0, 2]]
    assert reports[0][1]["status"] == "diverged" and reports[0][1]["diverged_epoch"] == 1
    assert not math.isfinite(reports[0][1]["train_loss"])
    assert poisoned.status == ["complete", "diverged", "complete"]
    for seed in (0, 2):
        assert [r[seed]["val_loss"] for r in reports] == [c[seed]["val_loss"] for c in clean]
        assert reports[-1][seed]["test_acc"] == clean[-1][seed]["test_acc"]
    resumed = StackedTrainer(trial, splits)  # after the end, a restart says the result again
    resumed.load_state_dict(poisoned.state_dict())
    again = epoch_records(resumed)
    assert len(again) == 1 and again[0][1]["status"] == "diverged" and again[0][2]["test_acc"] == clean[-1][2]["test_acc"]


def test_best_validation_weights_load_into_the_unstacked_model(trials, splits):
    trial = trials["stcoordconv"]
    stack = StackedTrainer(trial.with_seeds([5, 6]), splits)
    final = epoch_records(stack)[-1]
    for i, seed in enumerate([5, 6]):
        model = build_model("stcoordconv", splits.in_shape, splits.num_classes)
        model.load_state_dict(stack.best_weights()[seed]["state_dict"])
        evaluator = Trainer(trial.with_seeds([seed]), splits)
        evaluator.model = model
        loss, acc = evaluator.evaluate(splits.test_x, splits.test_y)
        assert acc == final[seed]["test_acc"] and loss == pytest.approx(final[seed]["test_loss"], rel=1e-5)
        assert final[seed]["best_epoch"] == stack.best_epoch[i]


def test_metrics_have_the_trainers_keys(trials, splits):
    trial = trials["convnet"].with_training(epochs=1)
    alone = epoch_records(Trainer(trial, splits))[-1]
    stacked = epoch_records(StackedTrainer(trial.with_seeds([0, 1]), splits))[-1]
    assert stacked[0].keys() == stacked[1].keys() == alone.keys()
    for switch in ("compile", "channels_last"):
        with pytest.raises(ValueError, match=switch):
            StackedTrainer(trial.with_training(**{switch: True}).with_seeds([0, 1]), splits)


def test_trainer_models_data_and_stacking_import_without_ray_optuna_wandb_or_pydantic(mnist_root):
    """The GPU check runs on a machine with only PyTorch and the scientific stack."""
    code = textwrap.dedent(f"""
        import sys
        BLOCKED = {{"ray", "optuna", "wandb", "pydantic"}}
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked: {{name}}")
        sys.meta_path.insert(0, Block())
        import harness.models, harness.data, harness.train, harness.stacked
        sys.argv = ["gpu_check", "--help"]
        import runpy
        try:
            runpy.run_path({str(REPO / "benchmarks" / "gpu_check.py")!r}, run_name="__main__")
        except SystemExit as e:
            assert e.code == 0, e.code
        assert not BLOCKED & set(m.split(".")[0] for m in sys.modules), sorted(BLOCKED & set(sys.modules))
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


@pytest.mark.slow
def test_a_stacked_ray_run_stores_one_row_per_seed_under_its_own_id(ray_local, tmp_path, mnist_root):
    """stack: 2 with 3 seeds: Tune runs a stack of seeds 0, 1 and a one-seed trial of seed 2; the store sees
    three seeds, each under the id it has unstacked, with its own epochs and best weights."""
    from conftest import space_yaml
    from harness.cli import main
    from harness.store import ResultsStore

    space = tmp_path / "stacked.yaml"
    space.write_text(space_yaml(name="stacked", architectures=["stnet"],
                                training={"seeds": 3, "stack": 2, "epochs": 2, "val_size": 200, "train_limit": 300,
                                          "test_limit": 200}))
    results = tmp_path / "results"
    assert main(["--space", str(space), "--results-dir", str(results), "--data-dir", str(mnist_root), "--quiet"]) == 0
    store = ResultsStore.open(results, create=False)
    trials, epochs = store.trials(), store.epochs()
    expected = {t.seed: t.trial_id for t in parse_space(space.read_text()).trials()}
    assert dict(zip(trials.seed, trials.trial_id)) == expected and set(trials.status) == {"complete"}
    assert sorted(trials["stack"]) == [1, 2, 2]
    assert len(epochs) == 6 and not epochs.duplicated(["trial_id", "epoch"]).any()
    assert set(epochs.trial_id) == set(expected.values())
    for tid in expected.values():  # each seed's best weights load into an unstacked model
        saved = Checkpoint.load(store.checkpoint_path(tid))
        model = build_model("stnet", (1, 28, 28), 10)
        model.load_state_dict(saved.seed_weights["state_dict"])
    assert trials.test_acc.between(0, 1).all() and trials.test_acc.nunique() > 1  # three different seeds


def test_a_space_that_stacks_with_a_switch_vmap_cannot_run_fails_before_training():
    from harness.errors import UserError

    base = "name: t\narchitectures: [convnet]\ndatasets: {mnist: {}}\n"
    with pytest.raises(UserError, match="stack: 2 cannot be combined with compile or channels_last"):
        parse_space(base + "training: {stack: 2, channels_last: true}\n")
    space = parse_space(base + "training: {compile: true}\n")  # the device's default stack is not applied then
    assert space.stack_sizes("cuda") == {"mnist": 1}
    assert parse_space(base).stack_sizes("cuda") == {"mnist": 5} and parse_space(base).stack_sizes("cpu") == {"mnist": 1}
