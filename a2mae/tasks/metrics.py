"""Downstream metrics (torchmetrics) and their figures (confusion matrix, precision-recall curves).

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

Figures (:meth:`TaskMetrics.figures`, PNG bytes): the confusion matrix for single-label and dense
tasks; for multi-label, per-class precision-recall curves (with each class's average precision) and
per-class confusion counts (TP / FP / FN / TN at threshold 0.5).
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.classification import (
    BinaryF1Score,
    BinaryJaccardIndex,
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassJaccardIndex,
    MultilabelAccuracy,
    MultilabelAveragePrecision,
    MultilabelConfusionMatrix,
    MultilabelF1Score,
    MultilabelPrecisionRecallCurve,
)

#: Thresholds of the precision-recall curves (binned: bounded memory on any split size).
PR_THRESHOLDS = 101

METRIC_NAMES = {
    "single_label": ("oa", "macro_f1"),
    "multi_label": ("map", "macro_f1", "oa"),
    "segmentation": ("miou", "oa", "macro_f1"),
    "change_detection": ("change_f1", "change_iou", "oa"),
}


class TaskMetrics:
    """Accumulates predictions of one kind of task over batches (the tasks of :mod:`a2mae.tasks` pick it).

    Args:
        kind: A key of :data:`METRIC_NAMES`: ``single_label``, ``multi_label``, ``segmentation`` or
            ``change_detection``.
        num_classes: Number of classes (2 for change detection).
        ignore_index: Excluded target value (dense tasks).
    """

    def __init__(self, kind: str, num_classes: int, ignore_index: int = 255) -> None:
        self.kind = kind
        self.num_classes, self.ignore_index = num_classes, ignore_index
        k, ig = num_classes, ignore_index
        self._cm: MulticlassConfusionMatrix | None = None
        self._m: dict[str, Metric]
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
            self._pr = MultilabelPrecisionRecallCurve(k, thresholds=PR_THRESHOLDS)
            self._mcm = MultilabelConfusionMatrix(k, threshold=0.5)
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
            for m in (*self._m.values(), self._pr, self._mcm):
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

    def label_confusion(self) -> np.ndarray | None:
        """Multi-label: ``[K, 4]`` counts per class, columns TP, FP, FN, TN (threshold 0.5); else None."""
        if self.kind != "multi_label" or self.count == 0:
            return None
        mcm = self._mcm.compute().numpy()  # [K, 2, 2]: [[TN, FP], [FN, TP]]
        return np.stack([mcm[:, 1, 1], mcm[:, 0, 1], mcm[:, 1, 0], mcm[:, 0, 0]], axis=1)

    def pr_curves(self) -> list[tuple[np.ndarray, np.ndarray, float | None]] | None:
        """Multi-label: per class ``(precision, recall, average precision)``, None AP without a positive.

        None for the other kinds of task.
        """
        if self.kind != "multi_label" or self.count == 0:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # classes without positives: handled through _pos
            precision, recall, _ = self._pr.compute()
            ap = self._m["map"].compute()
        return [
            (precision[c].numpy(), recall[c].numpy(), float(ap[c]) if self._pos[c] > 0 else None)
            for c in range(self.num_classes)
        ]

    def figures(self, classes: Sequence[str], title: str) -> dict[str, bytes]:
        """The split's figures as PNG bytes by file name (empty when nothing was scored).

        ``confusion.png`` (single-label, segmentation, change detection), or ``pr_curves.png`` and
        ``label_confusion.png`` (multi-label).
        """
        cm = self.confusion()
        if cm is not None:
            return {"confusion.png": confusion_png(cm, classes, title)}
        curves, counts = self.pr_curves(), self.label_confusion()
        if curves is None or counts is None:
            return {}
        return {
            "pr_curves.png": pr_curves_png(curves, classes, title),
            "label_confusion.png": label_confusion_png(counts, classes, title),
        }


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


def _short(name: str, width: int = 18) -> str:
    return name if len(name) <= width else name[: width - 2] + "…"


def pr_curves_png(
    curves: Sequence[tuple[np.ndarray, np.ndarray, float | None]], classes: Sequence[str], title: str = ""
) -> bytes:
    """Per-class precision-recall curves, one small panel per class with its AP, as PNG bytes.

    Args:
        curves: Per class ``(precision [T+1], recall [T+1], AP or None)`` (:meth:`TaskMetrics.pr_curves`).
        classes: Class names, in the same order.
        title: Figure title.
    """
    from matplotlib.figure import Figure

    k = len(classes)
    cols = min(5, max(1, k))
    rows = (k + cols - 1) // cols
    fig = Figure(figsize=(2.4 * cols, 2.2 * rows + 0.5), dpi=90)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= k:
            ax.set_visible(False)
            continue
        precision, recall, ap = curves[i]
        if ap is None:
            ax.text(0.5, 0.5, "no positive\nin this split", ha="center", va="center", fontsize=7)
        else:
            ax.plot(recall, precision, lw=1.2)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(
            f"{_short(classes[i], 24)}\nAP {ap:.2f}" if ap is not None else _short(classes[i], 24), fontsize=7
        )
        ax.tick_params(labelsize=6)
        if i % cols == 0:
            ax.set_ylabel("precision", fontsize=7)
        if i // cols == rows - 1:
            ax.set_xlabel("recall", fontsize=7)
    fig.suptitle(
        f"{title}: precision-recall per class" if title else "precision-recall per class", fontsize=9
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def label_confusion_png(counts: np.ndarray, classes: Sequence[str], title: str = "") -> bytes:
    """Per-class TP / FP / FN / TN counts of a multi-label split (colour: share of the class's samples).

    Args:
        counts: ``[K, 4]`` (:meth:`TaskMetrics.label_confusion`).
        classes: Class names.
        title: Figure title.
    """
    from matplotlib.figure import Figure

    k = len(classes)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    fig = Figure(figsize=(5.2, 0.28 * k + 1.4), dpi=100)
    ax = fig.subplots()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(4), ["TP", "FP", "FN", "TN"], fontsize=8)
    ax.set_yticks(range(k), [_short(c, 30) for c in classes], fontsize=7)
    for i in range(k):
        for j in range(4):
            color = "white" if share[i, j] > 0.5 else "black"
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=6, color=color)
    ax.set_title(f"{title}: per-class counts at 0.5" if title else "per-class counts at 0.5", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
