"""The report's pictures (seaborn / matplotlib); each function takes a table and returns a Figure.

Nothing here names a dataset or an architecture: panels are laid out from
whatever datasets the tables hold, and each architecture keeps one colour in
every figure (the baseline first). Bands and error bars are the same intervals
as in the tables, at the report's confidence, and never leave the metric's range
(accuracy in [0, 1], loss ≥ 0). With few seeds (``SEED_LINES`` or fewer) a band
would be a t-interval on 1 or 2 degrees of freedom, wider than the data, so
learning curves show each seed as a thin line under the mean instead.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from . import stats
from .metrics import BASELINE, architecture_order

PANEL = (4.6, 3.2)  # inches per panel
SEED_LINES = 3  # at most this many seeds per architecture: draw the seeds, not a band
CURVE_METRICS = {"val_acc": "validation accuracy", "val_loss": "validation loss",
                 "train_acc": "training accuracy (running, dropout on)", "train_loss": "training loss (running)",
                 "train_eval_acc": "training accuracy (eval mode)", "train_eval_loss": "training loss (eval mode)"}

sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)


def palette(architectures, baseline: str = BASELINE) -> dict[str, tuple]:
    order = architecture_order(architectures, baseline)
    colours = sns.color_palette("colorblind", max(len(order), 3))
    return dict(zip(order, colours))


def _empty(message: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center")
    return fig


def _grid(nrows: int, ncols: int, sharex=False, sharey=False):
    fig, axes = plt.subplots(nrows, ncols, figsize=(PANEL[0] * ncols, PANEL[1] * nrows), squeeze=False,
                             sharex=sharex, sharey=sharey, layout="constrained")
    return fig, axes


def _legend(fig, colours: dict, title: str = "architecture"):
    handles = [plt.Line2D([], [], color=c, lw=2.5) for c in colours.values()]
    fig.legend(handles, list(colours), title=title, loc="outside lower center", ncols=min(len(colours), 6), frameon=False)


def metric_range(metric: str) -> tuple[float, float]:
    """Where a metric's values (and so its bands) can lie: accuracies in [0, 1], losses and times ≥ 0."""
    return (0.0, 1.0) if metric.endswith("_acc") else (0.0, math.inf)


def seed_band(values: np.ndarray, confidence: float, bounds=(-math.inf, math.inf)):
    """The t-interval of one epoch's seeds, clipped to the metric's range (NaNs where there is no spread)."""
    ci = stats.t_interval(values, confidence)
    return max(ci.low, bounds[0]), min(ci.high, bounds[1])


# -- learning curves -----------------------------------------------------------------------------
def learning_curves(epochs: pd.DataFrame, metrics=("val_acc", "val_loss", "train_loss"), baseline: str = BASELINE,
                    confidence: float = stats.CONFIDENCE) -> plt.Figure:
    """Mean over seeds per epoch, one row per dataset and one column per metric: with at most
    ``SEED_LINES`` seeds each seed's curve as a thin line, with more a t-interval band clipped to the
    metric's range."""
    if epochs.empty:
        return _empty("no epochs in the store yet")
    datasets = sorted(epochs["dataset"].unique())
    colours = palette(epochs["architecture"].unique(), baseline)
    most = int(epochs.groupby(["dataset", "architecture"])["trial_id"].nunique().max())
    fig, axes = _grid(len(datasets), len(metrics))
    for i, dataset in enumerate(datasets):
        data = epochs[epochs["dataset"] == dataset]
        present = set(data["architecture"].unique())
        for j, metric in enumerate(metrics):
            ax = axes[i, j]
            bounds = metric_range(metric)
            for arch in (a for a in colours if a in present):
                wide = data[data["architecture"] == arch].pivot_table(index="epoch", columns="trial_id", values=metric)
                if wide.empty:
                    continue
                x, mean = wide.index.to_numpy(), wide.mean(axis=1).to_numpy()
                if wide.shape[1] <= SEED_LINES:
                    for trial in wide.columns:
                        ax.plot(x, wide[trial], color=colours[arch], lw=0.8, alpha=0.45)
                else:
                    band = np.array([seed_band(row, confidence, bounds) for row in wide.to_numpy()])
                    ax.fill_between(x, band[:, 0], band[:, 1], color=colours[arch], alpha=0.18, lw=0)
                ax.plot(x, mean, color=colours[arch], lw=2, marker="o", markersize=4)
            if bounds[1] == 1.0:
                ax.set_ylim(top=min(1.0, ax.get_ylim()[1]))
            ax.set_ylim(bottom=max(bounds[0], ax.get_ylim()[0]))
            ax.set_title(f"{dataset}: {CURVE_METRICS.get(metric, metric)}")
            ax.set_xlabel("epoch")
            ax.set_ylabel(CURVE_METRICS.get(metric, metric).split(" (")[0])
            ax.xaxis.get_major_locator().set_params(integer=True)
    _legend(fig, colours)
    how = ("thin lines = seeds" if most <= SEED_LINES else
           f"band = {confidence * 100:g} % t-interval (seeds ≤ {SEED_LINES}: thin lines = seeds)")
    fig.suptitle(f"Learning curves: mean over seeds (bold), {how}")
    return fig


# -- time to target ------------------------------------------------------------------------------
def time_to_target(curves: pd.DataFrame, convergence: pd.DataFrame, baseline: str = BASELINE,
                   confidence: float = stats.CONFIDENCE) -> plt.Figure:
    """Kaplan–Meier fraction of seeds that reached the target against epochs and against training seconds
    (one panel per device model: seconds on different hardware are not comparable)."""
    if curves.empty:
        return _empty("no dataset with a target has epochs yet")
    datasets = sorted(curves["dataset"].unique())
    colours = palette(curves["architecture"].unique(), baseline)
    panels = curves[["clock", "hardware"]].drop_duplicates().sort_values(["clock", "hardware"])  # epochs first
    panels = list(panels.itertuples(index=False, name=None))
    fig, axes = _grid(len(datasets), len(panels))
    targets = convergence.groupby("dataset")["target"].first()
    for i, dataset in enumerate(datasets):
        for j, (clock, hardware) in enumerate(panels):
            ax = axes[i, j]
            sel = (curves["dataset"] == dataset) & (curves["clock"] == clock) & (curves["hardware"] == hardware)
            data = curves[sel]
            counts = convergence[(convergence["dataset"] == dataset) & (convergence["clock"] == clock)
                                 & (convergence["hardware"] == hardware)].set_index("architecture")
            shown = [a for a in colours if a in set(data["architecture"].unique())]
            for k, arch in enumerate(shown):
                c = data[data["architecture"] == arch]
                ax.step(c["time"], c["fraction"], where="post", color=colours[arch], lw=2)
                ax.fill_between(c["time"], c["low"].clip(0, 1), c["high"].clip(0, 1), step="post",
                                color=colours[arch], alpha=0.15, lw=0)
                if arch in counts.index:  # curves often coincide (e.g. all at 0): say how many reached, per colour
                    ax.text(0.02, 0.96 - 0.085 * k, f"{arch}: {counts.at[arch, 'reached']}/"
                            f"{counts.at[arch, 'trials']} reached", transform=ax.transAxes, ha="left", va="top",
                            fontsize=8, color=colours[arch], fontweight="bold",
                            bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.8))
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlim(left=0)
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
            ax.set_xlabel("epoch" if clock == "epochs" else "training seconds (evaluation excluded)")
            ax.set_ylabel("fraction of seeds at target")
            target = targets.get(dataset, float("nan"))
            where = "" if clock == "epochs" else f"\n{hardware}"
            ax.set_title(f"{dataset}: val. acc. ≥ {target:.1%}{where}", fontsize=9 if where else None)
            if clock == "epochs":
                ax.xaxis.get_major_locator().set_params(integer=True)
    _legend(fig, colours)
    fig.suptitle(f"Time to target: Kaplan–Meier fraction reached (censored seeds kept), band = {confidence * 100:g} % CI")
    return fig


# -- bars with intervals -------------------------------------------------------------------------
def _bars(ax, labels, values, lows, highs, colours, offset=0.0, width=0.8, hatch=None, label=None):
    x = np.arange(len(labels)) + offset
    v = np.asarray(values, dtype=float)
    err = np.array([np.where(np.isfinite(lows), v - np.asarray(lows, float), 0),
                    np.where(np.isfinite(highs), np.asarray(highs, float) - v, 0)])
    ax.bar(x, v, width=width, color=colours, edgecolor="black", linewidth=0.5, hatch=hatch, label=label)
    ax.errorbar(x, v, yerr=np.clip(err, 0, None), fmt="none", ecolor="black", capsize=4, lw=1)
    return x


def overhead_bars(overhead: pd.DataFrame, baseline: str = BASELINE, confidence: float = stats.CONFIDENCE) -> plt.Figure:
    """Training and evaluation seconds per epoch relative to the baseline, per dataset and hardware."""
    if overhead.empty or overhead["time_ratio"].isna().all():
        return _empty(f"no timings with a {baseline} baseline on the same dataset and hardware yet")
    cells = overhead[["dataset", "hardware"]].drop_duplicates().values.tolist()
    colours = palette(overhead["architecture"].unique(), baseline)
    columns = {"time": "training s / epoch", "eval": "evaluation s / epoch"}
    fig, axes = _grid(len(cells), len(columns))
    for i, (dataset, hardware) in enumerate(cells):
        data = overhead[(overhead["dataset"] == dataset) & (overhead["hardware"] == hardware)]
        data = data.set_index("architecture").reindex([a for a in colours if a in set(data["architecture"].unique())])
        for j, (name, what) in enumerate(columns.items()):
            ax = axes[i, j]
            x = _bars(ax, data.index, data[f"{name}_ratio"], data[f"{name}_ratio_low"], data[f"{name}_ratio_high"],
                      [colours[a] for a in data.index])
            for xi, v in zip(x, data[f"{name}_ratio"]):
                if np.isfinite(v):  # the value inside its bar, clear of the error bar
                    ax.text(xi, v / 2, f"{v:.2f}×", ha="center", va="center", fontsize=9, fontweight="bold",
                            color="white")
            ax.axhline(1.0, color="black", lw=1, ls="--")
            ax.set_xticks(x, data.index, rotation=20)
            ax.set_ylabel(f"× {baseline}")
            ax.set_title(f"{dataset} · {hardware}\n{what}", fontsize=9)
    fig.suptitle(f"Time overhead relative to {baseline} (ratio of geometric means, {confidence * 100:g} % CI)")
    return fig


def gap_bars(gaps: pd.DataFrame, baseline: str = BASELINE, confidence: float = stats.CONFIDENCE) -> plt.Figure:
    """Train − validation accuracy and validation − train loss, at the best-validation and the last epoch."""
    if gaps.empty:
        return _empty("no complete trials yet")
    datasets = sorted(gaps["dataset"].unique())
    colours = palette(gaps["architecture"].unique(), baseline)
    measures = {"acc_gap": ("train − val accuracy (pp)", 100.0), "loss_gap": ("val − train loss", 1.0)}
    fig, axes = _grid(len(datasets), len(measures))
    for i, dataset in enumerate(datasets):
        data = gaps[gaps["dataset"] == dataset]
        archs = [a for a in colours if a in set(data["architecture"].unique())]
        for j, (measure, (label, scale)) in enumerate(measures.items()):
            ax = axes[i, j]
            for k, (at, hatch) in enumerate((("best", None), ("last", "//"))):
                d = data[data["at"] == at].set_index("architecture").reindex(archs)
                x = _bars(ax, archs, d[measure] * scale, d[f"{measure}_low"] * scale, d[f"{measure}_high"] * scale,
                          [colours[a] for a in archs], offset=(k - 0.5) * 0.4, width=0.4, hatch=hatch,
                          label="best-validation epoch" if at == "best" else "last epoch")
                for xi, values in zip(x, d.get(f"{measure}_values", pd.Series(index=archs, dtype=object))):
                    seeds = [float(v) * scale for v in str(values).split()] if isinstance(values, str) else []
                    ax.plot([xi] * len(seeds), seeds, "o", color="black", markersize=3, zorder=3)
            ax.axhline(0, color="black", lw=0.8)
            ax.set_xticks(np.arange(len(archs)), archs, rotation=20)
            ax.set_ylabel(label)
            ax.set_title(f"{dataset}: {label}")
    handles = [plt.Rectangle((0, 0), 1, 1, fc="white", ec="black"), plt.Rectangle((0, 0), 1, 1, fc="white", ec="black", hatch="//")]
    fig.legend(handles, ["best-validation epoch", "last epoch"], loc="outside lower center", ncols=2, frameon=False)
    fig.suptitle(f"Overfitting gap: mean over seeds, dots = seeds ({confidence * 100:g} % t-interval where they differ)")
    return fig


# -- pictures that need the weights -------------------------------------------------------------
def short_labels(classes, width: int = 12) -> list[str]:
    """Class names short enough for tick labels: the first word of each when those stay distinct
    (``"7 - seven"`` → ``"7"``), else each name cut to ``width`` characters."""
    names = [str(c) for c in classes]
    first = [n.split()[0] if n.split() else n for n in names]
    if len(set(first)) == len(first):
        names = first
    return [n if len(n) <= width else n[: width - 1] + "…" for n in names]


def confusion_matrices(items: list, title: str = "") -> plt.Figure:
    """One row-normalised confusion matrix per architecture (``items``: objects with ``architecture``,
    ``matrix``, ``classes`` and ``trials``), counts summed over that architecture's checkpoints."""
    if not items:
        return _empty("no checkpoints to evaluate")
    n = len(items)
    k = len(items[0].classes)
    size = max(3.6, 0.38 * k + 1.5)
    ncols = min(n, 2)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, item in zip(axes.flat, items):
        m = np.asarray(item.matrix, dtype=float)
        share = m / np.clip(m.sum(axis=1, keepdims=True), 1, None)
        labels = short_labels(item.classes, 10)
        sns.heatmap(share * 100, ax=ax, cmap="Blues", vmin=0, vmax=100, square=True, cbar=False,
                    annot=k <= 12, fmt=".0f", annot_kws={"fontsize": 7}, xticklabels=labels, yticklabels=labels)
        acc = np.trace(m) / max(m.sum(), 1)
        ax.set_title(f"{item.architecture} ({item.trials} checkpoint{'s' * (item.trials != 1)}, acc {acc:.1%})", fontsize=9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.tick_params(labelsize=7)
    fig.suptitle(title or "Confusion matrices (% of each true class)")
    return fig


def _image(x) -> np.ndarray:
    """(C, H, W) normalised tensor → something imshow draws: min–max scaled, grey or RGB."""
    a = np.asarray(x, dtype=float)
    a = (a - a.min()) / (a.max() - a.min() + 1e-12)
    return a[0] if a.shape[0] == 1 else np.transpose(a[:3], (1, 2, 0))


def transform_grid(inputs, outputs, title: str, columns: int = 4) -> plt.Figure:
    """Inputs beside what the spatial transformer makes of them, pair by pair."""
    n = len(inputs)
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(1.25 * 2 * columns, 1.4 * rows + 0.5), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, columns)
        for k, (img, name) in enumerate(((inputs[i], "input"), (outputs[i], "transformed"))):
            ax = axes[r, 2 * c + k]
            ax.imshow(_image(img), cmap="gray", interpolation="nearest")
            if r == 0:
                ax.set_title(name, fontsize=8)
            if k == 1:  # a frame marks the transformed image of each pair
                ax.axis("on")
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_edgecolor("tab:orange")
                    spine.set_linewidth(1.5)
    fig.suptitle(title, fontsize=10)
    return fig


def misclassified_grid(images, true, predicted, classes, title: str, columns: int = 8) -> plt.Figure:
    """Test images the model got wrong, each titled with its true and predicted label."""
    n = len(images)
    if n == 0:
        return _empty(f"{title}: no misclassified test images")
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.35 * columns, 1.65 * rows + 0.5), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    labels = short_labels(classes, 10)
    for ax, img, t, p in zip(axes.flat, images, true, predicted):
        ax.imshow(_image(img), cmap="gray", interpolation="nearest")
        ax.set_title(f"true {labels[t]}\npred {labels[p]}", fontsize=8, color="darkred")
    fig.suptitle(title, fontsize=10)
    return fig
