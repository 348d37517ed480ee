"""Synthetic co-located scenes: small GeoTIFFs of several sensors over one place at several dates.

Real open scenes of different sensors never overlap in the sample data, so tests of co-location
(grouping, nested chips, ground alignment) use scenes generated here, with exact georeferencing (the
torchgeo pattern: a generator, not stored fixtures). Every scene samples the *same* smooth ground
field (a landscape plus a vegetation field, modulated by season), evaluated at its pixel centres in
metres of the place's UTM zone, so co-located chips of different sensors show the same landscape at
their own GSD and reconstruction is learnable.

Layouts follow the real archives so that the ingest detection recognises them:

* Sentinel-2 L2A: a folder ``S2A_MSIL2A_<dt>_N0214_R032_<tile>_<dt>.SAFE`` holding one file per band
  at its native GSD (``<tile>_<dt>_B02_10m.tif``, ``..._B05_20m.tif``, ``..._B01_60m.tif``) and the
  scene classification ``..._SCL_20m.tif``.
* Landsat-8 Collection-2 L2: a folder ``LC08_L2SP_<pathrow>_<date>_<date>_02_T1`` with
  ``..._SR_B1.TIF`` .. ``..._SR_B7.TIF``, ``..._QA_PIXEL.TIF`` and a minimal ``..._MTL.txt``.
* Gaofen-1/2 PMS: one 4-band file ``GF2_PMS1_E114.3_N30.5_<date>_L1A<id>-MSS1.tif`` with the tags
  ``SATELLITE``, ``SENSOR`` and ``ACQUISITION_TIME``.

:func:`make_scenes` writes the files and returns their :class:`~a2mae.ingest.catalog.SceneRecord`
rows (what ingest would produce), so unit tests need not go through ingest.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from a2mae.ingest.catalog import BandFile, SceneRecord
from a2mae.sensors import get_registry
from a2mae.sensors.registry import Sensor
from a2mae.stssd.grouping import utm_epsg
from a2mae.types import Period

if TYPE_CHECKING:
    from affine import Affine
    from pyproj import Transformer

    #: A band grid: affine, size, pixel-centre x ``[1, n]`` and y ``[n, 1]``, land and vegetation fields.
    _Grid = tuple[Affine, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]

# Spectral signatures (wavelength nm -> reflectance) of the two end members mixed by the ground field.
_VEG = (
    (440, 0.03),
    (490, 0.04),
    (560, 0.08),
    (665, 0.04),
    (705, 0.12),
    (740, 0.30),
    (783, 0.40),
    (842, 0.42),
    (865, 0.43),
    (945, 0.40),
    (1375, 0.05),
    (1610, 0.22),
    (2200, 0.11),
)
_SOIL = ((440, 0.08), (560, 0.12), (665, 0.16), (865, 0.22), (1375, 0.05), (1610, 0.30), (2200, 0.26))

_L8_QA_CLEAR = 21824  # QA_PIXEL of a clear land pixel (Collection 2)
_L8_QA_FILL = 1
_SCL_VEGETATION = 4
_SCL_CLOUD = 9
_SCL_NODATA = 0

_PRODUCT = {"S2": "L2A", "L8": "C2L2", "GF1": "MS", "GF2": "MS"}


@dataclass(frozen=True)
class SceneSpec:
    """One scene to generate.

    Attributes:
        sensor: ``S2``, ``L8``, ``GF1`` or ``GF2``.
        date: Acquisition time (UTC).
        extent_m: Side of the (square) scene on the ground, metres.
        shift_m: Offset of the scene centre from the place centre, metres (east, north).
        subpixel: Misalignment of the scene grid, as a fraction of its finest pixel (x, y).
        cloud: A cloud disc ``(east_m, north_m, radius_m)`` relative to the place centre (flagged in
            the QA layer when the sensor has one), or None.
        nodata_cols: Leftmost pixel columns (of the finest grid) set to nodata.
    """

    sensor: str
    date: datetime
    extent_m: float
    shift_m: tuple[float, float] = (0.0, 0.0)
    subpixel: tuple[float, float] = (0.0, 0.0)
    cloud: tuple[float, float, float] | None = None
    nodata_cols: int = 0


@dataclass(frozen=True)
class Place:
    """Where the scenes are: centre (lat, lon) and the seed of its ground field."""

    lat: float = 30.5
    lon: float = 114.3
    seed: int = 0
    tile: str = "T50RKU"
    path_row: str = "123039"


@dataclass
class _Field:
    """Smooth random ground field: a sum of plane waves with random directions and phases."""

    seed: int
    waves: int = 10
    _k: np.ndarray = field(init=False, repr=False)
    _phase: np.ndarray = field(init=False, repr=False)
    _amp: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        wavelength = rng.uniform(250.0, 4000.0, self.waves)
        theta = rng.uniform(0, np.pi, self.waves)
        self._k = np.stack([np.cos(theta), np.sin(theta)], 1) * (2 * np.pi / wavelength)[:, None]
        self._phase = rng.uniform(0, 2 * np.pi, self.waves)
        self._amp = wavelength / wavelength.sum()

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Field in [0, 1] at ground coordinates ``x, y`` (metres, any equal shapes)."""
        out = np.zeros(np.broadcast(x, y).shape)
        for (kx, ky), ph, a in zip(self._k, self._phase, self._amp, strict=True):
            out += a * np.sin(kx * x + ky * y + ph)
        return 0.5 + 0.5 * out

    def on_grid(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """The field on the grid ``ys x xs`` (``[len(ys), len(xs)]``), via sin(a + b) = sin a cos b + ..."""
        out = np.zeros((ys.size, xs.size))
        for (kx, ky), ph, a in zip(self._k, self._phase, self._amp, strict=True):
            u, v = kx * xs, ky * ys + ph
            out += a * (np.outer(np.cos(v), np.sin(u)) + np.outer(np.sin(v), np.cos(u)))
        return 0.5 + 0.5 * out


def reflectance(center_nm: float, land: np.ndarray, veg: np.ndarray, growth: bool) -> np.ndarray:
    """Surface reflectance of a band at ``center_nm`` for the ground fields (same shapes)."""
    nm_v, r_v = zip(*_VEG, strict=True)
    nm_s, r_s = zip(*_SOIL, strict=True)
    rv = float(np.interp(center_nm, nm_v, r_v))
    rs = float(np.interp(center_nm, nm_s, r_s))
    v = veg * (0.9 if growth else 0.3)
    return (1 - v) * rs * (0.6 + 0.8 * land) + v * rv


def default_specs(scale: float = 1.0) -> list[SceneSpec]:
    """The default scene mix: S2 and L8 in a growth and a non-growth month, GF2 and GF1.

    Args:
        scale: Multiplies every extent (1.0: S2 3.6 km, L8 7.2 km, GF2 1.6 km, GF1 2.4 km).
    """

    def d(y: int, m: int, day: int) -> datetime:
        return datetime(y, m, day, 3, 5, 41, tzinfo=UTC)

    return [
        SceneSpec("S2", d(2020, 6, 15), 3600 * scale, subpixel=(0.3, 0.6)),
        SceneSpec("S2", d(2020, 12, 12), 3600 * scale, shift_m=(200, -100), subpixel=(0.3, 0.6)),
        SceneSpec("L8", d(2020, 6, 20), 7200 * scale, shift_m=(-150, 90), subpixel=(0.45, 0.2)),
        SceneSpec("L8", d(2020, 12, 7), 7200 * scale, shift_m=(120, -60), subpixel=(0.45, 0.2)),
        SceneSpec("GF2", d(2020, 6, 3), 1600 * scale, shift_m=(40, 30), subpixel=(0.1, 0.8)),
        SceneSpec("GF1", d(2020, 12, 1), 2400 * scale, shift_m=(-60, 20), subpixel=(0.7, 0.35)),
    ]


def _period(dt: datetime, lat: float, growth_months: Sequence[int], tropics_lat: float) -> Period:
    if abs(lat) < tropics_lat:
        return "na"
    month = dt.month if lat >= 0 else (dt.month + 5) % 12 + 1
    return "g" if month in growth_months else "ng"


def _write_tif(
    path: Path,
    data: np.ndarray,
    transform: Affine,
    crs: str,
    nodata: float | None,
    tags: Mapping[str, str] | None = None,
) -> None:
    import rasterio

    count, h, w = data.shape
    block = 256 if min(h, w) >= 256 else 64
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": count,
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "deflate",
        "predictor": 2,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if tags:
            dst.update_tags(**tags)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cloud_mask(spec: SceneSpec, x: np.ndarray, y: np.ndarray, cx: float, cy: float) -> np.ndarray:
    if spec.cloud is None:
        return np.zeros(np.broadcast(x, y).shape, bool)
    ex, ny, r = spec.cloud
    return (x - (cx + ex)) ** 2 + (y - (cy + ny)) ** 2 <= r * r


class _SceneWriter:
    """Writes one scene; keeps what the catalog record needs."""

    def __init__(
        self,
        place: Place,
        sensor: Sensor,
        spec: SceneSpec,
        fields: tuple[_Field, _Field],
        epsg: int,
        centre: tuple[float, float],
    ) -> None:
        self.place, self.sensor, self.spec = place, sensor, spec
        self.land, self.veg = fields
        self.crs = f"EPSG:{epsg}"
        self.cx, self.cy = centre
        self.finest = min(b.gsd_m for b in sensor.bands.values() if b.group != "Pan")
        g = self.finest
        half = spec.extent_m / 2
        # Upper-left corner on the finest grid (multiples of 60 m, as real S2/L8 grids), then misaligned.
        ulx = math.floor((self.cx + spec.shift_m[0] - half) / 60.0) * 60.0 + spec.subpixel[0] * g
        uly = math.ceil((self.cy + spec.shift_m[1] + half) / 60.0) * 60.0 - spec.subpixel[1] * g
        self.ul = (ulx, uly)
        self.size = round(spec.extent_m / g)
        self.files: list[Path] = []
        self.band_files: list[BandFile] = []
        self.qa_file: BandFile | None = None
        self.cloud_fraction: float | None = None
        self._grids: dict[float, _Grid] = {}

    def grid(self, gsd: float) -> _Grid:
        """Affine transform, size, pixel-centre coordinates and ground fields of a band grid at ``gsd``."""
        from rasterio.transform import Affine

        if gsd not in self._grids:
            n = round(self.size * self.finest / gsd)
            t = Affine(gsd, 0.0, self.ul[0], 0.0, -gsd, self.ul[1])
            xs = self.ul[0] + (np.arange(n) + 0.5) * gsd
            ys = self.ul[1] - (np.arange(n) + 0.5) * gsd
            x, y = xs[None, :], ys[:, None]
            land, veg = self.land.on_grid(xs, ys), self.veg.on_grid(xs, ys)
            self._grids[gsd] = (t, n, x, y, land, veg)
        return self._grids[gsd]

    def band_values(
        self, band: str, gsd: float, growth: bool, scale: float, offset: float
    ) -> tuple[Affine, int, np.ndarray, np.ndarray, int]:
        t, n, x, y, land, veg = self.grid(gsd)
        refl = reflectance(self.sensor.bands[band].center_nm, land, veg, growth)
        cloud = _cloud_mask(self.spec, x, y, self.cx, self.cy)
        refl = np.where(cloud, 0.55 + 0.05 * land, refl)
        dn = np.clip(np.rint((refl - offset) / scale), 1, 65535).astype(np.uint16)
        nodata_cols = math.ceil(self.spec.nodata_cols * self.finest / gsd)
        dn[:, :nodata_cols] = 0
        return t, n, dn, cloud, nodata_cols

    def add(
        self,
        path: Path,
        band: str,
        gsd: float,
        t: Affine,
        n: int,
        index: int = 1,
        nodata: float | None = 0.0,
        dtype: str = "uint16",
    ) -> None:
        self.band_files.append(
            BandFile(
                band=band,
                uri=str(path.resolve()),
                index=index,
                gsd_m=gsd,
                width=n,
                height=n,
                transform=tuple(t)[:6],
                dtype=dtype,
                nodata=nodata,
            )
        )


def _write_s2(w: _SceneWriter, folder: Path, growth: bool) -> str:
    dt = w.spec.date
    stamp = dt.strftime("%Y%m%dT%H%M%S")
    tile = w.place.tile
    scene_dir = folder / f"S2A_MSIL2A_{stamp}_N0214_R032_{tile}_{stamp}.SAFE"
    scene_dir.mkdir(parents=True, exist_ok=True)
    prod = w.sensor.product("L2A")
    for band, spec in w.sensor.bands.items():
        if band == "B10":  # L2A has no cirrus band
            continue
        gsd = spec.gsd_m
        t, n, dn, cloud, _ncols = w.band_values(band, gsd, growth, prod.scale, prod.offset)
        path = scene_dir / f"{tile}_{stamp}_{band}_{int(gsd)}m.tif"
        _write_tif(path, dn[None], t, w.crs, 0)
        w.files.append(path)
        w.add(path, band, gsd, t, n)
    t, n, x, y, _, _ = w.grid(20.0)
    cloud = _cloud_mask(w.spec, x, y, w.cx, w.cy)
    scl = np.full((n, n), _SCL_VEGETATION, np.uint8)
    scl[cloud] = _SCL_CLOUD
    scl[:, : math.ceil(w.spec.nodata_cols * w.finest / 20.0)] = _SCL_NODATA
    path = scene_dir / f"{tile}_{stamp}_SCL_20m.tif"
    _write_tif(path, scl[None], t, w.crs, None)
    w.files.append(path)
    w.qa_file = BandFile(
        band="SCL",
        uri=str(path.resolve()),
        index=1,
        gsd_m=20.0,
        width=n,
        height=n,
        transform=tuple(t)[:6],
        dtype="uint8",
        nodata=None,
    )
    valid = scl != _SCL_NODATA
    w.cloud_fraction = float((scl == _SCL_CLOUD).sum() / max(1, valid.sum()))
    return str(scene_dir.resolve())


def _write_l8(w: _SceneWriter, folder: Path, growth: bool) -> str:
    dt = w.spec.date
    name = f"LC08_L2SP_{w.place.path_row}_{dt:%Y%m%d}_{dt:%Y%m%d}_02_T1"
    scene_dir = folder / name
    scene_dir.mkdir(parents=True, exist_ok=True)
    prod = w.sensor.product("C2L2")
    mult = []
    for band in ("B1", "B2", "B3", "B4", "B5", "B6", "B7"):
        t, n, dn, cloud, _ncols = w.band_values(band, 30.0, growth, prod.scale, prod.offset)
        path = scene_dir / f"{name}_SR_{band}.TIF"
        _write_tif(path, dn[None], t, w.crs, 0)
        w.files.append(path)
        w.add(path, band, 30.0, t, n)
        mult.append(band)
    t, n, x, y, _, _ = w.grid(30.0)
    cloud = _cloud_mask(w.spec, x, y, w.cx, w.cy)
    qa = np.full((n, n), _L8_QA_CLEAR, np.uint16)
    qa[cloud] |= 1 << 3
    qa[:, : w.spec.nodata_cols] = _L8_QA_FILL
    path = scene_dir / f"{name}_QA_PIXEL.TIF"
    _write_tif(path, qa[None], t, w.crs, 1)
    w.files.append(path)
    w.qa_file = BandFile(
        band="QA_PIXEL",
        uri=str(path.resolve()),
        index=1,
        gsd_m=30.0,
        width=n,
        height=n,
        transform=tuple(t)[:6],
        dtype="uint16",
        nodata=1,
    )
    valid = qa != _L8_QA_FILL
    w.cloud_fraction = float(((qa & (1 << 3)) > 0).sum() / max(1, valid.sum()))
    zone = int(w.crs.split(":")[1]) % 100
    lines = [
        "GROUP = LANDSAT_METADATA_FILE",
        "  GROUP = PRODUCT_CONTENTS",
        '    PROCESSING_LEVEL = "L2SP"',
        "  END_GROUP = PRODUCT_CONTENTS",
        "  GROUP = IMAGE_ATTRIBUTES",
        '    SPACECRAFT_ID = "LANDSAT_8"',
        '    SENSOR_ID = "OLI_TIRS"',
        f"    DATE_ACQUIRED = {dt:%Y-%m-%d}",
        f'    SCENE_CENTER_TIME = "{dt:%H:%M:%S}.0000000Z"',
        f"    CLOUD_COVER = {100 * w.cloud_fraction:.2f}",
        "  END_GROUP = IMAGE_ATTRIBUTES",
        "  GROUP = PROJECTION_ATTRIBUTES",
        '    MAP_PROJECTION = "UTM"',
        f"    UTM_ZONE = {zone}",
        "  END_GROUP = PROJECTION_ATTRIBUTES",
        "  GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS",
        *[f"    REFLECTANCE_MULT_BAND_{b[1:]} = 2.75E-05" for b in mult],
        *[f"    REFLECTANCE_ADD_BAND_{b[1:]} = -0.200000" for b in mult],
        "  END_GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS",
        "END_GROUP = LANDSAT_METADATA_FILE",
        "END",
        "",
    ]
    mtl = scene_dir / f"{name}_MTL.txt"
    mtl.write_text("\n".join(lines))
    w.files.append(mtl)
    return str(scene_dir.resolve())


def _write_gf(w: _SceneWriter, folder: Path, growth: bool) -> str:
    dt = w.spec.date
    sid = 4859521 + dt.toordinal() % 100000
    name = f"{w.sensor.id}_PMS1_E{w.place.lon:.1f}_N{w.place.lat:.1f}_{dt:%Y%m%d}_L1A000{sid}-MSS1.tif"
    folder.mkdir(parents=True, exist_ok=True)
    prod = w.sensor.product("MS")
    g = w.finest
    stack = []
    t: Affine | None = None
    n = 0
    for band in ("B1", "B2", "B3", "B4"):
        t, n, dn, _cloud, _ncols = w.band_values(band, g, growth, prod.scale, prod.offset)
        stack.append(dn)
    assert t is not None
    path = folder / name
    tags = {
        "SATELLITE": w.sensor.id,
        "SENSOR": "PMS1",
        "ACQUISITION_TIME": dt.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    _write_tif(path, np.stack(stack), t, w.crs, 0, tags)
    w.files.append(path)
    for i, band in enumerate(("B1", "B2", "B3", "B4"), start=1):
        w.add(path, band, g, t, n, index=i)
    return str(path.resolve())


def make_scenes(
    out_dir: str | Path,
    specs: Sequence[SceneSpec] | None = None,
    place: Place | None = None,
    *,
    growth_months: Sequence[int] = (4, 5, 6, 7, 8, 9),
    tropics_lat: float = 23.44,
) -> list[SceneRecord]:
    """Write co-located synthetic scenes under ``out_dir`` and return their catalog records.

    Args:
        out_dir: Folder to write into (created); one sub-folder per sensor.
        specs: Scenes to generate (default: :func:`default_specs`).
        place: Centre and seed of the ground field (default: near Wuhan, UTM zone 50N).
        growth_months: Growth-season months (northern hemisphere) for the ``period`` label.
        tropics_lat: Below this absolute latitude the period is ``na``.

    Returns:
        One record per scene, sorted by scene id, as :func:`a2mae.ingest.run.ingest` would write.
    """
    from pyproj import Transformer

    out = Path(out_dir)
    place = place or Place()
    specs = list(default_specs() if specs is None else specs)
    reg = get_registry()
    epsg = utm_epsg(place.lat, place.lon)
    to_utm = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    to_ll = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)
    cx, cy = to_utm.transform(place.lon, place.lat)
    fields = (_Field(place.seed), _Field(place.seed + 1000))
    records = []
    for spec in specs:
        sensor = reg.get(spec.sensor)
        w = _SceneWriter(place, sensor, spec, fields, epsg, (cx, cy))
        growth = _period(spec.date, place.lat, growth_months, tropics_lat) == "g"
        folder = out / spec.sensor
        if spec.sensor == "S2":
            source = _write_s2(w, folder, growth)
        elif spec.sensor == "L8":
            source = _write_l8(w, folder, growth)
        elif spec.sensor in ("GF1", "GF2"):
            source = _write_gf(w, folder, growth)
        else:
            raise ValueError(f"synthetic scenes exist for S2, L8, GF1 and GF2, not {spec.sensor!r}")
        records.append(_record(w, source, to_ll, growth_months, tropics_lat))
    return sorted(records, key=lambda r: r.scene_id)


def _record(
    w: _SceneWriter, source: str, to_ll: Transformer, growth_months: Sequence[int], tropics_lat: float
) -> SceneRecord:
    g = w.finest
    ulx, uly = w.ul
    ext = w.size * g
    xs = [ulx, ulx + ext, ulx + ext, ulx]
    ys = [uly, uly, uly - ext, uly - ext]
    lons, lats = to_ll.transform(xs, ys)
    ul, ur, lr, ll = ((float(la), float(lo)) for la, lo in zip(lats, lons, strict=True))
    corners = (ul, ur, lr, ll)
    ring = [*zip(lons, lats, strict=True), (lons[0], lats[0])]
    wkt = "POLYGON ((" + ", ".join(f"{lo:.8f} {la:.8f}" for lo, la in ring) + "))"
    digest = hashlib.sha256("".join(sorted(_sha256(f) for f in w.files)).encode()).hexdigest()
    product = _PRODUCT[w.sensor.id]
    prod = w.sensor.product(product)
    order = list(w.sensor.bands)
    bands = tuple(sorted({b.band for b in w.band_files}, key=order.index))
    clat = sum(c[0] for c in corners) / 4
    period = _period(w.spec.date, clat, growth_months, tropics_lat)
    return SceneRecord(
        scene_id=f"{w.sensor.id}_{product}_{w.spec.date:%Y%m%d}_{digest[:8]}",
        sensor=w.sensor.id,
        product=product,
        source=source,
        datetime=w.spec.date,
        datetime_source="filename" if w.sensor.id == "S2" else ("mtl" if w.sensor.id == "L8" else "tags"),
        period=period,
        crs=w.crs,
        transform=(g, 0.0, ulx, 0.0, -g, uly),
        width=w.size,
        height=w.size,
        gsd_m=g,
        bounds=(ulx, uly - ext, ulx + ext, uly),
        corners=corners,
        footprint_wkt=wkt,
        bands=bands,
        band_files=tuple(sorted(w.band_files, key=lambda b: order.index(b.band))),
        qa_file=w.qa_file,
        cloud_fraction=w.cloud_fraction,
        scale=prod.scale,
        offset=prod.offset,
        content_hash=digest,
    )
