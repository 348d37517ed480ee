"""A fourth downstream task, written as one module outside the package: per-chip regression.

Dataset layout: a folder of GeoTIFF chips and ``values.csv`` with the columns ``image`` (path relative
to the folder), ``value`` (a number) and ``split``. The head is a linear layer on the pooled embedding
(one output), the loss the mean squared error, the metrics ``r2`` (primary), ``rmse`` and ``mae``;
predict writes one GeoParquet row per chip with its ``value``.

Nothing else in the repository changes for it: importing this module registers the task, and
fine-tuning, the registry, evaluation and predict ask the task object.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
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
)


class RegressionMetrics:
    """``r2``, ``rmse`` and ``mae`` of one value per chip."""

    def __init__(self) -> None:
        self.pred: list[float] = []
        self.true: list[float] = []

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``logits [B, 1]``, ``target [B, 1]``."""
        self.pred += logits.detach().float().reshape(-1).tolist()
        self.true += target.detach().float().reshape(-1).tolist()

    def compute(self) -> dict[str, float]:
        """The metrics (NaN when nothing was scored)."""
        if not self.true:
            return {"r2": math.nan, "rmse": math.nan, "mae": math.nan}
        p, t = np.asarray(self.pred), np.asarray(self.true)
        ss_res, ss_tot = float(((t - p) ** 2).sum()), float(((t - t.mean()) ** 2).sum())
        return {
            "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan,
            "rmse": float(np.sqrt(((t - p) ** 2).mean())),
            "mae": float(np.abs(t - p).mean()),
        }

    def figures(self, classes: Sequence[str], title: str) -> dict[str, bytes]:
        """No figure."""
        return {}


class Regression(Task):
    """Regression of one value per chip."""

    name = "regression"
    summary = "per-chip regression of one value (chips + values.csv)"

    def open(self, root: Path, split: str, spec: BandSpec, options: DatasetOptions) -> DownstreamDataset:
        """One split of a chips + ``values.csv`` folder."""
        f = root / "values.csv"
        if not f.is_file():
            raise DatasetError(f"{root}: no values.csv (columns image, value, split)")
        with f.open(newline="") as fh:
            rows = [(i + 2, r) for i, r in enumerate(csv.DictReader(fh))]
        items, extra = [], []
        for line, r in rows:
            if canonical_split(r["split"]) != split:
                continue
            path = find_image(root, r["image"].strip())
            if path is None:
                raise DatasetError(f"{f}: line {line}: image {r['image']!r} not found under {root}")
            try:
                value = float(r["value"])
            except ValueError:
                raise DatasetError(f"{f}: line {line}: value {r['value']!r} is not a number") from None
            items.append(Item((path,), (value,), path.stem))
            extra.append(f"{r['image']}|{value!r}")
        if not items:
            raise EmptySplitError(f"{f}: split {split!r} is empty")
        size = check_sizes([it.images[0] for it in items], "chips")
        meta = first_meta(items[0].images[0], spec)
        info = DatasetInfo(self.name, ("value",), False, meta.sensor, meta.bands, size, meta.gsd_m, 255)
        return DownstreamDataset(root, split, items, info, self.target, extra)

    def target(self, item: Item, info: DatasetInfo) -> torch.Tensor:
        """``[1]`` float32: the value."""
        assert isinstance(item.target, tuple)
        return torch.tensor([float(item.target[0])], dtype=torch.float32)

    def head(self, spec: ModelSpec, dim: int, levels: int) -> nn.Module:
        """LayerNorm + Linear to one output."""
        return LinearHead(dim, 1)

    def loss(self, spec: ModelSpec, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean squared error."""
        return F.mse_loss(logits, target)

    def metric_kind(self, multilabel: bool) -> str:
        """``regression``."""
        return "regression"

    def metrics(self, spec: ModelSpec) -> Metrics:
        """R², RMSE and MAE."""
        return RegressionMetrics()

    def primary_metric(self, cfg: PrimaryMetrics, multilabel: bool) -> str:
        """``r2`` (higher is better)."""
        return "r2"

    def scores(self, logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
        """The value itself."""
        return logits

    def chip_columns(self, classes: Sequence[str], multilabel: bool) -> dict[str, Any]:
        """``value``."""
        import pyarrow as pa

        return {"value": pa.float32()}

    def chip_values(
        self, scores: np.ndarray, classes: Sequence[str], multilabel: bool
    ) -> tuple[dict[str, list[Any]], dict[str, np.ndarray]]:
        """The predicted value of each chip."""
        return {"value": [float(v) for v in scores[:, 0]]}, {"scores": scores}

    def check_spec(self, classes: Sequence[str], multilabel: bool) -> str | None:
        """One output, single-label."""
        if multilabel or len(classes) != 1:
            return "a regression model has one output"
        return None


TASK = register(Regression())
