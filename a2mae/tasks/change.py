"""Change detection: a siamese encoder, the absolute difference of the two token maps, a decoder.

Dataset layout (OSCD/LEVIR-style): ``<split>/A``, ``<split>/B`` and ``<split>/label`` (also
``before``/``after``/``mask`` or ``imgs_1``/``imgs_2``/``cm``) with matching file names; a label pixel
is "change" when non-zero (LEVIR's 0/255 and 0/1 both work; no ignore value).

Loss: cross-entropy over no-change/change. Metrics: ``change_f1``, ``change_iou`` (of the change class)
and ``oa``. Predict takes scenes in (before, after) pairs and writes the change map COG
(``change.tif``) and its quality layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
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
    pair_up,
    split_dir,
)
from a2mae.tasks.metrics import TaskMetrics

TargetFn = Callable[[Item, DatasetInfo], torch.Tensor]
CHANGE_CLASSES = ("no_change", "change")
_CD_FOLDERS = (
    ("A", "B", "label"),
    ("before", "after", "mask"),
    ("imgs_1", "imgs_2", "cm"),
    ("t1", "t2", "label"),
)


class ChangeDetection(Task):
    """Binary change detection between two co-registered images."""

    name = "change_detection"
    summary = "change detection between before/after pairs (A/ B/ label/ per split)"
    dense = True
    paired = True
    map_name = "change"

    def open(self, root: Path, split: str, spec: BandSpec, options: DatasetOptions) -> DownstreamDataset:
        """One split of a before/after/label folder."""
        return open_change(root, split, spec, options.ignore_index, self.target)

    def target(self, item: Item, info: DatasetInfo) -> torch.Tensor:
        """``[H, W]`` int64: 1 where the label is non-zero (LEVIR 0/255, or 0/1), else 0."""
        assert isinstance(item.target, Path)
        return torch.from_numpy((read_mask(item.target) > 0).astype(np.int64))

    def head(self, spec: ModelSpec, dim: int, levels: int) -> nn.Module:
        """UPerNet-style decoder over the feature difference: ``-> [N, 2, H, W]``."""
        return UPerNetDecoder(dim, levels, spec.decoder_channels, len(spec.classes))

    def metric_kind(self, multilabel: bool) -> str:
        """``change_detection``."""
        return "change_detection"

    def metrics(self, spec: ModelSpec) -> Metrics:
        """F1 and IoU of the change class, accuracy."""
        return TaskMetrics("change_detection", len(spec.classes), spec.ignore_index)

    def primary_metric(self, cfg: PrimaryMetrics, multilabel: bool) -> str:
        """``evaluate.primary_metric.change_detection``."""
        return cfg.change_detection

    def check_spec(self, classes: Sequence[str], multilabel: bool) -> str | None:
        """Two classes, single-label."""
        if multilabel or len(classes) != 2:
            return f"a change_detection model has 2 single-label classes, not {len(classes)}"
        return None


TASK = register(ChangeDetection())


def _cd_folders(sdir: Path) -> tuple[Path, Path, Path]:
    for a, b, lab in _CD_FOLDERS:
        if (sdir / a).is_dir() or (sdir / b).is_dir():
            return sdir / a, sdir / b, sdir / lab
    raise DatasetError(
        f"{sdir}: no before/after folders (expected A/, B/ and label/; or before/after/mask, "
        "imgs_1/imgs_2/cm)"
    )


def open_change(
    root: Path, split: str, spec: BandSpec, ignore_index: int, target: TargetFn
) -> DownstreamDataset:
    """Open one split of a before/after/label folder (see the module docstring)."""
    sdir = split_dir(root, split)
    fa, fb, fl = _cd_folders(sdir)
    for d in (fa, fb, fl):
        if not d.is_dir():
            raise DatasetError(f"{d}: folder missing (before/after/label folders must all exist)")
    groups = pair_up([fa, fb, fl], sdir)
    size = check_pair_sizes(groups)
    meta_a = first_meta(groups[0][0], spec)
    meta_b = first_meta(groups[0][1], spec)
    if meta_a.bands != meta_b.bands:
        raise DatasetError(
            f"{groups[0][1]}: bands {list(meta_b.bands)} differ from {groups[0][0]} {list(meta_a.bands)}"
        )
    items = [Item((g[0], g[1]), g[2], g[0].stem) for g in groups]
    info = DatasetInfo(
        ChangeDetection.name,
        CHANGE_CLASSES,
        False,
        meta_a.sensor,
        meta_a.bands,
        size,
        meta_a.gsd_m,
        ignore_index,
    )
    return DownstreamDataset(root, split, items, info, target)
