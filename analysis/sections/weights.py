"""What the weights show: confusion matrices, the transformer's outputs, misclassified images."""

from __future__ import annotations

from .. import figures as F
from .. import metrics
from ..blocks import Figure, Section, Table, Text, png
from ..checkpoints import examples_table
from ..compute import Analysis


def section(a: Analysis) -> Section:
    blocks: list = [Text("From each trial's best-validation checkpoint, evaluated on the test split its trial used"
                         + (f"; dataset root {a.data_dir}." if a.data_dir else "."))]
    if a.inspection is not None and a.inspection.misclassified:
        blocks.append(Table(metrics.order_rows(examples_table(a.inspection), a.baseline),
                            "Misclassified test images of the representative checkpoints"))
    if a.inspection is None or not (a.inspection.confusions or a.inspection.transforms or a.inspection.misclassified):
        blocks.append(Text("Skipped: see the notes for why.", "empty"))
    return Section("weights", "7. What the weights show", blocks, figures(a))


def figures(a: Analysis) -> list[Figure]:
    """Confusion matrices per dataset, then each representative checkpoint's transformer outputs and errors."""
    ins, b = a.inspection, a.baseline
    out: list[Figure] = []
    if ins is not None:
        for dataset in sorted({x.dataset for x in ins.confusions}):
            items = [x for x in ins.confusions if x.dataset == dataset]
            order = metrics.architecture_order([x.architecture for x in items], b)
            items.sort(key=lambda x: order.index(x.architecture))
            out.append(Figure(f"confusion_{dataset}", f"{dataset}: confusion matrices on the test split, "
                              "summed over each architecture's best-validation checkpoints (row %).",
                              png(F.confusion_matrices(items, f"{dataset}: confusion matrices (% of each true class)"))))
        rank = {a: i for i, a in enumerate(metrics.architecture_order({x.architecture for x in ins.misclassified}, b))}
        for x in sorted(ins.transforms, key=lambda x: (x.dataset, rank.get(x.architecture, 0))):
            out.append(Figure(f"transform_{x.dataset}_{x.architecture}",
                              f"{x.dataset} · {x.architecture} (seed {x.seed}): test images beside the spatial "
                              "transformer's output (framed).",
                              png(F.transform_grid(x.inputs, x.outputs, f"{x.dataset} · {x.architecture}, seed {x.seed}: "
                                                    "input | transformed"))))
        for x in sorted(ins.misclassified, key=lambda x: (x.dataset, rank.get(x.architecture, 0))):
            out.append(Figure(f"misclassified_{x.dataset}_{x.architecture}",
                              f"{x.dataset} · {x.architecture} (seed {x.seed}): the first {len(x.images)} of "
                              f"{x.wrong} misclassified test images ({x.wrong / max(x.total, 1):.2%} of {x.total}).",
                              png(F.misclassified_grid(x.images, x.true, x.predicted, x.classes,
                                                        f"{x.dataset} · {x.architecture}, seed {x.seed}: misclassified"))))
    return out
