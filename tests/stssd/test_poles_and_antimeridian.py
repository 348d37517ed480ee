"""Planning across the antimeridian and over the poles (issue 21, items 6 and 12), property-style.

The oracle is written apart from :mod:`a2mae.stssd.grouping`: it samples the scene pixel by pixel,
snaps every sample to the grid of the zone that owns it (UTM by the wrapped longitude, UPS beyond 84 N
and 80 S), and keeps the grid points whose chip fits in the scene with a pixel to spare, mapping each
point back onto the scene's side of 180 degrees. Random scenes in EPSG:4326 straddle 180 degrees, and
random scenes in polar stereographic CRSs hold a pole; the planned points must be exactly the oracle's.
Through the CLI, the scenes of the findings plan the sets on both sides of 180 degrees and at the
South Pole.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS

from a2mae.cli import main
from a2mae.ingest.catalog import BandFile, SceneRecord
from a2mae.ingest.scene_geometry import wgs84_geometry
from a2mae.stssd.grouping import GridPoint, scene_points
from a2mae.testing.rasters import GF2_NAME, write_scene

CHIP, GRID = 16, 20.0
TILE = ["--set", f"tile.chip_size={CHIP}", "--set", f"tile.grid_m={GRID:g}", "--set", "tile.workers=1"]


def record(crs: str, transform: Affine, width: int, height: int) -> SceneRecord:
    """A GF2 catalog row of a scene of this grid (no file: planning reads metadata only)."""
    corners, footprint, _ = wgs84_geometry(CRS.from_user_input(crs), transform, width, height)
    t = (transform.a, transform.b, transform.c, transform.d, transform.e, transform.f)
    xs, ys = (
        (transform.c, transform.c + transform.a * width),
        (transform.f, transform.f + transform.e * height),
    )
    band = BandFile(
        band="B1", uri="/x.tif", index=1, gsd_m=3.2, width=width, height=height, transform=t, dtype="uint16"
    )
    return SceneRecord(
        scene_id="GF2_MS_20200101_00000000",
        sensor="GF2",
        product="MS",
        source="/x.tif",
        datetime=None,
        period="na",
        crs=crs,
        transform=t,
        width=width,
        height=height,
        gsd_m=3.2,
        bounds=(min(xs), min(ys), max(xs), max(ys)),
        corners=corners,
        footprint_wkt=footprint,
        bands=("B1",),
        band_files=(band,),
        scale=1e-4,
        offset=0.0,
        content_hash="0" * 64,
    )


def owner(lat: float, lon: float) -> int:
    """The zone owning a place: UPS caps beyond 84 N / 80 S, else UTM by the wrapped longitude."""
    if lat >= 84:
        return 32661
    if lat < -80:
        return 32761
    zone = int(((lon + 180) % 360) // 6) + 1
    return (32600 if lat >= 0 else 32700) + zone


def oracle(rec: SceneRecord) -> set[GridPoint]:
    """Grid points whose chip fits in ``rec`` (margin one pixel), found from the scene's own pixels."""
    t = Affine(*rec.transform)
    step = max(1, int(GRID / rec.gsd_m / 3))
    cols, rows = np.meshgrid(np.arange(0.5, rec.width, step), np.arange(0.5, rec.height, step))
    x = t.c + t.a * cols.ravel()
    y = t.f + t.e * rows.ravel()
    lon, lat = Transformer.from_crs(rec.crs, "EPSG:4326", always_xy=True).transform(x, y)
    geographic = CRS.from_user_input(rec.crs).is_geographic
    centre_x = t.c + t.a * rec.width / 2
    found = set()
    for epsg in {owner(a, o) for a, o in zip(lat, lon, strict=True)}:
        zx, zy = Transformer.from_crs(rec.crs, f"EPSG:{epsg}", always_xy=True).transform(x, y)
        snapped = {(round(a / GRID), round(b / GRID)) for a, b in zip(zx, zy, strict=True)}
        cand = np.array(
            sorted({(i + di, j + dj) for i, j in snapped for di in (-1, 0, 1) for dj in (-1, 0, 1)})
        )
        px, py = cand[:, 0] * GRID, cand[:, 1] * GRID
        lon_p, lat_p = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True).transform(px, py)
        sx, sy = Transformer.from_crs(f"EPSG:{epsg}", rec.crs, always_xy=True).transform(px, py)
        if geographic:  # the same place on the scene's side of 180 degrees
            sx = centre_x + (np.asarray(sx) - centre_x + 180) % 360 - 180
        c = (np.asarray(sx) - t.c) / t.a
        r = (np.asarray(sy) - t.f) / t.e
        h = CHIP / 2
        fits = (c - h >= 1) & (c + h <= rec.width - 1) & (r - h >= 1) & (r + h <= rec.height - 1)
        for k in np.flatnonzero(fits):
            if owner(float(lat_p[k]), float(lon_p[k])) == epsg:
                found.add(GridPoint(epsg, int(cand[k, 1]), int(cand[k, 0])))
    return found


@pytest.mark.parametrize("seed", range(6))
def test_scenes_across_the_antimeridian_plan_every_point_on_both_sides(seed):
    rng = np.random.default_rng(seed)
    px = float(rng.uniform(1.2e-5, 3e-5))  # degrees: about 1.3 to 3.3 m
    width, height = int(rng.integers(120, 260)), int(rng.integers(60, 120))
    west = 180 - px * width * float(rng.uniform(0.25, 0.75))
    lat = float(rng.uniform(-70, 70))
    rec = record("EPSG:4326", Affine(px, 0, west, 0, -px, lat), width, height)
    got = set(scene_points(rec, GRID, CHIP))
    assert got == oracle(rec)
    assert {p.epsg % 100 for p in got} == {1, 60}  # both sides of 180 degrees
    twin = record("EPSG:4326", Affine(px, 0, west - 360, 0, -px, lat), width, height)
    assert set(scene_points(twin, GRID, CHIP)) == got  # 179.9 and -180.1 are one place


@pytest.mark.parametrize(
    ("crs", "seed"), [("EPSG:3031", 0), ("EPSG:3031", 1), ("EPSG:3413", 2), ("EPSG:3995", 3)]
)
def test_scenes_holding_a_pole_plan_every_point_in_its_cap(crs, seed):
    rng = np.random.default_rng(seed)
    gsd = float(rng.uniform(3, 10))
    width, height = int(rng.integers(150, 300)), int(rng.integers(150, 300))
    left = -gsd * width * float(rng.uniform(0.3, 0.7))  # the pole (0, 0) lies inside the scene
    top = gsd * height * float(rng.uniform(0.3, 0.7))
    rec = record(crs, Affine(gsd, 0, left, 0, -gsd, top), width, height)
    got = set(scene_points(rec, GRID, CHIP))
    assert got and got == oracle(rec)
    assert {p.epsg for p in got} == {32761 if crs == "EPSG:3031" else 32661}
    n = math.floor((width - CHIP - 2) * gsd / GRID) * math.floor((height - CHIP - 2) * gsd / GRID)
    assert len(got) >= 0.9 * n  # about one point per grid cell of the scene, not a wedge of it


def _tile(tmp_path: Path, scene: Path, *extra: str) -> list[dict]:
    cat, out = tmp_path / f"{scene.parent.name}.parquet", tmp_path / f"{scene.parent.name}-stssd"
    assert main(["ingest", str(scene), "--catalog", str(cat), "--no-progress"]) == 0
    assert main(["tile", "--catalog", str(cat), "--out", str(out), "--no-progress", *extra]) == 0
    return pq.read_table(out / "manifest.parquet").to_pylist()


def test_a_wgs84_scene_over_180_degrees_tiles_both_sides_through_the_cli(tmp_path):
    px, width = 2e-5, 200
    data = np.random.default_rng(6).uniform(0.02, 0.5, (4, 100, width)).astype(np.float32)
    east = write_scene(
        tmp_path / "east" / GF2_NAME,
        data,
        crs="EPSG:4326",
        transform=Affine(px, 0, 180 - px * 100, 0, -px, 10),
    )
    west = write_scene(
        tmp_path / "west" / GF2_NAME,
        data,
        crs="EPSG:4326",
        transform=Affine(px, 0, -180 - px * 100, 0, -px, 10),
    )
    rows = _tile(tmp_path, east, *TILE)
    zones = {r["grid_crs"] for r in rows}
    assert zones == {"EPSG:32601", "EPSG:32660"}, zones
    assert all(-180 <= r["centre_lon"] < 180 for r in rows)
    assert sorted(r["set_id"] for r in _tile(tmp_path, west, *TILE)) == sorted(r["set_id"] for r in rows)


@pytest.mark.parametrize(("gsd", "extra"), [(3.2, ()), (10.0, ()), (3.2, tuple(TILE))])
def test_a_scene_holding_the_south_pole_tiles_through_the_cli(tmp_path, gsd, extra):
    data = np.random.default_rng(12).uniform(0.02, 0.5, (4, 300, 300)).astype(np.float32)
    half = 150 * gsd
    scene = write_scene(
        tmp_path / "pole" / GF2_NAME, data, crs="EPSG:3031", transform=Affine(gsd, 0, -half, 0, -gsd, half)
    )
    rows = _tile(tmp_path, scene, *extra)
    assert rows and {r["grid_crs"] for r in rows} == {"EPSG:32761"}
    if extra:  # a 20 m grid: a point every cell of the cap (thinned to every 2nd by the 51 m GF2 chips)
        assert len(rows) >= 0.9 * math.floor((300 - CHIP - 2) * gsd / GRID / 2) ** 2
