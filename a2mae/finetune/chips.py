"""Moved to :mod:`a2mae.tasks.chips` (the tasks own their datasets); kept for existing imports."""

from __future__ import annotations

from a2mae.tasks.chips import (
    DATETIME_TAGS,
    SENSOR_TAG,
    BandSpec,
    DatasetError,
    EmptySplitError,
    raster_size,
    read_chip,
    read_mask,
)

__all__ = [
    "DATETIME_TAGS",
    "SENSOR_TAG",
    "BandSpec",
    "DatasetError",
    "EmptySplitError",
    "raster_size",
    "read_chip",
    "read_mask",
]
