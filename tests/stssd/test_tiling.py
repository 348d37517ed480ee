"""``a2mae tile`` on generated co-located scenes: geometry, resampling, drop rules, determinism, atomicity."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer
from rasterio.windows import Window

from a2mae.config import load_params
from a2mae.ingest.catalog import write_catalog
from a2mae.stssd.grouping import plan_sets
from a2mae.stssd.run import TilingError, tile
from a2mae.testing.patches import BIGEARTHNET_BANDS, PatchLayout, make_patch_archive
from a2mae.testing.scenes import SceneSpec, default_specs, make_scenes

REPO = Path(__file__).resolve().parents[2]


def params(*over: str):
    return load_params(overrides=["tile.workers=1", *over])


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def manifest(root: Path) -> list[dict]:
    return pq.read_table(root / "manifest.parquet").to_pylist()


def chip_centre(row: dict) -> tuple[float, float]:
    a, b, c, d, e, f = row["transform"]
    h = row["height"] / 2
    x, y = a * h + b * h + c, d * h + e * h + f
    if row["crs"] != row["grid_crs"]:
        x, y = Transformer.from_crs(row["crs"], row["grid_crs"], always_xy=True).transform(x, y)
    return x, y


# ------------------------------------------------------------------------------------------ acceptance
def test_multi_sensor_sets_whose_chip_centres_coincide(tiny_snapshot):
    rows = manifest(tiny_snapshot)
    sets: dict[str, list[dict]] = {}
    for r in rows:
        sets.setdefault(r["set_id"], []).append(r)
    multi = [v for v in sets.values() if len({r["sensor"] for r in v}) > 1]
    assert {r["set_kind"] for v in multi for r in v} == {"temporal", "hires"}
    assert {r["sensor"] for v in multi for r in v} == {"S2", "L8", "GF1", "GF2"}
    assert max(len(v) for v in sets.values()) == 4
    for v in sets.values():
        coarsest = max(r["gsd_m"] for r in v)
        for r in v:
            x, y = chip_centre(r)
            assert abs(x - r["centre_x"]) <= 0.5 * coarsest and abs(y - r["centre_y"]) <= 0.5 * coarsest
            assert abs(x - r["centre_x"]) <= 0.5 * r["gsd_m"] + 1e-6  # the stronger, per-image bound
    # nested footprints: every chip at a grid point lies inside the coarser chips of that point
    by_point: dict[tuple, list[dict]] = {}
    for r in rows:
        by_point.setdefault((r["centre_x"], r["centre_y"]), []).append(r)
    nested = 0
    for v in by_point.values():
        for fine in v:
            for coarse in v:
                if fine["gsd_m"] < coarse["gsd_m"]:
                    tol = 0.5 * (fine["gsd_m"] + coarse["gsd_m"])
                    fa, _, fc, _, fe, ff = fine["transform"]
                    ca, _, cc, _, ce, cf = coarse["transform"]
                    assert cc - tol <= fc and fc + fa * 96 <= cc + ca * 96 + tol
                    assert cf + ce * 96 - tol <= ff + fe * 96 and ff <= cf + tol
                    nested += 1
    assert nested >= 4


def test_manifest_metadata_and_stats(tiny_snapshot, synthetic_scenes):
    rows = manifest(tiny_snapshot)
    recs = {r.scene_id: r for r in synthetic_scenes[1]}
    s2 = next(r for r in rows if r["sensor"] == "S2")
    assert s2["bands"] == [
        "B02",
        "B03",
        "B04",
        "B08",
        "B05",
        "B06",
        "B07",
        "B8A",
        "B11",
        "B12",
    ]  # B01/B09 dropped
    assert next(r for r in rows if r["sensor"] == "L8")["bands"] == ["B2", "B3", "B4", "B5", "B6", "B7"]
    assert next(r for r in rows if r["sensor"] == "GF2")["bands"] == ["B1", "B2", "B3", "B4"]
    for r in rows:
        rec = recs[r["scene_id"]]
        assert r["datetime"] == rec.datetime and r["period"] == rec.period and r["gsd_m"] == rec.gsd_m
        assert r["nbytes"] == r["channels"] * 96 * 96 * 2 and r["dtype"] == "int16"
        # corners are the chip's own (not the scene's): UL from its transform
        lon, lat = Transformer.from_crs(r["crs"], "EPSG:4326", always_xy=True).transform(
            r["transform"][2], r["transform"][5]
        )
        assert r["corners"][:2] == pytest.approx([lat, lon], abs=1e-9)
        assert r["split"] in ("train", "val", "test")
    stats = json.loads((tiny_snapshot / "stats.json").read_text())
    b04 = stats["sensors"]["S2"]["B04"]
    assert 0 < b04["min"] <= b04["mean"] <= b04["max"] < 1 and b04["std"] > 0
    info = json.loads((tiny_snapshot / "snapshot.json").read_text())
    assert info["counts"]["sets"] == len({r["set_id"] for r in rows})
    assert info["counts"]["chips"] < info["counts"]["images"]  # a chip shared by sets is stored once


def test_statistics_equal_a_recomputation_from_the_stored_chips(tiny_snapshot):
    """stats.json: exact sums over each stored chip's valid pixels (train chips when there are any)."""
    values: dict[str, dict[str, dict[str, list[np.ndarray]]]] = {"all": {}, "train": {}}
    seen = set()
    for r in manifest(tiny_snapshot):  # set order: a chip counts for the first set that stores it
        if (r["shard"], r["offset"]) in seen:
            continue
        seen.add((r["shard"], r["offset"]))
        raw = (tiny_snapshot / r["shard"]).read_bytes()[r["offset"] : r["offset"] + r["nbytes"]]
        chip = np.frombuffer(raw, "<i2").reshape(r["channels"], r["height"], r["width"])
        valid = chip[0] != -32768  # a nodata pixel is nodata in every band
        for name in ("all", "train") if r["split"] == "train" else ("all",):
            per = values[name].setdefault(r["sensor"], {})
            for band, plane in zip(r["bands"], chip, strict=True):
                per.setdefault(band, []).append(plane[valid].astype(np.int64))
    stats = json.loads((tiny_snapshot / "stats.json").read_text())["sensors"]
    assert set(stats) == set(values["all"])
    for sensor, bands in stats.items():
        for band, got in bands.items():
            source = got["computed_on"]
            assert source == ("train" if sensor in values["train"] else "all")
            v = np.concatenate(values[source][sensor][band])
            assert got["count"] == v.size
            assert got["mean"] == pytest.approx(v.mean() / 1e4, abs=1e-8)
            assert got["std"] == pytest.approx(v.std() / 1e4, abs=1e-8)
            assert (got["min"], got["max"]) == (v.min() / 1e4, v.max() / 1e4)


def test_chip_pixels_equal_the_source_on_the_same_grid(tiny_snapshot):
    rows = manifest(tiny_snapshot)
    for r in rows:
        if r["sensor"] not in ("S2", "GF2"):
            continue
        raw = (tiny_snapshot / r["shard"]).read_bytes()[r["offset"] : r["offset"] + r["nbytes"]]
        chip = np.frombuffer(raw, "<i2").reshape(r["channels"], 96, 96)
        col0, row0 = r["col0"], r["row0"]
        path = _band_path(r, "B04" if r["sensor"] == "S2" else "B3")
        with rasterio.open(path[0]) as ds:
            src = ds.read(path[1], window=Window(col0, row0, 96, 96))
        k = r["bands"].index("B04" if r["sensor"] == "S2" else "B3")
        np.testing.assert_array_equal(chip[k], src.astype(np.int16))  # scale 1e-4 -> stored value = DN


def _band_path(r, band):
    src = Path(r["source"])
    if src.is_file():
        return str(src), int(band[1:])
    (path,) = [p for p in src.iterdir() if f"_{band}_" in p.name]
    return str(path), 1


def test_generate_ingest_tile_end_to_end(tmp_path):
    from a2mae.ingest.run import ingest

    make_scenes(tmp_path / "scenes")
    report = ingest([str(tmp_path / "scenes")], tmp_path / "catalog.parquet", params(), progress=False)
    assert len(report.added) == 6 and not report.failed
    s = tile(tmp_path / "catalog.parquet", tmp_path / "snap", params(), progress=False)
    assert s.counts["sets_per_kind"] == {"hires": 3, "temporal": 12}
    assert s.counts["images_per_sensor"] == {"GF1": 2, "GF2": 1, "L8": 24, "S2": 21}
    assert tile(tmp_path / "catalog.parquet", tmp_path / "snap", params(), progress=False).up_to_date


# ------------------------------------------------------------------------------------------ resampling
def test_s2_20m_bands_are_resampled_bilinearly_onto_the_10m_grid(tmp_path):
    (s2,) = make_scenes(
        tmp_path / "s", [SceneSpec("S2", datetime(2020, 6, 15, tzinfo=UTC), 2000, subpixel=(0.3, 0.6))]
    )
    # Replace B05 (20 m) with a plane: bilinear interpolation reproduces a plane exactly.
    bf = next(b for b in s2.band_files if b.band == "B05")
    a, _, c, _, e, f = bf.transform

    def plane(x, y):
        return 1000 + 0.5 * (x - c) - 0.25 * (y - f)

    cols = c + a * (np.arange(bf.width) + 0.5)
    rows = f + e * (np.arange(bf.height) + 0.5)
    with rasterio.open(bf.uri, "r+") as ds:
        ds.write(np.rint(plane(cols[None, :], rows[:, None])).astype(np.uint16), 1)
    write_catalog([s2], tmp_path / "cat.parquet")
    out = tmp_path / "snap"
    tile(tmp_path / "cat.parquet", out, params("tile.chip_size=32", "tile.grid_m=320"), progress=False)
    rows_ = manifest(out)
    assert rows_
    for r in rows_:
        raw = (out / r["shard"]).read_bytes()[r["offset"] : r["offset"] + r["nbytes"]]
        chip = np.frombuffer(raw, "<i2").reshape(r["channels"], 32, 32)
        ta, _, tc, _, te, tf = r["transform"]
        xs = tc + ta * (np.arange(32) + 0.5)
        ys = tf + te * (np.arange(32) + 0.5)
        expect = plane(xs[None, :], ys[:, None])
        got = chip[r["bands"].index("B05")]
        assert got.shape == (32, 32)  # on the 10 m grid
        assert np.abs(got - expect).max() <= 1.0  # only the DN rounding of the source plane


# ---------------------------------------------------------------------------------------------- drops
def test_cloudy_and_nodata_chips_are_dropped_and_sets_follow_the_rules(tmp_path, synthetic_scenes):
    # put a cloud on the S2-g chip of one temporal set (centre from the plan of the default scenes)
    plan = plan_sets(synthetic_scenes[1], params().tile)
    target = max(
        (s for s in plan.sets if s.kind == "temporal" and len(s.images) == 4), key=lambda s: s.centre_xy
    )
    px, py = Transformer.from_crs("EPSG:4326", target.point.crs, always_xy=True).transform(114.3, 30.5)
    cloud = (target.centre_xy[0] - px, target.centre_xy[1] - py, 300.0)
    specs = default_specs()
    specs[0] = SceneSpec(**{**specs[0].__dict__, "cloud": cloud})  # S2-g
    specs[3] = SceneSpec(**{**specs[3].__dict__, "nodata_cols": 60})  # L8-ng: nodata strip in its west
    specs[5] = SceneSpec(**{**specs[5].__dict__, "nodata_cols": 300})  # GF1: entirely nodata
    recs = make_scenes(tmp_path / "s", specs)
    write_catalog(recs, tmp_path / "cat.parquet")
    out = tmp_path / "snap"
    s = tile(tmp_path / "cat.parquet", out, params(), progress=False)
    c = s.counts
    assert c["chips_dropped"].get("cloud", 0) >= 1 and c["chips_dropped"].get("nodata", 0) >= 2
    assert c["sets_dropped"] == {"hires chip dropped": 2}  # the GF1 sets go with their GF1 chips
    rows = manifest(out)
    assert "GF1" not in {r["sensor"] for r in rows}
    assert all(r["cloud_fraction"] <= 0.10 and r["nodata_fraction"] <= 0.05 for r in rows)
    # the temporal set under the cloud keeps its other three images
    at_cloud = [r for r in rows if r["set_id"] == target.set_id]
    assert sorted(r["role"] for r in at_cloud) == ["L8-g", "L8-ng", "S2-ng"]
    # looser limits keep them
    s2 = tile(
        tmp_path / "cat.parquet", tmp_path / "loose", params("tile.max_cloud_fraction=1"), progress=False
    )
    assert "cloud" not in s2.counts["chips_dropped"]
    assert s2.counts["images"] > c["images"]


def test_min_images_per_set_drops_small_sets(synthetic_scenes, tmp_path):
    s = tile(synthetic_scenes[2], tmp_path / "snap", params("tile.min_images_per_set=3"), progress=False)
    rows = manifest(tmp_path / "snap")
    sizes = {}
    for r in rows:
        sizes[r["set_id"]] = sizes.get(r["set_id"], 0) + 1
    assert min(sizes.values()) >= 3 and s.counts["sets_dropped"].get("too few chips", 0) >= 1


# ----------------------------------------------------------------------------------------- determinism
def test_tiling_twice_gives_identical_bytes_and_the_second_run_does_no_work(
    synthetic_scenes, tmp_path, monkeypatch
):
    cat = synthetic_scenes[2]
    a, b = tmp_path / "a", tmp_path / "b"
    sa = tile(cat, a, params(), progress=False)
    sb = tile(
        cat, b, params("tile.workers=2", "tile.chips_per_task=1"), progress=False
    )  # other packing of work
    assert not sa.up_to_date and not sb.up_to_date
    assert tree_hashes(a) == tree_hashes(b) and sa.snapshot_id == sb.snapshot_id
    before = {p: p.stat().st_mtime_ns for p in a.rglob("*")}

    import a2mae.stssd.run as tiling

    def boom(*args, **kwargs):
        raise AssertionError("chips were read although the snapshot is up to date")

    monkeypatch.setattr(tiling, "write_shard", boom)
    monkeypatch.setattr(tiling, "plan_sets", boom)
    again = tile(
        cat, a, params("tile.workers=2", "tile.executor=local"), progress=False
    )  # execution keys only
    assert again.up_to_date and again.snapshot_id == sa.snapshot_id
    assert {p: p.stat().st_mtime_ns for p in a.rglob("*")} == before
    # a parameter that changes the output makes it stale
    with pytest.raises(AssertionError, match="up to date"):
        tile(cat, a, params("tile.max_cloud_fraction=0.2"), progress=False)


def test_cli_prints_a_summary_then_up_to_date(synthetic_scenes, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "a2mae",
        "tile",
        "--catalog",
        str(synthetic_scenes[2]),
        "--out",
        str(tmp_path / "s"),
    ]
    first = subprocess.run([*cmd, "--set", "tile.workers=1"], capture_output=True, text=True, cwd=REPO)
    assert first.returncode == 0, first.stderr
    assert "snapshot" in first.stdout and "sets" in first.stdout and "split" in first.stdout
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert second.returncode == 0 and "up to date" in second.stdout


def test_shard_size_bound_is_respected(synthetic_scenes, tmp_path):
    out = tmp_path / "snap"
    s = tile(synthetic_scenes[2], out, params("tile.shard_max_mb=0.4"), progress=False)
    shards = sorted((out / "shards").iterdir())
    assert len(shards) == s.counts["shards"] > 2
    biggest_set = 4 * 10 * 96 * 96 * 2
    for p in shards:
        assert p.stat().st_size <= max(0.4 * 1024 * 1024, biggest_set)
    # every chip lies inside its shard
    for r in manifest(out):
        assert r["offset"] + r["nbytes"] <= (out / r["shard"]).stat().st_size


def test_shard_tasks_partition_the_plan_and_return_bytes_or_write_files_alike(synthetic_scenes, tmp_path):
    """The Ray path (bytes come back) and the local path (the worker writes) give the same shards."""
    from dataclasses import replace

    from a2mae.sensors import get_registry
    from a2mae.stssd.packing import write_shard
    from a2mae.stssd.run import build_tasks, load_catalog, on_chip_grid

    p = params("tile.shard_max_mb=0.5", "tile.chips_per_task=3")
    reg = get_registry()
    plan = plan_sets([on_chip_grid(r, reg, p.tile) for r in load_catalog(synthetic_scenes[2])], p.tile)
    tasks, _ = build_tasks(plan, p.tile, reg)
    assert len(tasks) > 2 and [s for t in tasks for s in t.sets] == plan.sets  # whole plan, in order
    for a, b in itertools.pairwise(tasks):
        assert a.sets[-1].point != b.sets[0].point  # a grid point is never split
    for t in tasks[:3]:
        in_memory = write_shard(t)
        on_disk = write_shard(replace(t, out_dir=str(tmp_path), batch_chips=10_000))
        assert [part.data for part in in_memory.parts] == [
            Path(part.path).read_bytes() for part in on_disk.parts
        ]
        assert [q.nbytes for q in in_memory.parts] == [q.nbytes for q in on_disk.parts]
        assert in_memory.kept == on_disk.kept and in_memory.sums == on_disk.sums


# ------------------------------------------------------------------------------------------- atomicity
def test_a_failed_run_leaves_no_partial_snapshot_and_keeps_the_previous(
    synthetic_scenes, tmp_path, monkeypatch
):
    import a2mae.stssd.run as tiling

    out = tmp_path / "snap"
    real = tiling.SnapshotWriter.close

    def fail_midway(self):
        real(self)  # everything written into the temporary folder ...
        raise OSError("disk full")  # ... then the run dies

    monkeypatch.setattr(tiling.SnapshotWriter, "close", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        tile(synthetic_scenes[2], out, params(), progress=False)
    assert list(tmp_path.iterdir()) == []  # no snapshot, no temporary folder

    monkeypatch.setattr(tiling.SnapshotWriter, "close", real)
    tile(synthetic_scenes[2], out, params(), progress=False)
    good = tree_hashes(out)
    monkeypatch.setattr(tiling.SnapshotWriter, "close", fail_midway)
    with pytest.raises(OSError):
        tile(synthetic_scenes[2], out, params("tile.max_cloud_fraction=0.5"), progress=False)
    assert tree_hashes(out) == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap"]


# ----------------------------------------------------------------------------------------- bad inputs
def test_bad_catalog_paths_give_one_clear_line(tmp_path, synthetic_scenes):
    p = params()
    with pytest.raises(TilingError, match="catalog not found"):
        tile(tmp_path / "missing.parquet", tmp_path / "o", p)
    with pytest.raises(TilingError, match="is a folder"):
        tile(tmp_path, tmp_path / "o", p)
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(TilingError, match="not an a2mae scene catalog"):
        tile(junk, tmp_path / "o", p)
    other = tmp_path / "other.parquet"
    pq.write_table(__import__("pyarrow").table({"a": [1]}), other)
    with pytest.raises(TilingError, match="not an a2mae scene catalog"):
        tile(other, tmp_path / "o", p)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("user data")
    with pytest.raises(TilingError, match="not an a2mae snapshot"):
        tile(synthetic_scenes[2], busy, p)
    assert (busy / "keep.txt").read_text() == "user data"


def test_cli_bad_catalog_exits_2_with_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "a2mae",
            "tile",
            "--catalog",
            str(tmp_path / "nope.parquet"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert "nope.parquet" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------------------------- ray
@pytest.mark.ray
def test_ray_executor_gives_the_same_bytes_as_local(synthetic_scenes, tmp_path):
    local = tile(synthetic_scenes[2], tmp_path / "local", params(), progress=False)
    ray_ = tile(
        synthetic_scenes[2],
        tmp_path / "ray",
        params("tile.executor=ray", "tile.workers=2", "tile.chips_per_task=2"),
        progress=False,
    )
    assert tree_hashes(tmp_path / "local") == tree_hashes(tmp_path / "ray")
    assert local.snapshot_id == ray_.snapshot_id
    assert math.isfinite(ray_.seconds)


@pytest.mark.s3
def test_tiling_scenes_on_s3_gives_the_same_chips_as_local(s3_store, synthetic_scenes, tmp_path):
    from a2mae.ingest.run import ingest
    from a2mae.io.storage import put_tree

    prefix = f"{s3_store.new_bucket()}/scenes"
    put_tree(synthetic_scenes[0], prefix, s3_store.settings())
    report = ingest([prefix], tmp_path / "s3cat.parquet", params(), progress=False)
    assert len(report.added) == 6 and all(r.source.startswith("s3://") for r in report.added)
    remote = tile(tmp_path / "s3cat.parquet", tmp_path / "remote", params(), progress=False)
    local = tile(synthetic_scenes[2], tmp_path / "local", params(), progress=False)
    assert remote.counts == local.counts
    shards = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local" / "shards").iterdir())
    for rel in shards:  # the pixels are identical; only the sources in the manifest differ
        assert (tmp_path / "remote" / rel).read_bytes() == (tmp_path / "local" / rel).read_bytes()


def test_chips_use_the_grid_of_the_written_bands_not_a_finer_pan_band(synthetic_scenes):
    from a2mae.ingest.catalog import BandFile
    from a2mae.sensors import get_registry
    from a2mae.stssd.run import on_chip_grid

    l8 = next(r for r in synthetic_scenes[1] if r.sensor == "L8")
    a, b, c, d, e, f = l8.transform
    pan_t = (a / 2, b, c, d, e / 2, f)
    pan = BandFile(
        band="B8",
        uri="/pan.tif",
        index=1,
        gsd_m=15.0,
        width=2 * l8.width,
        height=2 * l8.height,
        transform=pan_t,
        dtype="uint16",
    )
    with_pan = l8.model_copy(
        update={
            "band_files": (*l8.band_files, pan),
            "transform": pan_t,
            "gsd_m": 15.0,
            "width": 2 * l8.width,
            "height": 2 * l8.height,
        }
    )
    grid = on_chip_grid(with_pan, get_registry(), params().tile)
    assert (grid.gsd_m, grid.transform, grid.width) == (30.0, l8.transform, l8.width)
    assert on_chip_grid(l8, get_registry(), params().tile) is l8


def test_scenes_smaller_than_a_chip_give_a_clear_error(tmp_path):
    when = datetime(2020, 6, 15, tzinfo=UTC)
    write_catalog(
        make_scenes(tmp_path / "s", [SceneSpec("GF2", when, 250)]), tmp_path / "cat.parquet"
    )  # 78 px
    with pytest.raises(TilingError, match=r"smaller than a chip of tile\.chip_size=96"):
        tile(tmp_path / "cat.parquet", tmp_path / "out", params(), progress=False)
    assert not (tmp_path / "out").exists()
    assert tile(
        tmp_path / "cat.parquet",
        tmp_path / "out",
        params("tile.chip_size=32", "tile.grid_m=50"),
        progress=False,
    ).counts["sets"]


# ------------------------------------------------------------------------------- pre-chipped archives
@pytest.mark.parametrize(
    ("bands", "px"),
    [
        (BIGEARTHNET_BANDS, 120),  # BigEarthNet: 10 m bands 120 px, 20 m 60 px, 60 m 20 px
        (dict.fromkeys(("B02", "B03", "B04", "B08", "B05", "B11"), 20.0), 100),
        (dict.fromkeys(("B02", "B03", "B04", "B08"), 60.0), 96),  # exactly one chip
    ],
    ids=["10m", "20m", "60m"],
)
def test_pre_chipped_patches_give_one_chip_each(tmp_path, bands, px):
    """Acceptance: a folder of BigEarthNet-style patches (adjacent, off the 960 m grid) gives one
    chip per patch at the default chip size, through ingest and tile."""
    from a2mae.ingest.run import ingest

    gsd = min(bands.values())
    layout = PatchLayout(bands, extent_m=px * gsd, rows=3, cols=4)
    folders = make_patch_archive(tmp_path / "patches", layout)
    report = ingest([str(tmp_path / "patches")], tmp_path / "cat.parquet", params(), progress=False)
    assert len(report.added) == 12 and not report.failed
    assert {(r.sensor, r.product, r.width, r.gsd_m) for r in report.added} == {("S2", "L2A", px, gsd)}
    summary = tile(tmp_path / "cat.parquet", tmp_path / "snap", params(), progress=False)
    assert summary.counts["sets"] == summary.counts["chips"] == 12
    rows = manifest(tmp_path / "snap")
    assert sorted(r["source"] for r in rows) == sorted(str(f) for f in folders)  # one chip per patch
    centred = math.floor(px / 2 - 48 + 0.5)
    assert {(r["row0"], r["col0"], r["height"]) for r in rows} == {(centred, centred, 96)}


@settings(max_examples=40, deadline=None)
@given(
    origin=st.floats(-3.0, 40.0),
    ratio=st.sampled_from([0.5, 1 / 3, 0.75]),
    n=st.integers(4, 40).map(lambda k: 2 * k),
)
def test_bilinear_fast_path_equals_the_gather_path(origin, ratio, n):
    """The strided 2x path (S2 20 m -> 10 m) gives the same floats as the general gathers."""
    from a2mae.stssd import chips

    rng = np.random.default_rng(0)
    src = rng.random((3, 40, 40)).astype(np.float32)
    coords = origin + ratio * (np.arange(n) + 0.5) - 0.5
    plan = chips._BilinearPlan.make((40, 40), coords, coords[::-1] if ratio != 0.5 else coords)
    win = plan.window
    a = src[:, win.row_off : win.row_off + win.height, win.col_off : win.col_off + win.width]
    fast = plan.interp(a, "fast").copy()  # results live in scratch slots: keep a copy
    real = chips._two_phase
    try:
        chips._two_phase = lambda *args: None  # force the gathers
        slow = plan.interp(a, "slow")
    finally:
        chips._two_phase = real
    assert np.array_equal(fast, slow)
    if ratio == 0.5 and origin > 1 and origin + n / 2 < 38:  # away from the edges: the fast path ran
        assert chips._two_phase(plan.ci0, plan.ci1, plan.fx) is not None


def test_scratch_slots_reuse_their_memory_and_never_alias_each_other():
    from a2mae.stssd import chips

    scratch = chips._Scratch()
    a = scratch.get("a", (3, 40, 40), np.float32)
    a[:] = 1.0
    b = scratch.get("b", (3, 40, 40), np.float32)
    b[:] = 2.0
    assert np.all(a == 1.0) and not np.shares_memory(a, b)
    smaller = scratch.get("a", (2, 10), np.int16)  # same slot: the same memory, any shape and type
    assert np.shares_memory(a, smaller) and smaller.shape == (2, 10) and smaller.flags.c_contiguous
    bigger = scratch.get("a", (4, 40, 40), np.float64)  # grows
    assert bigger.nbytes == 4 * 40 * 40 * 8 and not np.shares_memory(bigger, b)
    scratch.clear()
    assert not scratch.buffers


def test_a_killed_runs_temporary_folder_is_removed_by_the_next_run(synthetic_scenes, tmp_path):
    import os
    import socket

    from a2mae.stssd.run import OWNER

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    killed = tmp_path / ".snap.tmp-dead0001"  # a run that died half-way
    (killed / "shards").mkdir(parents=True)
    (killed / OWNER).write_text(f"{host} {dead.pid}\n")
    (killed / "shards" / "part-000000-000.bin").write_bytes(b"x" * 100)
    ownerless = tmp_path / ".snap.tmp-old00002"  # killed before it named its owner
    ownerless.mkdir()
    os.utime(ownerless, (1, 1))
    live = tmp_path / ".snap.tmp-live0003"  # a run still going (this process)
    live.mkdir()
    (live / OWNER).write_text(f"{host} {os.getpid()}\n")
    elsewhere = tmp_path / ".snap.tmp-host0004"  # a run on another machine (shared file system)
    elsewhere.mkdir()
    (elsewhere / OWNER).write_text(f"not-{host} {dead.pid}\n")
    other = tmp_path / ".other.tmp-dead0005"  # another output's folder
    other.mkdir()
    (other / OWNER).write_text(f"{host} {dead.pid}\n")

    tile(synthetic_scenes[2], tmp_path / "snap", params(), progress=False)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".other.tmp-dead0005", ".snap.tmp-host0004", ".snap.tmp-live0003", "snap"]
    assert not (tmp_path / "snap" / OWNER).exists()


@pytest.mark.parametrize(
    ("dtype", "scale", "offset", "exact"),
    [
        ("uint16", 1e-4, 0.0, True),  # S2 before baseline 04.00, GF
        ("uint16", 1e-4, -0.1, True),  # S2 L2A baseline >= 04.00: integer offset path
        ("uint16", 2.75e-5, -0.2, False),  # Landsat C2 L2: float path
        ("float32", 1e-4, 0.0, False),  # resampled (bilinear) values
    ],
)
def test_encoding_matches_the_reflectance_formula(dtype, scale, offset, exact):
    from a2mae.stssd.chips import _encode_into

    rng = np.random.default_rng(1)
    dn = rng.integers(0, 65535, (3, 17, 19)).astype(dtype)
    if dtype == "float32":
        dn += rng.random(dn.shape, dtype=np.float32)
    enc = np.full((5, 17, 19), 7, np.int16)
    _encode_into(enc, [4, 0, 2], dn.copy(), scale, offset)
    want = np.clip(np.rint((dn.astype(np.float64) * scale + offset) * 10000), -32767, 32767)
    got = enc[[4, 0, 2]].astype(np.float64)
    assert (got == want).all() if exact else np.abs(got - want).max() <= 1
    assert (enc[[1, 3]] == 7).all()  # other channels untouched


# ------------------------------------------------------------------------------- real multi-date sets
def test_the_bundled_series_give_multi_image_sets_of_real_imagery(tmp_path):
    """The demo's real multi-image sets: the Tanzanian series (tropics: two dates per temporal set, both
    in the na slots), NAIP (single-image sets); each series is a patch with one centre."""
    from a2mae.ingest.run import ingest
    from a2mae.samples import sample_path
    from a2mae.stssd.snapshot import SnapshotError, set_mix

    with pytest.raises(SnapshotError, match="cannot read the snapshot manifest"):
        set_mix(tmp_path)
    sources = [str(sample_path("s2_arcsi")), str(sample_path("naip"))]
    assert not ingest(sources, tmp_path / "cat.parquet", params(), progress=False).failed
    tile(tmp_path / "cat.parquet", tmp_path / "snap", params(), progress=False)
    mix = set_mix(tmp_path / "snap")
    assert (mix.sets, mix.multi_image, mix.multi_date, mix.multi_sensor) == (4, 2, 2, 0)
    rows = manifest(tmp_path / "snap")
    by_set: dict[str, list[dict]] = {}
    for r in rows:
        by_set.setdefault(r["set_id"], []).append(r)
    multi = [m for m in by_set.values() if len(m) > 1]
    assert all(
        [r["role"] for r in m] == ["S2-na", "S2-na"] and len({r["doy"] for r in m}) == 2 for m in multi
    )
    assert len({(r["row0"], r["col0"]) for r in rows if r["sensor"] == "S2"}) == 1  # one chip per date
    assert sorted(r["year"] for r in rows if r["sensor"] == "NAIP") == [2009, 2020]
