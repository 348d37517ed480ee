"""The scene catalog: one row per ingested scene, stored as Parquet.

Written by :mod:`a2mae.ingest.run` (``a2mae ingest``), read by :mod:`a2mae.stssd.run`
(``a2mae tile``). A scene is a multi-band GeoTIFF or a folder of per-band files; ``band_files``
says where each band lives. All geometry is given both in the scene's CRS (``crs``, ``transform``,
``bounds`` of its finest band grid) and in WGS84 (``corners``, ``footprint_wkt``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from a2mae.ingest.errors import CatalogRowError as CatalogRowError  # re-exported

if TYPE_CHECKING:
    import pyarrow as pa


CATALOG_VERSION = 1


class BandFile(BaseModel):
    """Where one band of a scene lives and its grid."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    band: str = Field(description="Registry band id (B04, SR_B4 -> B4, ...).")
    uri: str = Field(description="Local absolute path or s3:// URI of the raster file.")
    index: int = Field(ge=1, description="1-based band index inside the file.")
    gsd_m: float = Field(gt=0, description="Pixel size in metres (CRS units for projected CRSs).")
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    transform: tuple[float, float, float, float, float, float] = Field(
        description="Affine (a, b, c, d, e, f) of this band's grid, in the scene CRS."
    )
    dtype: str
    nodata: float | None = None


class SourceFile(BaseModel):
    """One file of a scene as ingest saw it: what tile checks before it cuts the scene.

    A file replaced after ingest (new pixels at the same path) no longer matches: its size, its
    modification time, the digest of its first bytes (:data:`HEAD_BYTES`) or, when asked, the MD5 of
    its bytes differ (an S3 object: its ETag).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    uri: str
    size: int = Field(ge=0)
    mtime_ns: int | None = Field(default=None, description="Local files: modification time, ns.")
    etag: str | None = Field(default=None, description="S3 objects: the ETag.")
    head_sha256: str | None = Field(default=None, description="Local files: sha256 of the first bytes.")
    md5: str = Field(description="MD5 of the file's bytes (or the S3 single-part ETag).")


#: Bytes at the start of a file whose digest tile compares with the catalog's (a GeoTIFF's header).
HEAD_BYTES = 64 * 1024


class SceneRecord(BaseModel):
    """One scene of the catalog.

    ``corners`` are the pixel-edge corners of the finest band grid in WGS84, ordered UL, UR, LR, LL,
    each ``(lat, lon)``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    scene_id: str = Field(description="Stable id: <sensor>_<product>_<yyyymmdd|nodate>_<hash8>.")
    sensor: str
    product: str
    source: str = Field(description="The scene as given: a file, or the folder of per-band files.")
    datetime: dt.datetime | None = Field(description="Acquisition time, UTC (None when unknown).")
    datetime_source: Literal["tags", "filename", "stac", "mtl", "none"] = "none"
    period: Literal["g", "ng", "na"]
    crs: str = Field(description="CRS as EPSG:nnnn when it has one, else WKT.")
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    gsd_m: float = Field(description="Finest band's pixel size, metres.")
    bounds: tuple[float, float, float, float] = Field(description="left, bottom, right, top in crs.")
    corners: tuple[tuple[float, float], tuple[float, float], tuple[float, float], tuple[float, float]]
    footprint_wkt: str = Field(description="WGS84 footprint polygon (lon lat order, as WKT).")
    bands: tuple[str, ...] = Field(description="Band ids present, in registry order.")
    band_files: tuple[BandFile, ...]
    qa_file: BandFile | None = Field(default=None, description="QA/SCL layer, when present.")
    cloud_fraction: float | None = Field(default=None, ge=0, le=1)
    scale: float
    offset: float
    content_hash: str = Field(description="sha256 over the scene's files (bytes, or S3 ETags).")
    fingerprint: str | None = Field(
        default=None,
        description="sha256 of the source's listing (URIs, sizes, mtimes/ETags): lets ingest skip "
        "unchanged inputs without reading them.",
    )
    files: tuple[SourceFile, ...] | None = Field(
        default=None,
        description="Every file of the scene (rasters and sidecars) as ingested: tile refuses a scene "
        "whose files no longer match (None: a catalog written before this was recorded).",
    )
    roi_geojson: str | None = Field(
        default=None,
        description="WGS84 GeoJSON (Multi)Polygon: only grid points inside it are tiled for this scene "
        "(the locations `a2mae collect` gathered it for); None: wherever a chip fits.",
    )


_JSON_COLUMNS = ("transform", "bounds", "corners", "bands", "band_files", "qa_file", "files")


def records_to_table(records: Sequence[SceneRecord]) -> pa.Table:
    """Convert records to an Arrow table (nested fields as JSON strings, for portability)."""
    import pyarrow as pa

    rows = []
    for r in records:
        d = r.model_dump(mode="json")
        for col in _JSON_COLUMNS:
            d[col] = json.dumps(d[col])
        rows.append(d)
    fields: list[tuple[str, pa.DataType]] = [
        ("scene_id", pa.string()),
        ("sensor", pa.string()),
        ("product", pa.string()),
        ("source", pa.string()),
        ("datetime", pa.string()),
        ("datetime_source", pa.string()),
        ("period", pa.string()),
        ("crs", pa.string()),
        ("transform", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("gsd_m", pa.float64()),
        ("bounds", pa.string()),
        ("corners", pa.string()),
        ("footprint_wkt", pa.string()),
        ("bands", pa.string()),
        ("band_files", pa.string()),
        ("qa_file", pa.string()),
        ("cloud_fraction", pa.float64()),
        ("scale", pa.float64()),
        ("offset", pa.float64()),
        ("content_hash", pa.string()),
        ("fingerprint", pa.string()),
        ("roi_geojson", pa.string()),
        ("files", pa.string()),
    ]
    schema = pa.schema(fields, metadata={b"a2mae_catalog_version": str(CATALOG_VERSION).encode()})
    return pa.Table.from_pylist(rows, schema=schema)


def write_catalog(records: Sequence[SceneRecord], path: str | Path) -> None:
    """Write the catalog atomically, rows sorted by scene id (byte-stable for equal input)."""
    import pyarrow.parquet as pq

    from a2mae.io.atomic import atomic_path

    table = records_to_table(sorted(records, key=lambda r: r.scene_id))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_catalog(path: str | Path) -> list[SceneRecord]:
    """Read a catalog written by :func:`write_catalog` (empty list when the file does not exist).

    Raises:
        CatalogRowError: A row does not validate (the message names its scene id).
        Exception: pyarrow's errors for a file that is not Parquet.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        return []
    table = pq.read_table(path)
    if "scene_id" not in table.column_names:
        raise ValueError("no scene_id column")
    rows = table.to_pylist()
    out = []
    for d in rows:
        try:
            for col in _JSON_COLUMNS:
                d[col] = json.loads(d[col]) if d.get(col) is not None else None
            out.append(SceneRecord.model_validate(d))
        except (ValueError, TypeError) as err:  # pydantic's ValidationError is a ValueError
            raise CatalogRowError(str(d.get("scene_id")), " ".join(str(err).split())[:160]) from None
    return out
