"""The fast path's correctness (never its speed): the same seed gives the same results with it on and off.

"Off" is ``SyncingTrainer`` below, a plain loop that keeps the data on the host, moves each batch to the
device and reads the loss and the correct count back after every batch, as the reference loop does.
"""

import copy
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from conftest import epoch_records, space_yaml
from harness.errors import UserError
from harness.space import load_space, parse_space
from harness.trial import IDENTITY_DEFAULTS as FAST_PATH_DEFAULTS
from harness.train import Trainer, load_splits

FAST = {"name": "t", "architectures": ["convnet", "stnet", "coordconv", "stcoordconv"],
        "training": {"seeds": None, "val_size": 200, "train_limit": 320, "test_limit": 200}}
SPACE = space_yaml(FAST)
pytestmark = pytest.mark.numerics
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class SyncingTrainer(Trainer):
    """The fast path off: host-resident data, a copy to the device and a host sync per batch."""

    def _epoch(self, epoch: int, active: list[int]) -> dict:
        x, y = self.host["train_x"], self.host["train_y"]
        n, batch = len(y), self.training.batch_size
        shuffle = torch.Generator().manual_seed(self.seed * 100_003 + epoch)  # the trainer's order
        order = torch.randperm(n, generator=shuffle)
        loss_sum, correct = 0.0, 0
        self.model.train()
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            xb, yb = x[idx].to(self.device), y[idx].to(self.device)
            logits = self.model(xb)
            loss = F.cross_entropy(logits, yb)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum().item())
        val = self.evaluate(self.host["val_x"], self.host["val_y"])
        return {0: self._record(0, epoch, (loss_sum / n, correct / n), val, (math.nan, math.nan), 1.0, 0.0)}

    @torch.inference_mode()
    def evaluate(self, x, y):
        self.model.eval()
        loss_sum, correct = 0.0, 0
        for start in range(0, len(y), 64):
            logits = self.model(x[start:start + 64].to(self.device))
            target = y[start:start + 64].to(self.device)
            loss_sum += F.cross_entropy(logits, target, reduction="sum").item()
            correct += int((logits.argmax(1) == target).sum().item())
        return loss_sum / len(y), correct / len(y)

    def _test(self, indices):
        self.model.load_state_dict(self.best_state[0])
        test_loss, test_acc = self.evaluate(self.host["test_x"], self.host["test_y"])
        return {0: (test_loss, test_acc, 0.0)}


@pytest.fixture(scope="module")
def trials():
    return {t.architecture: t for t in parse_space(SPACE).trials()}


@pytest.fixture(scope="module")
def splits(mnist_root, trials):
    return load_splits(trials["convnet"], mnist_root)


def with_switches(trial: dict, **switches) -> dict:
    return trial.with_training(**switches)


def run_syncing(trial, splits, device):
    trainer = SyncingTrainer(trial, splits.to(device), device)
    trainer.host = {k: getattr(splits, k).cpu() for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
    return epoch_records(trainer)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ["convnet", "stnet", "coordconv", "stcoordconv"])
def test_same_seed_gives_the_same_accuracy_with_the_fast_path_on_and_off(trials, splits, arch, device):
    fast = epoch_records(Trainer(trials[arch], splits.to(device), device))
    slow = run_syncing(trials[arch], splits, device)
    # The same kernels on the same numbers: logits, hence accuracies, are equal. Only the loss sums differ: a
    # float32 running sum on the device against Python floats. A sum of n positive float32 terms is off by at
    # most n·u relatively (u = 2^-24), n here at most the number of images summed.
    tol = dict(abs=1e-9) if device == "cpu" else dict(abs=0.02)  # CUDA kernels (grid_sample backward) are not deterministic
    n = max(len(splits.train_y), len(splits.val_y))
    loss_rel = n * torch.finfo(torch.float32).eps / 2
    for f, s in zip(fast, slow, strict=True):
        assert f["train_loss"] == pytest.approx(s["train_loss"], rel=loss_rel)
        assert f["val_loss"] == pytest.approx(s["val_loss"], rel=loss_rel)
        assert f["train_acc"] == pytest.approx(s["train_acc"], **tol)
        assert f["val_acc"] == pytest.approx(s["val_acc"], **tol)
    assert fast[-1]["test_acc"] == pytest.approx(slow[-1]["test_acc"], **tol)


def test_with_every_switch_off_the_forward_is_the_model_itself(trials, splits):
    trainer = Trainer(trials["stcoordconv"], splits)
    assert not trainer.bf16 and not trainer.channels_last
    trainer.model.eval()
    x = splits.val_x[:32]
    assert torch.equal(trainer._forward(x), trainer.model(x))


@pytest.mark.parametrize("arch", ["convnet", "stnet", "coordconv", "stcoordconv"])
def test_channels_last_changes_only_rounding(trials, splits, arch):
    plain = Trainer(trials[arch], splits)
    cl = Trainer(with_switches(trials[arch], channels_last=True), splits)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in cl.model.parameters() if p.dim() == 4)
    in_optimizer = {id(p) for g in cl.optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in cl.model.parameters()}  # converted before the optimizer was built
    for a, b in zip(plain.model.state_dict().values(), cl.model.state_dict().values()):
        assert torch.equal(a, b)  # the same initial weights
    # one step from the same weights: each float32 gradient against a float64 reference of the same model.
    # Channels-last only reorders float32 sums, so its error must be of the order of the plain model's own
    # float32 error, whatever that is on this CPU (AVX-512 and AVX2 kernels round differently). For the STN's
    # last layer that error is large (~40% of the norm at the identity init: the gradient through grid_sample
    # is a sum of cancelling terms), so a fixed bound would only fit one CPU. Eval mode: no dropout, whose
    # masks the float64 copy would not share.
    x, y = splits.train_x[:64], splits.train_y[:64]
    reference = copy.deepcopy(plain.model).double()
    for model in (plain.model, cl.model, reference):
        model.eval()
    F.cross_entropy(plain._forward(x), y).backward()
    F.cross_entropy(cl._forward(x), y).backward()
    F.cross_entropy(reference(x.double()), y).backward()
    u = torch.finfo(torch.float32).eps / 2
    for (name, p), q, r in zip(plain.model.named_parameters(), cl.model.parameters(), reference.parameters()):
        err_plain = (p.grad.double() - r.grad).norm()
        err_cl = (q.grad.double() - r.grad).norm()
        floor = 16 * u * r.grad.norm()  # a gradient float32 gets exactly right still rounds when stored
        assert err_cl <= 3 * err_plain + floor, (name, err_cl.item(), err_plain.item())
        assert (p.grad - q.grad).double().norm() <= 4 * err_plain + floor, name
    # whole runs (fresh trainers: each seeds the RNG when built): rounding differences grow over training
    a = epoch_records(Trainer(trials[arch], splits))
    b = epoch_records(Trainer(with_switches(trials[arch], channels_last=True), splits))
    assert [m["train_loss"] for m in b] == pytest.approx([m["train_loss"] for m in a], rel=0.01)
    assert b[-1]["val_acc"] == pytest.approx(a[-1]["val_acc"], abs=0.05)


@pytest.mark.parametrize("arch", ["convnet", "stnet", "coordconv", "stcoordconv"])
def test_bf16_autocast_keeps_weights_loss_and_metrics_in_float32(trials, splits, arch):
    trainer = Trainer(with_switches(trials[arch], precision="bf16"), splits)
    assert trainer.bf16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert trainer.model(splits.train_x[:8]).dtype == torch.bfloat16  # the model does run in bf16 ...
    assert trainer._forward(splits.train_x[:8]).dtype == torch.float32  # ... and hands float32 logits to the loss
    fp32 = epoch_records(Trainer(trials[arch], splits))
    bf16 = epoch_records(Trainer(with_switches(trials[arch], precision="bf16"), splits))
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert bf16[-1]["status"] == "complete"
    # bf16 keeps 8 significant bits (unit roundoff 2^-8 ≈ 0.4%); over two short epochs the loss stays within a
    # few units of it, on AVX-512-BF16 and on AVX2 (where bf16 is emulated) alike
    assert [m["train_loss"] for m in bf16] == pytest.approx([m["train_loss"] for m in fp32], rel=5 * 2**-8)
    assert bf16[-1]["val_acc"] == pytest.approx(fp32[-1]["val_acc"], abs=0.1)


def test_compile_wrapper_keeps_the_state_dict_keys(trials, splits):
    """Fast half: the compile switch wraps the model without renaming its weights (nothing is compiled yet:
    compiling happens on the first call, which the slow test below makes)."""
    compiled = Trainer(with_switches(trials["convnet"], compile=True), splits)
    plain = Trainer(trials["convnet"], splits)
    assert compiled.model.state_dict().keys() == plain.model.state_dict().keys()
    plain.load_state_dict(compiled.state_dict())


@pytest.mark.slow
def test_compile_gives_the_same_accuracy_and_checkpoints_loadable_without_it(trials, splits):
    """Slow: compiling takes 10-20 s on 2 CPU cores."""
    a = epoch_records(Trainer(trials["convnet"], splits))
    compiled = Trainer(with_switches(trials["convnet"], compile=True), splits)
    b = epoch_records(compiled)  # the compiled model is called: trained and evaluated
    assert b[-1]["val_acc"] == pytest.approx(a[-1]["val_acc"], abs=0.05)
    assert b[-1]["train_loss"] == pytest.approx(a[-1]["train_loss"], rel=0.1)
    plain = Trainer(trials["convnet"], splits)  # a checkpoint of the trained compiled model serves the plain one
    plain.load_state_dict(compiled.state_dict())
    for model in (plain.model, compiled.model):
        model.eval()
    x = splits.val_x[:32]
    with torch.no_grad():
        # the same weights: logits equal up to float32 rounding (~1e-6); wrong weights would differ by O(1)
        torch.testing.assert_close(plain.model(x), compiled._forward(x), rtol=0, atol=1e-3)


def test_switches_default_off_and_leave_trial_identity_alone():
    for name in ("reference", "quick", "tiny"):
        space, _ = load_space(name)
        for dataset in space.datasets:
            training = space.training_for(dataset).model_dump()
            assert {k: training[k] for k in FAST_PATH_DEFAULTS} == FAST_PATH_DEFAULTS, (name, dataset)
    trial = parse_space(SPACE).trials()[0]
    older = replace(trial, training={k: v for k, v in trial.training.as_dict().items() if k not in (*FAST_PATH_DEFAULTS, "stack")})
    assert older.trial_id == trial.trial_id  # ids from before the switches (and stacking) existed still match
    assert with_switches(trial, precision="bf16").trial_id != trial.trial_id
    assert with_switches(trial, channels_last=True).trial_id != trial.trial_id
    assert with_switches(trial, stack=4).trial_id == trial.trial_id  # how seeds are grouped is not identity
    with pytest.raises(UserError, match="training.precision: 'fp16' is not allowed; allowed: fp32, bf16"):
        parse_space(space_yaml(FAST, training={"precision": "fp16"}))
