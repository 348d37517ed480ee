"""Per-chip outputs as GeoParquet 1.1 (pyarrow only: WKB polygons and the ``geo`` metadata).

Schema (one row per chip; see docs/predict.md):

========================  ===========================================================================
``geometry``              chip polygon in WGS84 (lon/lat, OGC:CRS84), WKB -- the primary column
``geometry_scene``        the same chip in the scene's CRS, WKB (its PROJJSON CRS in the metadata)
``scene_id``              input scene id
``row``, ``col``          chip origin on the scene grid, pixels
``datetime``              acquisition time, timestamp (UTC, microseconds; null when unknown)
``sensor``                sensor id
``model_name``            registered model name
``model_version``         registered version
``run_id``                MLflow run that logged the model
``nodata_fraction``       share of nodata pixels in the chip
``cloud_fraction``        share of pixels flagged cloud by the QA layer
classification:           ``label`` (string; ``|``-joined for multi-label), ``label_index`` (int16,
                          -1 when none), ``score`` (float32), ``scores`` (fixed_size_list<float32>[K])
embeddings:               ``embedding`` (fixed_size_list<float32>[D])
========================  ===========================================================================

File-level metadata: ``geo`` (GeoParquet 1.1) and ``a2mae`` (JSON: model provenance, scene ids,
classes).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

GEOPARQUET_VERSION = "1.1.0"


def polygon_wkb(ring: Sequence[tuple[float, float]]) -> bytes:
    """WKB (little-endian) of a polygon with one ring; the ring is closed here."""
    pts = [*ring, ring[0]]
    head = struct.pack("<BIII", 1, 3, 1, len(pts))
    return head + b"".join(struct.pack("<dd", x, y) for x, y in pts)


def read_polygon_wkb(data: bytes) -> list[tuple[float, float]]:
    """The ring of a polygon written by :func:`polygon_wkb` (for tests and readers without shapely)."""
    order, kind, rings, n = struct.unpack_from("<BIII", data)
    if order != 1 or kind != 3 or rings != 1:
        raise ValueError("not a little-endian single-ring WKB polygon")
    return [struct.unpack_from("<dd", data, 13 + 16 * i) for i in range(n)]


def chip_rings(
    crs: str, transform: Sequence[float], windows: Sequence[tuple[int, int]], win: int
) -> tuple[list[list[tuple[float, float]]], list[list[tuple[float, float]]]]:
    """Chip rings in the scene CRS and in WGS84 lon/lat (UL, UR, LR, LL)."""
    from pyproj import CRS, Transformer

    a, _, c, _, e, f = transform[:6]
    scene = []
    for r, col in windows:
        x0, x1 = c + a * col, c + a * (col + win)
        y0, y1 = f + e * r, f + e * (r + win)
        scene.append([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
    tr = Transformer.from_crs(CRS.from_user_input(crs), "EPSG:4326", always_xy=True)
    flat = [p for ring in scene for p in ring]
    lon, lat = tr.transform([p[0] for p in flat], [p[1] for p in flat]) if flat else ([], [])
    wgs = [list(zip(lon[i : i + 4], lat[i : i + 4], strict=True)) for i in range(0, len(flat), 4)]
    return scene, wgs


class ChipWriter:
    """A GeoParquet file of chips written batch by batch (one row group per batch: bounded memory).

    Args:
        path: Target file (the caller makes the write atomic).
        crs: The scene's CRS (``EPSG:nnnn`` or WKT).
        transform: The scene grid's affine.
        win: Chip side, pixels.
        fixed: ``{column: K}`` of the fixed-size list columns.
        columns: ``{column: pyarrow type}`` of the plain columns, in order.
        when: Acquisition time of the scene (all rows), or None.
        meta: JSON-serialisable ``a2mae`` metadata (provenance, scene ids, classes).
    """

    def __init__(
        self,
        path: Path,
        crs: str,
        transform: Sequence[float],
        win: int,
        fixed: Mapping[str, int],
        columns: Mapping[str, Any],
        when: datetime | None,
        meta: Mapping[str, Any],
    ) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        from pyproj import CRS

        self.crs, self.transform, self.win, self.when = crs, transform, win, when
        fields: list[pa.Field[Any]] = [
            pa.field("geometry", pa.binary()),
            pa.field("geometry_scene", pa.binary()),
        ]
        fields += [pa.field(k, t) for k, t in columns.items()]
        fields.append(pa.field("datetime", pa.timestamp("us", tz="UTC")))
        fields += [pa.field(k, pa.list_(pa.float32(), n)) for k, n in fixed.items()]
        geo = {
            "version": GEOPARQUET_VERSION,
            "primary_column": "geometry",
            "columns": {
                "geometry": {"encoding": "WKB", "geometry_types": ["Polygon"]},
                "geometry_scene": {
                    "encoding": "WKB",
                    "geometry_types": ["Polygon"],
                    "crs": CRS.from_user_input(crs).to_json_dict(),
                },
            },
        }
        self.schema = pa.schema(
            fields, metadata={b"geo": json.dumps(geo).encode(), b"a2mae": json.dumps(dict(meta)).encode()}
        )
        self.writer = pq.ParquetWriter(path, self.schema, compression="zstd")
        self.rows = 0

    def write(
        self, windows: Sequence[tuple[int, int]], columns: Mapping[str, Any], fixed: Mapping[str, np.ndarray]
    ) -> None:
        """Append the chips at ``windows`` with their column values."""
        import pyarrow as pa

        scene, wgs = chip_rings(self.crs, self.transform, windows, self.win)
        n = len(windows)
        arrays: dict[str, Any] = {
            "geometry": pa.array([polygon_wkb(r) for r in wgs], pa.binary()),
            "geometry_scene": pa.array([polygon_wkb(r) for r in scene], pa.binary()),
        }
        for name, values in columns.items():
            arrays[name] = pa.array(list(values), self.schema.field(name).type)
        arrays["datetime"] = pa.array([self.when] * n, pa.timestamp("us", tz="UTC"))
        for name, a in fixed.items():
            a = np.ascontiguousarray(a, np.float32).reshape(n, -1)
            arrays[name] = pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])
        self.writer.write_table(pa.table([arrays[f.name] for f in self.schema], schema=self.schema))
        self.rows += n

    def close(self) -> None:
        """Finish the file."""
        self.writer.close()
