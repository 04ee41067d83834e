"""What the trained weights show: confusion matrices, spatial-transformer outputs, misclassified images.

These need the best-validation checkpoint that the store keeps for each trial
(``checkpoints/<trial_id>.pt``, a ``harness.contract.Checkpoint`` of one seed)
and the dataset's test split, rebuilt from the trial's own config so every model
is judged on exactly the images its test accuracy was measured on. Anything
missing (data folder, checkpoint, an architecture this code no longer knows) is
skipped with a note, never an exception, so a report always gets written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from harness.contract import Checkpoint, TrainingSettings
from harness.data import DATA_DIR_ENV, DATASETS
from harness.errors import UserError
from harness.models import build_model
from harness.trial import Trial

from .load import Results

EVAL_BATCH = 1000


@dataclass
class Confusion:
    dataset: str
    architecture: str
    matrix: np.ndarray  # counts, rows = true class, columns = predicted class
    classes: list[str]
    trials: int  # checkpoints summed


@dataclass
class TransformExamples:
    dataset: str
    architecture: str
    seed: int
    inputs: np.ndarray  # (n, C, H, W), normalised as the model sees them
    outputs: np.ndarray  # the spatial transformer's output for the same images


@dataclass
class Misclassified:
    dataset: str
    architecture: str
    seed: int
    images: np.ndarray
    true: np.ndarray
    predicted: np.ndarray
    classes: list[str]
    wrong: int  # misclassified test images in total
    total: int


@dataclass
class Inspection:
    confusions: list[Confusion] = field(default_factory=list)
    transforms: list[TransformExamples] = field(default_factory=list)
    misclassified: list[Misclassified] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, Checkpoint]:
    """The model of a stored checkpoint (one seed's best weights), in eval mode on the CPU, and the checkpoint."""
    saved = Checkpoint.load(Path(path).read_bytes())
    spec = saved.model_spec
    model = build_model(spec["architecture"], tuple(spec["in_shape"]), spec["num_classes"], **spec.get("model_options", {}))
    model.load_state_dict(saved.seed_weights["state_dict"])
    return model.eval(), saved


@torch.inference_mode()
def predict(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    return torch.cat([model(x[i:i + EVAL_BATCH]).argmax(1) for i in range(0, len(x), EVAL_BATCH)]).numpy()


def confusion_counts(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(true * num_classes + predicted, minlength=num_classes ** 2).reshape(num_classes, num_classes)


class _TestSets:
    """Test splits rebuilt from trial configs (protocol included: the split each trial was evaluated on), loaded
    once per distinct set of split settings."""

    def __init__(self, data_dir: Path, dataset):
        self.data_dir = data_dir
        self.dataset = dataset
        self.cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, training: TrainingSettings) -> tuple[torch.Tensor, torch.Tensor]:
        options = training.split_options()
        key = tuple(options.values())
        if key not in self.cache:
            splits = self.dataset.load(self.data_dir, **options)
            self.cache[key] = (splits.test_x, splits.test_y)
        return self.cache[key]


def inspect_checkpoints(results: Results, data_dir: str | Path, n_transform: int = 12, n_misclassified: int = 16,
                        cache_dir: Path | None = None) -> Inspection:
    """Evaluate every complete trial's checkpoint on its test split (``cache_dir``: where generated datasets'
    images are kept, e.g. the cache the run recorded, so they are read back rather than generated again).

    Confusion matrices sum all seeds of an architecture; the transformer grid and
    the misclassified examples come from one representative checkpoint per
    architecture (the lowest seed), shown on the same first test images.
    """
    out = Inspection()
    data_dir = Path(data_dir)
    done = results.trials[results.trials["status"] == "complete"]
    if done.empty:
        out.notes.append("no complete trials yet, so no checkpoints to inspect")
        return out
    for dataset, trials in done.groupby("dataset"):
        if not _dataset_ready(dataset, _dataset(dataset, cache_dir), data_dir, out.notes):
            continue
        tests = _TestSets(data_dir, _dataset(dataset, cache_dir))
        counts: dict[str, Confusion] = {}
        missing = []
        for row in trials.sort_values("seed").itertuples():
            path = results.checkpoint_path(row.trial_id)
            if not path.is_file():
                missing.append(f"{row.architecture}/seed {row.seed}")
                continue
            try:
                model, saved = load_checkpoint(path)
                x, y = tests.get(Trial.from_config(saved.trial).training)
            except Exception as e:  # a corrupt file or an architecture this code no longer builds: note it, go on
                out.notes.append(f"{dataset}: checkpoint of {row.architecture}/seed {row.seed} ({path.name}) could not "
                                 f"be evaluated: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                continue
            classes = list(saved.model_spec.get("classes") or range(saved.model_spec["num_classes"]))
            pred = predict(model, x)
            true = y.numpy()
            matrix = confusion_counts(true, pred, len(classes))
            first = row.architecture not in counts
            if first:
                counts[row.architecture] = Confusion(dataset, row.architecture, matrix, classes, 1)
            else:
                counts[row.architecture].matrix = counts[row.architecture].matrix + matrix
                counts[row.architecture].trials += 1
            if not first:
                continue
            wrong = np.flatnonzero(pred != true)
            pick = wrong[:n_misclassified]
            out.misclassified.append(Misclassified(dataset, row.architecture, int(row.seed), x[pick].numpy(), true[pick],
                                                   pred[pick], [str(c) for c in classes], len(wrong), len(true)))
            if hasattr(model, "transform"):
                with torch.inference_mode():
                    shown = x[:n_transform]
                    out.transforms.append(TransformExamples(dataset, row.architecture, int(row.seed), shown.numpy(),
                                                            model.transform(shown).numpy()))
        out.confusions += list(counts.values())
        if missing:
            out.notes.append(f"{dataset}: no checkpoint in the store for {len(missing)} complete trial(s) "
                             f"({', '.join(missing[:6])}{', …' if len(missing) > 6 else ''})")
    return out


def _dataset(name: str, cache_dir: Path | None):
    """The registered dataset (None when this code has none), reading generated images from ``cache_dir``."""
    dataset = DATASETS.get(name)
    if dataset is not None and cache_dir is not None and hasattr(dataset, "with_cache"):
        return dataset.with_cache(cache_dir)
    return dataset


def _dataset_ready(name: str, dataset, data_dir: Path, notes: list[str]) -> bool:
    if dataset is None:
        notes.append(f"{name}: this code has no loader for the dataset, so its checkpoint figures are skipped")
        return False
    task = dataset.task
    if task.name != "classification":
        notes.append(f"{dataset.name}: a {task.name} task, so the classification figures (confusion matrices, "
                     "misclassified images) are skipped")
        return False
    try:
        dataset.prepare(data_dir, download=False)
    except UserError as e:
        notes.append(f"{dataset.name}: checkpoint figures skipped, its test images are not available ({e}); pass "
                     f"--data-dir DIR or set ${DATA_DIR_ENV}")
        return False
    return True


def examples_table(inspection: Inspection) -> pd.DataFrame:
    """Misclassified test images per representative checkpoint, as a small table for the report."""
    return pd.DataFrame([{"dataset": m.dataset, "architecture": m.architecture, "seed": m.seed,
                          "misclassified": m.wrong, "test images": m.total,
                          "error rate %": round(100 * m.wrong / max(m.total, 1), 2)} for m in inspection.misclassified])
