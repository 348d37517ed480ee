"""The work of one batch of windows: read, build the metadata, run the model (any process).

:func:`run_batch` is the task function of :func:`a2mae.executor.run_tasks` (local processes) and of the
Ray Data actors (:mod:`a2mae.predict.ray_data`): a :class:`BatchTask` in (picklable: the model's
description, never its weights), a :class:`BatchResult` out. The model is built once per process.

Per window, the encoder's geographic encoding gets the window's own GSD and four corners (WGS84,
UL/UR/LR/LL) computed from the scene's CRS and the window's affine transform.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import numpy as np

from a2mae.predict.model import PredictModel
from a2mae.stssd.chips import SceneSource
from a2mae.types import ImageMeta


@dataclass(frozen=True)
class BatchTask:
    """Windows of one job to run through the model.

    Attributes:
        model: The model (built in the worker from its files).
        sources: One reader per image (before, after for change detection).
        crs: CRS of the grid.
        transform: Affine of the grid.
        windows: ``(row0, col0)`` of each window.
        win: Window side.
        sensor: Sensor id of the images.
        bands: Band ids read.
        datetime: Acquisition time (for the encoder), or None.
        norm: Encoder normalisation of the bands (embeddings), or None.
        dense: Embeddings: also return the token maps.
        s3: S3 settings for ``s3://`` scenes (None: from the environment).
        gdal_cache_mb: GDAL block cache of the worker, MB.
    """

    model: PredictModel
    sources: tuple[SceneSource, ...]
    crs: str
    transform: tuple[float, float, float, float, float, float]
    windows: tuple[tuple[int, int], ...]
    win: int
    sensor: str
    bands: tuple[str, ...]
    datetime: datetime | None = None
    norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    dense: bool = False
    s3: Any = None
    gdal_cache_mb: int | None = None


@dataclass
class BatchResult:
    """Outputs of a batch, window by window (numpy).

    Attributes:
        windows: ``(row0, col0)`` of each window.
        probs: ``[n, K, win, win]`` (dense tasks) or ``[n, K]`` (classification) float32, or None.
        pooled: ``[n, D]`` embeddings, or None.
        maps: ``[n, D, win/p, win/p]`` token maps, or None.
        nodata: ``[n, win, win]`` bool: nodata in any band of any image.
        cloud: ``[n, win, win]`` bool: flagged cloud by a QA layer.
    """

    windows: tuple[tuple[int, int], ...]
    probs: np.ndarray | None
    pooled: np.ndarray | None
    maps: np.ndarray | None
    nodata: np.ndarray
    cloud: np.ndarray


@lru_cache(maxsize=8)
def _to_wgs84(crs: str) -> Any:
    from pyproj import CRS, Transformer

    return Transformer.from_crs(CRS.from_user_input(crs), "EPSG:4326", always_xy=True)


@lru_cache(maxsize=8)
def _unit_factor(crs: str) -> tuple[bool, float]:
    from pyproj import CRS

    c = CRS.from_user_input(crs)
    if c.is_geographic:
        return True, 1.0
    units = c.axis_info[0].unit_conversion_factor if c.axis_info else 1.0
    return False, float(units)


def window_geometry(
    crs: str, transform: Sequence[float], row0: int, col0: int, h: int, w: int
) -> tuple[float, tuple[tuple[float, float], ...]]:
    """GSD (metres) and WGS84 corners ``((lat, lon) UL, UR, LR, LL)`` of a window of a grid.

    Corners are the outer pixel edges of the window, as in the scene catalog.
    """
    a, _, c, _, e, f = transform
    xs = [c + a * col0, c + a * (col0 + w), c + a * (col0 + w), c + a * col0]
    ys = [f + e * row0, f + e * row0, f + e * (row0 + h), f + e * (row0 + h)]
    lon, lat = _to_wgs84(crs).transform(xs, ys)
    corners = tuple((float(la), float(lo)) for la, lo in zip(lat, lon, strict=True))
    geographic, factor = _unit_factor(crs)
    if geographic:
        clat = math.radians(sum(la for la, _ in corners) / 4)
        gsd = math.sqrt(abs(a * e)) * 111_320.0 * max(math.cos(clat), 1e-6)
    else:
        gsd = math.sqrt(abs(a * e)) * factor
    return gsd, corners


def to_model_units(vals: np.ndarray, scale: float, offset: float, model: PredictModel) -> np.ndarray:
    """File values of a scene (``reflectance = value * scale + offset``) in the units ``model`` takes.

    The encoder takes reflectance x 10,000; a fine-tuned model the units of its training pixels (e.g.
    Sentinel-2 L2A, x 10,000: an ARCSI scene, x 1,000, is multiplied by 10); a model without recorded
    units (in-memory test models) the file values as they are.
    """
    if model.units == "reflectance":
        return (vals * scale + offset) * 10000.0
    if model.scale is None or (scale == model.scale and offset == model.offset):
        return vals
    return ((vals * scale + offset) - model.offset) / model.scale


def read_batch(task: BatchTask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read the windows of a batch: pixels in the model's units, nodata and cloud masks.

    Returns ``(pixels [n, I, C, win, win], nodata [n, win, win], cloud [n, win, win])``. Windows of
    one row are read as one region (neighbours overlap: each pixel is read once); values do not depend
    on the region (:func:`a2mae.stssd.chips.read_region_dn`).
    """
    from a2mae.io.raster import raster_env
    from a2mae.stssd.chips import read_region_dn

    n, k, win = len(task.windows), len(task.sources), task.win
    pix = np.empty((n, k, len(task.bands), win, win), np.float32)
    bad = np.zeros((n, win, win), bool)
    cloud = np.zeros((n, win, win), bool)
    rows: dict[int, list[int]] = {}
    for i, (r, _) in enumerate(task.windows):
        rows.setdefault(r, []).append(i)
    options = {} if task.gdal_cache_mb is None else {"GDAL_CACHEMAX": task.gdal_cache_mb << 20}
    with raster_env(task.s3, **options):
        for r, members in rows.items():
            c0 = min(task.windows[i][1] for i in members)
            width = max(task.windows[i][1] for i in members) + win - c0
            for j, src in enumerate(task.sources):
                vals, b, cl = read_region_dn(src, r, c0, win, width)
                vals = to_model_units(vals, src.scale, src.offset, task.model)
                for i in members:
                    o = task.windows[i][1] - c0
                    pix[i, j] = vals[:, :, o : o + win]
                    bad[i] |= b[:, o : o + win]
                    cloud[i] |= cl[:, o : o + win]
    return pix, bad, cloud


def _worker_threads() -> None:
    """One torch thread in a worker process (the workers are the parallelism).

    A forked worker must not enter OpenMP parallel regions: the parent's OpenMP pool does not survive
    ``fork``, and its first parallel operation would hang. One thread keeps torch on its serial path.
    """
    import multiprocessing

    import torch

    if multiprocessing.parent_process() is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def infer_batch(task: BatchTask, data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> BatchResult:
    """Run the model on the windows of a batch read by :func:`read_batch`."""
    pix, bad, cloud = data
    model = task.model
    if model.downstream is None and task.norm is not None and model.norm != task.norm:
        model = PredictModel(**{**model.__dict__, "norm": task.norm})
    metas = []
    for r, c in task.windows:
        gsd, corners = window_geometry(task.crs, task.transform, r, c, task.win, task.win)
        meta = ImageMeta(
            sensor=task.sensor, bands=task.bands, gsd_m=gsd, corners=corners, datetime=task.datetime
        )
        metas.append((meta,) * len(task.sources))
    x = pix if model.paired else pix[:, 0]
    out = model.infer(x, metas, dense=task.dense)
    return BatchResult(task.windows, out.probs, out.pooled, out.maps, bad, cloud)


def run_batch(task: BatchTask) -> BatchResult:
    """Read the windows of a batch and run the model on them (a worker's whole job).

    Args:
        task: The batch.

    Returns:
        Its outputs (see :class:`BatchResult`).
    """
    _worker_threads()
    return infer_batch(task, read_batch(task))
