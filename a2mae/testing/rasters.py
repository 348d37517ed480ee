"""Small single-file test scenes of any encoding, and the reference of what tiling stores for them.

The scenes are Gaofen-2 PMS multispectral files (4 bands at 3.2 m, recognised by their file name), so a
test can vary the pixel type, nodata, compression, scale/offset metadata and geotransform freely and
still go through ingest's detection. :func:`reference_chip` is the documented storage rule written
independently of :mod:`a2mae.stssd.chips` (``docs/stssd.md``, "Stored values"), the oracle of the
fault-and-fuzz tests.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

#: A Gaofen-2 PMS multispectral file name (sensor, product and date come from it).
GF2_NAME = "GF2_PMS1_E113.6_N23.1_20200101_L1A0001234567-MSS1.tif"
GF2_CRS = "EPSG:32649"
GF2_ORIGIN = (760000.0, 2560000.0)
GF2_GSD = 3.2

#: Stored value of nodata pixels, and the reflectance factor of stored values (see docs/stssd.md).
NODATA = -32768
FACTOR = 10000.0


def write_scene(
    path: str | Path,
    data: np.ndarray,
    *,
    nodata: float | None = None,
    transform: Any = None,
    crs: str | None = GF2_CRS,
    scales: tuple[float, ...] | None = None,
    offsets: tuple[float, ...] | None = None,
    tags: dict[str, str] | None = None,
    **profile: Any,
) -> Path:
    """Write ``data`` ``[bands, rows, cols]`` as a GeoTIFF (GF2 grid by default) and return its path.

    Args:
        path: Output file.
        data: Pixels of any dtype GDAL writes.
        nodata: Declared nodata value (None: none declared).
        transform: Affine geotransform (default: north-up 3.2 m at the GF2 origin).
        crs: CRS (None: none).
        scales: GDAL band scales to declare.
        offsets: GDAL band offsets to declare.
        tags: Dataset tags.
        **profile: More creation options (``compress``, ``nbits``, ``tiled``, ...).
    """
    import rasterio
    from affine import Affine

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prof: dict[str, Any] = {
        "driver": "GTiff",
        "count": data.shape[0],
        "height": data.shape[1],
        "width": data.shape[2],
        "dtype": data.dtype.name,
        "nodata": nodata,
        "transform": transform
        if transform is not None
        else Affine(GF2_GSD, 0, GF2_ORIGIN[0], 0, -GF2_GSD, GF2_ORIGIN[1]),
        **profile,
    }
    if crs is not None:
        prof["crs"] = crs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", **prof) as ds:
            ds.write(data)
            if scales is not None:
                ds.scales = scales
            if offsets is not None:
                ds.offsets = offsets
            if tags:
                ds.update_tags(**tags)
    return path


def reference_chip(window: np.ndarray, scale: float, offset: float, nodata: float | None) -> np.ndarray:
    """What a snapshot stores for source pixels ``window`` ``[C, H, W]`` on the chip grid.

    ``round(value * scale * 10000 + offset * 10000)`` in float32 arithmetic, clipped to +-32767 (a
    finite float64 beyond float32's range clips too); ``-32768`` wherever any band is the nodata value,
    NaN or infinite.
    """
    bad = ~np.isfinite(window).all(0) if window.dtype.kind == "f" else np.zeros(window.shape[1:], bool)
    with np.errstate(over="ignore"):
        v = window.astype(np.float32)
    if nodata is not None and np.isfinite(nodata):
        bad |= (window == nodata).any(0)
    k, b = np.float32(scale * FACTOR), np.float32(offset * FACTOR)
    with np.errstate(invalid="ignore", over="ignore"):
        if k != 1:
            v = v * k
        if b != 0:
            v = v + b
        out = np.clip(np.rint(v), -32767, 32767)
    out = np.where(np.isfinite(out), out, 0).astype(np.int16)
    out[:, bad] = NODATA
    return out


def stored_chips(snapshot: str | Path) -> list[tuple[dict[str, Any], np.ndarray]]:
    """``(manifest row, stored int16 chip [C, H, W])`` of every image of a local snapshot."""
    import pyarrow.parquet as pq

    root = Path(snapshot)
    out = []
    for row in pq.read_table(root / "manifest.parquet").to_pylist():
        with open(root / row["shard"], "rb") as f:
            f.seek(row["offset"])
            raw = f.read(row["nbytes"])
        out.append((row, np.frombuffer(raw, "<i2").reshape(row["channels"], row["height"], row["width"])))
    return out
