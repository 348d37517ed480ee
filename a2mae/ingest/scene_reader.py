"""Read one scene's metadata into a :class:`~a2mae.ingest.catalog.SceneRecord` (headers, sidecars, QA).

Pixel reads are limited to three small ones per scene: the last block of each file (a truncated
download fails there), a decimated read of the finest band (an all-nodata scene is refused) and a
decimated read of the QA/SCL layer, when there is one, for the cloud fraction. Everything else comes
from the raster headers and the sidecars.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np

from a2mae.config import GrowthPeriodConfig
from a2mae.errors import A2maeError
from a2mae.ingest.catalog import HEAD_BYTES, BandFile, SceneRecord, SourceFile
from a2mae.ingest.discover import IngestError, SceneSpec
from a2mae.ingest.period import Period, growth_period
from a2mae.ingest.radiometry import FileEncoding, RadiometryRefused, choose, file_declared
from a2mae.ingest.scene_geometry import Corners, crs_string, is_all_nodata, pixel_size_m, wgs84_geometry
from a2mae.ingest.sidecars import (
    DateProblem,
    DatetimeSource,
    acquisition_datetime,
    check_dates,
    filename_disagreement,
    is_stac_item,
    parse_json,
    parse_mtl_json,
    parse_mtl_text,
    scale_offset_from_mtl,
    scale_offset_from_stac,
)
from a2mae.io.raster import describe_open_error, open_raster
from a2mae.io.storage import FileInfo, S3Settings, StorageError, content_md5, is_s3, read_bytes
from a2mae.sensors.detect import (
    Detection,
    SceneEvidence,
    assign_stack,
    band_vocabulary,
    canonical_band,
    detect_product,
)
from a2mae.sensors.registry import Product, Sensor, SensorRegistry

SIDECAR_MAX_BYTES = 5 << 20
NODATA_READ_SIDE = 256  # decimated read for the all-nodata check, pixels per side
QA_READ_SIDE = 512  # decimated read of the QA layer for the cloud fraction
FULL_RES_BLOCKS = 6  # blocks per side read at full resolution for the all-nodata check
MIN_PIXEL_M = 1e-3  # a smaller pixel is a geotransform in the wrong units (1 mm: below any imagery)


@dataclass
class _Header:
    """What one raster file's header says."""

    info: FileInfo
    crs: Any
    transform: Any
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    tags: dict[str, str]
    descriptions: tuple[str | None, ...]
    scales: tuple[float, ...] = ()
    offsets: tuple[float, ...] = ()

    @property
    def gsd(self) -> float:
        return math.sqrt(abs(self.transform.a * self.transform.e - self.transform.b * self.transform.d))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        from rasterio.transform import array_bounds

        west, south, east, north = array_bounds(self.height, self.width, self.transform)
        return (west, south, east, north)


# ------------------------------------------------------------------------------------------- headers
def _read_header(info: FileInfo, settings: S3Settings | None, max_pixels: int | None = None) -> _Header:
    """Open one raster and read its header; refuse what tile cannot use.

    Refused, each with one line naming the file: no CRS, no geotransform, a rotated, sheared or
    flipped grid, more pixels than ``max_pixels``, no pixels, and a file whose last block cannot be
    read (a truncated download keeps its header).

    Raises:
        IngestError: The file cannot be used.
    """
    import rasterio

    try:
        with open_raster(info.uri, settings) as ds:
            _check_grid(info, ds, max_pixels)
            header = _Header(
                info=info,
                crs=ds.crs,
                transform=ds.transform,
                width=ds.width,
                height=ds.height,
                count=ds.count,
                dtype=ds.dtypes[0],
                nodata=ds.nodata,
                tags={str(k): str(v) for k, v in ds.tags().items()},
                descriptions=tuple(ds.descriptions),
                scales=tuple(ds.scales),
                offsets=tuple(ds.offsets),
            )
            # A truncated download keeps its header: read the last block of the last band.
            rows, cols = ds.block_shapes[-1]
            last = ds.block_window(ds.count, (ds.height - 1) // rows, (ds.width - 1) // cols)
            ds.read(ds.count, window=last)
    except rasterio.errors.RasterioIOError as err:
        raise IngestError(_read_error(err, info, settings)) from None
    except A2maeError as err:
        raise IngestError(str(err)) from None
    return header


def _check_grid(info: FileInfo, ds: Any, max_pixels: int | None) -> None:
    """Refuse a raster without georeferencing, with a grid tile cannot cut, or too large to plan.

    Raises:
        IngestError: One line naming the file and what to do.
    """
    if ds.width < 1 or ds.height < 1 or ds.count < 1:
        raise IngestError(f"{info.uri}: raster has no pixels or no bands")
    if max_pixels is not None and ds.width * ds.height > max_pixels:
        raise IngestError(
            f"{info.uri}: raster declares {ds.width} x {ds.height} = {ds.width * ds.height:,} pixels, above "
            f"data.max_raster_pixels={max_pixels:,}; cut it into tiles (gdal_retile.py) or raise the limit"
        )
    if ds.crs is None:
        raise IngestError(
            f"{info.uri}: raster has no CRS; georeference it (e.g. gdal_edit.py -a_srs EPSG:xxxx) "
            "or use the archive's original file"
        )
    t = ds.transform
    if t.is_identity:
        how = (
            "only ground control points; warp it first (gdalwarp)"
            if ds.gcps[0]
            else "georeference it (gdal_translate -a_ullr ...) or use the archive's original file"
        )
        raise IngestError(f"{info.uri}: raster has no geotransform; {how}")
    if t.b != 0 or t.d != 0:
        raise IngestError(
            f"{info.uri}: rotated or sheared grid (geotransform terms b={t.b:g}, d={t.d:g}); tiling needs "
            "north-up grids: warp it (gdalwarp -t_srs <its CRS>)"
        )
    if not (t.a > 0 and t.e < 0) or not all(math.isfinite(v) for v in (t.a, t.c, t.e, t.f)):
        raise IngestError(
            f"{info.uri}: flipped or degenerate grid (pixel size {t.a:g} x {t.e:g}; north-up needs x > 0 "
            "and y < 0); warp it (gdalwarp -t_srs <its CRS>)"
        )


def _read_error(err: BaseException, info: FileInfo, settings: S3Settings | None) -> str:
    """One line for a failed read of ``info``: an unreachable store, a truncated file, or GDAL's reason.

    A remote read that fails looks like a truncated file to GDAL; the store is asked for the object
    again first, so that a store that went away is named as such.
    """
    if is_s3(info.uri):
        from a2mae.io.storage import file_info

        try:
            file_info(info.uri, settings)
        except A2maeError as gone:  # names the endpoint and what to do
            return str(gone)
    return f"{info.uri}: {_read_reason(err)}"


def _read_reason(err: BaseException) -> str:
    causes = _causes(err)
    chain = " ".join(" ".join(str(e).split()) for e in causes).lower()
    if "read failed" in chain or "tiffread" in chain or "read error" in chain:
        detail = " ".join(str(causes[-1]).split())
        detail = detail.split(": ", 1)[-1][:120]
        return f"truncated or corrupt file (pixel data cannot be read: {detail}); download it again"
    return describe_open_error(err)


def _causes(err: BaseException | None) -> list[BaseException]:
    out: list[BaseException] = []
    while err is not None and len(out) < 5:
        out.append(err)
        err = err.__cause__ or err.__context__
    return out


def _decimated(
    info: FileInfo, band: int, height: int, width: int, side: int, settings: S3Settings | None
) -> np.ndarray:
    """Nearest-neighbour read of one band at most ``side`` pixels on its longer side (uses overviews)."""
    import rasterio

    factor = max(1, math.ceil(max(height, width) / side))
    shape = (max(1, math.ceil(height / factor)), max(1, math.ceil(width / factor)))
    try:
        with open_raster(info.uri, settings) as ds:
            values: np.ndarray = ds.read(band, out_shape=shape)
            return values
    except rasterio.errors.RasterioIOError as err:
        raise IngestError(_read_error(err, info, settings)) from None


# ------------------------------------------------------------------------------------------ sidecars
def _read_sidecars(
    spec: SceneSpec, settings: S3Settings | None
) -> tuple[dict[str, Any] | None, dict[str, str] | None]:
    stac: dict[str, Any] | None = None
    mtl: dict[str, str] | None = None
    mtl_json: dict[str, str] | None = None
    for info in spec.sidecars:
        name = info.name.lower()
        if info.size > SIDECAR_MAX_BYTES or not (name.endswith(".json") or name.endswith("mtl.txt")):
            continue
        data = read_bytes(info.uri, settings, max_bytes=SIDECAR_MAX_BYTES)
        if name.endswith(".txt"):
            mtl = mtl or parse_mtl_text(data.decode("utf-8", errors="replace"))
            continue
        doc = parse_json(data)
        if is_stac_item(doc):
            stac = stac or doc
        elif isinstance(doc, dict) and (flat := parse_mtl_json(doc)) is not None:
            mtl_json = mtl_json or flat
    return stac, mtl or mtl_json


# ---------------------------------------------------------------------------------------------- read
class _Acquisition(NamedTuple):
    """When and where a scene was taken, as its catalog record states it."""

    when: datetime | None
    when_source: DatetimeSource
    corners: Corners
    footprint: str  # WGS84 polygon WKT
    period: Period


@dataclass(frozen=True)
class ReadContext:
    """What :func:`read_scene` needs besides the scene: registry, S3 settings, period rule."""

    registry: SensorRegistry
    settings: S3Settings | None
    growth: GrowthPeriodConfig
    max_pixels: int | None = None


def read_scene(
    spec: SceneSpec, ctx: ReadContext, fingerprint: str | None = None, notes: list[str] | None = None
) -> SceneRecord:
    """Read a scene's metadata and build its catalog record.

    Args:
        spec: The scene from discovery.
        ctx: Registry, S3 settings and the growth-period rule.
        fingerprint: Listing fingerprint stored with the record (see :mod:`a2mae.ingest.run`).
        notes: Receives one line per doubt about a scene that is still added (e.g. its metadata date
            disagrees with the date in its file name).

    Returns:
        The record.

    Raises:
        IngestError: Bad input, with one line naming the file and what to do.
    """
    from pydantic import ValidationError

    try:
        return _read_scene(spec, ctx, fingerprint, notes if notes is not None else [])
    except IngestError:
        raise
    except A2maeError as err:  # storage, raster and detection errors already name the file
        raise IngestError(str(err)) from None
    except ValidationError as err:  # a value the catalog cannot hold: one line, never a traceback
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise IngestError(
            f"{spec.source}: its metadata cannot be catalogued ({where}: {first['msg']}, got "
            f"{str(first.get('input'))[:60]}); check the file's georeferencing and tags (gdalinfo)"
        ) from None


def _read_scene(spec: SceneSpec, ctx: ReadContext, fingerprint: str | None, notes: list[str]) -> SceneRecord:
    """Read one scene: sidecars and headers, detection, bands and grids, pixel checks, the record.

    Headers and sidecars decide the product and the grids before the decimated pixel reads, and the
    content hash, which reads every local file whole, comes last: a scene is refused as early and as
    cheaply as possible.
    """
    stac, mtl = _read_sidecars(spec, ctx.settings)
    headers = [_read_header(info, ctx.settings, ctx.max_pixels) for info in spec.rasters]
    found = _detect(spec, headers, stac, mtl, ctx.registry)
    sensor = ctx.registry.get(found.sensor)
    product = sensor.product(found.product)

    band_files, qa_file, grids = _assign_bands(spec, headers, sensor, found.product, product)
    if (note := _ignored_descriptions(spec, headers[0], sensor, band_files)) is not None:
        notes.append(note)
    _check_grids(grids, spec.source)
    ref_band, ref_header = _reference_grid(grids, sensor)
    sample = _refuse_all_nodata(spec, ref_band, ref_header, ctx.settings)
    scale, offset = _reflectance_scale(spec, stac, mtl, product, grids, sample, ref_band.nodata)
    cloud_fraction = _cloud_fraction(spec, qa_file, product, grids, ctx.settings)

    acquired = _when_and_where(spec, headers[0], stac, mtl, ref_header, ctx, notes)
    files = source_files(spec, ctx.settings)
    content_hash = content_hash_of(files)
    date = acquired.when.strftime("%Y%m%d") if acquired.when else "nodate"
    ordered = sorted(band_files, key=lambda b: sensor_order(sensor, b.band))
    t = ref_header.transform
    return SceneRecord(
        scene_id=f"{sensor.id}_{found.product}_{date}_{content_hash[:8]}",
        sensor=sensor.id,
        product=found.product,
        source=spec.source,
        datetime=acquired.when,
        datetime_source=acquired.when_source,
        period=acquired.period,
        crs=crs_string(ref_header.crs),
        transform=(t.a, t.b, t.c, t.d, t.e, t.f),
        width=ref_header.width,
        height=ref_header.height,
        gsd_m=ref_band.gsd_m,
        bounds=ref_header.bounds,
        corners=acquired.corners,
        footprint_wkt=acquired.footprint,
        bands=tuple(b.band for b in ordered),
        band_files=tuple(ordered),
        qa_file=qa_file,
        cloud_fraction=cloud_fraction,
        scale=float(scale),
        offset=float(offset),
        content_hash=content_hash,
        fingerprint=fingerprint,
        files=files,
    )


def _detect(
    spec: SceneSpec,
    headers: Sequence[_Header],
    stac: dict[str, Any] | None,
    mtl: dict[str, str] | None,
    registry: SensorRegistry,
) -> Detection:
    """Decide the scene's sensor and product from its file names, band names, sidecars and tags.

    The band names come from the band descriptions of a multi-band file (used only when every band
    has a known name) or from the per-band file names that discovery matched.

    Raises:
        A2maeError: No registry product matches (the message names the source).
    """
    first = headers[0]
    vocab = band_vocabulary(registry)
    if spec.single_file and first.count > 1:
        tokens = tuple(d for d in first.descriptions if d and d.upper() in vocab)
        tokens = tokens if len(tokens) == first.count else ()
    else:
        tokens = tuple(spec.tokens[h.info.uri] for h in headers if h.info.uri in spec.tokens)
    evidence = SceneEvidence(
        file_names=tuple(f.name for f in spec.files),
        band_tokens=tokens,
        stac=stac,
        mtl=mtl,
        tags=first.tags,
        band_count=first.count,
        single_file=spec.single_file,
    )
    return detect_product(evidence, registry, spec.source)


def _reference_grid(grids: Sequence[tuple[BandFile, _Header]], sensor: Sensor) -> tuple[BandFile, _Header]:
    """The finest band and its header: the scene's grid in the catalog (ties: registry band order)."""
    return min(grids, key=lambda g: (round(g[1].gsd, 6), sensor_order(sensor, g[0].band)))


def _refuse_all_nodata(
    spec: SceneSpec, ref_band: BandFile, ref_header: _Header, settings: S3Settings | None
) -> np.ndarray:
    """Read the finest band decimated and refuse a scene that holds only its nodata value (or NaN).

    Returns:
        The decimated read (at most :data:`NODATA_READ_SIDE` px a side), for the radiometry rule.

    Raises:
        IngestError: An all-nodata scene.
    """
    nodata = ref_band.nodata
    values = _decimated(
        ref_header.info, ref_band.index, ref_header.height, ref_header.width, NODATA_READ_SIDE, settings
    )
    if is_all_nodata(values, nodata):
        what = f"the nodata value {nodata:g}" if nodata is not None else "NaN"
        if nodata is not None and np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            what += " or NaN"
        raise IngestError(
            f"{spec.source}: all-nodata scene (band {ref_band.band} holds only {what}); "
            "remove it from the inputs or use --skip-bad"
        )
    full = _full_resolution_blocks(ref_header.info, ref_band.index, settings)
    if is_all_nodata(full, nodata):  # the decimated read came from overviews: tile reads full resolution
        raise IngestError(
            f"{ref_header.info.uri}: its full-resolution pixels hold only nodata, only its overviews hold "
            "data (an overviews-only file); re-export it with its pixels (gdal_translate) or use --skip-bad"
        )
    return values


def _full_resolution_blocks(info: FileInfo, band: int, settings: S3Settings | None) -> np.ndarray:
    """Up to :data:`FULL_RES_BLOCKS` x :data:`FULL_RES_BLOCKS` full-resolution blocks spread over a band.

    The decimated read of :func:`_decimated` may come from overviews; these blocks are what tile reads.

    Returns:
        Their pixels, flattened.
    """
    import rasterio

    try:
        with open_raster(info.uri, settings) as ds:
            rows, cols = ds.block_shapes[band - 1]
            ny, nx = -(-ds.height // rows), -(-ds.width // cols)
            picks_y = sorted(
                {round(i * (ny - 1) / max(1, FULL_RES_BLOCKS - 1)) for i in range(FULL_RES_BLOCKS)}
            )
            picks_x = sorted(
                {round(i * (nx - 1) / max(1, FULL_RES_BLOCKS - 1)) for i in range(FULL_RES_BLOCKS)}
            )
            parts = [
                ds.read(band, window=ds.block_window(band, i, j)).ravel() for i in picks_y for j in picks_x
            ]
    except rasterio.errors.RasterioIOError as err:
        raise IngestError(_read_error(err, info, settings)) from None
    return np.concatenate(parts)


def _cloud_fraction(
    spec: SceneSpec,
    qa_file: BandFile | None,
    product: Product,
    grids: Sequence[tuple[BandFile, _Header]],
    settings: S3Settings | None,
) -> float | None:
    """Cloud pixels over pixels not flagged nodata, in a decimated read of the QA layer.

    Returns:
        The fraction, or None when the scene has no QA layer (or the product no QA decoding).

    Raises:
        IngestError: The QA layer marks every pixel nodata.
    """
    if qa_file is None or product.qa is None:
        return None
    qa_header = next(h for b, h in grids if b is qa_file)
    if np.dtype(qa_header.dtype).kind not in "ui":
        raise IngestError(
            f"{qa_header.info.uri}: the {product.qa.band} layer has {qa_header.dtype} pixels; QA flags need "
            "integers: use the archive's original layer"
        )
    qa_values = _decimated(qa_header.info, 1, qa_header.height, qa_header.width, QA_READ_SIDE, settings)
    no, cloud = product.qa.masks(qa_values)
    valid = int((~no).sum())
    if valid == 0:
        raise IngestError(
            f"{spec.source}: all-nodata scene (its {product.qa.band} layer marks every pixel nodata); "
            "remove it from the inputs or use --skip-bad"
        )
    return float(cloud.sum()) / valid


def _when_and_where(
    spec: SceneSpec,
    first: _Header,
    stac: dict[str, Any] | None,
    mtl: dict[str, str] | None,
    ref_header: _Header,
    ctx: ReadContext,
    notes: list[str],
) -> _Acquisition:
    """Acquisition time, WGS84 corners and footprint, and growth period of the scene.

    The time comes from the sidecars, the first file's tags or the file names (in the order of
    :func:`~a2mae.ingest.sidecars.acquisition_datetime`); the period needs the centre latitude, so
    it comes after the geometry. A metadata date that is present but impossible refuses the scene; a
    metadata date that disagrees with the file name's is used and noted in ``notes``.

    Raises:
        IngestError: A date field is not a date, or is before 1970 or in the future.
    """
    names = [f.name for f in spec.files]
    geometry = _wgs84(ref_header)
    when, when_source = acquisition_datetime(stac, mtl, first.tags, names)
    try:
        check_dates(stac, mtl, first.tags, when, when_source)
    except DateProblem as err:
        raise IngestError(f"{spec.source}: {err}") from None
    if (note := filename_disagreement(when, when_source, names)) is not None:
        notes.append(f"{spec.source}: {note}")
    corners, footprint, (clat, _) = geometry
    period = growth_period(when, clat, ctx.growth.growth_months, ctx.growth.tropics_lat)
    return _Acquisition(when, when_source, corners, footprint, period)


def _wgs84(header: _Header) -> tuple[Corners, str, tuple[float, float]]:
    """The grid's WGS84 corners, footprint and centre (see :func:`wgs84_geometry`).

    Raises:
        IngestError: The CRS cannot be converted to WGS84, or the grid lies outside its valid area.
    """
    from pyproj.exceptions import CRSError, ProjError

    try:
        geometry = wgs84_geometry(header.crs, header.transform, header.width, header.height)
    except (CRSError, ProjError) as err:
        raise IngestError(
            f"{header.info.uri}: its CRS cannot be converted to WGS84 ({' '.join(str(err).split())[:120]}); "
            "fix its georeferencing (gdalsrsinfo shows the CRS) or use the archive's original file"
        ) from None
    corners, _, centre = geometry
    if not all(math.isfinite(v) for corner in (*corners, centre) for v in corner):
        raise IngestError(
            f"{header.info.uri}: its grid does not map to WGS84 (outside the area of its CRS); fix its "
            "georeferencing or use the archive's original file"
        )
    return geometry


def _reflectance_scale(
    spec: SceneSpec,
    stac: dict[str, Any] | None,
    mtl: dict[str, str] | None,
    product: Product,
    grids: Sequence[tuple[BandFile, _Header]],
    sample: np.ndarray,
    nodata: float | None,
) -> tuple[float, float]:
    """``(scale, offset)`` of reflectance = value x scale + offset, by the files' encoding.

    The rule is :func:`a2mae.ingest.radiometry.choose`: integer DNs take the STAC item's, else the
    MTL's, else the file's own, else the registry's scale; float files hold reflectance or DNs.

    Raises:
        IngestError: The pixels cannot be mapped to reflectance (one line naming the scene).
    """
    sidecar_scale = scale_offset_from_stac(stac) if stac else None
    sidecar: tuple[tuple[float, float], str] | None = (sidecar_scale, "stac") if sidecar_scale else None
    if sidecar is None and mtl and (mtl_scale := scale_offset_from_mtl(mtl)) is not None:
        sidecar = (mtl_scale, "mtl")
    spectral = product_bands(grids, product)
    encodings = []
    for band, h in grids:
        if band.band not in spectral:
            continue
        i = band.index - 1
        declared = file_declared(
            h.scales[i] if i < len(h.scales) else None, h.offsets[i] if i < len(h.offsets) else None
        )
        encodings.append(FileEncoding("" if spec.single_file else h.info.name, h.dtype, *declared))
    try:
        r = choose(encodings, sample, nodata, sidecar, (product.scale, product.offset), product.dn_bits)
    except RadiometryRefused as err:
        raise IngestError(f"{spec.source}: {err}") from None
    return r.scale, r.offset


def product_bands(grids: Sequence[tuple[BandFile, _Header]], product: Product) -> set[str]:
    """The spectral bands among ``grids`` (the QA layer excluded)."""
    qa = product.qa.band.upper() if product.qa else None
    return {b.band for b, _ in grids if b.band != qa}


def sensor_order(sensor: Sensor, band: str) -> int:
    """Position of a band in the sensor's registry order (QA layers last)."""
    names = list(sensor.bands)
    return names.index(band) if band in names else len(names)


def _band_file(band: str, header: _Header, index: int, product: Product) -> BandFile:
    """The catalog entry of one band; its nodata is the file's, else (integer files only) the product's.

    Float files keep their own finite nodata only: NaN always counts as nodata (so it is not stored),
    and the registry's nodata is a DN of integer products.
    """
    t = header.transform
    gsd_m = pixel_size_m(header.crs, header.transform, header.width, header.height)
    if not gsd_m >= MIN_PIXEL_M:  # NaN too
        raise IngestError(
            f"{header.info.uri}: pixel size {gsd_m:.3g} m is below {MIN_PIXEL_M * 1000:g} mm: its "
            "geotransform is probably in the wrong units; fix its georeferencing (gdalinfo shows it)"
        )
    if np.dtype(header.dtype).kind == "f":
        nodata = header.nodata if header.nodata is not None and math.isfinite(header.nodata) else None
    else:
        nodata = header.nodata if header.nodata is not None else product.nodata
    return BandFile(
        band=band,
        uri=header.info.uri,
        index=index,
        gsd_m=round(gsd_m, 6),
        width=header.width,
        height=header.height,
        transform=(t.a, t.b, t.c, t.d, t.e, t.f),
        dtype=header.dtype,
        nodata=nodata,
    )


def _assign_bands(
    spec: SceneSpec, headers: Sequence[_Header], sensor: Sensor, level: str, product: Product
) -> tuple[list[BandFile], BandFile | None, list[tuple[BandFile, _Header]]]:
    qa_name = product.qa.band.upper() if product.qa else None
    band_files: list[BandFile] = []
    qa_file: BandFile | None = None
    grids: list[tuple[BandFile, _Header]] = []
    if spec.single_file and headers[0].count > 1:
        h = headers[0]
        try:
            ids = assign_stack(sensor, level, h.count, h.descriptions)
        except A2maeError as err:
            raise IngestError(f"{h.info.uri}: {err}") from None
        for i, band_id in enumerate(ids, start=1):
            bf = _band_file(band_id, h, i, product)
            band_files.append(bf)
            grids.append((bf, h))
        return band_files, None, grids
    seen: dict[str, str] = {}
    for h in headers:
        token = spec.tokens.get(h.info.uri)
        band = canonical_band(sensor, token) if token else None
        if band is None and spec.single_file:
            try:
                band = assign_stack(sensor, level, 1, h.descriptions)[0]
            except A2maeError as err:
                raise IngestError(f"{h.info.uri}: {err}") from None
        if band is None:
            continue  # QA layer of another product (e.g. C2 QA_PIXEL next to a C1 product): not used
        if band in seen:
            raise IngestError(
                f"{spec.source}: two files for band {band} ({seen[band]} and {h.info.name}); keep one"
            )
        seen[band] = h.info.name
        if h.count != 1:
            raise IngestError(
                f"{h.info.uri}: a per-band file must hold one band, this one has {h.count}; split it"
            )
        bf = _band_file(band, h, 1, product)
        if band in sensor.bands:
            band_files.append(bf)
            grids.append((bf, h))
        elif band == qa_name:
            qa_file = bf.model_copy(update={"nodata": h.nodata})  # QA layers: the file's nodata only
            grids.append((qa_file, h))
    if not band_files:
        raise IngestError(f"{spec.source}: no spectral band of {sensor.id} found (only QA layers)")
    return band_files, qa_file, grids


def _ignored_descriptions(
    spec: SceneSpec, h: _Header, sensor: Sensor, band_files: Sequence[BandFile]
) -> str | None:
    """A note when a multi-band file's band descriptions name bands but were not used to assign them.

    Descriptions are used only when each names a different band of the sensor; otherwise (a band named
    twice, a band of another sensor) the product's stack order decides, and the user is told.
    """
    if not (spec.single_file and h.count > 1 and all(h.descriptions)):
        return None
    named = [sensor.band_id(str(d)) for d in h.descriptions]
    if not any(named) or [b.band for b in band_files] == named:
        return None
    ids = [b for b in named if b]
    twice = sorted({b for b in ids if ids.count(b) > 1})
    why = f"name band {', '.join(twice)} twice" if twice else f"are not all bands of {sensor.id}"
    return (
        f"{h.info.uri}: its band descriptions ({','.join(str(d) for d in h.descriptions)}) {why}; "
        f"ignored: bands assigned in the product's stack order ({','.join(b.band for b in band_files)})"
    )


def _check_grids(grids: Sequence[tuple[BandFile, _Header]], source: str) -> None:
    """All files share the CRS; same-GSD files share the grid; others cover the same extent.

    Raises:
        IngestError: Bands of inconsistent shape, naming the odd file.
    """
    ref_band, ref = min(grids, key=lambda g: g[1].gsd)
    for band, h in grids:
        if h.crs != ref.crs:
            raise IngestError(
                f"{h.info.uri}: band {band.band} is in {crs_string(h.crs)} but {ref_band.band} in "
                f"{crs_string(ref.crs)}; reproject the bands of a scene to one CRS"
            )
        tol = max(h.gsd, ref.gsd)
        same_gsd = math.isclose(h.gsd, ref.gsd, rel_tol=1e-6)
        if same_gsd:
            ok = (h.width, h.height) == (ref.width, ref.height) and all(
                math.isclose(a, b, abs_tol=1e-6 * tol)
                for a, b in zip(h.transform, ref.transform, strict=False)
            )
        else:
            ok = all(abs(a - b) <= tol + 1e-6 for a, b in zip(h.bounds, ref.bounds, strict=True))
        if not ok:
            raise IngestError(
                f"{h.info.uri}: bands of inconsistent shape: band {band.band} is {h.width}x{h.height} px at "
                f"{h.gsd:g} m covering {_fmt_bounds(h.bounds)}, but {ref_band.band} "
                f"({ref.info.name}) is {ref.width}x{ref.height} px at {ref.gsd:g} m covering "
                f"{_fmt_bounds(ref.bounds)}; re-export the band on the scene's grid"
            )


def _fmt_bounds(b: tuple[float, float, float, float]) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in b) + ")"


def scene_content_hash(spec: SceneSpec, settings: S3Settings | None) -> str:
    """sha256 over ``name<TAB>md5`` lines of every file of the scene (rasters and sidecars), by name.

    File names only (not folders), so a copy of the scene elsewhere, local or on S3, hashes the same.
    """
    return content_hash_of(source_files(spec, settings))


def content_hash_of(files: Sequence[SourceFile]) -> str:
    """The scene content hash (see :func:`scene_content_hash`) of files already digested."""
    lines = [f"{f.uri.rstrip('/').rsplit('/', 1)[-1]}\t{f.md5}\n" for f in files]
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()


def source_files(spec: SceneSpec, settings: S3Settings | None) -> tuple[SourceFile, ...]:
    """Every file of the scene as it is now: size, mtime or ETag, head digest and MD5 (reads local files)."""
    return tuple(
        SourceFile(
            uri=f.uri,
            size=f.size,
            mtime_ns=f.mtime_ns,
            etag=f.etag,
            head_sha256=None if is_s3(f.uri) else head_digest(f.uri),
            md5=content_md5(f, settings),
        )
        for f in spec.files
    )


def head_digest(path: str) -> str:
    """sha256 of the first :data:`~a2mae.ingest.catalog.HEAD_BYTES` of a local file.

    Raises:
        StorageError: The file cannot be read.
    """
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read(HEAD_BYTES)).hexdigest()
    except OSError as err:
        raise StorageError(f"{path}: cannot read ({err.strerror})") from None


def listing_fingerprint(spec: SceneSpec) -> str:
    """sha256 over the scene's source and every file's URI, size and mtime/ETag (no file is read)."""
    lines = [spec.source + "\n"] + [f"{f.uri}\t{f.marker}\n" for f in spec.files]
    return hashlib.sha256("".join(lines).encode()).hexdigest()
