"""Sensor detection: the detect rule schema, band names in file names, scoring, user sensor files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from a2mae.config import load_params
from a2mae.ingest.run import ingest
from a2mae.ingest.sidecars import parse_mtl_text
from a2mae.samples import sample_path
from a2mae.sensors import SensorRegistryError, load_registry
from a2mae.sensors.detect import (
    DetectionError,
    SceneEvidence,
    band_vocabulary,
    detect_product,
    split_band_token,
)

REPO = Path(__file__).resolve().parents[2]
REG = load_registry()
VOCAB = band_vocabulary(REG)


def _detect(**kw) -> tuple[str, str]:
    kw.setdefault("file_names", ())
    d = detect_product(SceneEvidence(**kw), REG, "scene")
    return d.sensor, d.product


# ------------------------------------------------------------------------------------------ schema
def test_every_builtin_product_has_detect_rules():
    for sensor in REG:
        for level, product in sensor.products.items():
            assert product.detect, f"{sensor.id}/{level} has no detect rules"


@pytest.mark.parametrize(
    ("detect", "expected"),
    [
        ({"filenames": ["(unclosed"]}, "detect.filenames"),
        ({"filename": ["x"]}, "detect.filename"),  # misspelt key
        ({"bands_none": ["B99"]}, "detect.bands_none: unknown band or QA layer 'B99'"),
        ({"stacks": [["B1", "B7"]]}, "detect.stacks: unknown band 'B7'"),
        ({"mtl": {"SPACECRAFT_ID": ["a", "b"]}}, "detect.mtl"),
        ({"band_count": [0]}, "detect.band_count"),
    ],
)
def test_bad_detect_rules_name_the_key(tmp_path, detect, expected):
    doc = {
        "sensors": {
            "XS": {
                "name": "x",
                "token_groups": {"VNIR": ["B1"]},
                "bands": {"B1": {"center_nm": 500, "bandwidth_nm": 10, "gsd_m": 5, "group": "VNIR"}},
                "products": {"L1": {"scale": 1.0, "detect": detect}},
            }
        }
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SensorRegistryError) as info:
        load_registry([path])
    msg = str(info.value)
    assert str(path) in msg and "sensors.XS" in msg and expected in msg
    assert "\n" not in msg


# ------------------------------------------------------------------------------------- band tokens
@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        ("B04", ("", "B04")),
        ("s2_B8A", ("s2", "B8A")),
        ("l8_BQA", ("l8", "BQA")),
        (
            "LC08_L2SP_001062_20201031_20201106_02_T2_SR_B4",
            ("LC08_L2SP_001062_20201031_20201106_02_T2", "SR_B4"),
        ),
        (
            "LC08_L2SP_001062_20201031_20201106_02_T2_ST_B10",
            ("LC08_L2SP_001062_20201031_20201106_02_T2", "ST_B10"),
        ),
        (
            "LC08_L2SP_001062_20201031_20201106_02_T2_QA_PIXEL",
            ("LC08_L2SP_001062_20201031_20201106_02_T2", "QA_PIXEL"),
        ),
        ("T33UUP_20200101T100319_B04_10m", ("T33UUP_20200101T100319", "B04")),
        ("T33UUP_20200101T100319_SCL_20m", ("T33UUP_20200101T100319", "SCL")),
        ("preview", None),
        ("LC08_L2SP_001062_20201031_20201106_02_T2_SR_QA_AEROSOL", None),
        ("GF2_PMS1_E113.6_N23.1_20200101_L1A0001234567-MSS1", None),
    ],
)
def test_split_band_token(stem, expected):
    assert split_band_token(stem, VOCAB) == expected


@settings(max_examples=60, deadline=None)
@given(
    prefix=st.from_regex(r"[A-Za-z0-9]{1,6}(_[A-Za-z0-9]{1,6}){0,3}", fullmatch=True),
    token=st.sampled_from(sorted(VOCAB)),
    sep=st.sampled_from(["_", "-", "."]),
)
def test_split_band_token_recovers_prefix_and_band(prefix, token, sep):
    got = split_band_token(f"{prefix}{sep}{token}", VOCAB)
    assert got is not None
    head, found = got
    # the found token is a known name that ends the stem; it may swallow prefix parts that are names too
    assert found.upper() in VOCAB
    assert f"{prefix}{sep}{token}".endswith(found)
    assert len(found) >= len(token)
    assert f"{prefix}{sep}{token}" in (
        f"{head}{sep}{found}",
        f"{head}_{found}",
        f"{head}-{found}",
        f"{head}.{found}",
    )


# ------------------------------------------------------------------------------------------ scoring
S2_ALL = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")


def test_s2_l1c_by_band_names_l2a_vetoed_by_b10():
    assert _detect(band_tokens=S2_ALL) == ("S2", "L1C")


def test_s2_l2a_by_scl():
    tokens = (*[t for t in S2_ALL if t != "B10"], "SCL")
    assert _detect(band_tokens=tokens) == ("S2", "L2A")


def test_stac_collection_vetoes_the_other_level():
    stac = {"collection": "sentinel-2-l1c", "properties": {"platform": "sentinel-2b"}}
    assert _detect(band_tokens=("B02", "B03", "B04"), stac=stac) == ("S2", "L1C")
    stac = {"collection": "sentinel-2-l2a", "properties": {"platform": "sentinel-2b"}}
    assert _detect(band_tokens=("B02", "B03", "B04"), stac=stac) == ("S2", "L2A")


def test_a_few_s2_bands_without_metadata_are_ambiguous():
    with pytest.raises(DetectionError, match="ambiguous scene: matches S2/L1C, S2/L2A"):
        _detect(band_tokens=("B02", "B03", "B04"))


def test_landsat_mtl_decides_the_level():
    mtl = parse_mtl_text(
        (sample_path("l8_c2l2") / "LC08_L2SP_001062_20201031_20201106_02_T2_MTL.txt").read_text()
    )
    assert mtl["PROCESSING_LEVEL"] == "L2SP"  # first occurrence, not the L1GT of the level-1 record
    assert mtl["LEVEL1_PROCESSING_RECORD.PROCESSING_LEVEL"] == "L1GT"
    assert _detect(band_tokens=("B1", "B2", "B3", "B4"), mtl=mtl) == ("L8", "C2L2")
    l1 = {"SPACECRAFT_ID": "LANDSAT_9", "PROCESSING_LEVEL": "L1TP"}
    assert _detect(band_tokens=("B1", "B2", "B3", "B4"), mtl=l1) == ("L8", "L1")


def test_landsat_l1_by_bqa_and_c2l2_by_file_names():
    assert _detect(band_tokens=("B1", "B2", "B8", "B11", "BQA")) == ("L8", "L1")
    names = tuple(f"LC08_L2SP_001062_20201031_20201106_02_T2_SR_B{i}.TIF" for i in range(1, 8))
    assert _detect(file_names=names, band_tokens=tuple(f"SR_B{i}" for i in range(1, 8))) == ("L8", "C2L2")


def test_gaofen_by_file_name_and_band_count():
    name = ("GF2_PMS1_E113.6_N23.1_20200101_L1A0001234567-MSS1.tif",)
    assert _detect(file_names=name, band_count=4, single_file=True) == ("GF2", "MS")
    assert _detect(file_names=(name[0].replace("GF2", "GF1"),), band_count=4, single_file=True) == (
        "GF1",
        "MS",
    )
    with pytest.raises(DetectionError, match="unknown sensor"):
        _detect(file_names=name, band_count=3, single_file=True)  # band_count vetoes


def test_unknown_and_explicit_tags():
    with pytest.raises(DetectionError, match="scene: unknown sensor"):
        _detect(file_names=("mystery.tif",), band_count=3, single_file=True)
    assert _detect(file_names=("x.tif",), tags={"A2MAE_SENSOR": "GF1"}, band_count=4) == ("GF1", "MS")
    with pytest.raises(DetectionError, match="names an unknown sensor"):
        _detect(file_names=("x.tif",), tags={"A2MAE_SENSOR": "WV3"})
    with pytest.raises(DetectionError, match="is not a product of S2"):
        _detect(file_names=("x.tif",), tags={"A2MAE_SENSOR": "S2", "A2MAE_PRODUCT": "L3"})


def test_foreign_band_names_veto_a_sensor():
    # B8A exists only in S2: a Landsat or Gaofen product cannot hold it
    with pytest.raises(DetectionError, match="unknown sensor"):
        _detect(band_tokens=("B1", "B8A", "BQA"))


# ------------------------------------------------------------------------ user sensor file (docs)
def _docs_example() -> str:
    text = (REPO / "docs" / "sensors.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    example = [b for b in blocks if "SPOT:" in b]
    assert len(example) == 1, "docs/sensors.md must keep exactly one SPOT worked example"
    return example[0]


def _spot_file(tmp_path: Path, geotiff) -> Path:
    data = np.stack([np.full((40, 50), v, np.uint16) for v in (300, 200, 100, 400)])
    return geotiff(
        tmp_path / "in" / "IMG_SPOT7_MS_202105101012345_ORT_X.TIF",
        data,
        res=6.0,
        origin=(300000.0, 5000000.0),
        crs="EPSG:32631",
        tags={"MISSION": "SPOT"},
    )


def _check_spot(report):
    (rec,) = report.added
    assert (rec.sensor, rec.product) == ("SPOT", "MS")
    assert rec.bands == ("B0", "B1", "B2", "B3")
    # the DIMAP order (red, green, blue, nir) comes from the stack: B0 is the file's band 3
    assert {b.band: b.index for b in rec.band_files} == {"B2": 1, "B1": 2, "B0": 3, "B3": 4}
    assert rec.gsd_m == pytest.approx(6.0)
    assert rec.datetime is not None and rec.datetime.isoformat() == "2021-05-10T10:12:34+00:00"
    assert rec.datetime_source == "filename"


def test_docs_worked_example_via_params(tmp_path, geotiff):
    user = tmp_path / "my_sensors.yaml"
    user.write_text(_docs_example())
    src = _spot_file(tmp_path, geotiff)
    params = load_params(overrides=[f"data.sensor_files=[{user}]"])
    assert "SPOT" in load_registry(params.data.sensor_files)
    _check_spot(ingest([str(src)], tmp_path / "cat.parquet", params, progress=False))


def test_docs_worked_example_via_environment(tmp_path, geotiff, monkeypatch):
    user = tmp_path / "my_sensors.yaml"
    user.write_text(_docs_example())
    monkeypatch.setenv("A2MAE_SENSOR_FILES", str(user))
    src = _spot_file(tmp_path, geotiff)
    _check_spot(ingest([str(src)], tmp_path / "cat.parquet", load_params(), progress=False))


def test_without_the_sensor_file_the_scene_is_unknown(tmp_path, geotiff):
    from a2mae.ingest.run import IngestError

    src = _spot_file(tmp_path, geotiff)
    with pytest.raises(IngestError, match=r"IMG_SPOT7_MS_.*unknown sensor"):
        ingest([str(src)], tmp_path / "cat.parquet", load_params(), progress=False)
    assert not (tmp_path / "cat.parquet").exists()
