"""Semantic segmentation: an UPerNet-style decoder over the encoder's multi-level token maps.

Dataset layout: ``<split>/images/<name>.tif`` with ``<split>/masks/<name>.tif`` (or ``.png``), the mask
holding class indices; ``classes.txt`` names class 0, 1, ... (without it: 0..max of the train masks).
``finetune.ignore_index`` (255) marks pixels excluded from loss and metrics.

Loss: cross-entropy. Metrics: ``miou``, ``oa``, ``macro_f1``. Predict writes the class map COG
(``classmap.tif``), its quality layer and, with ``predict.probabilities``, the class probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from a2mae.config import PrimaryMetrics
from a2mae.models.downstream import ModelSpec
from a2mae.models.heads import UPerNetDecoder
from a2mae.tasks.base import DatasetOptions, Metrics, Task, register
from a2mae.tasks.chips import BandSpec, DatasetError, read_mask
from a2mae.tasks.data import (
    DatasetInfo,
    DownstreamDataset,
    Item,
    check_pair_sizes,
    first_meta,
    mask_values,
    pair_up,
    read_classes,
    split_dir,
)
from a2mae.tasks.metrics import TaskMetrics

TargetFn = Callable[[Item, DatasetInfo], torch.Tensor]


class Segmentation(Task):
    """Semantic segmentation (one class per pixel)."""

    name = "segmentation"
    summary = "semantic segmentation (images/ + masks/ per split)"
    dense = True

    def open(self, root: Path, split: str, spec: BandSpec, options: DatasetOptions) -> DownstreamDataset:
        """One split of an images/ + masks/ folder."""
        return open_segmentation(root, split, spec, options.ignore_index, self.target)

    def target(self, item: Item, info: DatasetInfo) -> torch.Tensor:
        """The mask: ``[H, W]`` int64 class indices (``ignore_index`` where excluded)."""
        assert isinstance(item.target, Path)
        return torch.from_numpy(read_mask(item.target))

    def head(self, spec: ModelSpec, dim: int, levels: int) -> nn.Module:
        """UPerNet-style decoder: token maps ``-> [N, K, H, W]``."""
        return UPerNetDecoder(dim, levels, spec.decoder_channels, len(spec.classes))

    def metric_kind(self, multilabel: bool) -> str:
        """``segmentation``."""
        return "segmentation"

    def metrics(self, spec: ModelSpec) -> Metrics:
        """mIoU, accuracy and F1 over the pixels (``ignore_index`` excluded)."""
        return TaskMetrics("segmentation", len(spec.classes), spec.ignore_index)

    def primary_metric(self, cfg: PrimaryMetrics, multilabel: bool) -> str:
        """``evaluate.primary_metric.segmentation``."""
        return cfg.segmentation


TASK = register(Segmentation())


def open_segmentation(
    root: Path, split: str, spec: BandSpec, ignore_index: int, target: TargetFn
) -> DownstreamDataset:
    """Open one split of an images/ + masks/ folder (see the module docstring)."""
    sdir = split_dir(root, split)
    groups = pair_up([sdir / "images", sdir / "masks"], sdir)
    size = check_pair_sizes(groups)
    classes = read_classes(root)
    if classes is None:
        tdir = split_dir(root, "train")
        tmasks = [g[1] for g in pair_up([tdir / "images", tdir / "masks"], tdir)]
        vmax = max((int(v.max()) for v in mask_values(tmasks, ignore_index).values() if v.size), default=0)
        classes = tuple(str(i) for i in range(vmax + 1))
        source = "the train masks (no classes.txt)"
    else:
        source = "classes.txt"
    for p, vals in mask_values([g[1] for g in groups], ignore_index).items():
        bad = vals[(vals < 0) | (vals >= len(classes))]
        if bad.size:
            raise DatasetError(
                f"{p}: mask value {int(bad[0])} is not a class (0..{len(classes) - 1} from {source}) nor "
                f"finetune.ignore_index {ignore_index}"
            )
    items = [Item((g[0],), g[1], g[0].stem) for g in groups]
    meta = first_meta(groups[0][0], spec)
    info = DatasetInfo(
        "segmentation", classes, False, meta.sensor, meta.bands, size, meta.gsd_m, ignore_index
    )
    return DownstreamDataset(root, split, items, info, target)
