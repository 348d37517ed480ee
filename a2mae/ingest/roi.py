"""Regions of interest: where a scene is tiled, as a GeoJSON (Multi)Polygon in WGS84 (pure).

A catalog record may carry ``roi_geojson`` (``a2mae collect`` writes the sampled locations around
which a remote scene was gathered); ``a2mae tile`` then uses only the grid points inside it, so only
the chip windows there are read. Records without one are tiled wherever a chip fits.

Coordinates are ``[lon, lat]`` degrees. A point is inside a (Multi)Polygon when it is inside one of
its polygons (even-odd rule over that polygon's rings, so holes work). Polygons are treated as
planar in degrees: fine for regions of a few kilometres, not for ones crossing the antimeridian.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

#: Metres per degree of latitude (mean), for squares around points.
_M_PER_DEG = 111_320.0

Ring = list[list[float]]
Polygon = list[Ring]


def polygons_of(geometry: Mapping[str, Any]) -> list[Polygon]:
    """The polygons of a GeoJSON Polygon or MultiPolygon geometry.

    Raises:
        ValueError: Another geometry type.
    """
    kind = geometry.get("type")
    coords = geometry.get("coordinates")
    if kind == "Polygon":
        return [coords]  # type: ignore[list-item]
    if kind == "MultiPolygon":
        return list(coords)  # type: ignore[arg-type]
    raise ValueError(f"expected a Polygon or MultiPolygon, got {kind!r}")


def union_geojson(polygons: Iterable[Polygon]) -> str:
    """A compact, canonical GeoJSON MultiPolygon text of ``polygons`` (duplicates dropped, sorted)."""
    unique = sorted({json.dumps(p, separators=(",", ":")) for p in polygons})
    doc = {"type": "MultiPolygon", "coordinates": [json.loads(p) for p in unique]}
    return json.dumps(doc, separators=(",", ":"))


def square_around(lon: float, lat: float, side_m: float) -> Polygon:
    """A square of ``side_m`` metres centred on a point (closed ring, counter-clockwise), 7 decimals."""
    half_lat = side_m / 2 / _M_PER_DEG
    half_lon = side_m / 2 / (_M_PER_DEG * max(math.cos(math.radians(lat)), 1e-6))
    w, e, s, n = lon - half_lon, lon + half_lon, lat - half_lat, lat + half_lat
    ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    return [[[round(x, 7), round(y, 7)] for x, y in ring]]


def _in_ring(ring: Sequence[Sequence[float]], lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Even-odd crossing test of points against one ring (vectorised over the points)."""
    xs = np.asarray([p[0] for p in ring], float)
    ys = np.asarray([p[1] for p in ring], float)
    inside = np.zeros(lon.shape, bool)
    for k in range(len(xs) - 1):
        x0, y0, x1, y1 = xs[k], ys[k], xs[k + 1], ys[k + 1]
        if y0 == y1:
            continue
        crosses = (y0 > lat) != (y1 > lat)
        x_at = x0 + (lat - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (lon < x_at)
    return inside


def contains(geojson: str | Mapping[str, Any], lon: Any, lat: Any) -> np.ndarray:
    """Which points ``(lon, lat)`` lie inside a (Multi)Polygon.

    Args:
        geojson: The geometry, as GeoJSON text or a mapping.
        lon: Longitudes, degrees (array-like).
        lat: Latitudes, degrees (same shape).

    Returns:
        A boolean array of the points' shape.
    """
    geometry = json.loads(geojson) if isinstance(geojson, str) else geojson
    lon = np.asarray(lon, float)
    lat = np.asarray(lat, float)
    out = np.zeros(lon.shape, bool)
    for polygon in polygons_of(geometry):
        inside = np.zeros(lon.shape, bool)
        for ring in polygon:
            inside ^= _in_ring(ring, lon, lat)
        out |= inside
    return out


def centroid(polygon: Polygon) -> tuple[float, float]:
    """Mean of the outer ring's vertices ``(lon, lat)`` (closing vertex counted once)."""
    ring = polygon[0][:-1] if polygon[0][0] == polygon[0][-1] else polygon[0]
    return float(np.mean([p[0] for p in ring])), float(np.mean([p[1] for p in ring]))


def bbox_of(polygons: Iterable[Polygon]) -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` of the outer rings."""
    pts = [p for poly in polygons for p in poly[0]]
    return (min(p[0] for p in pts), min(p[1] for p in pts), max(p[0] for p in pts), max(p[1] for p in pts))
