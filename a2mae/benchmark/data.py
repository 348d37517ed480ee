"""What every layout reader returns: labelled chips in file units, with their ground footprint.

A :class:`BenchData` is the whole labelled set, whatever its layout: chips of one size (a single image,
or a before/after pair for change detection), a label per chip (scene classification) or per pixel
(segmentation, change), the footprint of each chip in metres of a projected CRS (for spatial folds and
the block bootstrap) and, where the dataset fixes it, the fold of a chip (OSCD's own city split).
Scenes larger than a chip are cut on a grid without overlap by :func:`cut_scene`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np

from a2mae.errors import A2maeError
from a2mae.types import ImageMeta

Kind = Literal["single-label", "multi-label", "segmentation", "change"]
#: Label value of a pixel that carries no label (dense tasks).
IGNORE = 255
#: Folds: ``-1`` free (assigned by spatial groups), else the fold the dataset fixes.
TRAIN, VAL, TEST = 0, 1, 2


class BenchmarkError(A2maeError, ValueError):
    """The benchmark cannot run on this input; the message names the file or key and what to do."""


@dataclass
class Chip:
    """One labelled sample.

    Attributes:
        pixels: ``[T, C, H, W]`` float32 in file units; ``T`` = 1 (one image) or 2 (before, after).
        metas: One :class:`ImageMeta` per image.
        label: Scene: ``()`` int class or ``(K,)`` 0/1 (multi-label); dense: ``[H, W]`` int64 class per
            pixel (``IGNORE`` where unlabelled; change: 1 changed, 0 unchanged).
        bounds: ``(left, bottom, right, top)`` in metres of a projected CRS, or None (no georeference).
        group: Scene / CRS key: chips of different groups never share a spatial block.
        fixed_fold: ``-1`` or the fold the dataset fixes (0 train, 1 val, 2 test).
        name: Where it came from (file or scene and window), for messages.
    """

    pixels: np.ndarray
    metas: tuple[ImageMeta, ...]
    label: np.ndarray
    bounds: tuple[float, float, float, float] | None
    group: str
    fixed_fold: int = -1
    name: str = ""


@dataclass
class BenchData:
    """A labelled set read from one layout.

    Attributes:
        kind: Probe kind (single-label, multi-label, segmentation, change).
        classes: Class names in index order (change: ``["unchanged", "changed"]``).
        chips: The samples, all of one size.
        layout: The layout it was read as (``oscd``, ``change-pair``, ...).
        root: The folder or file given.
        sensor: Sensor id of the images.
        bands: Band ids in channel order.
        notes: What the reader decided (shown and recorded), e.g. bands resampled.
    """

    kind: Kind
    classes: list[str]
    chips: list[Chip]
    layout: str
    root: Path
    sensor: str
    bands: tuple[str, ...]
    notes: list[str] = field(default_factory=list)

    @property
    def dense(self) -> bool:
        """Labels per pixel (segmentation, change)."""
        return self.kind in ("segmentation", "change")

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the chips."""
        return int(self.chips[0].pixels.shape[-2]), int(self.chips[0].pixels.shape[-1])

    def data_hash(self) -> str:
        """sha256 (16 hex) of every chip's pixels, labels and metadata: the cache key of the data."""
        h = hashlib.sha256(f"{self.kind}|{self.classes}|{self.sensor}|{self.bands}".encode())
        for c in self.chips:
            h.update(chip_hash(c).encode())
        return h.hexdigest()[:16]


def chip_hash(chip: Chip) -> str:
    """sha256 (16 hex) of one chip's pixels, label and metadata."""
    h = hashlib.sha256(np.ascontiguousarray(chip.pixels, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(chip.label).tobytes())
    h.update(repr([(m.sensor, m.bands, m.gsd_m, m.corners, m.datetime) for m in chip.metas]).encode())
    return h.hexdigest()[:16]


def corners_wgs84(
    crs: object, left: float, bottom: float, right: float, top: float
) -> tuple[tuple[float, float], ...] | None:
    """Pixel-edge corners UL, UR, LR, LL as ``(lat, lon)`` of a box in ``crs`` (None if not finite)."""
    from rasterio.warp import transform as warp

    lon, lat = warp(crs, "EPSG:4326", [left, right, right, left], [top, top, bottom, bottom])
    if not all(math.isfinite(v) for v in (*lon, *lat)):
        return None
    return tuple((float(a), float(o)) for a, o in zip(lat, lon, strict=True))


def metres_box(crs: object, left: float, bottom: float, right: float, top: float) -> tuple[float, ...]:
    """A box of ``crs`` in metres.

    Projected CRSs as they are, geographic ones by a local equirectangular approximation
    (x = lon * 111320 cos(lat), y = lat * 110574), enough for blocks of a few km.
    """
    if getattr(crs, "is_geographic", False):
        lat0 = math.radians((top + bottom) / 2)
        kx = 111_320.0 * math.cos(lat0)
        return (left * kx, bottom * 110_574.0, right * kx, top * 110_574.0)
    return (left, bottom, right, top)


@dataclass(frozen=True)
class SceneImage:
    """One georeferenced image of a scene: pixels and what the encoder needs to know about it."""

    pixels: np.ndarray  # [C, H, W] float32, file units
    sensor: str
    bands: tuple[str, ...]
    gsd_m: float | None
    when: datetime | None = None


def cut_scene(
    images: list[SceneImage],
    label: np.ndarray | None,
    transform: object,
    crs: object,
    chip: int,
    *,
    group: str,
    name: str,
    fixed_fold: int = -1,
    scene_label: np.ndarray | None = None,
) -> list[Chip]:
    """Cut co-registered images (and their label raster) into chips on a grid without overlap.

    Args:
        images: 1 or 2 images of one grid ``[C, H, W]``.
        label: ``[H, W]`` label raster (dense), or None with ``scene_label`` for a scene label.
        transform: The affine transform of the grid (rasterio).
        crs: Its CRS (None: no georeference; bounds are then in pixels).
        chip: Chip side in pixels.
        group: Scene key of the chips.
        name: Scene name for messages.
        fixed_fold: Fold the dataset fixes for this scene (``-1``: free).
        scene_label: Scene label for every chip when ``label`` is None.

    Returns:
        Chips holding at least one labelled pixel (dense), row-major.
    """
    h, w = images[0].pixels.shape[-2:]
    out: list[Chip] = []
    for r0 in range(0, h - chip + 1, chip):
        for c0 in range(0, w - chip + 1, chip):
            lab = None if label is None else label[r0 : r0 + chip, c0 : c0 + chip]
            if lab is not None and not (lab != IGNORE).any():
                continue
            left, top = transform @ (c0, r0)  # type: ignore[operator]
            right, bottom = transform @ (c0 + chip, r0 + chip)  # type: ignore[operator]
            box = (min(left, right), min(bottom, top), max(left, right), max(bottom, top))
            corners = corners_wgs84(crs, *box) if crs is not None else None
            metas = tuple(
                ImageMeta(
                    sensor=im.sensor,
                    bands=im.bands,
                    gsd_m=im.gsd_m,
                    corners=corners,
                    datetime=im.when,
                    image_id=f"{name}:{i}:{r0}:{c0}",
                )
                for i, im in enumerate(images)
            )
            px = np.stack([im.pixels[:, r0 : r0 + chip, c0 : c0 + chip] for im in images]).astype(np.float32)
            out.append(
                Chip(
                    pixels=px,
                    metas=metas,
                    label=np.asarray(scene_label if lab is None else lab.astype(np.int64)),
                    bounds=metres_box(crs, *box) if crs is not None else None,  # type: ignore[arg-type]
                    group=group,
                    fixed_fold=fixed_fold,
                    name=f"{name}[{r0}:{r0 + chip}, {c0}:{c0 + chip}]",
                )
            )
    return out
