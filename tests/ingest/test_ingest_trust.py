"""Trust issue items 1 and 2: radiometry by the file's encoding, and ingest refusing what tile cannot use.

Every accepted case goes through ``a2mae ingest`` and ``a2mae tile`` (CLI, in process) and compares the
stored chips with the documented rule (:func:`a2mae.testing.rasters.reference_chip`) applied to a plain
rasterio read of the source; every refused case ends with exit code 2, one line on stderr naming the
file, and no catalog written.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
from affine import Affine

from a2mae.cli import main
from a2mae.ingest.catalog import read_catalog
from a2mae.testing.rasters import GF2_NAME, GF2_ORIGIN, reference_chip, stored_chips, write_scene

RNG = np.random.default_rng(12)
TILE = ["--set", "tile.chip_size=16", "--set", "tile.grid_m=20", "--set", "tile.workers=1"]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([*args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_line(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def ingest_and_tile(capsys, tmp_path: Path, scene: Path, *extra: str):
    cat, out = tmp_path / "catalog.parquet", tmp_path / "stssd"
    code, _, err = cli(capsys, "ingest", str(scene), "--catalog", str(cat), "--no-progress")
    assert code == 0, err
    code, _, err = cli(
        capsys, "tile", "--catalog", str(cat), "--out", str(out), "--no-progress", *TILE, *extra
    )
    assert code == 0, err
    return read_catalog(cat)[0], out


def assert_chips_match_source(rec, out: Path, nodata: float | None) -> int:
    with rasterio.open(rec.band_files[0].uri) as ds:
        src = ds.read()
    chips = stored_chips(out)
    for row, chip in chips:
        r0, c0, n = row["row0"], row["col0"], row["height"]
        want = reference_chip(src[:, r0 : r0 + n, c0 : c0 + n], rec.scale, rec.offset, nodata)
        np.testing.assert_array_equal(chip, want, err_msg=row["image_id"])
    return len(chips)


def refused(capsys, tmp_path: Path, source: Path, *needles: str, extra: tuple[str, ...] = ()) -> str:
    cat = tmp_path / "refused.parquet"
    code, _, err = cli(capsys, "ingest", str(source), "--catalog", str(cat), "--no-progress", *extra)
    line = one_line(code, err, *needles)
    assert not cat.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".refused")]  # no temporary, no lock
    return line


def refl(shape=(4, 40, 40), lo=0.02, hi=0.6) -> np.ndarray:
    return (lo + RNG.random(shape) * (hi - lo)).astype(np.float32)


# ------------------------------------------------------------------------------- item 1: radiometry
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_reflectance_is_stored_as_is_not_times_the_dn_scale(capsys, tmp_path, dtype):
    scene = write_scene(tmp_path / "s" / GF2_NAME, refl().astype(dtype))
    rec, out = ingest_and_tile(capsys, tmp_path, scene)
    assert (rec.scale, rec.offset) == (1.0, 0.0)
    assert all(bf.nodata is None for bf in rec.band_files)  # the registry's DN nodata 0 is not applied
    assert assert_chips_match_source(rec, out, None) > 0
    assert max(int(chip.max()) for _, chip in stored_chips(out)) > 1000  # not collapsed to 0


def test_float_dns_take_the_registry_scale(capsys, tmp_path):
    scene = write_scene(tmp_path / "s" / GF2_NAME, (100 + RNG.random((4, 40, 40)) * 5000).astype(np.float32))
    rec, out = ingest_and_tile(capsys, tmp_path, scene)
    assert (rec.scale, rec.offset) == (1e-4, 0.0)
    assert assert_chips_match_source(rec, out, None) > 0


def test_a_scale_declared_by_the_file_itself_is_used(capsys, tmp_path):
    data = RNG.integers(10, 200, (4, 40, 40)).astype(np.uint8)
    scene = write_scene(tmp_path / "s" / GF2_NAME, data, scales=(0.004,) * 4, offsets=(-0.01,) * 4)
    rec, out = ingest_and_tile(capsys, tmp_path, scene)
    assert rec.scale == pytest.approx(0.004) and rec.offset == pytest.approx(-0.01)
    assert assert_chips_match_source(rec, out, 0) > 0


@pytest.mark.parametrize("declared", [True, False])
def test_nan_is_nodata_whether_declared_or_not(capsys, tmp_path, declared):
    data = refl((4, 40, 64))
    data[:, :, :20] = np.nan  # the left third: chips there are (mostly) NaN and must be dropped
    data[0, 30, 30] = np.nan  # one NaN in one band marks the pixel
    scene = write_scene(tmp_path / "s" / GF2_NAME, data, nodata=float("nan") if declared else None)
    rec, out = ingest_and_tile(capsys, tmp_path, scene, "--set", "tile.max_nodata_fraction=0.05")
    assert all(bf.nodata is None for bf in rec.band_files)  # NaN always counts: not stored
    chips = stored_chips(out)
    assert chips and all(row["col0"] >= 20 for row, _ in chips)  # no NaN chip kept
    assert assert_chips_match_source(rec, out, None) == len(chips)
    info = json.loads((out / "snapshot.json").read_text())
    assert info["counts"]["chips_dropped"].get("nodata", 0) > 0
    covering = [
        (r, c) for r, c in chips if r["row0"] <= 30 < r["row0"] + 16 and r["col0"] <= 30 < r["col0"] + 16
    ]
    assert covering
    for row, chip in covering:  # NaN in one band: every band of the pixel is nodata
        assert (chip[:, 30 - row["row0"], 30 - row["col0"]] == -32768).all()


def test_a_nan_only_scene_is_refused(capsys, tmp_path):
    scene = write_scene(tmp_path / "s" / GF2_NAME, np.full((4, 40, 40), np.nan, np.float32))
    refused(capsys, tmp_path, scene, "all-nodata scene", "NaN")


@pytest.mark.parametrize("compress", ["deflate", "jpeg"])
def test_8_bit_pixels_need_a_declared_scale(capsys, tmp_path, compress):
    data = RNG.integers(1, 255, (4, 40, 40)).astype(np.uint8)
    bare = write_scene(tmp_path / "bare" / GF2_NAME, data, compress=compress)
    refused(capsys, tmp_path, bare, "8-bit pixels", "gdal_edit.py -scale")
    scaled = write_scene(tmp_path / "scaled" / GF2_NAME, data, compress=compress, scales=(1e-4,) * 4)
    rec, out = ingest_and_tile(capsys, tmp_path, scaled)  # uint8 with scale 1e-4 crashed tile (OverflowError)
    assert rec.scale == pytest.approx(1e-4)
    with rasterio.open(scaled) as ds:
        assert ds.dtypes[0] == "uint8"
    assert assert_chips_match_source(rec, out, 0) > 0


def test_12_bit_dns_take_the_registry_scale(capsys, tmp_path):
    data = RNG.integers(1, 4095, (4, 40, 40)).astype(np.uint16)
    scene = write_scene(tmp_path / "s" / GF2_NAME, data, nbits=12)
    with rasterio.open(scene) as ds:
        assert ds.tags(1, ns="IMAGE_STRUCTURE").get("NBITS") == "12"
    rec, out = ingest_and_tile(capsys, tmp_path, scene)
    assert (rec.scale, rec.offset) == (1e-4, 0.0)
    assert assert_chips_match_source(rec, out, 0) > 0


def test_complex_pixels_are_refused(capsys, tmp_path):
    scene = write_scene(tmp_path / "s" / GF2_NAME, (refl() + 1j).astype(np.complex64))
    refused(capsys, tmp_path, scene, "complex64 pixels hold no reflectance")


def test_values_the_scale_cannot_map_are_refused(capsys, tmp_path):
    scene = write_scene(tmp_path / "s" / GF2_NAME, (1e6 + RNG.random((4, 40, 40)) * 1e6).astype(np.float32))
    refused(capsys, tmp_path, scene, "map outside the storable reflectance range", "scale 0.0001")


def test_a_float_qa_layer_is_refused(capsys, tmp_path, geotiff):
    folder = tmp_path / "s2"
    for band in ("B02", "B03", "B04", "B08"):
        geotiff(
            folder / f"{band}.tif",
            RNG.integers(1, 4000, (32, 32), dtype=np.uint16),
            res=10,
            origin=(600000.0, 5100000.0),
        )
    for band in ("B05", "B11"):
        geotiff(
            folder / f"{band}.tif",
            RNG.integers(1, 4000, (16, 16), dtype=np.uint16),
            res=20,
            origin=(600000.0, 5100000.0),
        )
    geotiff(
        folder / "SCL.tif",
        np.full((16, 16), 4.0, np.float32),
        res=20,
        origin=(600000.0, 5100000.0),
        nodata=None,
    )
    refused(capsys, tmp_path, folder, "SCL.tif", "QA flags need integers")


# ---------------------------------------------------------------------- item 2: what tile cannot use
@pytest.mark.parametrize(
    ("transform", "needle"),
    [
        (Affine(3.2, 0.4, GF2_ORIGIN[0], 0.3, -3.2, GF2_ORIGIN[1]), "rotated or sheared grid"),
        (Affine(3.2, 0.0, GF2_ORIGIN[0], 0.2, -3.2, GF2_ORIGIN[1]), "rotated or sheared grid"),
        (Affine(3.2, 0.0, GF2_ORIGIN[0], 0.0, 3.2, GF2_ORIGIN[1]), "flipped or degenerate grid"),
        (Affine(-3.2, 0.0, GF2_ORIGIN[0], 0.0, -3.2, GF2_ORIGIN[1]), "flipped or degenerate grid"),
    ],
)
def test_grids_tile_cannot_cut_are_refused_at_ingest(capsys, tmp_path, transform, needle):
    scene = write_scene(tmp_path / "s" / GF2_NAME, refl(), transform=transform)
    refused(capsys, tmp_path, scene, needle, "gdalwarp")


def test_a_raster_above_the_pixel_limit_is_refused(capsys, tmp_path):
    scene = write_scene(tmp_path / "s" / GF2_NAME, refl())
    refused(
        capsys,
        tmp_path,
        scene,
        "1,600 pixels",
        "data.max_raster_pixels=1,000",
        extra=("--set", "data.max_raster_pixels=1000"),
    )


def test_a_vrt_named_tif_is_refused_without_reading_what_it_points_at(capsys, tmp_path):
    real = write_scene(tmp_path / "real" / "x.tif", refl())
    vrt = tmp_path / "s" / GF2_NAME
    vrt.parent.mkdir()
    with rasterio.open(real) as ds:  # a valid VRT of a valid raster: GDAL alone would open it
        vrt.write_text(
            f'<VRTDataset rasterXSize="{ds.width}" rasterYSize="{ds.height}"><SRS>EPSG:32649</SRS>'
            f"<GeoTransform>{', '.join(str(v) for v in ds.transform.to_gdal())}</GeoTransform>"
            + "".join(
                f'<VRTRasterBand dataType="Float32" band="{b}"><SimpleSource>'
                f'<SourceFilename relativeToVRT="0">{real}</SourceFilename>'
                f"<SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>"
                for b in range(1, 5)
            )
            + "</VRTDataset>"
        )
    with rasterio.open(vrt) as ds:
        assert ds.driver == "VRT"
    refused(capsys, tmp_path, vrt, "GDAL VRT", "only those two formats are read")


def test_json_named_tif_is_refused(capsys, tmp_path):
    fake = tmp_path / "s" / GF2_NAME
    fake.parent.mkdir()
    fake.write_text('{"type": "Feature"}')
    refused(capsys, tmp_path, fake, "the file is a JSON file")


def test_a_named_pipe_is_refused_without_blocking(capsys, tmp_path):
    fifo = tmp_path / "s" / GF2_NAME
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    opened = threading.Event()

    def writer() -> None:  # would unblock a reader that opened the pipe; the test checks nobody did
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return
        opened.set()
        os.close(fd)

    refused(capsys, tmp_path, fifo, "not a regular file (a named pipe)")
    refused(capsys, tmp_path, fifo.parent, "not a regular file (a named pipe)")
    writer()
    assert not opened.is_set()


def test_broken_and_looping_links_are_refused_or_skipped_and_counted(capsys, tmp_path):
    folder = tmp_path / "in"
    good = write_scene(folder / "good" / GF2_NAME, refl())
    (folder / "dangling").mkdir()
    os.symlink(tmp_path / "nowhere.tif", folder / "dangling" / GF2_NAME)
    (folder / "loop").mkdir()
    os.symlink(folder / "loop" / "b.tif", folder / "loop" / "a.tif")
    os.symlink(folder / "loop" / "a.tif", folder / "loop" / "b.tif")
    refused(capsys, tmp_path, folder, "broken symbolic link")
    refused(capsys, tmp_path, folder / "loop" / "a.tif", "symbolic link loop")
    cat = tmp_path / "c.parquet"
    code, out, err = cli(capsys, "ingest", str(folder), "--catalog", str(cat), "--skip-bad", "--no-progress")
    assert code == 0, err
    assert "1 added, 0 already in the catalog, 3 failed" in out
    assert (
        err.count("skipped bad input:") == 3 and "symbolic link loop" in err and "broken symbolic link" in err
    )
    assert [r.source for r in read_catalog(cat)] == [str(good)]


def test_impossible_dates_are_refused(capsys, tmp_path):
    bad_tag = write_scene(
        tmp_path / "tag" / GF2_NAME, refl(), tags={"ACQUISITION_TIME": "2020-13-45T10:00:00"}
    )
    refused(capsys, tmp_path, bad_tag, "tag ACQUISITION_TIME '2020-13-45T10:00:00' is not a date")
    future = write_scene(
        tmp_path / "future" / GF2_NAME, refl(), tags={"ACQUISITION_TIME": "2150-01-01T00:00:00"}
    )
    refused(capsys, tmp_path, future, "2150-01-01", "impossible for a satellite scene")
    old = write_scene(tmp_path / "old" / GF2_NAME, refl(), tags={"ACQUISITION_TIME": "1901-05-01"})
    refused(capsys, tmp_path, old, "1901-05-01", "impossible")
    stac = write_scene(tmp_path / "stac" / GF2_NAME, refl())
    (stac.parent / "item.json").write_text(
        json.dumps(
            {
                "type": "Feature",
                "stac_version": "1.0.0",
                "properties": {"datetime": "0001-01-01T00:00:00+05:00"},
            }
        )
    )
    refused(capsys, tmp_path, stac.parent, "STAC properties.datetime", "is not a date")


def test_a_date_that_disagrees_with_the_file_name_is_used_and_flagged(capsys, tmp_path):
    scene = write_scene(tmp_path / "s" / GF2_NAME, refl(), tags={"ACQUISITION_TIME": "2020-06-01T03:00:00"})
    cat = tmp_path / "c.parquet"
    code, _, err = cli(capsys, "ingest", str(scene), "--catalog", str(cat), "--no-progress")
    assert code == 0, err
    assert err.strip().splitlines() == [
        f"warning: {scene}: acquisition date 2020-06-01 (from tags) disagrees with 2020-01-01 in the "
        f"file name {GF2_NAME}; tags is used, check the scene"
    ]
    (rec,) = read_catalog(cat)
    assert rec.datetime.month == 6 and rec.datetime_source == "tags"


# ------------------------------------------------------------------------------ a2mae catalog list|rm
def _two_scene_catalog(capsys, tmp_path) -> tuple[Path, list[str]]:
    a = write_scene(tmp_path / "a" / GF2_NAME, refl())
    b = write_scene(tmp_path / "b" / GF2_NAME.replace("20200101", "20200301"), refl(lo=0.1))
    cat = tmp_path / "catalog.parquet"
    code, _, err = cli(capsys, "ingest", str(a), str(b), "--catalog", str(cat), "--no-progress")
    assert code == 0, err
    return cat, sorted(r.scene_id for r in read_catalog(cat))


def test_catalog_list_and_rm(capsys, tmp_path):
    cat, ids = _two_scene_catalog(capsys, tmp_path)
    code, out, _ = cli(capsys, "catalog", "list", "--catalog", str(cat))
    assert code == 0 and all(i in out for i in ids) and "2 scene(s), 0 unreadable" in out
    before = cat.read_bytes()
    code, _, err = cli(capsys, "catalog", "rm", "GF2_MS_nosuch", "--catalog", str(cat))
    one_line(code, err, "no scene GF2_MS_nosuch in the catalog")
    assert cat.read_bytes() == before
    code, out, err = cli(capsys, "catalog", "rm", ids[0], "--catalog", str(cat))
    assert code == 0, err
    assert f"removed {ids[0]}" in out
    assert [r.scene_id for r in read_catalog(cat)] == ids[1:]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no lock, no temp


def test_one_bad_row_never_blocks_the_catalog(capsys, tmp_path):
    cat, ids = _two_scene_catalog(capsys, tmp_path)
    table = pq.read_table(cat)
    periods = table.column("period").to_pylist()
    periods[0] = "winter"  # a row edited by hand: no longer a valid record
    pq.write_table(table.set_column(table.schema.get_field_index("period"), "period", pa.array(periods)), cat)
    for verb in (["tile", "--out", str(tmp_path / "o"), *TILE], ["ingest", str(tmp_path / "a")]):
        code, _, err = cli(capsys, *verb, "--catalog", str(cat), "--no-progress")
        one_line(code, err, f"scene {ids[0]}", f"a2mae catalog rm {ids[0]}")
    code, out, _ = cli(capsys, "catalog", "list", "--catalog", str(cat))
    assert code == 0 and "UNREADABLE" in out and "1 unreadable" in out
    code, _, err = cli(capsys, "catalog", "rm", ids[0], "--catalog", str(cat))
    assert code == 0, err
    code, _, err = cli(
        capsys, "tile", "--catalog", str(cat), "--out", str(tmp_path / "o"), "--no-progress", *TILE
    )
    assert code == 0, err


def test_tile_names_a_scene_whose_files_went_bad_and_how_to_remove_it(capsys, tmp_path):
    cat, ids = _two_scene_catalog(capsys, tmp_path)
    victim = next(r for r in read_catalog(cat) if r.scene_id == ids[0])
    Path(victim.band_files[0].uri).write_bytes(b"II*\x00" + b"\x00" * 64)  # overwritten after ingest
    code, _, err = cli(
        capsys, "tile", "--catalog", str(cat), "--out", str(tmp_path / "o"), "--no-progress", *TILE
    )
    one_line(code, err, f"scene {ids[0]}", f"a2mae catalog rm {ids[0]}")
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o")]


def test_8_bit_pixels_of_an_8_bit_product_take_the_registry_scale():
    from a2mae.ingest.radiometry import FileEncoding, RadiometryRefused, choose

    enc = [FileEncoding("B1", "uint8", None, None)]
    sample = RNG.integers(1, 255, (40, 40)).astype(np.uint8)
    r = choose(enc, sample, 0, None, (1 / 255, 0.0), registry_bits=8)  # NAIP: dn_bits 8
    assert (r.scale, r.offset) == (pytest.approx(1 / 255), 0.0)
    with pytest.raises(RadiometryRefused, match="8-bit pixels"):
        choose(enc, sample, 0, None, (1e-4, 0.0))  # a 16-bit product's scale


def test_the_bundled_naip_summers_ingest_with_their_8_bit_scale(tmp_path):
    from a2mae.config import load_params
    from a2mae.ingest.run import ingest
    from a2mae.samples import sample_path

    report = ingest([sample_path("naip")], tmp_path / "catalog.parquet", load_params(), progress=False)
    recs = [r for r in report.added if r.sensor == "NAIP"]
    assert len(recs) >= 2 and all(r.scale == pytest.approx(1 / 255) for r in recs)
