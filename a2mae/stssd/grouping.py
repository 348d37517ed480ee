"""Co-located image sets: ground grid, set composition, chip windows and the split by location.

The plan is metadata-only (no pixel is read here):

1. **Ground grid.** Candidate set centres lie on a global grid: in the UTM zone that contains the
   point (EPSG 326zz north / 327zz south, zone from the longitude), at integer multiples of
   ``grid_m`` in easting and northing. A point belongs to exactly one zone, so scenes in different
   zones never produce two sets for one place, and set ids are stable when scenes are added.
2. **Membership.** A scene covers a point when a chip of ``chip_size`` px of its finest grid,
   centred on the point, fits inside the scene with one pixel to spare, and the point lies in the
   scene's region of interest when it has one (``roi_geojson``: the locations ``a2mae collect``
   gathered a remote scene for; only their chip windows are read). A scene too small to be sure of
   a point (a **patch** of a pre-chipped archive, :func:`is_patch`) is not on the grid: it gives
   one centre of its own, its centred chip (:func:`patch_points`), which the other scenes whose
   chips fit there join.
3. **Composition** (per point, see :func:`compose_sets`): ``temporal`` sets of up to one growth and
   one non-growth image of each sensor of ``tile.temporal_sensors`` (rounds of next-best scenes,
   ``sets_per_location``); one ``hires`` set per image of a ``tile.hires_sensors`` sensor, with the
   partner sensor's images within ``gf_s2_max_days`` (nearest in time first); ``single`` sets for
   sensors in neither role. The kinds are named by role, as the ``tile.*_sensors`` keys; snapshots
   written before name them ``S2-L8`` and ``GF-S2`` (:func:`set_kind` reads both).
4. **Windows.** All sets at a point share one centre: the centre of the pixel-aligned chip of the
   coarsest scene used there, nearest to the grid point (at a patch's centre: its own chip's).
   Every chip is the pixel-aligned window of its own scene's finest grid nearest to that centre
   (no resampling across sensors), so each chip centre is within half of its own pixel, per axis,
   of the set centre, and a scene's chip at a point is the same window in every set (stored once).
   With ``thin_coarse_sets``, a set whose finest chip spans ``k >= 2`` grid cells (e.g. L8-only
   sets: 2880 m chips on a 960 m grid) is kept only at points where ``ix`` and ``iy`` are multiples
   of ``k``, so such chips overlap no more than S2 chips do (9x fewer redundant L8-only chips).
5. **Split.** Each set goes to train/val/test by a hash of its ground block (``split.block_m``, in
   the point's UTM zone) and the seed, so nearby sets never straddle splits.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from a2mae.config import TileConfig
from a2mae.ingest.catalog import SceneRecord
from a2mae.ingest.roi import contains as roi_contains

if TYPE_CHECKING:
    from pyproj import Transformer


#: Coordinates: arrays (vectorised membership tests) or floats (one chip at a time).
ArrayOrFloat = np.ndarray | float
_XY = TypeVar("_XY", np.ndarray, float)
#: A set centre: ``(ref CRS, (x, y) in ref CRS, (x, y) in the zone CRS, (lat, lon))``.
Centre = tuple[str, tuple[float, float], tuple[float, float], tuple[float, float]]
#: The images of one composed set: ``(role, scene index)`` each.
Members = list[tuple[str, int]]

#: Set kinds, by role: the sensors of ``tile.temporal_sensors``, of ``tile.hires_sensors`` (with their
#: partner), or one sensor in neither role.
TEMPORAL, HIRES, SINGLE = "temporal", "hires", "single"
SET_KINDS = (TEMPORAL, HIRES, SINGLE)
#: The kind names of snapshots written before the kinds were named by role.
LEGACY_SET_KINDS = {"S2-L8": TEMPORAL, "GF-S2": HIRES}
_KIND_TAG = {TEMPORAL: "t", HIRES: "h", SINGLE: "s"}


def set_kind(name: str) -> str:
    """The kind of a stored set: ``temporal``, ``hires`` or ``single`` (an older snapshot's too).

    Snapshots written before the kinds were named by role call them ``S2-L8`` and ``GF-S2``.
    """
    return LEGACY_SET_KINDS.get(name, name)


#: Polar caps, where the grid is the Universal Polar Stereographic of the pole (UTM stops there).
UPS_NORTH_LAT, UPS_SOUTH_LAT = 84.0, -80.0
UPS_NORTH, UPS_SOUTH = 32661, 32761


def utm_epsg(lat: float, lon: float) -> int:
    """EPSG code of the UTM zone containing (lat, lon), or of UPS beyond 84 N / 80 S.

    Longitudes are taken modulo 360 (180.05 is -179.95, zone 1); no Norway/Svalbard exceptions.
    """
    return int(_utm_epsg_array(np.asarray([lat], float), np.asarray([lon], float))[0])


def _utm_epsg_array(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    wrapped = np.mod(np.asarray(lon, float) + 180.0, 360.0)
    zone = np.clip(np.floor(wrapped / 6.0).astype(np.int64) + 1, 1, 60)
    utm = np.where(lat >= 0, 32600, 32700) + zone
    return np.where(lat >= UPS_NORTH_LAT, UPS_NORTH, np.where(lat < UPS_SOUTH_LAT, UPS_SOUTH, utm))


@functools.lru_cache(maxsize=256)
def _is_geographic(crs: str) -> bool:
    from pyproj import CRS

    return bool(CRS.from_user_input(crs).is_geographic)


def to_scene_crs(
    rec: SceneRecord, src: str, x: ArrayOrFloat, y: ArrayOrFloat
) -> tuple[ArrayOrFloat, ArrayOrFloat]:
    """Coordinates from CRS ``src`` into the scene's CRS, on the scene's side of the antimeridian.

    In a geographic CRS a longitude and that longitude +- 360 are one place: the one within 180
    degrees of the scene's centre is returned, so a scene over 180 (179.95..180.05) finds its
    eastern half (-179.97 is 180.03 there).
    """
    sx, sy = transformer(src, rec.crs).transform(x, y)
    if not _is_geographic(rec.crs):
        return sx, sy
    a, b, c = rec.transform[:3]
    cx = a * rec.width / 2 + b * rec.height / 2 + c
    return cx + np.mod(np.asarray(sx) - cx + 180.0, 360.0) - 180.0, sy


def _wrap_lon(lon: ArrayOrFloat) -> ArrayOrFloat:
    return np.mod(np.asarray(lon, float) + 180.0, 360.0) - 180.0


@functools.lru_cache(maxsize=256)
def transformer(src: str, dst: str) -> Transformer:
    """Cached pyproj transformer (x/y order: easting/northing, lon/lat)."""
    from pyproj import Transformer

    return Transformer.from_crs(src, dst, always_xy=True)


@dataclass(frozen=True, order=True)
class GridPoint:
    """A candidate set centre: ``(ix * grid_m, iy * grid_m)`` in UTM zone ``epsg``.

    A patch's centre (:func:`patch_points`) is off the grid: ``anchor`` holds its easting and
    northing in the zone, in whole decimetres, and ``ix``, ``iy`` the nearest grid point (which
    decides its block and split).
    """

    epsg: int
    iy: int
    ix: int
    anchor: tuple[int, ...] = ()

    @property
    def crs(self) -> str:
        """The zone CRS as ``EPSG:nnnnn``."""
        return f"EPSG:{self.epsg}"

    def xy(self, grid_m: float) -> tuple[float, float]:
        """Easting, northing of the point in its zone, metres."""
        return self.ix * grid_m, self.iy * grid_m

    @property
    def label(self) -> str:
        """The point in a set id: ``32650-00251-03518`` on the grid, ``32650-E240960.3-N3376801.0`` off it."""
        if self.anchor:
            return f"{self.epsg}-E{self.anchor[0] / 10:.1f}-N{self.anchor[1] / 10:.1f}"
        return f"{self.epsg}-{self.ix:05d}-{self.iy:05d}"


@dataclass(frozen=True, order=True)
class ChipWindow:
    """A chip: a ``chip_size`` square window of a scene's finest grid."""

    scene: int
    row0: int
    col0: int


@dataclass(frozen=True)
class PlannedImage:
    """One image of a planned set."""

    role: str
    window: ChipWindow


@dataclass(frozen=True)
class PlannedSet:
    """A planned co-located set (before chips are read and checked).

    Attributes:
        set_id: ``<epsg>-<ix>-<iy>-<kind tag><n>``, unique in a snapshot and stable across runs.
        kind: ``temporal``, ``hires`` or ``single``.
        point: The grid point the set was built at.
        centre_xy: The set centre (the reference chip's centre) in the point's zone CRS.
        centre_latlon: The same centre in WGS84, ``(lat, lon)``.
        images: The images in composition order (e.g. S2-g, L8-g, S2-ng, L8-ng; GF first in hires sets).
        split: ``train``, ``val`` or ``test``.
    """

    set_id: str
    kind: str
    point: GridPoint
    centre_xy: tuple[float, float]
    centre_latlon: tuple[float, float]
    images: tuple[PlannedImage, ...]
    split: str


# --------------------------------------------------------------------------------------- membership
def _inside(rec: SceneRecord, cols: np.ndarray, rows: np.ndarray, chip: int, margin: float) -> np.ndarray:
    half = chip / 2
    return (
        (cols - half >= margin)
        & (cols + half <= rec.width - margin)
        & (rows - half >= margin)
        & (rows + half <= rec.height - margin)
    )


def _pixel_coords(rec: SceneRecord, x: _XY, y: _XY) -> tuple[_XY, _XY]:
    a, b, c, d, e, f = rec.transform
    det = a * e - b * d
    cols = (e * (x - c) - b * (y - f)) / det
    rows = (-d * (x - c) + a * (y - f)) / det
    return cols, rows


def _ring(rec: SceneRecord, n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Densified outline of the scene's finest grid, in the scene CRS."""
    t = np.linspace(0.0, 1.0, n, endpoint=False)
    w, h = rec.width, rec.height
    cols = np.concatenate([t * w, np.full(n, w), (1 - t) * w, np.zeros(n)])
    rows = np.concatenate([np.zeros(n), t * h, np.full(n, h), (1 - t) * h])
    a, b, c, d, e, f = rec.transform
    return a * cols + b * rows + c, d * cols + e * rows + f


def _zones_of(rec: SceneRecord) -> set[int]:
    """UTM zones and UPS caps (EPSG codes) of the scene: of its densified outline and its centre.

    The centre is the centre pixel (not the mean of the corners, meaningless around a pole or over
    the antimeridian), so a scene holding a pole has that pole's UPS cap; the outline has a point
    every 1.4 degrees of longitude at least around a pole, finer than a UTM zone.
    """
    rx, ry = _ring(rec, 64)
    a, b, c, d, e, f = rec.transform
    w, h = rec.width / 2, rec.height / 2
    rx = np.append(rx, a * w + b * h + c)
    ry = np.append(ry, d * w + e * h + f)
    lon, lat = transformer(rec.crs, "EPSG:4326").transform(rx, ry)
    lon, lat = np.asarray(lon), np.asarray(lat)
    ok = np.isfinite(lon) & np.isfinite(lat)
    zones = {int(z) for z in np.unique(_utm_epsg_array(lat[ok], lon[ok]))}
    return zones or {utm_epsg(la, lo) for la, lo in rec.corners}


#: Easting and northing limits of the points a zone can own, metres: UTM zones (6 degrees wide, to
#: 84 N / 80 S) and the UPS caps (to 80 / 84 degrees). A scene far around a pole projects to huge
#: coordinates in the zones on its other side; its candidate points are kept to these boxes.
_UTM_BOX = (0.0, 1_000_000.0)
_UPS_BOX = (0.0, 4_000_000.0)


def _zone_box(epsg: int, zx: np.ndarray, zy: np.ndarray) -> tuple[float, float, float, float]:
    """The bounding box of the outline ``zx, zy`` in zone ``epsg``, clipped to what the zone can own."""
    lo, hi = _UPS_BOX if epsg in (UPS_NORTH, UPS_SOUTH) else _UTM_BOX
    ylo, yhi = (lo, hi) if epsg in (UPS_NORTH, UPS_SOUTH) else (-1e6, 11e6)
    return (
        max(float(zx.min()), lo),
        max(float(zy.min()), ylo),
        min(float(zx.max()), hi),
        min(float(zy.max()), yhi),
    )


def scene_points(rec: SceneRecord, grid_m: float, chip: int) -> dict[GridPoint, tuple[float, float]]:
    """Grid points where a chip of ``rec`` fits, with the point's pixel coordinates in the scene.

    Args:
        rec: The scene.
        grid_m: Grid spacing, metres.
        chip: Chip side, pixels.

    Returns:
        ``{point: (col, row)}``: fractional pixel coordinates of each point in the scene's finest grid.
    """
    zones = sorted(_zones_of(rec))
    rx, ry = _ring(rec)
    out: dict[GridPoint, tuple[float, float]] = {}
    for epsg in zones:
        zcrs = f"EPSG:{epsg}"
        zx, zy = transformer(rec.crs, zcrs).transform(rx, ry)
        zx, zy = np.asarray(zx), np.asarray(zy)
        if not (np.isfinite(zx).all() and np.isfinite(zy).all()):
            continue
        x0, y0, x1, y1 = _zone_box(epsg, zx, zy)
        ix = np.arange(math.ceil(x0 / grid_m), math.floor(x1 / grid_m) + 1)
        iy = np.arange(math.ceil(y0 / grid_m), math.floor(y1 / grid_m) + 1)
        if ix.size == 0 or iy.size == 0:
            continue
        mx, my = np.meshgrid(ix, iy)
        gx, gy = mx.ravel(), my.ravel()
        px, py = gx * grid_m, gy * grid_m
        sx, sy = to_scene_crs(rec, zcrs, px, py)
        cols, rows = _pixel_coords(rec, np.asarray(sx), np.asarray(sy))
        keep = _inside(rec, cols, rows, chip, 1.0)
        if not keep.any():
            continue
        lon, lat = transformer(zcrs, "EPSG:4326").transform(px[keep], py[keep])
        own = _utm_epsg_array(np.asarray(lat), np.asarray(lon)) == epsg
        if rec.roi_geojson is not None:  # a gathered scene: only around its locations
            own &= roi_contains(rec.roi_geojson, lon, lat)
        for i, j, c, r in zip(gx[keep][own], gy[keep][own], cols[keep][own], rows[keep][own], strict=True):
            out[GridPoint(epsg, int(j), int(i))] = (float(c), float(r))
    return out


# -------------------------------------------------------------------------------------- composition
def _quality(rec: SceneRecord) -> tuple[bool, float, str]:
    cf = rec.cloud_fraction
    return (cf is None, 0.0 if cf is None else cf, rec.scene_id)


def compose_sets(
    candidates: Sequence[int], records: Sequence[SceneRecord], cfg: TileConfig
) -> list[tuple[str, list[tuple[str, int]]]]:
    """Choose the sets at one grid point.

    Args:
        candidates: Indices (into ``records``) of the scenes covering the point.
        records: All scenes, sorted by scene id.
        cfg: Tile parameters (``temporal_sensors``, ``hires_sensors``, ``hires_partner``,
            ``gf_s2_max_days``, ``sets_per_location``, ``max_images_per_set``).

    Returns:
        ``[(kind, [(role, scene index), ...]), ...]`` in a deterministic order; a role is
        ``<sensor>-<period>``.
    """
    by_sensor: dict[str, list[int]] = defaultdict(list)
    for i in candidates:
        by_sensor[records[i].sensor].append(i)
    for lst in by_sensor.values():
        lst.sort(key=lambda i: _quality(records[i]))
    cap = cfg.max_images_per_set
    out: list[tuple[str, list[tuple[str, int]]]] = []

    # temporal: one growth and one non-growth image per temporal sensor per round; "na" fills either.
    queues = {
        s: {p: [i for i in by_sensor.get(s, []) if records[i].period == p] for p in ("g", "ng", "na")}
        for s in cfg.temporal_sensors
    }
    for _ in range(cfg.sets_per_location):
        images: list[tuple[str, int]] = []
        for slot in ("g", "ng"):
            for s in cfg.temporal_sensors:
                q = queues[s]
                pick = q[slot].pop(0) if q[slot] else (q["na"].pop(0) if q["na"] else None)
                if pick is not None:
                    images.append((f"{s}-{records[pick].period}", pick))
        if not images:
            break
        out.append((TEMPORAL, images[:cap]))

    # hires: each high-resolution image with the partner's images nearest in time (within the window).
    partners = by_sensor.get(cfg.hires_partner, [])
    for s in cfg.hires_sensors:
        for i in sorted(by_sensor.get(s, []), key=lambda i: records[i].scene_id):
            hi = records[i]
            images = [(f"{s}-{hi.period}", i)]
            if hi.datetime is not None:
                near = []
                for j in partners:
                    dt = records[j].datetime
                    if dt is None:
                        continue
                    days = abs((dt - hi.datetime).total_seconds()) / 86400.0
                    if days <= cfg.gf_s2_max_days:
                        near.append((days, _quality(records[j]), j))
                near.sort()
                images += [(f"{cfg.hires_partner}-{records[j].period}", j) for _, _, j in near[: cap - 1]]
            out.append((HIRES, images[:cap]))

    # Sensors in no set type: single-image sets (best scenes first).
    grouped = set(cfg.temporal_sensors) | set(cfg.hires_sensors)
    for s in sorted(by_sensor):
        if s in grouped:
            continue
        for i in by_sensor[s][: cfg.sets_per_location]:
            out.append(("single", [(f"{s}-{records[i].period}", i)]))
    return out


# ------------------------------------------------------------------------------------------ windows
def _window_at(rec: SceneRecord, col: float, row: float, chip: int) -> tuple[int, int]:
    half = chip / 2
    return math.floor(col - half + 0.5), math.floor(row - half + 0.5)


def _fits(rec: SceneRecord, col0: int, row0: int, chip: int) -> bool:
    return col0 >= 0 and row0 >= 0 and col0 + chip <= rec.width and row0 + chip <= rec.height


def chip_transform(rec: SceneRecord, w: ChipWindow) -> tuple[float, float, float, float, float, float]:
    """Affine ``(a, b, c, d, e, f)`` of a chip window, in the scene CRS."""
    a, b, c, d, e, f = rec.transform
    return (a, b, c + a * w.col0 + b * w.row0, d, e, f + d * w.col0 + e * w.row0)


def chip_centre(rec: SceneRecord, w: ChipWindow, chip: int) -> tuple[float, float]:
    """Ground coordinates of a chip's centre in the scene CRS."""
    a, b, c, d, e, f = chip_transform(rec, w)
    h = chip / 2
    return a * h + b * h + c, d * h + e * h + f


def split_of(point: GridPoint, grid_m: float, block_m: float, seed: int, val: float, test: float) -> str:
    """Split of a grid point: a hash of its ground block and the seed, compared with the fractions."""
    x, y = point.xy(grid_m)
    bx, by = math.floor(x / block_m), math.floor(y / block_m)
    digest = hashlib.sha256(f"{seed}:{point.epsg}:{bx}:{by}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test:
        return "test"
    if u < test + val:
        return "val"
    return "train"


#: Planning memory per (scene, grid point) pair and per planned set, bytes (measured with tracemalloc on
#: the bundled and synthetic scenes: 400-710 B per pair, 2.7 kB per set with its images and windows).
PLAN_BYTES_PER_SCENE_POINT = 800
PLAN_BYTES_PER_SET = 3000


def estimate_plan(records: Sequence[SceneRecord], cfg: TileConfig) -> tuple[int, int]:
    """Memory the plan of ``records`` would take, estimated from their sizes alone (nothing is built).

    A scene contributes the grid points where a chip fits, in each UTM zone it touches; with
    ``thin_coarse_sets`` a set whose chip spans ``k`` grid cells exists at one point in ``k * k``.

    Args:
        records: Scenes on their chip grids.
        cfg: Tile parameters (``grid_m``, ``chip_size``, ``thin_coarse_sets``).

    Returns:
        ``(bytes, scene-point pairs)``, both upper estimates.
    """
    pairs = 0.0
    sets = 0.0
    for rec in records:
        span_x = max(0.0, (rec.width - cfg.chip_size) * rec.gsd_m)
        span_y = max(0.0, (rec.height - cfg.chip_size) * rec.gsd_m)
        zones = len({utm_epsg(la, lo) for la, lo in rec.corners})  # a scene over a pole: its UPS cap
        n = (span_x / cfg.grid_m + 1) * (span_y / cfg.grid_m + 1) * zones
        k = lattice_step(rec.gsd_m, cfg.chip_size, cfg.grid_m) if cfg.thin_coarse_sets else 1
        pairs += n
        sets += n / (k * k)
    return int(pairs * PLAN_BYTES_PER_SCENE_POINT + sets * PLAN_BYTES_PER_SET), int(pairs)


@dataclass
class Plan:
    """Everything to read and write, decided from metadata alone.

    Attributes:
        records: Scenes, sorted by scene id (``ChipWindow.scene`` indexes this list).
        sets: Planned sets in snapshot order: grid points block by block (8 x 8 points, for read
            locality), then kind and round.
    """

    records: list[SceneRecord]
    sets: list[PlannedSet]

    def windows_by_scene(self) -> dict[int, list[ChipWindow]]:
        """Distinct chip windows to read, per scene, sorted row-major."""
        out: dict[int, set[ChipWindow]] = defaultdict(set)
        for s in self.sets:
            for im in s.images:
                out[im.window.scene].add(im.window)
        return {k: sorted(v) for k, v in sorted(out.items())}


def plan_sets(
    records: Sequence[SceneRecord], cfg: TileConfig, on_points: Callable[[int, int], None] | None = None
) -> Plan:
    """Plan the co-located sets of a catalog.

    Args:
        records: Catalog scenes (any order).
        cfg: Tile parameters.
        on_points: Called as ``(points composed, points in all)`` while sets are composed (progress).

    Returns:
        The plan: sets with their chip windows and splits.
    """
    recs = sorted(records, key=lambda r: r.scene_id)
    chip = cfg.chip_size
    covering: dict[GridPoint, list[int]] = defaultdict(list)
    pixel: dict[tuple[int, GridPoint], tuple[float, float]] = {}
    patches = patch_points(recs, cfg)
    for i, rec in enumerate(recs):
        if i in patches.scenes:
            continue  # a patch has its own centre, not the grid's
        for p, cr in scene_points(rec, cfg.grid_m, chip).items():
            covering[p].append(i)
            pixel[(i, p)] = cr
    covering.update((p, list(m)) for p, m in patches.members.items())
    sp = cfg.split
    sets: list[PlannedSet] = []
    compositions: dict[tuple[int, ...], list[tuple[str, list[tuple[str, int]]]]] = {}
    for n, p in enumerate(sorted(covering, key=_block_major)):
        if on_points is not None and n % 1024 == 0:
            on_points(n, len(covering))
        key = tuple(covering[p])
        if key not in compositions:  # points covered by the same scenes compose the same sets
            compositions[key] = compose_sets(key, recs, cfg)
        composed = compositions[key]
        if p.anchor:  # a patch's centre: only the sets of its own patches (the others are on the grid)
            composed = [(k, m) for k, m in composed if any(i in patches.owned[p] for _, i in m)]
        elif cfg.thin_coarse_sets:
            composed = [(k, m) for k, m in composed if _on_lattice(p, m, recs, chip, cfg.grid_m)]
        if not composed:
            continue
        split = split_of(p, cfg.grid_m, sp.block_m, sp.seed, sp.val_fraction, sp.test_fraction)
        centre = patches.centres[p] if p.anchor else _point_centre(p, composed, recs, pixel, chip)
        counters: dict[str, int] = defaultdict(int)
        for kind, members in composed:
            images = _place_images(members, centre, recs, chip, cfg.hires_sensors if kind == HIRES else ())
            if not images:
                continue
            set_id = f"{p.label}-{_KIND_TAG[kind]}{counters[kind]}"
            counters[kind] += 1
            sets.append(PlannedSet(set_id, kind, p, centre[2], centre[3], images, split))
    if on_points is not None:
        on_points(len(covering), len(covering))
    return Plan(recs, sets)


#: Grid points are visited in blocks of this many points per side (spatial locality of the reads).
BLOCK_POINTS = 8


def _block_major(p: GridPoint) -> tuple[int, int, int, int, int, tuple[int, ...]]:
    return (*block_of(p), p.iy, p.ix, p.anchor)


def block_of(p: GridPoint) -> tuple[int, int, int]:
    """The block of ``BLOCK_POINTS`` x ``BLOCK_POINTS`` grid points containing ``p`` (visited whole)."""
    return p.epsg, p.iy // BLOCK_POINTS, p.ix // BLOCK_POINTS


def pack_runs(
    sets: Sequence[PlannedSet], weight: Callable[[Sequence[PlannedSet]], int], bound: int
) -> list[tuple[int, int]]:
    """Cut consecutive planned sets into runs of at most ``bound`` total weight.

    Runs hold whole blocks of grid points (a block's chips of one scene are then read as one
    region, never split between runs); a block heavier than ``bound`` is cut between grid points;
    a grid point is never split (its sets share chips), so a run is at least one point.

    Args:
        sets: Planned sets in plan order (grid points consecutive, blocks consecutive).
        weight: Weight of the sets of one grid point (e.g. bytes or chips).
        bound: Largest total weight of a run (exceeded only by a single heavier point).

    Returns:
        ``(start, stop)`` of each run, covering ``sets`` in order.
    """
    points: list[tuple[int, int, int]] = []  # (start, stop, weight) of each grid point
    start = 0
    for i in range(1, len(sets) + 1):
        if i == len(sets) or sets[i].point != sets[start].point:
            points.append((start, i, weight(sets[start:i])))
            start = i
    items: list[tuple[int, int, int]] = []  # whole blocks, or the points of a block above the bound
    k = 0
    while k < len(points):
        j = k + 1
        while j < len(points) and block_of(sets[points[j][0]].point) == block_of(sets[points[k][0]].point):
            j += 1
        total = sum(w for _, _, w in points[k:j])
        items.extend(points[k:j] if total > bound else [(points[k][0], points[j - 1][1], total)])
        k = j
    runs: list[tuple[int, int]] = []
    cur_start, cur_weight = 0, 0
    for a, _, w in items:
        if cur_weight and cur_weight + w > bound:
            runs.append((cur_start, a))
            cur_start, cur_weight = a, 0
        cur_weight += w
    if items:
        runs.append((cur_start, len(sets)))
    return runs


def lattice_step(finest_gsd: float, chip: int, grid_m: float) -> int:
    """Grid points per lattice step for a set whose finest chip is ``chip * finest_gsd`` metres wide."""
    return max(1, math.floor(chip * finest_gsd / grid_m + 1e-9))


def _on_lattice(
    p: GridPoint, members: Members, recs: Sequence[SceneRecord], chip: int, grid_m: float
) -> bool:
    """Thinning: a set whose finest chip spans k grid cells is kept only at every k-th point."""
    k = lattice_step(min(recs[i].gsd_m for _, i in members), chip, grid_m)
    return p.ix % k == 0 and p.iy % k == 0


def _point_centre(
    p: GridPoint,
    composed: list[tuple[str, Members]],
    recs: Sequence[SceneRecord],
    pixel: dict[tuple[int, GridPoint], tuple[float, float]],
    chip: int,
) -> Centre:
    """Centre shared by every set at ``p``: the grid point snapped onto the coarsest member's grid.

    Returns:
        ``(ref CRS, (x, y) in ref CRS, (x, y) in the zone CRS, (lat, lon))``.
    """
    members = sorted({i for _, m in composed for _, i in m})
    ref = max(members, key=lambda i: (recs[i].gsd_m, -i))
    rr = recs[ref]
    c, r = pixel[(ref, p)]
    col0, row0 = _window_at(rr, c, r, chip)
    qx, qy = chip_centre(rr, ChipWindow(ref, row0, col0), chip)
    zx, zy = (qx, qy) if rr.crs == p.crs else transformer(rr.crs, p.crs).transform(qx, qy)
    lon, lat = transformer(rr.crs, "EPSG:4326").transform(qx, qy)
    return rr.crs, (qx, qy), (float(zx), float(zy)), (float(lat), float(_wrap_lon(lon)))


def _place_images(
    members: Members, centre: Centre, recs: Sequence[SceneRecord], chip: int, required: Sequence[str]
) -> tuple[PlannedImage, ...]:
    """Chip windows of a set's images around the shared centre (empty when a required image is out)."""
    crs, (qx, qy) = centre[0], centre[1]
    images = []
    for role, i in members:
        rec = recs[i]
        sx, sy = (qx, qy) if rec.crs == crs else to_scene_crs(rec, crs, qx, qy)
        cc, rc = _pixel_coords(rec, float(sx), float(sy))  # floats: same arithmetic, no array overhead
        c0, r0 = _window_at(rec, cc, rc, chip)
        if _fits(rec, c0, r0, chip):  # near a scene edge the shifted centre may not fit: leave it out
            images.append(PlannedImage(role, ChipWindow(i, r0, c0)))
        elif rec.sensor in required:
            return ()
    return tuple(images)


# ------------------------------------------------------------------------------------------ patches
def patch_limit_px(gsd_m: float, chip: int, grid_m: float, thin: bool) -> float:
    """Scene side, in pixels of its finest grid, from which a scene is sure to hold a grid point.

    One chip, the spare pixel on each side and one step of the lattice its own sets use (``k``
    grid cells with ``thin_coarse_sets``, else one): 194 px at the defaults for 10, 20, 30 and 60 m
    grids, 290 px at 5 m, 398 px at 3.2 m.
    """
    step = lattice_step(gsd_m, chip, grid_m) if thin else 1
    return chip + 2 + step * grid_m / gsd_m


def is_patch(rec: SceneRecord, cfg: TileConfig) -> bool:
    """Whether a scene is a patch of a pre-chipped archive (e.g. BigEarthNet's 120 px at 10 m).

    A patch holds a chip but is, in one axis or both, shorter than :func:`patch_limit_px`: it may
    hold no grid point.
    """
    short = min(rec.width, rec.height)
    limit = patch_limit_px(rec.gsd_m, cfg.chip_size, cfg.grid_m, cfg.thin_coarse_sets)
    return cfg.chip_size <= short < limit


@dataclass
class PatchPoints:
    """The centres of the patches of a catalog (see :func:`patch_points`).

    Attributes:
        scenes: Indices of the scenes that are patches (they take no grid point).
        members: Per centre, the scenes whose chip fits there: its own patches and every scene that
            is not a patch.
        owned: Per centre, the patches it owns (each patch is owned by exactly one centre).
        centres: Per centre, ``(ref CRS, (x, y) in ref CRS, (x, y) in the zone CRS, (lat, lon))`` of
            the owning patch's chip centre, as :func:`_point_centre` gives for grid points.
    """

    scenes: frozenset[int]
    members: dict[GridPoint, tuple[int, ...]]
    owned: dict[GridPoint, frozenset[int]]
    centres: dict[GridPoint, Centre]


@dataclass
class _Anchors:
    """Candidate patch centres, one per distinct (zone, decimetre) position, in a fixed order."""

    points: list[GridPoint]
    centres: list[Centre]
    own: list[list[int]]  # patches whose own centred chip is here
    zx: np.ndarray
    zy: np.ndarray


def patch_points(recs: Sequence[SceneRecord], cfg: TileConfig) -> PatchPoints:
    """Scene-anchored set centres of the patches (pre-chipped archives).

    A patch gives one centre: the centre of its chip nearest the middle of the scene (its centred
    chip), so a patch of at least one chip always gives that chip. Patches whose centres coincide
    (to the decimetre, e.g. the dates of one patch on one pixel grid) share it. Where a patch's chip
    also fits at the centre of a coarser patch (or, at equal GSD, one earlier in (zone, northing,
    easting) order), it joins that centre instead: centres are visited coarsest first, and each
    owns the patches that fit there and no earlier centre took, so every patch is in the sets of
    exactly one centre. A centre owning no patch is dropped. Scenes that are not patches join every
    centre where their chip fits (their pixel-aligned window nearest the centre lies inside them).

    Args:
        recs: Scenes sorted by scene id, on their chip grids.
        cfg: Tile parameters (``chip_size``, ``grid_m``, ``thin_coarse_sets``).

    Returns:
        The patches, and the members, owned patches and centre of each centre kept.
    """
    scenes = frozenset(i for i, r in enumerate(recs) if is_patch(r, cfg))
    if not scenes:
        return PatchPoints(frozenset(), {}, {}, {})
    anchors = _patch_anchors(recs, sorted(scenes), cfg)
    fits = _fitting_scenes(recs, anchors, cfg.chip_size)
    rank = sorted(
        range(len(anchors.points)),
        key=lambda a: (-max(recs[i].gsd_m for i in anchors.own[a]), anchors.points[a]),
    )
    owner: dict[int, int] = {}
    kept: list[int] = []
    for a in rank:
        if all(i in owner for i in anchors.own[a]):
            continue  # its patches joined a coarser centre
        kept.append(a)
        for i in sorted({*anchors.own[a], *(j for j in fits[a] if j in scenes)}):
            owner.setdefault(i, a)
    by_owner: dict[int, list[int]] = defaultdict(list)
    for i, a in owner.items():
        by_owner[a].append(i)
    members: dict[GridPoint, tuple[int, ...]] = {}
    owned: dict[GridPoint, frozenset[int]] = {}
    centres: dict[GridPoint, Centre] = {}
    for a in sorted(kept, key=lambda a: anchors.points[a]):
        p = anchors.points[a]
        mine = frozenset(by_owner[a])
        owned[p] = mine
        members[p] = tuple(sorted(mine | {j for j in fits[a] if j not in scenes}))
        centres[p] = anchors.centres[a]
    return PatchPoints(scenes, members, owned, centres)


def _patch_anchors(recs: Sequence[SceneRecord], patches: Sequence[int], cfg: TileConfig) -> _Anchors:
    """The centred chip of each patch as a candidate centre (patches sharing a position merged)."""
    chip, grid_m = cfg.chip_size, cfg.grid_m
    by_crs: dict[str, list[int]] = defaultdict(list)
    for i in patches:
        by_crs[recs[i].crs].append(i)
    found: dict[GridPoint, int] = {}
    points: list[GridPoint] = []
    centres: list[Centre] = []
    own: list[list[int]] = []
    for crs, idx in sorted(by_crs.items()):
        qx, qy = [], []
        for i in idx:
            r = recs[i]
            c0, r0 = _window_at(r, r.width / 2, r.height / 2, chip)
            x, y = chip_centre(r, ChipWindow(i, r0, c0), chip)
            qx.append(x)
            qy.append(y)
        lon, lat = transformer(crs, "EPSG:4326").transform(np.asarray(qx), np.asarray(qy))
        lon, lat = np.atleast_1d(lon), np.atleast_1d(lat)
        epsgs = _utm_epsg_array(lat, lon)
        for epsg in np.unique(epsgs):
            sel = np.flatnonzero(epsgs == epsg)
            zx, zy = transformer(crs, f"EPSG:{int(epsg)}").transform(np.asarray(qx)[sel], np.asarray(qy)[sel])
            for k, x, y in zip(sel, np.atleast_1d(zx), np.atleast_1d(zy), strict=True):
                key = (round(float(x) * 10), round(float(y) * 10))
                p = GridPoint(int(epsg), round(float(y) / grid_m), round(float(x) / grid_m), key)
                if p not in found:
                    found[p] = len(points)
                    points.append(p)
                    latlon = (float(lat[k]), float(_wrap_lon(lon[k])))
                    centres.append((crs, (qx[k], qy[k]), (float(x), float(y)), latlon))
                    own.append([])
                own[found[p]].append(idx[int(k)])
    zx = np.array([c[2][0] for c in centres])
    zy = np.array([c[2][1] for c in centres])
    return _Anchors(points, centres, own, zx, zy)


def _fitting_scenes(recs: Sequence[SceneRecord], anchors: _Anchors, chip: int) -> list[list[int]]:
    """Per candidate centre, the scenes (any) whose pixel-aligned chip nearest it lies inside them.

    Centres are indexed per zone by easting, so each scene looks only at the centres inside its
    own bounding box in that zone.
    """
    zones: dict[int, np.ndarray] = {}
    for epsg in sorted({p.epsg for p in anchors.points}):
        sel = np.flatnonzero(np.array([p.epsg == epsg for p in anchors.points]))
        zones[epsg] = sel[np.argsort(anchors.zx[sel], kind="stable")]
    fits: list[list[int]] = [[] for _ in anchors.points]
    for i, rec in enumerate(recs):
        for epsg in sorted(_zones_of(rec) & zones.keys()):
            cand = _in_box(rec, epsg, zones[epsg], anchors)
            if cand.size == 0:
                continue
            sx, sy = to_scene_crs(rec, f"EPSG:{epsg}", anchors.zx[cand], anchors.zy[cand])
            cols, rows = _pixel_coords(rec, np.atleast_1d(sx), np.atleast_1d(sy))
            c0 = np.floor(cols - chip / 2 + 0.5)
            r0 = np.floor(rows - chip / 2 + 0.5)
            ok = (c0 >= 0) & (r0 >= 0) & (c0 + chip <= rec.width) & (r0 + chip <= rec.height)
            for a in cand[ok]:
                fits[int(a)].append(i)
    return fits


def _in_box(rec: SceneRecord, epsg: int, order: np.ndarray, anchors: _Anchors) -> np.ndarray:
    """Candidate centres of zone ``epsg`` (``order``: sorted by easting) inside the scene's bounding box."""
    rx, ry = _ring(rec)
    zx, zy = transformer(rec.crs, f"EPSG:{epsg}").transform(rx, ry)
    zx, zy = np.asarray(zx), np.asarray(zy)
    if not (np.isfinite(zx).all() and np.isfinite(zy).all()):
        return np.empty(0, dtype=np.int64)
    xs = anchors.zx[order]
    cand = order[np.searchsorted(xs, zx.min(), "left") : np.searchsorted(xs, zx.max(), "right")]
    y = anchors.zy[cand]
    near: np.ndarray = cand[(y >= zy.min()) & (y <= zy.max())]
    return near
