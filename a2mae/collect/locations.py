"""Where to gather scenes: locations from a GeoJSON or GeoParquet file, or generated with a seed.

A location has an id, a region (a WGS84 polygon: the polygon given, or a square of
``collect.location_size_m`` around a point) and a centre (whose latitude sets the growth periods).

* **GeoJSON**: a FeatureCollection, a Feature or a bare geometry; Point, MultiPoint, Polygon and
  MultiPolygon (each point and each polygon is a location). A feature's ``id`` or ``properties.id``
  names it; else ``loc-<n>``.
* **GeoParquet**: the primary geometry column (``geo`` metadata, WKB encoding) with the same
  geometry types; an ``id`` column names the rows.
* **Generated** (:func:`generate_locations`): stratified on a global equal-area grid. The sphere (or
  ``collect.bbox``) is cut into about ``n`` cells of equal area (latitude bands equal in
  ``sin(lat)``, each cut into columns); ``n`` cells are drawn without replacement and one uniform
  point (uniform on the sphere) is drawn in each, all from one seeded generator. The same seed and
  parameters give the same locations. No land mask: points at sea find no scene and are reported.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from a2mae.collect.mapping import CollectError
from a2mae.ingest.roi import Polygon, bbox_of, centroid, square_around


@dataclass(frozen=True)
class Location:
    """A place to gather co-located scenes at.

    Attributes:
        id: Name (from the file, or ``loc-<n>``).
        lon: Centre longitude, degrees.
        lat: Centre latitude, degrees (sets the growth periods).
        polygon: The region, ``[outer ring, holes...]`` of ``[lon, lat]``.
    """

    id: str
    lon: float
    lat: float
    polygon: Polygon

    @property
    def geometry(self) -> dict[str, Any]:
        """The region as a GeoJSON Polygon (the search's ``intersects``)."""
        return {"type": "Polygon", "coordinates": self.polygon}

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """``(west, south, east, north)`` of the region."""
        return bbox_of([self.polygon])


def _check_lonlat(lon: float, lat: float, where: str) -> None:
    if not (-180 <= lon <= 180 and -90 <= lat <= 90) or math.isnan(lon) or math.isnan(lat):
        raise CollectError(f"{where}: coordinate ({lon}, {lat}) is not longitude/latitude in WGS84 degrees")


def locations_from_geometry(
    geometry: Mapping[str, Any], name: str, size_m: float, where: str
) -> list[Location]:
    """The locations of one GeoJSON geometry (one per point or polygon).

    Raises:
        CollectError: Another geometry type, or coordinates that are not WGS84 degrees.
    """
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    points: list[Sequence[float]] = []
    polygons: list[Polygon] = []
    if kind == "Point":
        points = [coords]  # type: ignore[list-item]
    elif kind == "MultiPoint":
        points = list(coords)  # type: ignore[arg-type]
    elif kind == "Polygon":
        polygons = [coords]  # type: ignore[list-item]
    elif kind == "MultiPolygon":
        polygons = list(coords)  # type: ignore[arg-type]
    else:
        raise CollectError(
            f"{where}: {name}: geometry {kind!r} is not a Point, MultiPoint, Polygon or MultiPolygon"
        )
    out = []
    for k, p in enumerate(points):
        lon, lat = float(p[0]), float(p[1])
        _check_lonlat(lon, lat, where)
        out.append(Location(_name(name, k, len(points)), lon, lat, square_around(lon, lat, size_m)))
    for k, poly in enumerate(polygons):
        clean = [[[float(x), float(y)] for x, y, *_ in ring] for ring in poly]
        for x, y in clean[0]:
            _check_lonlat(x, y, where)
        lon, lat = centroid(clean)
        out.append(Location(_name(name, k, len(polygons)), lon, lat, clean))
    return out


def _name(base: str, k: int, n: int) -> str:
    return base if n == 1 else f"{base}-{k}"


def read_locations(path: str | os.PathLike[str], size_m: float) -> list[Location]:
    """Read locations from a GeoJSON (``.geojson``/``.json``) or GeoParquet (``.parquet``) file.

    Args:
        path: The file.
        size_m: Side of the square around each point, metres.

    Raises:
        CollectError: Missing, unreadable, no geometry, or geometries that are not points/polygons.
    """
    path = Path(path)
    if not path.is_file():
        raise CollectError(f"{path}: locations file not found (collect.locations)")
    if path.suffix.lower() in (".parquet", ".geoparquet"):
        found = list(_from_geoparquet(path, size_m))
    else:
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CollectError(
                f"{path}: not a GeoJSON file ({type(err).__name__}); give GeoJSON or GeoParquet"
            ) from None
        found = list(_from_geojson(doc, path, size_m))
    if not found:
        raise CollectError(f"{path}: holds no location (no point or polygon)")
    ids = [loc.id for loc in found]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise CollectError(f"{path}: location ids repeat ({', '.join(dup)}); give each feature its own id")
    return found


def _from_geojson(doc: Any, path: Path, size_m: float) -> Iterator[Location]:
    if not isinstance(doc, Mapping):
        raise CollectError(f"{path}: not a GeoJSON object")
    if doc.get("type") == "FeatureCollection":
        features = doc.get("features") or []
    elif doc.get("type") == "Feature":
        features = [doc]
    else:
        features = [{"type": "Feature", "geometry": doc, "properties": {}}]
    for k, feat in enumerate(features):
        if not isinstance(feat, Mapping) or not isinstance(feat.get("geometry"), Mapping):
            raise CollectError(f"{path}: feature {k} has no geometry")
        props = feat.get("properties") or {}
        name = str(feat.get("id") if feat.get("id") is not None else props.get("id", f"loc-{k}"))
        yield from locations_from_geometry(feat["geometry"], name, size_m, str(path))


def _from_geoparquet(path: Path, size_m: float) -> Iterator[Location]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a foreign file
        raise CollectError(
            f"{path}: not a Parquet file ({type(err).__name__}); give GeoJSON or GeoParquet"
        ) from None
    meta = json.loads((table.schema.metadata or {}).get(b"geo", b"{}") or b"{}")
    column = meta.get("primary_column", "geometry")
    encoding = (meta.get("columns", {}).get(column, {}) or {}).get("encoding", "WKB")
    if column not in table.column_names or str(encoding).upper() != "WKB":
        raise CollectError(f"{path}: no WKB geometry column {column!r} (GeoParquet 1.x with WKB encoding)")
    ids = table.column("id").to_pylist() if "id" in table.column_names else None
    for k, blob in enumerate(table.column(column).to_pylist()):
        if blob is None:
            continue
        name = str(ids[k]) if ids is not None and ids[k] is not None else f"loc-{k}"
        yield from locations_from_geometry(parse_wkb(bytes(blob), str(path)), name, size_m, str(path))


def parse_wkb(blob: bytes, where: str = "WKB") -> dict[str, Any]:
    """A GeoJSON geometry of a WKB/EWKB Point, MultiPoint, Polygon or MultiPolygon (Z/M dropped).

    Raises:
        CollectError: Another type, or truncated bytes.
    """
    try:
        geometry, _ = _wkb(memoryview(blob), 0)
    except (struct.error, IndexError):
        raise CollectError(f"{where}: truncated or invalid WKB geometry") from None
    return geometry


def _wkb(buf: memoryview, pos: int) -> tuple[dict[str, Any], int]:
    order = "<" if buf[pos] == 1 else ">"
    (code,) = struct.unpack_from(order + "I", buf, pos + 1)
    pos += 5
    if code & 0x20000000:  # EWKB SRID
        pos += 4
    base = code & 0x0FFFFFFF  # ISO codes 1001/2001/3001: Z/M/ZM; EWKB flags 0x80000000 Z, 0x40000000 M
    has_z = bool(code & 0x80000000) or base // 1000 in (1, 3)
    has_m = bool(code & 0x40000000) or base // 1000 in (2, 3)
    dims = 2 + has_z + has_m
    kind = base % 1000

    def point(p: int) -> tuple[list[float], int]:
        vals = struct.unpack_from(order + "d" * dims, buf, p)
        return [vals[0], vals[1]], p + 8 * dims

    def ring(p: int) -> tuple[list[list[float]], int]:
        (n,) = struct.unpack_from(order + "I", buf, p)
        p += 4
        pts = []
        for _ in range(n):
            xy, p = point(p)
            pts.append(xy)
        return pts, p

    def polygon(p: int) -> tuple[list[list[list[float]]], int]:
        (n,) = struct.unpack_from(order + "I", buf, p)
        p += 4
        rings = []
        for _ in range(n):
            r, p = ring(p)
            rings.append(r)
        return rings, p

    if kind == 1:
        xy, pos = point(pos)
        return {"type": "Point", "coordinates": xy}, pos
    if kind == 3:
        rings, pos = polygon(pos)
        return {"type": "Polygon", "coordinates": rings}, pos
    if kind in (4, 6):
        (n,) = struct.unpack_from(order + "I", buf, pos)
        pos += 4
        parts = []
        for _ in range(n):
            sub, pos = _wkb(buf, pos)
            parts.append(sub["coordinates"])
        return {"type": "MultiPoint" if kind == 4 else "MultiPolygon", "coordinates": parts}, pos
    raise CollectError(f"WKB geometry type {kind} is not a Point, MultiPoint, Polygon or MultiPolygon")


# ------------------------------------------------------------------------------------------ generated
def equal_area_cells(n: int, bbox: Sequence[float]) -> list[tuple[float, float, float, float]]:
    """About ``n`` cells of equal area covering ``bbox``: ``(west, east, sin(south), sin(north))``.

    Latitude bands are equal in ``sin(lat)`` (equal area on the sphere); each band gets columns in
    proportion to its width, so cells are near square in the middle latitudes.
    """
    west, south, east, north = bbox
    s0, s1 = math.sin(math.radians(south)), math.sin(math.radians(north))
    width = math.radians(east - west)
    area = width * (s1 - s0)
    side = math.sqrt(area / max(n, 1))
    rows = max(1, round((s1 - s0) / side))
    cells = []
    for r in range(rows):
        a, b = s0 + (s1 - s0) * r / rows, s0 + (s1 - s0) * (r + 1) / rows
        cols = max(1, round(width / side))
        for c in range(cols):
            cells.append((west + (east - west) * c / cols, west + (east - west) * (c + 1) / cols, a, b))
    return cells


def generate_locations(
    n: int, seed: int, size_m: float, bbox: Sequence[float] | None = None
) -> list[Location]:
    """``n`` locations stratified on an equal-area grid over ``bbox`` (default: the globe).

    Args:
        n: How many.
        seed: Seed of the generator (same seed, same locations).
        size_m: Side of the square around each point, metres.
        bbox: ``[west, south, east, north]`` degrees; default ``[-180, -90, 180, 90]``.

    Returns:
        Locations ``gen-<k>``, in the order drawn.

    Raises:
        CollectError: A bbox that is not ``west < east``, ``south < north`` in WGS84 degrees.
    """
    box = list(bbox) if bbox is not None else [-180.0, -90.0, 180.0, 90.0]
    w, s, e, nn = box
    if not (-180 <= w < e <= 180 and -90 <= s < nn <= 90):
        raise CollectError(f"collect.bbox: {box} is not [west, south, east, north] in WGS84 degrees")
    rng = np.random.default_rng(seed)
    cells = equal_area_cells(n, box)
    while len(cells) < n:  # rounding left fewer cells than points: refine
        cells = equal_area_cells(len(cells) * 2 + n, box)
    chosen = rng.choice(len(cells), size=n, replace=False)
    out = []
    for k, idx in enumerate(chosen):
        lo, hi, a, b = cells[int(idx)]
        lon = float(lo + (hi - lo) * rng.random())
        lat = float(math.degrees(math.asin(a + (b - a) * rng.random())))
        lon, lat = round(lon, 6), round(lat, 6)
        out.append(Location(f"gen-{k}", lon, lat, square_around(lon, lat, size_m)))
    return out
