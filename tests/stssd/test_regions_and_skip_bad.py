"""Tiling gathered scenes: regions of interest limit the grid points; --skip-bad leaves out bad scenes."""

from __future__ import annotations

import hashlib
import json

import pytest

from a2mae.config import load_params
from a2mae.ingest.catalog import write_catalog
from a2mae.ingest.roi import square_around, union_geojson
from a2mae.sensors import get_registry
from a2mae.stssd.grouping import plan_sets, transformer
from a2mae.stssd.run import TilingError, fingerprint, tile


def _params(*more):
    return load_params(overrides=["tile.workers=1", *more])


def _centre(rec):
    return sum(c[1] for c in rec.corners) / 4, sum(c[0] for c in rec.corners) / 4


def test_a_region_of_interest_keeps_only_the_grid_points_inside_it(synthetic_scenes):
    _, records, _ = synthetic_scenes
    cfg = _params().tile
    full = plan_sets(records, cfg)
    lon, lat = _centre(next(r for r in records if r.sensor == "S2"))
    roi = union_geojson([square_around(lon, lat, 2000)])
    limited = plan_sets([r.model_copy(update={"roi_geojson": roi}) for r in records], cfg)
    points = {s.point for s in limited.sets}
    assert 0 < len(points) < len({s.point for s in full.sets})
    for p in points:  # every set centre's grid point lies in the square (about 2 x 2 grid points)
        x, y = p.xy(cfg.grid_m)
        plon, plat = transformer(p.crs, "EPSG:4326").transform(x, y)
        assert abs(plon - lon) * 111_320 * 0.86 < 1000 and abs(plat - lat) * 111_320 < 1000


def test_a_catalog_without_regions_keeps_its_fingerprint(synthetic_scenes):
    """Snapshots tiled before the field existed stay up to date (nor do the files ingest saw count)."""
    _, records, _ = synthetic_scenes
    cfg, reg = _params().tile, get_registry()
    fp, info = fingerprint(records, cfg, reg)
    dumps = [
        {k: v for k, v in r.model_dump(mode="json").items() if k not in ("roi_geojson", "files")}
        for r in sorted(records, key=lambda r: r.scene_id)
    ]
    assert info["catalog"]["sha256"] == hashlib.sha256(json.dumps(dumps, sort_keys=True).encode()).hexdigest()
    roi = union_geojson([square_around(*_centre(records[0]), 2000)])
    with_roi = [r.model_copy(update={"roi_geojson": roi}) for r in records]
    assert fingerprint(with_roi, cfg, reg)[0] != fp


def _broken_catalog(tmp_path, records, victim_sensor="L8"):
    victim = next(r for r in records if r.sensor == victim_sensor)
    gone = str(tmp_path / "gone" / "B4.TIF")
    files = tuple(b.model_copy(update={"uri": gone}) if b.band == "B4" else b for b in victim.band_files)
    rows = [r.model_copy(update={"band_files": files}) if r is victim else r for r in records]
    path = tmp_path / "catalog.parquet"
    write_catalog(rows, path)
    return path, victim, gone


def test_skip_bad_leaves_out_a_scene_whose_file_is_gone(tmp_path, synthetic_scenes):
    _, records, _ = synthetic_scenes
    catalog, victim, gone = _broken_catalog(tmp_path, records)
    with pytest.raises(Exception) as err:
        tile(catalog, tmp_path / "out", _params(), progress=False)
    assert gone in str(err.value) and "\n" not in str(err.value)
    s = tile(catalog, tmp_path / "out", _params(), progress=False, skip_bad=True)
    assert len(s.skipped) == 1 and s.skipped[0].startswith(f"{victim.scene_id}: {gone}")
    import pyarrow.parquet as pq

    used = set(
        pq.read_table(tmp_path / "out" / "manifest.parquet", columns=["scene_id"])["scene_id"].to_pylist()
    )
    assert victim.scene_id not in used and used
    again = tile(catalog, tmp_path / "out", _params(), progress=False, skip_bad=True)
    assert again.up_to_date and again.skipped == s.skipped  # the same readable scenes: nothing to do


def test_skip_bad_with_nothing_readable_is_one_line(tmp_path, synthetic_scenes):
    _, records, _ = synthetic_scenes
    rec = records[0]
    files = tuple(b.model_copy(update={"uri": str(tmp_path / "x.tif")}) for b in rec.band_files)
    write_catalog([rec.model_copy(update={"band_files": files})], tmp_path / "c.parquet")
    with pytest.raises(TilingError, match=r"no scene can be read \(1 skipped"):
        tile(tmp_path / "c.parquet", tmp_path / "out", _params(), progress=False, skip_bad=True)


def test_cli_tile_skip_bad_reports_each_skipped_scene(tmp_path, synthetic_scenes):
    from typer.testing import CliRunner

    from a2mae.cli import app

    catalog, victim, _ = _broken_catalog(tmp_path, synthetic_scenes[1])
    out = tmp_path / "snap"
    res = CliRunner().invoke(
        app, ["tile", "--catalog", str(catalog), "--out", str(out), "--skip-bad", "--set", "tile.workers=1"]
    )
    assert res.exit_code == 0, res.output
    assert f"skipped unreadable scene {victim.scene_id}:" in res.output
