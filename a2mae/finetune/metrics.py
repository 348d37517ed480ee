"""Downstream metrics (torchmetrics) and the confusion-matrix figure.

=================== ============================================================================
task                metrics (keys of :meth:`TaskMetrics.compute`)
=================== ============================================================================
single-label        ``oa`` overall accuracy, ``macro_f1``
multi-label         ``map`` mean average precision over classes with a positive in the split,
                    ``macro_f1`` (threshold 0.5), ``oa`` (micro accuracy over all labels)
segmentation        ``miou`` mean IoU over classes present in target or prediction, ``oa``,
                    ``macro_f1`` (``ignore_index`` pixels excluded)
change detection    ``change_f1`` and ``change_iou`` of the change class, ``oa``
=================== ============================================================================

Every value is a float in ``[0, 1]``.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics.classification import (
    BinaryF1Score,
    BinaryJaccardIndex,
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassJaccardIndex,
    MultilabelAccuracy,
    MultilabelAveragePrecision,
    MultilabelF1Score,
)

METRIC_NAMES = {
    "single_label": ("oa", "macro_f1"),
    "multi_label": ("map", "macro_f1", "oa"),
    "segmentation": ("miou", "oa", "macro_f1"),
    "change_detection": ("change_f1", "change_iou", "oa"),
}


def metric_kind(task: str, multilabel: bool) -> str:
    """Key of :data:`METRIC_NAMES` (and of ``evaluate.primary_metric``) for a task."""
    if task == "classification":
        return "multi_label" if multilabel else "single_label"
    return task


class TaskMetrics:
    """Accumulates predictions of one task over batches.

    Args:
        task: ``classification``, ``segmentation`` or ``change_detection``.
        num_classes: Number of classes (2 for change detection).
        multilabel: Multi-label classification.
        ignore_index: Excluded target value (dense tasks).
    """

    def __init__(
        self, task: str, num_classes: int, multilabel: bool = False, ignore_index: int = 255
    ) -> None:
        self.task, self.kind = task, metric_kind(task, multilabel)
        self.num_classes, self.ignore_index = num_classes, ignore_index
        k, ig = num_classes, ignore_index
        self._cm: MulticlassConfusionMatrix | None = None
        if self.kind == "single_label":
            self._m = {
                "oa": MulticlassAccuracy(k, average="micro"),
                "macro_f1": MulticlassF1Score(k, average="macro"),
            }
            self._cm = MulticlassConfusionMatrix(k)
        elif self.kind == "multi_label":
            self._m = {
                "map": MultilabelAveragePrecision(k, average="none"),
                "macro_f1": MultilabelF1Score(k, average="macro", threshold=0.5),
                "oa": MultilabelAccuracy(k, average="micro", threshold=0.5),
            }
            self._pos = torch.zeros(k, dtype=torch.long)
        elif self.kind == "segmentation":
            self._m = {
                "miou": MulticlassJaccardIndex(k, average="macro", ignore_index=ig),
                "oa": MulticlassAccuracy(k, average="micro", ignore_index=ig),
                "macro_f1": MulticlassF1Score(k, average="macro", ignore_index=ig),
            }
            self._cm = MulticlassConfusionMatrix(k, ignore_index=ig)
        else:
            self._m = {
                "change_f1": BinaryF1Score(ignore_index=ig),
                "change_iou": BinaryJaccardIndex(ignore_index=ig),
                "oa": MulticlassAccuracy(2, average="micro", ignore_index=ig),
            }
            self._cm = MulticlassConfusionMatrix(2, ignore_index=ig)
        self.count = 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch.

        Args:
            logits: ``[B, K]`` (classification) or ``[B, K, H, W]`` (dense).
            target: ``[B]`` class, ``[B, K]`` multi-hot, or ``[B, H, W]``.
        """
        logits, target = logits.detach().float().cpu(), target.detach().cpu()
        self.count += int(target.shape[0])
        if self.kind == "multi_label":
            t = target.long()
            self._pos += t.sum(0)
            probs = logits.sigmoid()
            for m in self._m.values():
                m.update(probs, t)
            return
        pred = logits.argmax(1)
        for m in self._m.values():
            m.update(pred, target)
        if self._cm is not None:
            self._cm.update(pred, target)

    def compute(self) -> dict[str, float]:
        """Metric values (floats in ``[0, 1]``; NaN only when nothing was scored)."""
        if self.count == 0:
            return {k: math.nan for k in self._m}
        out: dict[str, float] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no positive samples" for absent classes: handled below
            for name, m in self._m.items():
                v = m.compute()
                if name == "map":
                    has_pos = self._pos > 0
                    v = v[has_pos].mean() if bool(has_pos.any()) else torch.tensor(math.nan)
                out[name] = float(v)
        return out

    def confusion(self) -> np.ndarray | None:
        """``[K, K]`` confusion matrix (rows: target, columns: prediction), or None for multi-label."""
        return None if self._cm is None else self._cm.compute().numpy()


def confusion_png(matrix: np.ndarray, classes: Sequence[str], title: str = "") -> bytes:
    """Render a confusion matrix (row-normalised colours, raw counts written) as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    k = len(classes)
    norm = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    size = max(3.0, 0.45 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    labels = [c if len(c) <= 18 else c[:16] + "…" for c in classes]
    ax.set_xticks(range(k), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(k), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("target")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    f"{int(matrix[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
