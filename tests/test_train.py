import math

import pytest
import torch

from conftest import epoch_records, space_yaml
from harness.space import parse_space
from harness.train import Trainer, build_optimizer, load_splits

pytestmark = pytest.mark.numerics  # same seed, same numbers; resumed equals uninterrupted
SPACE = space_yaml(name="t", architectures=["convnet", "stnet", "coordconv", "stcoordconv"],
                   training={"seeds": None, "epochs": 3, "val_size": 200, "train_limit": 400, "test_limit": 200})


@pytest.fixture(scope="module")
def trials():
    return {t.architecture: t for t in parse_space(SPACE).trials()}


@pytest.fixture(scope="module")
def splits(mnist_root, trials):
    return load_splits(trials["convnet"], mnist_root)


@pytest.mark.parametrize("arch", ["convnet", "stnet", "coordconv", "stcoordconv"])
def test_same_seed_gives_the_same_metrics(trials, splits, arch):
    a = epoch_records(Trainer(trials[arch], splits))
    b = epoch_records(Trainer(trials[arch], splits))
    assert [m["val_loss"] for m in a] == [m["val_loss"] for m in b]
    assert a[-1]["test_acc"] == b[-1]["test_acc"]
    assert [m["epoch"] for m in a] == [1, 2, 3] and a[-1]["status"] == "complete"
    assert all(m["train_time_s"] > 0 and m["images_per_s"] > 0 for m in a)
    assert all(0 <= m["train_eval_acc"] <= 1 and m["train_eval_loss"] > 0 for m in a)


def test_learns(trials, splits):
    metrics = epoch_records(Trainer(trials["convnet"], splits))
    assert metrics[-1]["val_acc"] > 0.3  # chance is 0.1
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]


def test_resuming_from_a_checkpoint_matches_an_uninterrupted_run(trials, splits, tmp_path):
    trial = trials["stnet"]
    straight = epoch_records(Trainer(trial, splits))
    first = Trainer(trial, splits)
    head = epoch_records(first, epochs=1)[0]
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = Trainer(trial, splits)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    tail = epoch_records(resumed)
    assert [m["epoch"] for m in tail] == [2, 3]
    assert [m["val_loss"] for m in [head, *tail]] == pytest.approx([m["val_loss"] for m in straight], rel=1e-6)
    assert tail[-1]["test_acc"] == straight[-1]["test_acc"]


def test_test_metrics_come_from_the_best_validation_epoch(trials, splits):
    trainer = Trainer(trials["convnet"], splits)
    metrics = epoch_records(trainer)
    best = max(metrics, key=lambda m: m["val_acc"])
    assert metrics[-1]["best_epoch"] == best["epoch"] and metrics[-1]["best_val_acc"] == best["val_acc"]
    trainer.model.load_state_dict(trainer.best_weights()[trainer.seed]["state_dict"])
    assert trainer.evaluate(splits.test_x, splits.test_y)[1] == metrics[-1]["test_acc"]


def test_divergence_ends_the_trial_with_status_diverged(trials, splits):
    trial = trials["convnet"].with_training(lr=1e6, momentum=0.9)
    metrics = epoch_records(Trainer(trial, splits))
    assert metrics[-1]["status"] == "diverged" and metrics[-1]["diverged_epoch"] == len(metrics)
    assert not math.isfinite(metrics[-1]["train_loss"])


@pytest.mark.parametrize("extra,expected", [({}, 0.05), ({"loc_lr": 0.001}, 0.001), ({"loc_lr_mult": 0.1}, 0.005)])
def test_localization_network_gets_its_own_learning_rate(trials, splits, extra, expected):
    trial = trials["stnet"].with_training(**extra)
    trainer = Trainer(trial, splits)
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert groups["main"]["lr"] == 0.05 and groups["localization"]["lr"] == pytest.approx(expected)
    assert {id(p) for p in groups["localization"]["params"]} == {id(p) for p in trainer.model.stn.parameters()}
    assert len(build_optimizer(Trainer(trials["convnet"], splits).model, trial.training).param_groups) == 1


def test_a_reused_trial_process_loads_the_same_splits_once(mnist_root):
    from harness.trial import Trial

    base = {"val_size": 100, "split_seed": 0, "train_limit": 200, "test_limit": 50}
    a = load_splits(Trial("convnet", "mnist", (0,), training=base), mnist_root)
    b = load_splits(Trial("stnet", "mnist", (3,), training=base), mnist_root)  # another cell, the same data
    c = load_splits(Trial("convnet", "mnist", (0,), training={**base, "train_limit": 300}), mnist_root)
    assert a is b and c is not a and len(c.train_y) == 300 and len(a.train_y) == 200
