"""STAC items -> catalog rows through the collection files (no server needed)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from a2mae.collect.mapping import CollectError, item_record, load_mapping
from a2mae.config import load_params
from a2mae.sensors import get_registry

REPO = Path(__file__).resolve().parents[2]
REAL_ITEM = REPO / "data" / "samples" / "sentinel2_l2a_T29RKH_20200219" / "S2A_29RKH_20200219_0_L2A.json"


@pytest.fixture
def s2():
    return load_mapping("sentinel-2-l2a", get_registry())


@pytest.fixture
def item():
    return json.loads(REAL_ITEM.read_text())


def _record(item, cmap):
    return item_record(item, cmap, get_registry(), load_params().data.growth_period)


def test_a_real_earth_search_item_becomes_a_row(item, s2):
    r = _record(item, s2)
    assert (r.sensor, r.product, r.crs, r.width, r.gsd_m) == ("S2", "L2A", "EPSG:32629", 10980, 10.0)
    assert r.bands == ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
    assert all(bf.uri.startswith("https://sentinel-cogs.s3.us-west-2.amazonaws.com/") for bf in r.band_files)
    b05 = next(bf for bf in r.band_files if bf.band == "B05")
    assert b05.uri.endswith("/B05.tif") and b05.gsd_m == 20.0 and b05.width == 5490
    assert r.qa_file.band == "SCL" and r.qa_file.dtype == "uint8" and r.qa_file.uri.endswith("/SCL.tif")
    # 24.8 N in February: non-growth; cloud cover 4.05 %; raster:bands scale; the item's self link
    assert r.period == "ng" and r.cloud_fraction == pytest.approx(0.04051854)
    assert (r.scale, r.offset) == (1e-4, 0.0) and r.datetime_source == "stac"
    assert r.source.endswith("S2A_29RKH_20200219_0_L2A.json") and r.scene_id.startswith("S2_L2A_20200219_")
    lat = sum(c[0] for c in r.corners) / 4
    assert 24.2 < lat < 25.4


def test_the_scene_id_follows_the_item_content(item, s2):
    a = _record(item, s2)
    changed = copy.deepcopy(item)
    changed["properties"]["updated"] = "2030-01-01T00:00:00Z"  # re-processed
    assert _record(changed, s2).scene_id != a.scene_id
    assert _record(copy.deepcopy(item), s2).scene_id == a.scene_id


def test_projection_v2_codes_and_item_level_grids(item, s2):
    v2 = copy.deepcopy(item)
    del v2["properties"]["proj:epsg"]
    v2["properties"]["proj:code"] = "EPSG:32629"
    assert _record(v2, s2).crs == "EPSG:32629"
    shared = copy.deepcopy(item)  # one grid for every asset, given once on the item
    shared["properties"]["proj:transform"] = [10, 0, 199980, 0, -10, 2800020]
    shared["properties"]["proj:shape"] = [10980, 10980]
    for a in shared["assets"].values():
        a.pop("proj:transform", None)
        a.pop("proj:shape", None)
    assert {bf.width for bf in _record(shared, s2).band_files} == {10980}


def test_an_offset_rule_applies_when_raster_bands_says_nothing(item, s2):
    new = copy.deepcopy(item)
    for a in new["assets"].values():
        for b in a.get("raster:bands", []):
            b.pop("scale", None)
            b.pop("offset", None)
    new["properties"]["s2:processing_baseline"] = "05.10"
    assert (_record(new, s2).scale, _record(new, s2).offset) == (1e-4, -0.1)
    new["properties"]["s2:processing_baseline"] = "03.01"
    assert _record(new, s2).offset == 0.0


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda it: it["assets"]["red"].pop("proj:transform"), "asset 'red' lacks proj:epsg/proj:code"),
        (lambda it: it["properties"].update(platform="landsat-7"), "platform 'landsat-7' is not one of"),
        (lambda it: it["assets"]["red"].update(href="file:///x.tif"), "is not an s3:// or http(s):// URL"),
        (lambda it: it.update(assets={"thumbnail": it["assets"]["thumbnail"]}), "none of the band assets"),
    ],
)
def test_unusable_items_are_one_line_naming_the_item(item, s2, edit, expected):
    edit(item)
    with pytest.raises(CollectError) as err:
        _record(item, s2)
    assert expected in str(err.value) and "S2A_29RKH_20200219_0_L2A" in str(err.value)
    assert "\n" not in str(err.value)


def test_collection_files_are_checked_against_the_registry(tmp_path):
    reg = get_registry()
    with pytest.raises(CollectError, match="built in: landsat-c2-l2, sentinel-2-l2a"):
        load_mapping("sentinel-3", reg)
    bad = tmp_path / "mine.yaml"
    bad.write_text("collection: c\nsensor: S2\nproduct: L2A\nbands: {B99: [x]}\n")
    with pytest.raises(CollectError, match=r"mine.yaml: bands \['B99'\] are not bands of S2"):
        load_mapping(str(bad), reg)
    bad.write_text("collection: c\nsensor: S2\nproduct: L2A\nbands: {B04: [red]}\nextra: 1\n")
    with pytest.raises(CollectError, match=r"mine\.yaml: extra"):
        load_mapping(str(bad), reg)
    bad.write_text("collection: c\nsensor: XX\nproduct: L2A\nbands: {B04: [red]}\n")
    with pytest.raises(CollectError, match=r"mine\.yaml"):
        load_mapping(str(bad), reg)


def test_every_builtin_collection_file_loads():
    reg = get_registry()
    for path in sorted((REPO / "a2mae" / "collect" / "collections").glob("*.yaml")):
        cmap = load_mapping(path.stem, reg)
        assert cmap.collection == path.stem and cmap.qa and cmap.platforms
