"""Shared by the layout readers: opening rasters, naming their bands, the sensor and the label values."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from a2mae.benchmark.data import BenchmarkError
from a2mae.config import BenchmarkConfig
from a2mae.sensors import get_registry
from a2mae.tasks.chips import SENSOR_TAG, _datetime, _gsd_m

#: File name endings that are never images of a layout (headers, quick-looks, masks as pictures).
NOT_RASTERS = (".hdr", ".jpg", ".jpeg", ".png", ".bmp", ".txt", ".md", ".json", ".xml", ".aux", ".ovr")


@dataclass(frozen=True)
class BandChoice:
    """The sensor and band ids a reader gives the images (``benchmark.sensor`` / ``benchmark.bands``)."""

    sensor: str | None
    bands: tuple[str, ...] | None

    @classmethod
    def of(cls, cfg: BenchmarkConfig) -> BandChoice:
        """From the ``benchmark`` section."""
        return cls(cfg.sensor, tuple(cfg.bands) if cfg.bands else None)


@contextlib.contextmanager
def open_raster(path: Path) -> Iterator[rasterio.DatasetReader]:
    """``rasterio.open`` with a one-line :class:`BenchmarkError` for a file GDAL cannot read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                yield src
    except RasterioIOError as err:
        raise BenchmarkError(f"{path}: cannot read as a raster ({str(err).splitlines()[0]})") from None


def band_ids(
    path: Path, descriptions: Sequence[str | None], sensor: str, choice: BandChoice
) -> tuple[str, ...]:
    """Band ids of a raster: ``benchmark.bands`` when set, else its band descriptions.

    Raises:
        BenchmarkError: Unknown sensor, a band the sensor lacks, or descriptions that name no band.
    """
    registry = get_registry()
    if sensor not in registry:
        raise BenchmarkError(
            f"{path}: unknown sensor {sensor!r} (known: {', '.join(registry.ids)}); set benchmark.sensor"
        )
    s = registry.get(sensor)
    names = choice.bands if choice.bands is not None else tuple(d or "" for d in descriptions)
    ids = [s.band_id(n) for n in names]
    if choice.bands is not None and None in ids:
        bad = names[ids.index(None)]
        raise BenchmarkError(
            f"benchmark.bands: {bad!r} is not a band of {sensor} (known: {', '.join(s.bands)})"
        )
    if None in ids:
        raise BenchmarkError(
            f"{path}: band descriptions {list(descriptions)[:4]}... do not name {sensor} bands; set "
            "benchmark.sensor and benchmark.bands (band ids in file order)"
        )
    if len(ids) != len(descriptions):
        raise BenchmarkError(
            f"{path}: {len(descriptions)} bands in the file but benchmark.bands lists {len(ids)}; "
            "make them match"
        )
    return tuple(i for i in ids if i is not None)


def read_image(path: Path, choice: BandChoice, default_sensor: str) -> tuple[np.ndarray, dict[str, object]]:
    """Read a multi-band raster: ``[C, H, W]`` float32 and its grid (transform, crs, bands, sensor, gsd)."""
    with open_raster(path) as src:
        tags = src.tags()
        sensor = choice.sensor or tags.get(SENSOR_TAG) or default_sensor
        bands = band_ids(path, src.descriptions, sensor, choice)
        pixels = src.read(out_dtype="float32")
        info: dict[str, object] = {
            "transform": src.transform,
            "crs": src.crs,
            "sensor": sensor,
            "bands": bands,
            "gsd_m": _gsd_m(src),
            "when": _datetime(tags),
            "shape": (src.height, src.width),
        }
    return pixels, info


def read_label(path: Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A single-band label raster ``[H, W]`` int64 (nodata -> IGNORE); checks its size against ``shape``.

    Raises:
        BenchmarkError: Unreadable, several bands, or another size than the images (labels outside them).
    """
    from a2mae.benchmark.data import IGNORE

    with open_raster(path) as src:
        if src.count != 1:
            raise BenchmarkError(f"{path}: a label raster must have 1 band, found {src.count}")
        lab = src.read(1).astype(np.int64)
        if src.nodata is not None:
            lab[lab == int(src.nodata)] = IGNORE
    if shape is not None and lab.shape != tuple(shape):
        raise BenchmarkError(
            f"{path}: labels of {lab.shape[0]}x{lab.shape[1]} px do not cover the images' "
            f"{shape[0]}x{shape[1]} grid (labels outside the rasters); give labels on the images' grid"
        )
    out: np.ndarray = lab
    return out


def image_files(folder: Path, exclude: Sequence[str] = ()) -> list[Path]:
    """Rasters in a folder (GeoTIFFs and extension-less ENVI binaries), sorted by name."""
    out = []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name in exclude or p.name.startswith("."):
            continue
        ext = p.suffix.lower()
        if ext in (".tif", ".tiff", ".img", ".vrt") or (ext == "" and _has_header(p)):
            out.append(p)
    return out


def _has_header(p: Path) -> bool:
    return any((p.parent / (p.name + ext)).exists() for ext in (".hdr", ".HDR"))


def when_of(info: dict[str, object]) -> datetime | None:
    """The acquisition time read with an image, if any."""
    w = info.get("when")
    return w if isinstance(w, datetime) else None
