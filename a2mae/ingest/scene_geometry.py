"""Geometry and QA helpers of a raster grid (pure): metric pixel size, WGS84 corners, QA masks.

Shared by ingest and anything else that needs a grid's ground geometry. A grid is a rasterio CRS, an
affine transform and its size in pixels.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Any

import numpy as np

FOOTPRINT_POINTS_PER_EDGE = 8

Corners = tuple[tuple[float, float], tuple[float, float], tuple[float, float], tuple[float, float]]


def pixel_size_m(crs: Any, transform: Any, width: int, height: int) -> float:
    """Pixel size in metres: the side of the square of the same area as one pixel.

    ``sqrt(|a*e - b*d|)`` of the transform times the CRS unit's metre factor for projected CRSs;
    geodesic distances (WGS84) at the grid centre for geographic CRSs.
    """
    t = transform
    if crs.is_geographic:
        from pyproj import Geod

        cx, cy = t @ (width / 2, height / 2)
        ex, ey = t @ (width / 2 + 1, height / 2)
        sx, sy = t @ (width / 2, height / 2 + 1)
        geod = Geod(ellps="WGS84")
        return math.sqrt(geod.inv(cx, cy, ex, ey)[2] * geod.inv(cx, cy, sx, sy)[2])
    size = math.sqrt(abs(t.a * t.e - t.b * t.d))
    try:
        factor = float(crs.linear_units_factor[1])
    except Exception:  # CRS without linear units
        factor = 1.0
    return size * factor


def wgs84_geometry(
    crs: Any, transform: Any, width: int, height: int, points_per_edge: int = FOOTPRINT_POINTS_PER_EDGE
) -> tuple[Corners, str, tuple[float, float]]:
    """Corners, footprint and centre of a grid in WGS84.

    Args:
        crs: The grid's CRS (rasterio or anything ``pyproj.CRS.from_user_input`` takes via WKT).
        transform: Affine pixel -> CRS transform.
        width: Columns.
        height: Rows.
        points_per_edge: Points per edge of the footprint ring.

    Returns:
        ``(corners, footprint_wkt, (lat, lon) of the centre)``: corners are the pixel-edge corners UL,
        UR, LR, LL as ``(lat, lon)``; the WKT polygon is in ``lon lat`` order, starting at UL.
    """
    tr = _to_wgs84(crs.to_wkt() if hasattr(crs, "to_wkt") else str(crs), threading.get_ident())
    t = transform
    cols = [0, width, width, 0]
    rows = [0, 0, height, height]
    xs, ys = zip(*(t @ (c, r) for c, r in zip(cols, rows, strict=True)), strict=True)
    lons, lats = tr.transform(xs, ys)
    corners = tuple((float(la), float(lo)) for la, lo in zip(lats, lons, strict=True))
    n = points_per_edge
    ring_px: list[tuple[float, float]] = []
    for i in range(4):
        c0, r0, c1, r1 = cols[i], rows[i], cols[(i + 1) % 4], rows[(i + 1) % 4]
        ring_px.extend((c0 + (c1 - c0) * k / n, r0 + (r1 - r0) * k / n) for k in range(n))
    px, py = zip(*(t @ p for p in ring_px), strict=True)
    rlon, rlat = tr.transform(px, py)
    ring = [*zip(rlon, rlat, strict=True), (rlon[0], rlat[0])]
    wkt = "POLYGON ((" + ", ".join(f"{x:.8f} {y:.8f}" for x, y in ring) + "))"
    clon, clat = tr.transform(*(t @ (width / 2, height / 2)))
    return corners, wkt, (float(clat), float(clon))  # type: ignore[return-value]


@functools.lru_cache(maxsize=64)
def _to_wgs84(wkt: str, thread: int) -> Any:
    """Transformer from a CRS (as WKT) to WGS84 lon/lat, built once per CRS and thread.

    Archives share a few CRSs; ingest reads scenes in threads, which never share a transformer.
    """
    from pyproj import CRS, Transformer

    return Transformer.from_crs(CRS.from_user_input(wkt), "EPSG:4326", always_xy=True)


def crs_string(crs: Any) -> str:
    """``EPSG:nnnn`` when the CRS is exactly an EPSG CRS, else its WKT (a near match is not enough)."""
    epsg = crs.to_epsg(confidence_threshold=100)
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def is_all_nodata(values: np.ndarray, nodata: float | None) -> bool:
    """Whether every value is the nodata value, or (floats) NaN or infinite."""
    floats = np.issubdtype(values.dtype, np.floating)
    invalid = ~np.isfinite(values) if floats else np.zeros(values.shape, bool)
    if nodata is not None:
        invalid |= values == nodata
    return bool(invalid.all())
