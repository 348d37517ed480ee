"""Bad input to ``a2mae ingest``: one stderr line naming the file or key, exit != 0, nothing lost.

Every case runs the CLI against a catalog that already holds one scene and checks that the catalog's
bytes are unchanged and no temporary file is left next to it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from a2mae.cli import main
from a2mae.config import load_params
from a2mae.ingest.catalog import read_catalog
from a2mae.ingest.run import IngestError, ingest

RNG = np.random.default_rng(7)


# ------------------------------------------------------------------------------------------ scenes
def gf2(folder: Path, geotiff, name="GF2_PMS1_E113.6_N23.1_20200101_L1A0001234567-MSS1.tif", fill=None, **kw):
    data = (
        RNG.integers(100, 3000, (4, 24, 24), dtype=np.uint16)
        if fill is None
        else np.full((4, 24, 24), fill, np.uint16)
    )
    kw.setdefault("res", 3.2)
    kw.setdefault("origin", (760000.0, 2560000.0))
    kw.setdefault("crs", "EPSG:32649")
    return geotiff(folder / name, data, **kw)


def s2_folder(folder: Path, geotiff, size: int = 32, scl_fill=None) -> Path:
    """A small Sentinel-2 L2A-like per-band folder: 10 m B02-B04, B08; 20 m B05, B11 and SCL."""
    origin = (600000.0, 5100000.0)
    for band in ("B02", "B03", "B04", "B08"):
        geotiff(
            folder / f"{band}.tif",
            RNG.integers(1, 4000, (size, size), dtype=np.uint16),
            res=10,
            origin=origin,
        )
    half = size // 2
    for band in ("B05", "B11"):
        geotiff(
            folder / f"{band}.tif",
            RNG.integers(1, 4000, (half, half), dtype=np.uint16),
            res=20,
            origin=origin,
        )
    scl = (
        np.full((half, half), 4, np.uint8) if scl_fill is None else np.full((half, half), scl_fill, np.uint8)
    )
    scl[:3, :3] = 9 if scl_fill is None else scl_fill
    geotiff(folder / "SCL.tif", scl, res=20, origin=origin, nodata=None)
    return folder


@pytest.fixture
def base_catalog(tmp_path, geotiff):
    """A catalog holding one good scene; returns (path, bytes)."""
    cat = tmp_path / "catalog" / "catalog.parquet"
    ingest([str(gf2(tmp_path / "good", geotiff))], cat, load_params(), progress=False)
    assert len(read_catalog(cat)) == 1
    return cat, cat.read_bytes()


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["ingest", *args, "--no-progress"])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def assert_intact(cat: Path, before: bytes) -> None:
    assert cat.read_bytes() == before
    assert sorted(p.name for p in cat.parent.iterdir()) == [cat.name]  # no temporary file left


# ------------------------------------------------------------------------------------------- cases
def test_good_synthetic_s2_folder_is_l2a_with_cloud(tmp_path, geotiff):
    folder = s2_folder(tmp_path / "s2", geotiff)
    (rec,) = ingest([str(folder)], tmp_path / "c.parquet", load_params(), progress=False).added
    assert (rec.sensor, rec.product) == ("S2", "L2A")
    assert rec.bands == ("B02", "B03", "B04", "B05", "B08", "B11")
    assert rec.cloud_fraction == pytest.approx(9 / 256)


def test_truncated_file(tmp_path, geotiff, capsys, base_catalog):
    folder = s2_folder(tmp_path / "s2", geotiff)
    path = folder / "B03.tif"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    code, _, err = run(capsys, str(folder), "--catalog", str(base_catalog[0]))
    line = assert_one_line_error(code, err, str(path))
    assert "truncated" in line or "corrupt" in line
    assert_intact(*base_catalog)


def test_corrupt_raster_file(tmp_path, geotiff, capsys, base_catalog):
    folder = s2_folder(tmp_path / "s2", geotiff)
    path = folder / "B04.tif"
    path.write_bytes(b"<" + os.urandom(2000))  # binary junk, even when it starts like XML
    code, _, err = run(capsys, str(folder), "--catalog", str(base_catalog[0]))
    assert_one_line_error(code, err, str(path), "not a raster")
    assert_intact(*base_catalog)


def test_non_raster_file(tmp_path, capsys, base_catalog):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    code, _, err = run(capsys, str(notes), "--catalog", str(base_catalog[0]))
    assert_one_line_error(code, err, str(notes), "not a raster file")
    assert_intact(*base_catalog)


def test_folder_without_rasters(tmp_path, capsys, base_catalog):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    code, _, err = run(capsys, str(tmp_path / "empty"), "--catalog", str(base_catalog[0]))
    assert_one_line_error(code, err, str(tmp_path / "empty"), "no raster files")
    assert_intact(*base_catalog)


def test_missing_source(tmp_path, capsys, base_catalog):
    code, _, err = run(capsys, str(tmp_path / "nope"), "--catalog", str(base_catalog[0]))
    assert_one_line_error(code, err, str(tmp_path / "nope"), "no such file or folder")
    assert_intact(*base_catalog)


def test_raster_without_crs(tmp_path, geotiff, capsys, base_catalog):
    path = gf2(tmp_path / "in", geotiff, crs=None)
    code, _, err = run(capsys, str(path), "--catalog", str(base_catalog[0]))
    assert_one_line_error(code, err, str(path), "no CRS")
    assert_intact(*base_catalog)


def test_raster_without_transform(tmp_path, geotiff, capsys, base_catalog):
    path = gf2(tmp_path / "in", geotiff, transform=False)
    code, _, err = run(capsys, str(path), "--catalog", str(base_catalog[0]))
    assert_one_line_error(code, err, str(path), "no geotransform")
    assert_intact(*base_catalog)


def test_unknown_sensor(tmp_path, geotiff, capsys, base_catalog):
    path = geotiff(tmp_path / "in" / "mystery.tif", RNG.integers(1, 100, (3, 16, 16), dtype=np.uint16))
    code, _, err = run(capsys, str(path), "--catalog", str(base_catalog[0]))
    assert_one_line_error(code, err, str(path), "unknown sensor", "docs/sensors.md")
    assert_intact(*base_catalog)


def test_bands_of_inconsistent_shape(tmp_path, geotiff, capsys, base_catalog):
    folder = s2_folder(tmp_path / "s2", geotiff)
    # a 10 m band with half the rows of the other 10 m bands: its extent does not match the scene's
    geotiff(
        folder / "B03.tif",
        RNG.integers(1, 4000, (16, 32), dtype=np.uint16),
        res=10,
        origin=(600000.0, 5100000.0),
    )
    code, _, err = run(capsys, str(folder), "--catalog", str(base_catalog[0]))
    assert_one_line_error(code, err, str(folder / "B03.tif"), "inconsistent shape")
    assert_intact(*base_catalog)


def test_20m_band_covering_another_extent(tmp_path, geotiff, capsys, base_catalog):
    folder = s2_folder(tmp_path / "s2", geotiff)
    geotiff(
        folder / "B11.tif",
        RNG.integers(1, 4000, (16, 16), dtype=np.uint16),
        res=20,
        origin=(600500.0, 5100000.0),
    )
    code, _, err = run(capsys, str(folder), "--catalog", str(base_catalog[0]))
    assert_one_line_error(code, err, str(folder / "B11.tif"), "inconsistent shape")
    assert_intact(*base_catalog)


def test_all_nodata_scene(tmp_path, geotiff, capsys, base_catalog):
    path = gf2(tmp_path / "in", geotiff, fill=0)
    code, _, err = run(capsys, str(path), "--catalog", str(base_catalog[0]))
    assert_one_line_error(code, err, str(path), "all-nodata")
    assert_intact(*base_catalog)


def test_all_nodata_by_the_qa_layer(tmp_path, geotiff, capsys, base_catalog):
    folder = s2_folder(tmp_path / "s2", geotiff, scl_fill=0)  # SCL 0 = no data everywhere
    code, _, err = run(capsys, str(folder), "--catalog", str(base_catalog[0]))
    assert_one_line_error(code, err, str(folder), "all-nodata", "SCL")
    assert_intact(*base_catalog)


def test_bad_params_file(tmp_path, geotiff, capsys, base_catalog):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  workers: 0\n")
    path = gf2(tmp_path / "in", geotiff, name="GF2_PMS1_E113.6_N23.1_20200202_L1A0001234568-MSS1.tif")
    code, _, err = run(capsys, str(path), "--catalog", str(base_catalog[0]), "--params", str(bad))
    assert_one_line_error(code, err, str(bad), "data.workers")
    assert_intact(*base_catalog)


def test_bad_sensor_file_in_params(tmp_path, geotiff, capsys, base_catalog):
    sensors = tmp_path / "sensors.yaml"
    sensors.write_text("sensors:\n  X: [1, 2]\n")
    path = gf2(tmp_path / "in", geotiff, name="GF2_PMS1_E113.6_N23.1_20200202_L1A0001234568-MSS1.tif")
    code, _, err = run(
        capsys, str(path), "--catalog", str(base_catalog[0]), "--set", f"data.sensor_files=[{sensors}]"
    )
    assert_one_line_error(code, err, str(sensors), "sensors.X")
    assert_intact(*base_catalog)


def test_catalog_path_is_a_folder(tmp_path, geotiff, capsys):
    path = gf2(tmp_path / "in", geotiff)
    (tmp_path / "cat").mkdir()
    code, _, err = run(capsys, str(path), "--catalog", str(tmp_path / "cat"))
    assert_one_line_error(code, err, str(tmp_path / "cat"), "folder")


# ------------------------------------------------------------------------------------- --skip-bad
def test_skip_bad_goes_on_and_prints_a_summary(tmp_path, geotiff, capsys, base_catalog):
    good = gf2(tmp_path / "in", geotiff, name="GF2_PMS1_E113.6_N23.1_20200303_L1A0001234569-MSS1.tif")
    unknown = geotiff(tmp_path / "in2" / "mystery.tif", RNG.integers(1, 100, (3, 16, 16), dtype=np.uint16))
    folder = s2_folder(tmp_path / "s2", geotiff)
    (folder / "B04.tif").write_bytes(os.urandom(1000))
    cat = base_catalog[0]
    code, out, err = run(capsys, str(good), str(unknown), str(folder), "--catalog", str(cat), "--skip-bad")
    assert code == 0
    assert out.strip().splitlines()[-1] == f"ingest: 1 added, 0 already in the catalog, 2 failed -> {cat}"
    bad_lines = [line for line in err.splitlines() if line.startswith("skipped bad input:")]
    assert len(bad_lines) == 2
    assert any(str(unknown) in line for line in bad_lines)
    assert any(str(folder / "B04.tif") in line for line in bad_lines)
    assert len(read_catalog(cat)) == 2


def test_skip_bad_with_nothing_usable_fails(tmp_path, geotiff, capsys):
    unknown = geotiff(tmp_path / "in" / "mystery.tif", RNG.integers(1, 100, (3, 16, 16), dtype=np.uint16))
    code, _, err = run(capsys, str(unknown), "--catalog", str(tmp_path / "c.parquet"), "--skip-bad")
    assert code != 0
    assert "no scene ingested" in err.strip().splitlines()[-1]
    assert not (tmp_path / "c.parquet").exists()


# ------------------------------------------------------------------------------------ atomic write
def test_failed_write_leaves_the_previous_catalog(tmp_path, geotiff, monkeypatch, base_catalog):
    import pyarrow.parquet as pq

    def half_write(table, where, **kw):
        Path(where).write_bytes(b"PAR1 partial")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", half_write)
    path = gf2(tmp_path / "in", geotiff, name="GF2_PMS1_E113.6_N23.1_20200404_L1A0001234570-MSS1.tif")
    with pytest.raises(OSError, match="disk full"):
        ingest([str(path)], base_catalog[0], load_params(), progress=False)
    assert_intact(*base_catalog)


def test_one_bad_scene_in_a_batch_writes_nothing(tmp_path, geotiff, base_catalog):
    good = gf2(tmp_path / "in", geotiff, name="GF2_PMS1_E113.6_N23.1_20200505_L1A0001234571-MSS1.tif")
    bad = gf2(tmp_path / "in2", geotiff, fill=0)
    with pytest.raises(IngestError, match="all-nodata"):
        ingest([str(good), str(bad)], base_catalog[0], load_params(), progress=False)
    assert_intact(*base_catalog)
