"""Set composition, ground grid, chip windows and the split by location (metadata only, no files)."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from a2mae.config import load_params
from a2mae.ingest.catalog import BandFile, SceneRecord
from a2mae.stssd.grouping import (
    chip_centre,
    chip_transform,
    compose_sets,
    is_patch,
    patch_limit_px,
    plan_sets,
    scene_points,
    split_of,
)

T0 = datetime(2020, 6, 15, 3, 0, tzinfo=UTC)
GSD = {"S2": 10.0, "L8": 30.0, "GF1": 8.0, "GF2": 3.2}
PRODUCT = {"S2": "L2A", "L8": "C2L2", "GF1": "MS", "GF2": "MS"}


def rec(
    sensor: str,
    when: datetime | None = T0,
    period: str = "g",
    *,
    epsg: int = 32650,
    centre: tuple[float, float] = (240_000.0, 3_377_000.0),
    extent_m: float = 4000.0,
    sub: tuple[float, float] = (0.0, 0.0),
    cloud: float | None = 0.0,
    tag: str = "",
    gsd: float | None = None,
    px: int | None = None,
) -> SceneRecord:
    """A catalog record without files: a square scene around ``centre`` in UTM ``epsg``.

    ``gsd`` overrides the sensor's GSD, ``px`` the size in pixels (else ``extent_m / gsd``).
    """
    g = gsd or GSD[sensor]
    n = px or round(extent_m / g)
    extent_m = n * g
    ulx = math.floor((centre[0] - extent_m / 2) / 60) * 60 + sub[0] * g
    uly = math.ceil((centre[1] + extent_m / 2) / 60) * 60 - sub[1] * g
    tr = (g, 0.0, ulx, 0.0, -g, uly)
    xs = [ulx, ulx + n * g, ulx + n * g, ulx]
    ys = [uly, uly, uly - n * g, uly - n * g]
    lon, lat = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True).transform(xs, ys)
    corners = tuple((la, lo) for la, lo in zip(lat, lon, strict=True))
    bf = BandFile(
        band="B1", uri="/nonexistent.tif", index=1, gsd_m=g, width=n, height=n, transform=tr, dtype="uint16"
    )
    day = when.strftime("%Y%m%d") if when else "nodate"
    return SceneRecord(
        scene_id=f"{sensor}_{PRODUCT[sensor]}_{day}_{tag or 'x'}{ulx:.0f}{uly:.0f}"[:60],
        sensor=sensor,
        product=PRODUCT[sensor],
        source="/nonexistent",
        datetime=when,
        period=period,
        crs=f"EPSG:{epsg}",
        transform=tr,
        width=n,
        height=n,
        gsd_m=g,
        bounds=(ulx, uly - n * g, ulx + n * g, uly),
        corners=corners,
        footprint_wkt="POLYGON EMPTY",
        bands=("B1",),
        band_files=(bf,),
        cloud_fraction=cloud,
        scale=1e-4,
        offset=0.0,
        content_hash=f"{sensor}{day}{tag}{ulx}{uly}",
    )


def cfg(**over):
    return load_params(overrides=[f"tile.{k}={v}" for k, v in over.items()]).tile


def roles(records, members):
    return [(role, records[i].scene_id) for role, i in members]


# ------------------------------------------------------------------------------------------ composition
def test_s2_l8_sets_take_one_growth_and_one_nongrowth_image_per_sensor():
    rs = [
        rec("S2", T0, "g", cloud=0.2, tag="a"),
        rec("S2", T0 + timedelta(days=5), "g", cloud=0.01, tag="b"),
        rec("S2", T0 + timedelta(days=180), "ng", tag="c"),
        rec("L8", T0 + timedelta(days=3), "g", tag="d"),
        rec("L8", T0 + timedelta(days=170), "ng", tag="e"),
    ]
    sets = compose_sets(range(len(rs)), rs, cfg(sets_per_location=2))
    assert [k for k, _ in sets] == ["temporal", "temporal"]
    first = sets[0][1]
    assert [r for r, _ in first] == ["S2-g", "L8-g", "S2-ng", "L8-ng"]
    assert rs[first[0][1]].cloud_fraction == 0.01  # the clearest growth S2 goes first
    assert [(r, rs[i].cloud_fraction) for r, i in sets[1][1]] == [("S2-g", 0.2)]  # round 2: the next best
    # one round only
    assert len(compose_sets(range(len(rs)), rs, cfg(sets_per_location=1))) == 1


def test_max_images_per_set_caps_s2_l8_sets_in_role_order():
    rs = [rec("S2", T0, "g"), rec("S2", T0, "ng", tag="n"), rec("L8", T0, "g"), rec("L8", T0, "ng", tag="n")]
    ((kind, members),) = compose_sets(range(4), rs, cfg(max_images_per_set=2, sets_per_location=1))
    assert kind == "temporal" and [r for r, _ in members] == ["S2-g", "L8-g"]


def test_tropical_na_scenes_fill_both_period_slots():
    rs = [rec("S2", T0, "na", tag="a"), rec("S2", T0 + timedelta(days=90), "na", tag="b")]
    ((kind, members),) = compose_sets(range(2), rs, cfg(sets_per_location=1))
    assert kind == "temporal" and [r for r, _ in members] == ["S2-na", "S2-na"]
    assert members[0][1] != members[1][1]


def test_gf_s2_set_pairs_s2_within_the_window_nearest_first():
    gf = rec("GF2", T0, "g")
    near = rec("S2", T0 + timedelta(days=10), "g", tag="near")
    mid = rec("S2", T0 - timedelta(days=25), "g", tag="mid")
    far = rec("S2", T0 + timedelta(days=40), "g", tag="far")
    rs = [gf, near, mid, far]
    sets = compose_sets(range(4), rs, cfg(sets_per_location=1))
    gf_sets = [m for k, m in sets if k == "hires"]
    assert len(gf_sets) == 1
    assert roles(rs, gf_sets[0]) == [("GF2-g", gf.scene_id), ("S2-g", near.scene_id), ("S2-g", mid.scene_id)]
    # a narrower window or a smaller cap keeps only the nearest
    (narrow,) = [m for k, m in compose_sets(range(4), rs, cfg(gf_s2_max_days=15)) if k == "hires"]
    assert roles(rs, narrow) == [("GF2-g", gf.scene_id), ("S2-g", near.scene_id)]
    (capped,) = [m for k, m in compose_sets(range(4), rs, cfg(max_images_per_set=2)) if k == "hires"]
    assert roles(rs, capped) == [("GF2-g", gf.scene_id), ("S2-g", near.scene_id)]


def test_gf_without_partner_in_time_is_a_single_image_set():
    rs = [rec("GF1", T0, "g"), rec("S2", T0 + timedelta(days=200), "ng")]
    sets = compose_sets(range(2), rs, cfg())
    assert ("hires", [("GF1-g", 0)]) in sets
    assert ("temporal", [("S2-ng", 1)]) in sets
    undated = [rec("GF1", None, "na"), rec("S2", T0, "g")]
    assert ("hires", [("GF1-na", 0)]) in compose_sets(range(2), undated, cfg())


def test_sensors_in_no_set_type_form_single_image_sets():
    rs = [rec("S2", T0, "g"), rec("L8", T0, "g", tag="a"), rec("L8", T0, "ng", tag="b")]
    sets = compose_sets(range(3), rs, cfg(temporal_sensors="[S2]", sets_per_location=2))
    assert sets[0] == ("temporal", [("S2-g", 0)])
    assert sorted(k for k, _ in sets[1:]) == ["single", "single"]
    assert all(len(m) == 1 for _, m in sets)


# ------------------------------------------------------------------------------------------- geometry
def test_scene_points_have_a_full_chip_inside_the_scene():
    r = rec("S2", extent_m=5000, sub=(0.37, 0.81))
    pts = scene_points(r, 960.0, 96)
    assert pts, "a 5 km scene holds 960 m chips"
    for p, (c, row) in pts.items():
        assert 48 + 1 <= c <= r.width - 48 - 1 and 48 + 1 <= row <= r.height - 48 - 1
        x, y = p.xy(960.0)
        assert x % 960 == 0 and y % 960 == 0
    # a scene smaller than one chip has no point
    assert scene_points(rec("S2", extent_m=900), 960.0, 96) == {}


def _centre_in(crs_from: str, crs_to: str, x: float, y: float) -> tuple[float, float]:
    if crs_from == crs_to:
        return x, y
    return Transformer.from_crs(crs_from, crs_to, always_xy=True).transform(x, y)


def _check_plan_geometry(records, c):
    plan = plan_sets(records, c)
    multi = 0
    by_point = defaultdict(list)
    for s in plan.sets:
        coarsest = max(plan.records[im.window.scene].gsd_m for im in s.images)
        multi += len({plan.records[im.window.scene].sensor for im in s.images}) > 1
        for im in s.images:
            r = plan.records[im.window.scene]
            x, y = _centre_in(r.crs, s.point.crs, *chip_centre(r, im.window, c.chip_size))
            dx, dy = abs(x - s.centre_xy[0]), abs(y - s.centre_xy[1])
            # within half of its own pixel per axis (so within half a pixel of the coarsest GSD)
            assert dx <= 0.5 * r.gsd_m + 1e-3 and dy <= 0.5 * r.gsd_m + 1e-3, (s.set_id, im.role, dx, dy)
            assert math.hypot(dx, dy) <= 0.5 * coarsest * math.sqrt(2) + 1e-3
            by_point[s.point].append((r, im.window))
    # nested footprints at every point: finer chips lie inside coarser ones (all share the centre)
    for chips in by_point.values():
        boxes = []
        for r, w in chips:
            a, _, cx, _, e, fy = chip_transform(r, w)
            xs = (cx, cx + a * c.chip_size)
            ys = (fy + e * c.chip_size, fy)
            if r.crs != chips[0][0].crs:
                continue
            boxes.append((r.gsd_m, xs, ys))
        for g1, x1, y1 in boxes:
            for g2, x2, y2 in boxes:
                if g1 < g2 - 1e-9:  # chip 1 is finer: inside chip 2 up to the snapping of both
                    tol = 0.5 * g1 + 0.5 * g2 + 1e-6
                    assert x2[0] - tol <= x1[0] and x1[1] <= x2[1] + tol
                    assert y2[0] - tol <= y1[0] and y1[1] <= y2[1] + tol
    return plan, multi


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subs=st.lists(st.tuples(st.floats(0, 0.99), st.floats(0, 0.99)), min_size=4, max_size=4),
    shift=st.tuples(st.floats(-2000, 2000), st.floats(-2000, 2000)),
    grid_m=st.sampled_from([320.0, 480.0, 960.0]),
    chip=st.sampled_from([32, 64, 96]),
)
def test_chip_centres_coincide_on_the_ground_within_half_a_pixel(subs, shift, grid_m, chip):
    cx, cy = 240_000.0 + shift[0], 3_377_000.0 + shift[1]
    records = [
        rec("S2", T0, "g", centre=(cx, cy), extent_m=3000, sub=subs[0], tag="g"),
        rec(
            "S2",
            T0 + timedelta(days=180),
            "ng",
            centre=(cx + 130, cy - 70),
            extent_m=3000,
            sub=subs[1],
            tag="n",
        ),
        rec("L8", T0 + timedelta(days=4), "g", centre=(cx - 200, cy + 90), extent_m=6000, sub=subs[2]),
        rec("GF2", T0 - timedelta(days=9), "g", centre=(cx + 40, cy + 20), extent_m=1200, sub=subs[3]),
    ]
    plan, multi = _check_plan_geometry(records, cfg(grid_m=grid_m, chip_size=chip))
    assert plan.sets and multi > 0


def test_scenes_in_two_utm_zones_keep_their_crs_and_still_coincide():
    # 114 E is the border of UTM zones 49 and 50; the S2 scene is in zone 50, the L8 scene in zone 49.
    to50 = Transformer.from_crs("EPSG:4326", "EPSG:32650", always_xy=True)
    to49 = Transformer.from_crs("EPSG:4326", "EPSG:32649", always_xy=True)
    c50 = to50.transform(114.01, 30.5)
    c49 = to49.transform(114.01, 30.5)
    records = [
        rec("S2", T0, "g", epsg=32650, centre=c50, extent_m=4000, sub=(0.2, 0.3)),
        rec("L8", T0, "g", epsg=32649, centre=c49, extent_m=9000, sub=(0.4, 0.1)),
    ]
    plan, multi = _check_plan_geometry(records, cfg())
    assert multi > 0
    assert {p.point.epsg for p in plan.sets} == {32649, 32650}  # points west of 114 E use zone 49
    ids = [s.set_id for s in plan.sets]
    assert len(ids) == len(set(ids))
    for s in plan.sets:
        crs = {plan.records[im.window.scene].crs for im in s.images}
        assert crs <= {"EPSG:32649", "EPSG:32650"}


# ---------------------------------------------------------------------------------------------- split
def test_split_is_deterministic_by_block_and_blocks_never_straddle():
    big = [rec("S2", T0, "g", extent_m=40_000), rec("L8", T0, "g", extent_m=45_000)]
    c = cfg(**{"split.block_m": 4000, "split.val_fraction": 0.2, "split.test_fraction": 0.2})
    plan = plan_sets(big, c)
    again = plan_sets(list(reversed(big)), c)
    assert [(s.set_id, s.split) for s in plan.sets] == [(s.set_id, s.split) for s in again.sets]
    block_split: dict[tuple, set[str]] = defaultdict(set)
    for s in plan.sets:
        x, y = s.point.xy(c.grid_m)
        block_split[(s.point.epsg, math.floor(x / 4000), math.floor(y / 4000))].add(s.split)
    assert all(len(v) == 1 for v in block_split.values())
    counts = defaultdict(int)
    for v in block_split.values():
        counts[next(iter(v))] += 1
    assert set(counts) == {"train", "val", "test"}  # ~100 blocks: all three splits occur
    # another seed moves blocks between splits
    c2 = cfg(
        **{"split.block_m": 4000, "split.val_fraction": 0.2, "split.test_fraction": 0.2, "split.seed": 7}
    )
    assert [s.split for s in plan_sets(big, c2).sets] != [s.split for s in plan.sets]


@pytest.mark.parametrize(("val", "test"), [(0.0, 0.0), (0.3, 0.3)])
def test_split_fractions_are_respected_over_many_blocks(val, test):
    from a2mae.stssd.grouping import GridPoint

    got = defaultdict(int)
    for i in range(2000):
        got[split_of(GridPoint(32650, i, 7), 1000.0, 1000.0, 0, val, test)] += 1
    assert abs(got["val"] / 2000 - val) < 0.05 and abs(got["test"] / 2000 - test) < 0.05


def test_coarse_only_sets_are_thinned_to_every_kth_grid_point():
    l8 = [rec("L8", T0, "g", extent_m=20_000), rec("L8", T0, "ng", extent_m=20_000, tag="n")]
    thin = plan_sets(l8, cfg())
    full = plan_sets(l8, cfg(thin_coarse_sets="false"))
    assert thin.sets and all(s.point.ix % 3 == 0 and s.point.iy % 3 == 0 for s in thin.sets)  # 2880 m / 960 m
    assert len(full.sets) > 6 * len(thin.sets)
    # where an S2 scene is present, every grid point keeps its temporal set (with the L8 chips)
    with_s2 = plan_sets([*l8, rec("S2", T0, "g", extent_m=6000)], cfg())
    s2_points = {s.point for s in with_s2.sets if any(im.role.startswith("S2") for im in s.images)}
    assert len(s2_points) >= 16
    assert all(len(s.images) == 3 for s in with_s2.sets if s.point in s2_points)


@settings(max_examples=60, deadline=None)
@given(
    cells=st.lists(
        st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(1, 3), st.integers(1, 9)),
        min_size=1,
        max_size=60,
        unique_by=lambda c: (c[0], c[1]),
    ),
    bound=st.integers(1, 40),
)
def test_pack_runs_cover_the_plan_with_whole_points_and_blocks(cells, bound):
    """Runs cover every set in order, never split a grid point, keep blocks whole when they fit."""
    from a2mae.stssd.grouping import GridPoint, PlannedSet, _block_major, block_of, pack_runs

    weight_of: dict[GridPoint, int] = {}
    sets = []
    for ix, iy, nsets, w in sorted(cells, key=lambda c: _block_major(GridPoint(32650, c[1], c[0]))):
        p = GridPoint(32650, iy, ix)
        weight_of[p] = w
        centre = (0.0, 0.0)
        sets += [
            PlannedSet(f"{ix}-{iy}-{k}", "temporal", p, centre, centre, (), "train") for k in range(nsets)
        ]
    runs = pack_runs(sets, lambda ss: weight_of[ss[0].point], bound)
    assert runs[0][0] == 0 and runs[-1][1] == len(sets)
    assert all(a < b for a, b in runs) and all(r[1] == q[0] for r, q in itertools.pairwise(runs))
    for a, b in runs:
        points = list(dict.fromkeys(s.point for s in sets[a:b]))
        assert a == 0 or sets[a - 1].point != sets[a].point  # a point is never split
        total = sum(weight_of[p] for p in points)
        assert total <= bound or len(points) == 1
    block_weight: dict = {}
    for p, w in weight_of.items():
        block_weight[block_of(p)] = block_weight.get(block_of(p), 0) + w
    for a, _ in runs[1:]:
        block = block_of(sets[a].point)
        if block_weight[block] <= bound:  # a block that fits is never cut
            assert block_of(sets[a - 1].point) != block


# -------------------------------------------------------------------------------------------- patches
def test_the_patch_limit_is_one_chip_a_spare_pixel_each_side_and_one_lattice_step():
    assert [patch_limit_px(g, 96, 960.0, True) for g in (10.0, 20.0, 30.0, 60.0)] == [194.0] * 4
    assert patch_limit_px(5.0, 96, 960.0, True) == 290.0 and patch_limit_px(3.2, 96, 960.0, True) == 398.0
    assert patch_limit_px(20.0, 96, 960.0, False) == 146.0  # unthinned: every grid point
    c = cfg()
    assert is_patch(rec("S2", px=120), c) and is_patch(rec("S2", px=96), c) and is_patch(rec("S2", px=193), c)
    assert not is_patch(rec("S2", px=95), c) and not is_patch(rec("S2", px=194), c)  # too small / on the grid


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    gsd=st.sampled_from([10.0, 20.0, 60.0]),
    size=st.integers(96, 193),
    sub=st.tuples(st.floats(0, 0.99), st.floats(0, 0.99)),
    shift=st.tuples(st.floats(-5000, 5000), st.floats(-5000, 5000)),
)
def test_a_patch_of_at_least_one_chip_gives_exactly_its_centred_chip(gsd, size, sub, shift):
    """Pre-chipped archives: a patch anywhere, off the 960 m grid, still gives its chip, once."""
    r = rec("S2", centre=(240_000 + shift[0], 3_377_000 + shift[1]), sub=sub, gsd=gsd, px=size)
    plan = plan_sets([r], cfg())
    windows = {im.window for s in plan.sets for im in s.images}
    c0 = math.floor(size / 2 - 48 + 0.5)
    assert len(plan.sets) == 1 and [(w.row0, w.col0) for w in windows] == [(c0, c0)]
    (s,) = plan.sets
    assert s.point.anchor and "-E" in s.set_id and "-N" in s.set_id
    x, y = chip_centre(r, next(iter(windows)), 96)
    assert abs(x - s.centre_xy[0]) < 1e-6 and abs(y - s.centre_xy[1]) < 1e-6  # the patch's own centre


def test_the_dates_of_one_patch_share_its_centre_and_make_growth_and_nongrowth_sets():
    dates = [(T0, "g", "a"), (T0 + timedelta(days=180), "ng", "b"), (T0 + timedelta(days=20), "g", "c")]
    rs = [
        rec("S2", when, period, px=120, tag=tag, cloud=0.1 * k) for k, (when, period, tag) in enumerate(dates)
    ]
    plan = plan_sets(rs, cfg())
    assert len({s.point for s in plan.sets}) == 1
    assert [[im.role for im in s.images] for s in plan.sets] == [["S2-g", "S2-ng"], ["S2-g"]]
    assert {(im.window.row0, im.window.col0) for s in plan.sets for im in s.images} == {(12, 12)}
    again = plan_sets(list(reversed(rs)), cfg())
    assert [s.set_id for s in again.sets] == [s.set_id for s in plan.sets]  # stable, deterministic


def test_a_patch_joins_a_coarser_overlapping_patch_and_big_scenes_join_patches():
    """Co-location through the ground: one centre for overlapping patches of two sensors."""
    s2 = rec("S2", T0, "g", centre=(240_010, 3_377_020), px=120, sub=(0.3, 0.6))
    l8 = rec("L8", T0 + timedelta(days=2), "g", centre=(240_000, 3_377_000), px=100, sub=(0.45, 0.2))
    big = rec("S2", T0 + timedelta(days=180), "ng", extent_m=20_000, tag="big")
    plan, multi = _check_plan_geometry([s2, l8, big], cfg())
    assert multi == 1
    at_patch = [s for s in plan.sets if s.point.anchor]
    assert len({s.point for s in at_patch}) == 1  # the S2 patch joined the coarser L8 patch's centre
    sensors = [sorted(plan.records[im.window.scene].scene_id for im in s.images) for s in at_patch]
    assert sensors == [sorted([s2.scene_id, l8.scene_id, big.scene_id])]
    # the big scene keeps its grid sets too; the patches are on no grid point
    on_grid = [s for s in plan.sets if not s.point.anchor]
    assert on_grid and all(plan.records[im.window.scene] is big for s in on_grid for im in s.images)
    # each patch has one chip in the whole plan
    for patch in (s2, l8):
        assert (
            len({im.window for s in plan.sets for im in s.images if plan.records[im.window.scene] is patch})
            == 1
        )


def test_scenes_that_are_no_patches_plan_as_before():
    """Ordinary scenes never get a patch centre (the snapshots of ordinary archives do not change)."""
    rs = [
        rec("S2", T0, "g", extent_m=5000),
        rec("L8", T0, "g", extent_m=9000),
        rec("GF2", T0, "g", extent_m=1600),
    ]
    plan = plan_sets(rs, cfg())
    assert plan.sets and not any(s.point.anchor for s in plan.sets)


def test_set_kinds_are_named_by_role_and_old_names_still_read():
    from a2mae.stssd.grouping import SET_KINDS, set_kind

    assert SET_KINDS == ("temporal", "hires", "single")
    assert [set_kind(k) for k in ("S2-L8", "GF-S2", "single", "temporal", "hires")] == [
        "temporal",
        "hires",
        "single",
        "temporal",
        "hires",
    ]


def test_a_snapshot_with_the_old_kind_names_is_still_read(tiny_snapshot, tmp_path):
    """Snapshots tiled before the kinds were named by role store S2-L8 / GF-S2: verified and read as ever."""
    import hashlib
    import json
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from a2mae.stssd.dataset import StssdDataset
    from a2mae.stssd.grouping import set_kind
    from a2mae.stssd.snapshot import snapshot_id_of, verify_snapshot

    old = tmp_path / "old"
    shutil.copytree(tiny_snapshot, old)
    table = pq.read_table(old / "manifest.parquet")
    legacy = {"temporal": "S2-L8", "hires": "GF-S2"}
    kinds = [legacy.get(k, k) for k in table.column("set_kind").to_pylist()]
    assert {"S2-L8", "GF-S2"} <= set(kinds)
    i = table.column_names.index("set_kind")
    table = table.set_column(i, "set_kind", pa.array(kinds, pa.string()))
    pq.write_table(table, old / "manifest.parquet")
    doc = json.loads((old / "snapshot.json").read_text())
    doc["files"]["manifest.parquet"] = hashlib.sha256((old / "manifest.parquet").read_bytes()).hexdigest()
    doc["snapshot_id"] = snapshot_id_of(doc.get("fingerprint"), doc["files"], doc["shards"])
    (old / "snapshot.json").write_text(json.dumps(doc))
    verify_snapshot(old)
    assert len(StssdDataset(old)) == len(StssdDataset(tiny_snapshot)) > 0
    assert {set_kind(k) for k in kinds} == {"temporal", "hires"}
