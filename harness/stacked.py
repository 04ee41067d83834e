"""Seed stacking: K seeds of one cell trained at once as one vmapped model (``torch.func``).

Small models are bound by per-step Python and kernel launches, not arithmetic, so K seeds stepped as one
model (each weight tensor gains a leading seed dimension; ``vmap`` turns the K convolutions into one
grouped convolution) cost much less than K separate steps on a GPU and somewhat less on a CPU.

Each seed stays its own experiment, exactly as ``harness.train.Trainer`` runs it:

* initialisation: seed ``s``'s model is built after ``seed_everything(s)``, as the Trainer builds it, so
  stacked and unstacked seed ``s`` start from the same weights;
* data order: seed ``s`` reads ``splits.train_batches(batch, seed=shuffle_seed(s, epoch))``, the Trainer's order;
* dropout: ``vmap(..., randomness="different")`` draws each seed's masks independently;
* optimizer: ``build_optimizer`` over the stacked tensors, so the groups (the localization network's at
  its own learning rate) are the Trainer's; SGD and Adam are element-wise, so each seed's slice of the
  state is its own optimizer state;
* metrics: one dict per seed with the Trainer's keys; best-validation weights per seed, as a plain
  ``state_dict`` of the unstacked model; a seed whose training loss turns non-finite reports
  ``diverged`` once and then stops reporting while the others go on (its gradient is masked off).

Stacking changes the floating-point order of the batched kernels (rounding-level differences), so the
``stack`` setting is a fast-path switch like ``channels_last``. ``train_time_s`` of a seed is its share of
the stack's time (the epoch's wall time / seeds still training), ``images_per_s`` follows from it: the
cost per seed, comparable with an unstacked trial's.

Importable without Ray, Optuna, W&B or pydantic (the GPU check runs it on a bare PyTorch machine).
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from .contract import EpochRecord
from .models import build_model, count_parameters, localization_parameters
from .train import EVAL_BATCH, RunnerBase, build_optimizer, seed_everything, shuffle_seed
from .trial import Trial


class _StackedParameters(nn.Module):
    """The stacked tensors as parameters of a module shaped like the model, so ``build_optimizer`` sees the
    same groups (and the same order within them) as for one unstacked model."""

    def __init__(self, stacked: dict[str, torch.Tensor], loc_names: set[str]):
        super().__init__()
        self.names = list(stacked)
        self.tensors = nn.ParameterList([nn.Parameter(t.detach()) for t in stacked.values()])
        self.loc_names = loc_names

    def as_dict(self) -> dict[str, nn.Parameter]:
        return dict(zip(self.names, self.tensors))

    def localization_parameters(self):
        return [p for n, p in zip(self.names, self.tensors) if n in self.loc_names]


class StackedTrainer(RunnerBase):
    """Train the seeds of ``trial`` (a ``Trial`` of K seeds, one cell) as one vmapped model; ``run()`` yields
    ``{seed: EpochRecord}`` per epoch (``RunnerBase``)."""

    def __init__(self, trial: Trial, splits, device: torch.device | str = "cpu", test: bool = True):
        super().__init__(trial, splits, device, test)
        if not self.seeds:
            raise ValueError("seeds: a stack needs at least one seed")
        for switch in ("compile", "channels_last"):  # neither works under vmap (torch 2.15)
            if getattr(self.training, switch):
                raise ValueError(f"{switch}: not supported together with stack > 1; use one or the other")
        models = []
        for seed in self.seeds:  # exactly the Trainer's construction, seed by seed
            seed_everything(seed)
            models.append(build_model(trial.architecture, splits.in_shape, splits.num_classes,
                                      **trial.model_options).to(self.device))
        loc_ids = {id(p) for p in localization_parameters(models[0])}
        loc_names = {n for n, p in models[0].named_parameters() if id(p) in loc_ids}
        params, buffers = stack_module_state(models)
        self.num_params = count_parameters(models[0])
        # the module whose code runs: a weightless copy; functional_call supplies each seed's tensors
        self.base = copy.deepcopy(models[0]).to("meta")
        del models
        self.holder = _StackedParameters(params, loc_names)
        self.buffers = {n: b.to(self.device) for n, b in buffers.items()}
        self.optimizer = build_optimizer(self.holder, self.training)
        self._train_fn = vmap(self._one, in_dims=(0, 0, 0), randomness="different")
        self._eval_fn = vmap(self._one, in_dims=(0, 0, None), randomness="different")
        self._loss = vmap(self.task.loss)
        self._loss_sum = vmap(lambda out, y: self.task.loss(out, y, reduction="sum"), in_dims=(0, None))
        self._correct = vmap(self.task.correct)
        self._correct_eval = vmap(self.task.correct, in_dims=(0, None))

    # -- the vmapped model -----------------------------------------------------------------------
    @property
    def params(self) -> dict[str, torch.Tensor]:
        return self.holder.as_dict()

    def _one(self, params, buffers, x):
        return functional_call(self.base, (params, buffers), (x,))

    def _forward(self, fn, params, x) -> torch.Tensor:
        if self.bf16:  # the loss and the metrics stay in float32, as in the Trainer
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                return fn(params, self.buffers, x).float()
        return fn(params, self.buffers, x)

    def seed_state_dict(self, i: int, params: dict | None = None) -> dict[str, torch.Tensor]:
        """Seed ``i``'s weights (index into ``seeds``) as a state_dict of the unstacked model."""
        params = self.params if params is None else params
        return {**{n: p[i].detach().clone() for n, p in params.items()},
                **{n: b[i].detach().clone() for n, b in self.buffers.items()}}

    _weights = seed_state_dict

    def _stack_states(self, states: list[dict]) -> dict[str, torch.Tensor]:
        return {n: torch.stack([s[n] for s in states]).to(self.device) for n in self.holder.names}

    # -- checkpoint state ----------------------------------------------------------------------
    def _model_state(self) -> dict:
        return {"params": {n: p.detach().clone() for n, p in self.params.items()},
                "buffers": {n: b.clone() for n, b in self.buffers.items()},
                "optimizer": self.optimizer.state_dict()}

    def _load_model_state(self, state: dict) -> None:
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(state["params"][n])
        self.buffers = {n: b.to(self.device) for n, b in state["buffers"].items()}
        self.optimizer.load_state_dict(state["optimizer"])

    # -- the loop ------------------------------------------------------------------------------
    def _test(self, indices: list[int]) -> dict[int, tuple[float, float, float]]:
        best = [self.best_state[i] if self.best_state[i] is not None else self.seed_state_dict(i)
                for i in range(len(self.seeds))]
        t0 = time.perf_counter()
        losses, accs = self._evaluate(self.splits.eval_batches("test", EVAL_BATCH), self._stack_states(best))
        elapsed = (time.perf_counter() - t0) / len(self.seeds)
        return {i: (losses[i], accs[i], elapsed) for i in indices}

    def _epoch(self, epoch: int, active: list[int]) -> dict[int, EpochRecord]:
        k, n, batch = len(self.seeds), self.splits.n_train, self.training.batch_size
        streams = [self.splits.train_batches(batch, seed=shuffle_seed(s, epoch)) for s in self.seeds]
        mask = torch.zeros(k, device=self.device)
        mask[active] = 1.0
        loss_sum = torch.zeros(k, device=self.device)
        correct = torch.zeros(k, device=self.device, dtype=torch.long)
        self.base.train()
        params = self.params
        t0 = time.perf_counter()
        for pairs in zip(*streams):
            xb = torch.stack([x for x, _ in pairs])
            yb = torch.stack([y for _, y in pairs])
            out = self._forward(self._train_fn, params, xb)
            losses = self._loss(out, yb)  # (K,): each seed's mean loss on its own batch
            self.optimizer.zero_grad(set_to_none=True)
            # the sum's gradient w.r.t. seed k's weights is seed k's own; finished seeds get none
            torch.where(mask > 0, losses, torch.zeros_like(losses)).sum().backward()
            self.optimizer.step()
            loss_sum += losses.detach() * yb.shape[1]
            correct += self._correct(out.detach(), yb)
        train_loss = [v / n for v in loss_sum.tolist()]  # the epoch's one host sync
        train_acc = [c / n for c in correct.tolist()]
        train_time = (time.perf_counter() - t0) / len(active)  # each seed's share of the stack's time

        t0 = time.perf_counter()
        val_loss, val_acc = self._evaluate(self.splits.eval_batches("val", EVAL_BATCH), params)
        train_eval_loss, train_eval_acc = self._evaluate(self.splits.eval_batches("train_eval", EVAL_BATCH), params)
        eval_time = (time.perf_counter() - t0) / len(active)
        return {i: self._record(i, epoch, (train_loss[i], train_acc[i]), (val_loss[i], val_acc[i]),
                                (train_eval_loss[i], train_eval_acc[i]), train_time, eval_time) for i in active}

    @torch.inference_mode()
    def _evaluate(self, batches, params) -> tuple[list[float], list[float]]:
        """Each seed's mean loss and accuracy over shared (inputs, targets) batches; one host sync."""
        self.base.eval()
        k = len(self.seeds)
        loss_sum = torch.zeros(k, device=self.device)
        correct = torch.zeros(k, device=self.device, dtype=torch.long)
        count = 0
        for xb, target in batches:
            out = self._forward(self._eval_fn, params, xb)
            loss_sum += self._loss_sum(out, target)
            correct += self._correct_eval(out, target)
            count += len(target)
        return [v / count for v in loss_sum.tolist()], [c / count for c in correct.tolist()]
