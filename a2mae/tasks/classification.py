"""Scene classification, single- or multi-label: a linear head on the pooled embedding.

Dataset layout: a folder of GeoTIFF chips and one labels CSV (``labels.csv``) with the columns ``image``
(path relative to the folder; also ``path``/``file``/``filename``), ``labels`` (class names separated
by ``|``; also ``label``) and ``split`` (``train``/``val``/``test``; ``validation`` is ``val``). An
optional ``classes.txt`` (one name a line) fixes the classes and their order; without it the classes
are those of the train split. Single-label when every row has one label (or
``finetune.label_mode=single``), multi-label otherwise.

Loss: cross-entropy (single-label) or binary cross-entropy (multi-label). Metrics: ``oa`` and
``macro_f1`` (single-label), ``map``, ``macro_f1`` and ``oa`` (multi-label). Predict writes one
GeoParquet row per chip with its label(s), label index, score and the class scores.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from a2mae.config import PrimaryMetrics
from a2mae.models.downstream import ModelSpec
from a2mae.models.heads import LinearHead
from a2mae.tasks.base import DatasetOptions, Metrics, Task, register
from a2mae.tasks.chips import BandSpec, DatasetError, EmptySplitError
from a2mae.tasks.data import (
    DatasetInfo,
    DownstreamDataset,
    Item,
    canonical_split,
    check_sizes,
    find_image,
    first_meta,
    read_classes,
)
from a2mae.tasks.metrics import TaskMetrics

TargetFn = Callable[[Item, DatasetInfo], torch.Tensor]


class Classification(Task):
    """Scene classification (single- or multi-label)."""

    name = "classification"
    summary = "scene classification, single- or multi-label (chips + labels.csv)"

    def open(self, root: Path, split: str, spec: BandSpec, options: DatasetOptions) -> DownstreamDataset:
        """One split of a chips + ``labels.csv`` folder."""
        return open_classification(root, split, spec, options.label_mode, self.target)

    def target(self, item: Item, info: DatasetInfo) -> torch.Tensor:
        """The class index (int64 scalar), or a ``[K]`` float32 multi-hot vector (multi-label)."""
        assert isinstance(item.target, tuple)
        if info.multilabel:
            target = torch.zeros(len(info.classes), dtype=torch.float32)
            target[[int(i) for i in item.target]] = 1.0
            return target
        return torch.tensor(int(item.target[0]), dtype=torch.long)

    def head(self, spec: ModelSpec, dim: int, levels: int) -> nn.Module:
        """LayerNorm + Linear over the pooled embedding: ``[N, D] -> [N, K]``."""
        return LinearHead(dim, len(spec.classes))

    def loss(self, spec: ModelSpec, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy, or binary cross-entropy on the multi-hot targets (multi-label)."""
        if spec.multilabel:
            return F.binary_cross_entropy_with_logits(logits, target.float())
        return F.cross_entropy(logits, target)

    def metric_kind(self, multilabel: bool) -> str:
        """``multi_label`` or ``single_label``."""
        return "multi_label" if multilabel else "single_label"

    def metrics(self, spec: ModelSpec) -> Metrics:
        """Accuracy and F1 (single-label); mAP, F1 and accuracy per label (multi-label)."""
        return TaskMetrics(self.metric_kind(spec.multilabel), len(spec.classes), spec.ignore_index)

    def primary_metric(self, cfg: PrimaryMetrics, multilabel: bool) -> str:
        """``evaluate.primary_metric.multi_label`` or ``.single_label``."""
        return cfg.multi_label if multilabel else cfg.single_label

    def chip_columns(self, classes: Sequence[str], multilabel: bool) -> dict[str, Any]:
        """``label`` (names joined by ``|`` when multi-label), ``label_index`` and ``score``."""
        import pyarrow as pa

        return {"label": pa.string(), "label_index": pa.int16(), "score": pa.float32()}

    def chip_values(
        self, scores: np.ndarray, classes: Sequence[str], multilabel: bool
    ) -> tuple[dict[str, list[Any]], dict[str, np.ndarray]]:
        """Labels over 0.5 (multi-label) or the best class, its index and score, and every class score."""
        cols: dict[str, list[Any]] = {}
        if multilabel:
            on = scores > 0.5
            cols["label"] = ["|".join(classes[int(j)] for j in np.flatnonzero(row)) for row in on]
            cols["label_index"] = [int(np.argmax(row)) if row.any() else -1 for row in on]
        else:
            idx = scores.argmax(1)
            cols["label"] = [classes[int(j)] for j in idx]
            cols["label_index"] = [int(j) for j in idx]
        cols["score"] = [float(v) for v in scores.max(1)]
        return cols, {"scores": scores}

    def check_spec(self, classes: Sequence[str], multilabel: bool) -> str | None:
        """Any number of classes, single- or multi-label."""
        return None


TASK = register(Classification())


def _labels_csv(root: Path) -> Path:
    f = root / "labels.csv"
    if f.is_file():
        return f
    found = sorted(root.glob("*.csv"))
    if len(found) == 1:
        return found[0]
    raise DatasetError(f"{root}: no labels.csv (columns image, labels, split); see docs/finetune.md")


def _pick(header: Sequence[str], names: Sequence[str], f: Path, what: str) -> str:
    low = {h.strip().lower(): h for h in header}
    for n in names:
        if n in low:
            return low[n]
    raise DatasetError(f"{f}: no {what} column (one of {', '.join(names)}); header is {list(header)}")


def open_classification(
    root: Path, split: str, spec: BandSpec, label_mode: str, target: TargetFn
) -> DownstreamDataset:
    """Open one split of a chips + ``labels.csv`` folder (see the module docstring)."""
    f = _labels_csv(root)
    with f.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        c_img = _pick(header, ("image", "path", "file", "filename", "chip"), f, "image")
        c_lab = _pick(header, ("labels", "label"), f, "labels")
        c_split = _pick(header, ("split",), f, "split")
        rows = [(i + 2, r) for i, r in enumerate(reader)]  # line numbers (header is line 1)
    parsed = []
    for line, r in rows:
        labels = tuple(x.strip() for x in (r[c_lab] or "").split("|") if x.strip())
        parsed.append((line, (r[c_img] or "").strip(), labels, canonical_split(r[c_split] or "")))
    train = [p for p in parsed if p[3] == "train"]
    if not train:
        raise EmptySplitError(f"{f}: the train split is empty (column {c_split!r} has no 'train' row)")
    classes = read_classes(root)
    source = "classes.txt" if classes else "the train split"
    if classes is None:
        classes = tuple(sorted({lab for p in train for lab in p[2]}))
    auto_multi = any(len(p[2]) != 1 for p in parsed)
    multilabel = auto_multi if label_mode == "auto" else label_mode == "multi"
    index = {c: i for i, c in enumerate(classes)}
    sel = [p for p in parsed if p[3] == split]
    if not sel:
        have = sorted({p[3] for p in parsed})
        raise EmptySplitError(f"{f}: split {split!r} is empty (splits present: {', '.join(have)})")
    items, extra = [], []
    for line, img, labels, _ in sel:
        if not img:
            raise DatasetError(f"{f}: line {line}: empty image path")
        path = find_image(root, img)
        if path is None:
            raise DatasetError(f"{f}: line {line}: image {img!r} not found under {root}")
        unknown = [lab for lab in labels if lab not in index]
        if unknown:
            raise DatasetError(
                f"{f}: line {line}: unknown label {unknown[0]!r} (classes from {source}: "
                f"{', '.join(classes)})"
            )
        if not multilabel and len(labels) != 1:
            raise DatasetError(
                f"{f}: line {line}: {len(labels)} labels in single-label mode; use one label a row or "
                "finetune.label_mode=multi"
            )
        items.append(Item((path,), tuple(index[lab] for lab in labels), path.stem))
        extra.append(f"{img}|{'|'.join(labels)}")
    size = check_sizes([it.images[0] for it in items], "chips")
    meta = first_meta(items[0].images[0], spec)
    info = DatasetInfo("classification", classes, multilabel, meta.sensor, meta.bands, size, meta.gsd_m, 255)
    return DownstreamDataset(root, split, items, info, target, extra)
