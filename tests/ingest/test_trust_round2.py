"""Trust, second round (issue 21), the data kinds: each finding is a kind, each kind a test through the CLI.

* a scene file replaced after ingest: tile refuses it in one line, ingest replaces its row (item 2);
* a catalog with repeated rows: folded with a note, or refused when the rows disagree (item 3);
* a sensor file naming a band twice (stack, aliases): refused at load (item 4);
* a folder the OS refuses, inside a source (item 5) or given directly (item 11): exit 1, or a
  ``skipped`` line under ``--skip-bad``; names too long: exit 1 on every path option; long paths shortened;
* a store that dies while a scene is read is named as unreachable (item 11);
* a pixel size in the wrong units, an overviews-only file, repeated band descriptions (items 10, 12);
* progress lines off a terminal (item 13).

The tests run as root (permissions cannot be taken away): the operating system's refusals are injected
where a2mae calls it (``os.scandir``, ``os.open``), as in ``tests/cli/test_os_errors.py``.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import yaml
from affine import Affine
from rasterio.enums import Resampling

from a2mae import console
from a2mae.cli import main
from a2mae.ingest.catalog import read_catalog, write_catalog
from a2mae.sensors.registry import BUILTIN_PATH
from a2mae.testing.rasters import GF2_NAME, write_scene

RNG = np.random.default_rng(21)
TILE = ["--set", "tile.chip_size=16", "--set", "tile.grid_m=20", "--set", "tile.workers=1", "--no-progress"]
NAME2 = GF2_NAME.replace("20200101", "20200301")


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([*args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_line(code: int, err: str, want_code: int, *needles: str) -> str:
    assert code == want_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def refl(shape=(4, 40, 40)) -> np.ndarray:
    return (0.02 + RNG.random(shape) * 0.5).astype(np.float32)


def ingest(capsys, catalog: Path, *sources: Path | str, extra: tuple[str, ...] = ()) -> tuple[int, str, str]:
    return cli(capsys, "ingest", *map(str, sources), "--catalog", str(catalog), "--no-progress", *extra)


def tile(capsys, catalog: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return cli(capsys, "tile", "--catalog", str(catalog), "--out", str(out), *TILE, *extra)


def set_ids(out: Path) -> list[str]:
    return sorted(pq.read_table(out / "manifest.parquet").column("set_id").to_pylist())


# ------------------------------------------------------------------------- item 2: replaced files
def test_a_file_replaced_after_ingest_is_refused_by_tile_and_reingest_replaces_its_row(capsys, tmp_path):
    scene = write_scene(tmp_path / "s" / GF2_NAME, refl())
    cat = tmp_path / "c.parquet"
    assert ingest(capsys, cat, scene)[0] == 0
    assert tile(capsys, cat, tmp_path / "o1")[0] == 0
    before = set_ids(tmp_path / "o1")
    old_id = read_catalog(cat)[0].scene_id

    write_scene(scene, refl())  # new pixels at the same path, same size
    code, _, err = tile(capsys, cat, tmp_path / "o2")
    one_line(code, err, 2, f"scene {old_id}", str(scene), "changed since it was ingested", "ingest")
    assert not (tmp_path / "o2").exists()

    code, out, err = ingest(capsys, cat, scene)
    assert code == 0 and "1 replaced" in out and f"replaced scene {old_id}" in err, (out, err)
    (row,) = read_catalog(cat)  # one row for the path, of its new content
    assert row.scene_id != old_id
    assert tile(capsys, cat, tmp_path / "o3")[0] == 0
    assert set_ids(tmp_path / "o3") == before  # every chip once, not twice


def _big_scene(path: Path) -> Path:
    return write_scene(path, refl((4, 96, 96)))  # 147 kB: more than the 64 KiB head


def _rewrite_tail(path: Path, keep_mtime: bool) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-9000:-8000] = bytes(1000)  # pixels past the head; the size does not change
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize(
    ("change", "flag", "refused"),
    [
        ("tail, new time", (), True),  # size and head equal, time differs: the MD5 decides
        ("tail, old time", (), False),  # nothing cheap differs: only a full check sees it
        ("tail, old time", ("--verify-sources",), True),
        ("touched", (), False),  # same bytes, new time: not a change
        ("grown", (), True),
    ],
)
def test_what_tile_sees_of_a_changed_file(capsys, tmp_path, change, flag, refused):
    scene = _big_scene(tmp_path / "s" / GF2_NAME)
    cat = tmp_path / "c.parquet"
    assert ingest(capsys, cat, scene)[0] == 0
    time.sleep(0.01)
    if change.startswith("tail"):
        _rewrite_tail(scene, keep_mtime=change.endswith("old time"))
    elif change == "touched":
        os.utime(scene)
    else:
        with open(scene, "ab") as f:
            f.write(b"\0" * 10)
    code, _, err = tile(capsys, cat, tmp_path / "o", *flag)
    if refused:
        one_line(code, err, 2, "changed since it was ingested")
    else:
        assert code == 0, err


def test_skip_bad_leaves_out_a_changed_scene_and_says_so(capsys, tmp_path):
    a = write_scene(tmp_path / "a" / GF2_NAME, refl())
    b = write_scene(tmp_path / "b" / NAME2, refl())
    cat = tmp_path / "c.parquet"
    assert ingest(capsys, cat, a, b)[0] == 0
    write_scene(b, refl())
    code, _, err = tile(capsys, cat, tmp_path / "o", "--skip-bad")
    assert code == 0 and "skipped unreadable scene" in err and "changed since it was ingested" in err, err
    assert {r["source"] for r in pq.read_table(tmp_path / "o" / "manifest.parquet").to_pylist()} == {str(a)}


# ---------------------------------------------------------------------- item 3: duplicated rows
def test_repeated_rows_are_used_once_with_a_note(capsys, tmp_path):
    scene = write_scene(tmp_path / "s" / GF2_NAME, refl())
    cat = tmp_path / "c.parquet"
    assert ingest(capsys, cat, scene)[0] == 0
    assert tile(capsys, cat, tmp_path / "o1")[0] == 0
    (rec,) = read_catalog(cat)
    twice = tmp_path / "twice.parquet"
    write_catalog([rec, rec], twice)
    code, _, err = tile(capsys, twice, tmp_path / "o2")
    assert code == 0 and f"note: {twice}: scene {rec.scene_id} is stored 2 times; used once" in err, err
    assert set_ids(tmp_path / "o2") == set_ids(tmp_path / "o1")

    code, out, _ = ingest(capsys, twice, scene)  # ingest folds them when it rewrites the catalog
    assert code == 0 and len(read_catalog(twice)) == 1, out


def test_two_rows_for_one_file_are_refused_and_reingest_folds_them(capsys, tmp_path):
    scene = write_scene(tmp_path / "s" / GF2_NAME, refl())
    cat = tmp_path / "c.parquet"
    assert ingest(capsys, cat, scene)[0] == 0
    (old,) = read_catalog(cat)
    stale = old.model_copy(update={"scene_id": old.scene_id[:-8] + "00000000", "content_hash": "0" * 64})
    write_catalog([old, stale], cat)  # what an older a2mae left after a file was replaced
    code, _, err = tile(capsys, cat, tmp_path / "o")
    one_line(code, err, 2, str(scene), "2 scene rows", old.scene_id, stale.scene_id, "ingest it again")

    code, _, err = ingest(capsys, cat, scene)
    assert code == 0, err
    assert [r.scene_id for r in read_catalog(cat)] == [old.scene_id]
    assert tile(capsys, cat, tmp_path / "o")[0] == 0

    other = old.model_copy(update={"source": "/elsewhere/copy.tif"})  # one id, two different rows
    write_catalog([old, other], cat)
    one_line(*tile(capsys, cat, tmp_path / "o2")[::2], 2, f"scene {old.scene_id} has 2 different rows")


# ----------------------------------------------------------------------- item 4: sensor registry
def _sensor_file(tmp_path: Path, edit) -> Path:
    doc = yaml.safe_load(BUILTIN_PATH.read_text())
    s2 = doc["sensors"]["S2"]
    edit(s2)
    path = tmp_path / "sensors.yaml"
    path.write_text(yaml.safe_dump({"sensors": {"S2": s2}}))
    return path


def _stack_twice(s2):
    s2["products"]["L2A"]["detect"]["stacks"][0] = ["B02", "B02", "B04", "B08"]


def _stack_alias_twice(s2):
    s2["products"]["L2A"]["detect"]["stacks"][0] = ["B02", "B2", "B04", "B08"]


def _alias_is_a_band(s2):
    s2["bands"]["B03"]["aliases"] = ["B3", "B04"]


def _alias_of_two_bands(s2):
    s2["bands"]["B03"]["aliases"] = ["B3", "red"]


def _band_in_two_groups(s2):
    s2["token_groups"]["SWIR"] = ["B11", "B12", "B04"]


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        (_stack_twice, ("products.L2A.detect.stacks", "lists band B02 twice")),
        (_stack_alias_twice, ("products.L2A.detect.stacks", "lists band B02 twice", "'B02' and 'B2'")),
        (_alias_is_a_band, ("bands.B03.aliases", "'B04' is already the id of band 'B04'")),
        (_alias_of_two_bands, ("bands.B04.aliases", "'red' is already an alias of band 'B03'")),
        (_band_in_two_groups, ("token_groups", "'B04' is listed twice")),
    ],
)
def test_a_sensor_file_naming_a_band_twice_is_refused_at_load(capsys, tmp_path, edit, needles):
    sensors = _sensor_file(tmp_path, edit)
    scene = write_scene(tmp_path / "s" / GF2_NAME, refl())
    code, _, err = ingest(
        capsys, tmp_path / "c.parquet", scene, extra=("--set", f"data.sensor_files=[{sensors}]")
    )
    one_line(code, err, 2, str(sensors), "sensors.S2", *needles)
    assert not (tmp_path / "c.parquet").exists()


# ------------------------------------------------------------ items 5 and 11: what the OS refuses
@pytest.fixture
def forbidden(monkeypatch):
    """Paths the OS refuses: listing (``os.scandir``), opening (``os.open``) and ``os.access`` fail."""
    denied: set[str] = set()
    real_scandir, real_open, real_access = os.scandir, os.open, os.access

    def scandir(path="."):
        if str(path) in denied:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_scandir(path)

    def os_open(path, *args, **kwargs):
        if str(path) in denied:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args, **kwargs)

    def access(path, mode, *args, **kwargs):
        return str(path) not in denied and real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "access", access)
    return denied


def test_an_unreadable_sub_folder_is_named_exit_1_or_skipped(capsys, tmp_path, forbidden):
    write_scene(tmp_path / "src" / "a" / GF2_NAME, refl())
    write_scene(tmp_path / "src" / "locked" / NAME2, refl())
    forbidden.add(str(tmp_path / "src" / "locked"))
    cat = tmp_path / "c.parquet"
    code, _, err = ingest(capsys, cat, tmp_path / "src")
    one_line(code, err, 1, str(tmp_path / "src" / "locked"), "permission denied")
    assert not cat.exists()

    code, out, err = ingest(capsys, cat, tmp_path / "src", extra=("--skip-bad",))
    assert code == 0 and "1 added" in out and "1 failed" in out, out
    assert (
        f"skipped bad input: {tmp_path / 'src' / 'locked'}: cannot list the folder: permission denied" in err
    )


def test_an_unreadable_file_inside_a_folder_is_named_exit_1_or_skipped(capsys, tmp_path, forbidden):
    write_scene(tmp_path / "src" / "a" / GF2_NAME, refl())
    locked = write_scene(tmp_path / "src" / "b" / NAME2, refl())
    forbidden.add(str(locked))
    code, _, err = ingest(capsys, tmp_path / "c.parquet", tmp_path / "src")
    one_line(code, err, 1, str(locked), "permission denied")
    code, out, err = ingest(capsys, tmp_path / "c.parquet", tmp_path / "src", extra=("--skip-bad",))
    assert code == 0 and "1 added" in out and f"skipped bad input: {locked}: permission denied" in err, err


@pytest.mark.parametrize("what", ["file", "folder"])
def test_an_unreadable_file_or_folder_given_directly_is_an_os_error(capsys, tmp_path, forbidden, what):
    scene = write_scene(tmp_path / "src" / GF2_NAME, refl())
    target = scene if what == "file" else scene.parent
    forbidden.add(str(target))
    code, _, err = ingest(capsys, tmp_path / "c.parquet", target)
    one_line(code, err, 1, str(target), "permission denied; fix the permissions")


def test_a_forbidden_catalog_is_an_os_error_for_ingest_and_tile(capsys, tmp_path, forbidden):
    scene = write_scene(tmp_path / "s" / GF2_NAME, refl())
    cat = tmp_path / "c.parquet"
    assert ingest(capsys, cat, scene)[0] == 0
    forbidden.add(str(cat))
    one_line(*ingest(capsys, cat, scene)[::2], 1, str(cat), "permission denied")
    one_line(*tile(capsys, cat, tmp_path / "o")[::2], 1, str(cat), "permission denied")


def test_names_too_long_are_os_errors_on_every_path_option(capsys, tmp_path):
    scene = write_scene(tmp_path / "s" / GF2_NAME, refl())
    cat = tmp_path / "c.parquet"
    assert ingest(capsys, cat, scene)[0] == 0
    long = tmp_path / ("x" * 300)
    for code, _, err in (
        ingest(capsys, long / "c.parquet", scene),
        tile(capsys, long / "c.parquet", tmp_path / "o"),
        tile(capsys, cat, long / "o"),
        ingest(capsys, cat, long / "scene.tif"),
    ):
        one_line(code, err, 1, "too long")


def test_a_100000_character_path_is_shortened_in_the_error_line(capsys, tmp_path):
    code, _, err = ingest(capsys, tmp_path / "c.parquet", "/" + "y" * 100_000 + "/scene.tif")
    line = one_line(code, err, 1, "characters left out", "/scene.tif")
    assert len(line) < 400


def test_a_store_gone_while_a_scene_is_read_is_named_not_called_a_truncated_file():
    from rasterio.errors import RasterioIOError

    from a2mae.ingest.scene_reader import _read_error
    from a2mae.io.storage import FileInfo, S3Settings

    gone = S3Settings(endpoint_url="http://127.0.0.1:9", key="k", secret="s")
    err = RasterioIOError("TIFFReadEncodedTile() failed. read failed")  # what GDAL says mid-read
    line = _read_error(err, FileInfo("s3://scenes/a/B04.tif", 10), gone)
    assert "cannot reach the S3 endpoint http://127.0.0.1:9" in line and "truncated" not in line
    local = _read_error(err, FileInfo("/data/B04.tif", 10), gone)
    assert local.startswith("/data/B04.tif: truncated or corrupt file")


# -------------------------------------------------------------------- items 10 and 12: pixels
def test_a_pixel_size_in_the_wrong_units_is_one_line(capsys, tmp_path):
    scene = write_scene(
        tmp_path / "s" / GF2_NAME, refl(), transform=Affine(1e-9, 0, 760000, 0, -1e-9, 2560000)
    )
    code, _, err = ingest(capsys, tmp_path / "c.parquet", scene)
    one_line(code, err, 2, str(scene), "pixel size 1e-09 m is below 1 mm")


def test_an_overviews_only_file_is_refused_at_ingest(capsys, tmp_path):
    data = (100 + RNG.random((4, 1024, 1024)) * 900).astype(np.uint16)
    scene = write_scene(tmp_path / "s" / GF2_NAME, data, nodata=0, tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(scene, "r+") as ds:
        ds.build_overviews([2, 4, 8], Resampling.nearest)
    with rasterio.open(scene, "r+") as ds:
        ds.write(np.zeros_like(data))  # full resolution emptied; the overviews keep the pixels
    with rasterio.open(scene) as ds:
        assert ds.read(1, out_shape=(128, 128)).max() > 0  # a decimated read alone sees data
    code, _, err = ingest(capsys, tmp_path / "c.parquet", scene)
    one_line(code, err, 2, str(scene), "full-resolution pixels hold only nodata", "overviews")


def test_repeated_band_descriptions_are_ignored_with_a_warning(capsys, tmp_path):
    scene = write_scene(tmp_path / "s" / GF2_NAME, refl())
    with rasterio.open(scene, "r+") as ds:
        ds.descriptions = ("B1", "B1", "B2", "B3")
    code, _, err = ingest(capsys, tmp_path / "c.parquet", scene)
    assert code == 0, err
    assert "band descriptions (B1,B1,B2,B3) name band B1 twice" in err and "stack order (B1,B2,B3,B4)" in err
    named = write_scene(tmp_path / "n" / NAME2, refl())
    with rasterio.open(named, "r+") as ds:
        ds.descriptions = ("B4", "B3", "B2", "B1")  # used as they are: no warning
    code, _, err = ingest(capsys, tmp_path / "c.parquet", named)
    assert code == 0 and "warning" not in err, err
    assert [b.band for b in read_catalog(tmp_path / "c.parquet")[1].band_files] in (
        ["B1", "B2", "B3", "B4"],
        ["B4", "B3", "B2", "B1"],
    )


# ------------------------------------------------------------------ item 13: progress off a terminal
def test_tile_prints_progress_lines_where_stderr_is_no_terminal(capsys, tmp_path, monkeypatch):
    scene = write_scene(tmp_path / "s" / GF2_NAME, refl((4, 120, 120)))
    cat = tmp_path / "c.parquet"
    assert ingest(capsys, cat, scene)[0] == 0
    args = ["tile", "--catalog", str(cat), "--out", str(tmp_path / "o"), *TILE[:-1]]  # progress on
    assert cli(capsys, *args)[2] == ""  # a short step prints nothing
    import a2mae.stssd.run as run

    real = run.write_shard

    def slow(task):
        time.sleep(0.3)
        return real(task)

    monkeypatch.setattr(console, "PROGRESS_LINE_S", 0.1)
    monkeypatch.setattr(run, "write_shard", slow)
    code, _, err = cli(capsys, *args, "--force", "--set", "tile.shard_max_mb=0.01")
    lines = [ln for ln in err.splitlines() if ln.startswith("tile: ")]
    assert code == 0 and len(lines) >= 2, err
    assert "elapsed" in lines[0] and " sets" in lines[0]
    assert lines[-1].startswith("tile: ") and " in 0:00:" in lines[-1]  # the last line: done


def _wide(rec, n: int):
    """``rec`` (an S2 scene) stretched to ``n`` x ``n`` pixels of its 10 m grid (no file is read)."""
    a, _, c, _, e, f = rec.transform
    files = tuple(
        bf.model_copy(update={"width": n * 10 // round(bf.gsd_m), "height": n * 10 // round(bf.gsd_m)})
        for bf in rec.band_files
    )
    return rec.model_copy(
        update={"width": n, "height": n, "bounds": (c, f + e * n, c + a * n, f), "band_files": files}
    )


def test_a_60000_px_scene_is_refused_up_front_when_its_plan_exceeds_the_bound(
    capsys, tmp_path, synthetic_scenes, monkeypatch
):
    def never(*a, **k):
        raise AssertionError("the plan was built")

    monkeypatch.setattr("a2mae.stssd.run.plan_sets", never)
    s2 = next(r for r in synthetic_scenes[1] if r.sensor == "S2")
    cat = tmp_path / "big.parquet"
    write_catalog([_wide(s2, 60_000)], cat)
    code, _, err = cli(
        capsys, "tile", "--catalog", str(cat), "--out", str(tmp_path / "o"), "--set", "tile.max_plan_mb=1000"
    )
    one_line(code, err, 2, "planning would need about 1.4 GB", "tile.max_plan_mb=1000")


def test_a_large_scene_plans_within_its_estimate(synthetic_scenes):
    import tracemalloc

    from a2mae.config import load_params
    from a2mae.sensors import get_registry
    from a2mae.stssd.grouping import estimate_plan, plan_sets
    from a2mae.stssd.run import on_chip_grid

    cfg = load_params().tile
    s2 = next(r for r in synthetic_scenes[1] if r.sensor == "S2")
    records = [on_chip_grid(_wide(s2, 12_000), get_registry(), cfg)]
    need, _ = estimate_plan(records, cfg)
    tracemalloc.start()
    try:
        plan = plan_sets(records, cfg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(plan.sets) > 10_000 and peak <= need
