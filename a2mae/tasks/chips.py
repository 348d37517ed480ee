"""Read one GeoTIFF chip of a downstream dataset: pixels plus the metadata the encoder uses.

GSD and the four corners come from the GeoTIFF when it is georeferenced (a CRS and a transform);
otherwise they are ``None`` and the encoder takes its "metadata unknown" path. The band list comes from
the GeoTIFF band descriptions when they all name bands of the sensor, else from ``finetune.bands``.
The sensor is the GeoTIFF tag ``A2MAE_SENSOR`` when present, else ``finetune.sensor``.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from a2mae.sensors import get_registry
from a2mae.tasks.errors import DatasetError as DatasetError  # re-exported
from a2mae.tasks.errors import EmptySplitError as EmptySplitError
from a2mae.types import ImageMeta

SENSOR_TAG = "A2MAE_SENSOR"
DATETIME_TAGS = ("A2MAE_DATETIME", "ACQUISITION_DATETIME", "TIFFTAG_DATETIME")


@dataclass(frozen=True)
class BandSpec:
    """How to interpret the bands of the chips of a dataset.

    Attributes:
        sensor: Default sensor id (a chip's ``A2MAE_SENSOR`` tag wins).
        bands: Band ids in file order, or None to read them from the band descriptions.
    """

    sensor: str
    bands: tuple[str, ...] | None = None


@contextlib.contextmanager
def open_raster(path: Path) -> Iterator[rasterio.DatasetReader]:
    """``rasterio.open`` without the warning for chips that carry no georeference."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            yield src


def _corners_wgs84(src: rasterio.DatasetReader) -> tuple[tuple[float, float], ...] | None:
    if src.crs is None or src.transform.is_identity:
        return None
    from rasterio.warp import transform as warp

    t = src.transform
    w, h = src.width, src.height
    cols_rows = [(0, 0), (w, 0), (w, h), (0, h)]  # pixel-edge corners UL, UR, LR, LL
    xs, ys = zip(*(t @ cr for cr in cols_rows), strict=True)
    lon, lat = warp(src.crs, "EPSG:4326", list(xs), list(ys))
    if not all(math.isfinite(v) for v in (*lon, *lat)):
        return None
    return tuple((float(a), float(o)) for a, o in zip(lat, lon, strict=True))


def _gsd_m(src: rasterio.DatasetReader) -> float | None:
    if src.crs is None or src.transform.is_identity:
        return None
    res = abs(src.transform.a)
    if src.crs.is_geographic:  # degrees -> metres at the chip centre
        lat = (src.bounds.top + src.bounds.bottom) / 2
        return float(res * 111_320.0 * max(math.cos(math.radians(lat)), 1e-6))
    factor = src.crs.linear_units_factor[1] if src.crs.linear_units_factor else 1.0
    return float(res * factor)


def _datetime(tags: dict[str, str]) -> datetime | None:
    for key in DATETIME_TAGS:
        raw = tags.get(key)
        if not raw:
            continue
        for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y:%m:%d %H:%M:%S", "%Y-%m-%d"):
            try:
                dt = datetime.strptime(raw.replace("Z", "+0000"), fmt)
            except ValueError:
                continue
            return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    return None


def resolve_bands(
    path: Path, descriptions: tuple[str | None, ...], spec: BandSpec, sensor: str
) -> tuple[str, ...]:
    """Band ids of a chip, from its band descriptions or from ``spec.bands``.

    Raises:
        DatasetError: The sensor is unknown, or the bands cannot be determined or do not match the
            file's band count.
    """
    registry = get_registry()
    if sensor not in registry:
        raise DatasetError(
            f"{path}: unknown sensor {sensor!r} (known: {', '.join(registry.ids)}); set finetune.sensor"
        )
    s = registry.get(sensor)
    if spec.bands is not None:
        bands = []
        for b in spec.bands:
            bid = s.band_id(b)
            if bid is None:
                raise DatasetError(
                    f"finetune.bands: {b!r} is not a band of {sensor} (known: {', '.join(s.bands)})"
                )
            bands.append(bid)
        if len(bands) != len(descriptions):
            raise DatasetError(
                f"{path}: {len(descriptions)} bands in the file but finetune.bands lists {len(bands)}; "
                "make them match"
            )
        return tuple(bands)
    ids = [s.band_id(d) if d else None for d in descriptions]
    if all(ids):
        return tuple(i for i in ids if i is not None)
    raise DatasetError(
        f"{path}: band descriptions {list(descriptions)} do not all name {sensor} bands; "
        "set finetune.bands to the band ids in file order"
    )


def read_chip(path: str | Path, spec: BandSpec) -> tuple[np.ndarray, ImageMeta]:
    """Read a GeoTIFF chip.

    Args:
        path: The chip.
        spec: Default sensor and band list.

    Returns:
        ``pixels [C, H, W]`` float32 in file units, and its metadata (gsd/corners None when the file is
        not georeferenced).

    Raises:
        DatasetError: The file cannot be read, or its bands cannot be determined.
    """
    path = Path(path)
    try:
        with open_raster(path) as src:
            tags = src.tags()
            sensor = tags.get(SENSOR_TAG, spec.sensor)
            bands = resolve_bands(path, tuple(src.descriptions), spec, sensor)
            pixels = src.read(out_dtype="float32")
            gsd, corners = _gsd_m(src), _corners_wgs84(src)
    except RasterioIOError as err:
        raise DatasetError(f"{path}: cannot read as a GeoTIFF ({str(err).splitlines()[0]})") from None
    meta = ImageMeta(
        sensor=sensor, bands=bands, gsd_m=gsd, corners=corners, datetime=_datetime(tags), image_id=path.stem
    )
    return pixels, meta


def read_mask(path: str | Path) -> np.ndarray:
    """Read a single-band label raster (GeoTIFF or PNG) as ``[H, W]`` int64.

    Raises:
        DatasetError: Unreadable, or more than one band.
    """
    path = Path(path)
    try:
        with open_raster(path) as src:
            if src.count != 1:
                raise DatasetError(f"{path}: a mask must have 1 band, found {src.count}")
            mask: np.ndarray = src.read(1).astype(np.int64)
            return mask
    except RasterioIOError as err:
        raise DatasetError(f"{path}: cannot read the mask ({str(err).splitlines()[0]})") from None


def raster_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of a raster without reading its pixels.

    Raises:
        DatasetError: Unreadable file.
    """
    path = Path(path)
    try:
        with open_raster(path) as src:
            return src.height, src.width
    except RasterioIOError as err:
        raise DatasetError(f"{path}: cannot read ({str(err).splitlines()[0]})") from None
