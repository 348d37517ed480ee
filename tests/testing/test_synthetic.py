"""The synthetic co-located scene generator: exact georeferencing, archive layouts, one ground field."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import rasterio

from a2mae.ingest.catalog import read_catalog
from a2mae.testing.scenes import SceneSpec, make_scenes

REPO = Path(__file__).resolve().parents[2]


def test_files_match_their_records_exactly(synthetic_scenes):
    _, records, _ = synthetic_scenes
    assert sorted(r.sensor for r in records) == ["GF1", "GF2", "L8", "L8", "S2", "S2"]
    for r in records:
        for bf in (*r.band_files, *([r.qa_file] if r.qa_file else [])):
            with rasterio.open(bf.uri) as ds:
                assert ds.crs.to_string() == r.crs
                assert tuple(ds.transform)[:6] == bf.transform
                assert (ds.width, ds.height) == (bf.width, bf.height)
                assert ds.dtypes[bf.index - 1] == bf.dtype
                assert ds.profile["compress"] == "deflate" and ds.profile["tiled"]
        assert r.transform == next(b for b in r.band_files if b.gsd_m == r.gsd_m).transform
        assert r.width * r.gsd_m == r.height * r.gsd_m > 1000


def test_archive_layouts_and_periods(synthetic_scenes):
    _, records, _ = synthetic_scenes
    s2 = next(r for r in records if r.sensor == "S2" and r.period == "g")
    names = sorted(Path(b.uri).name for b in s2.band_files)
    assert "T50RKU_20200615T030541_B02_10m.tif" in names and "T50RKU_20200615T030541_B05_20m.tif" in names
    assert Path(s2.qa_file.uri).name == "T50RKU_20200615T030541_SCL_20m.tif"
    assert {b.gsd_m for b in s2.band_files} == {10.0, 20.0, 60.0} and "B10" not in s2.bands
    l8 = next(r for r in records if r.sensor == "L8")
    assert Path(l8.band_files[0].uri).name.startswith("LC08_L2SP_") and l8.qa_file.band == "QA_PIXEL"
    assert any(p.name.endswith("_MTL.txt") for p in Path(l8.source).iterdir())
    gf = next(r for r in records if r.sensor == "GF2")
    with rasterio.open(gf.source) as ds:
        assert ds.count == 4 and ds.tags()["SATELLITE"] == "GF2"
    assert {(r.sensor, r.period) for r in records} == {
        ("S2", "g"),
        ("S2", "ng"),
        ("L8", "g"),
        ("L8", "ng"),
        ("GF2", "g"),
        ("GF1", "ng"),
    }


def test_clouds_and_nodata_are_flagged_in_the_qa_layers(tmp_path):
    when = datetime(2020, 6, 15, tzinfo=UTC)
    specs = [
        SceneSpec("S2", when, 1200, cloud=(0.0, 0.0, 200.0), nodata_cols=10),
        SceneSpec("L8", when, 1800, cloud=(0.0, 0.0, 200.0), nodata_cols=5),
    ]
    s2, l8 = sorted(make_scenes(tmp_path, specs), key=lambda r: r.sensor, reverse=True)
    with rasterio.open(s2.qa_file.uri) as ds:
        scl = ds.read(1)
    assert (scl == 9).any() and (scl[:, :5] == 0).all()
    with rasterio.open(next(b.uri for b in s2.band_files if b.band == "B04")) as ds:
        assert (ds.read(1)[:, :10] == 0).all() and (ds.read(1)[:, 10:] > 0).all()
    with rasterio.open(l8.qa_file.uri) as ds:
        qa = ds.read(1)
    assert ((qa >> 3) & 1).any() and (qa[:, :5] == 1).all()
    assert 0 < s2.cloud_fraction < 0.5 and 0 < l8.cloud_fraction < 0.5


def test_co_located_chips_show_the_same_ground(tiny_snapshot):
    """The GF2 chip and its S2 partner sample one ground field: their red bands correlate in place."""
    rows = pq.read_table(tiny_snapshot / "manifest.parquet").to_pylist()
    gf = next(r for r in rows if r["sensor"] == "GF2")
    s2 = next(r for r in rows if r["set_id"] == gf["set_id"] and r["sensor"] == "S2")

    def chip(r):
        raw = (tiny_snapshot / r["shard"]).read_bytes()[r["offset"] : r["offset"] + r["nbytes"]]
        return np.frombuffer(raw, "<i2").reshape(r["channels"], 96, 96).astype(float)

    red_gf = chip(gf)[gf["bands"].index("B3")]
    red_s2 = chip(s2)[s2["bands"].index("B04")]
    ga, _, gc, _, ge, gf_ = gf["transform"]
    sa, _, sc, _, se, sf = s2["transform"]

    def sample(shift_px: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = [], []
        for i in range(96):
            for j in range(96):
                x, y = sc + sa * (j + 0.5 + shift_px), sf + se * (i + 0.5)
                u, v = (x - gc) / ga, (y - gf_) / ge
                if 0 <= u < 96 and 0 <= v < 96:
                    a.append(red_s2[i, j])
                    b.append(red_gf[int(v), int(u)])
        return np.array(a), np.array(b)

    a, b = sample(0)
    assert len(a) > 500
    aligned = np.corrcoef(a, b)[0, 1]
    a2, b2 = sample(25)  # the same comparison 250 m off
    assert aligned > 0.95 and aligned > np.corrcoef(a2, b2)[0, 1] + 0.05


def test_script_writes_scenes_and_a_catalog(tmp_path):
    out = tmp_path / "syn"
    script = REPO / "scripts" / "make_synthetic_scenes.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(out), "--scale", "0.5"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    recs = read_catalog(out / "catalog.parquet")
    assert len(recs) == 6 and all(Path(r.source).exists() for r in recs)
    again = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True)
    assert again.returncode == 2 and "not empty" in again.stderr
