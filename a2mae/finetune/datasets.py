"""Moved to :mod:`a2mae.tasks` (each task module owns its dataset layout); kept for existing imports."""

from __future__ import annotations

from a2mae.tasks.base import open_dataset
from a2mae.tasks.data import (
    Batch,
    DatasetInfo,
    DownstreamDataset,
    Item,
    Sample,
    canonical_split,
    check_compatible,
    collate,
)

__all__ = [
    "Batch",
    "DatasetInfo",
    "DownstreamDataset",
    "Item",
    "Sample",
    "canonical_split",
    "check_compatible",
    "collate",
    "open_dataset",
]
