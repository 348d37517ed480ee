"""Downstream datasets: the three layouts, metadata from GeoTIFFs, bundled real samples, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.transform import from_origin

from a2mae.finetune.chips import BandSpec, DatasetError, EmptySplitError, read_chip
from a2mae.finetune.datasets import open_dataset
from a2mae.finetune.samples import (
    SCL_CLASSES,
    make_change_pairs,
    prepare_scl_segmentation,
    s2_bands,
    scl_to_classes,
    write_chip,
)

REPO = Path(__file__).resolve().parents[2]
BEN = REPO / "data" / "samples" / "bigearthnet"
SEG = REPO / "data" / "samples" / "segmentation"
BANDS = s2_bands()


def _chip(path: Path, size=(16, 16), bands=BANDS, crs="EPSG:32633", value=1000, sensor="S2"):
    data = np.full((len(bands), *size), value, dtype=np.uint16)
    t = from_origin(500_000, 4_000_000, 10, 10) if crs else None
    write_chip(path, data, bands, crs=crs, transform=t, sensor=sensor)
    return path


def _mask(path: Path, size=(16, 16), value=0):
    write_chip(
        path,
        np.full(size, value, dtype=np.uint8),
        None,
        crs="EPSG:32633",
        transform=from_origin(500_000, 4_000_000, 10, 10),
        sensor=None,
    )
    return path


def _seg(root: Path, splits=("train", "test"), n=2, size=(16, 16)):
    for sp in splits:
        for i in range(n):
            _chip(root / sp / "images" / f"c{i}.tif", size)
            _mask(root / sp / "masks" / f"c{i}.tif", size, value=i % 2)
    (root / "classes.txt").write_text("land\ncloud\n")
    return root


def _cd(root: Path, splits=("train", "test"), n=2, size=(16, 16)):
    for sp in splits:
        for i in range(n):
            _chip(root / sp / "A" / f"p{i}.tif", size)
            _chip(root / sp / "B" / f"p{i}.tif", size, value=2000)
            _mask(root / sp / "label" / f"p{i}.tif", size, value=255 * (i % 2))
    return root


# ----------------------------------------------------------------------------------- real samples
def test_bigearthnet_sample_is_multilabel_without_georeference():
    ds = open_dataset("classification", BEN, "train", sensor="S2")
    assert ds.info.multilabel and len(ds.info.classes) == 19 and ds.info.size == (120, 120)
    assert ds.info.bands == BANDS
    s = ds[0]
    assert s.pixels.shape == (10, 120, 120) and s.target.shape == (19,) and s.target.sum() >= 1
    assert s.metas[0].corners is None and s.metas[0].gsd_m is None  # metadata-unknown path
    assert {len(open_dataset("classification", BEN, sp, sensor="S2")) for sp in ("train", "val", "test")} == {
        8
    }


def test_scl_segmentation_sample_has_georeference_and_three_classes():
    ds = open_dataset("segmentation", SEG, "test", sensor="S2")
    assert ds.info.classes == ("clear", "cloud_or_shadow", "cirrus")
    assert ds.info.gsd_m == pytest.approx(100.0)
    s = ds[0]
    assert s.pixels.shape == (10, 64, 64) and s.target.shape == (64, 64)
    corners = s.metas[0].corners
    assert corners is not None and all(20 < lat < 30 and -15 < lon < -5 for lat, lon in corners)  # 29RKH
    assert set(np.unique(s.target.numpy())) <= {0, 1, 2, 255}


# --------------------------------------------------------------------------- metadata from GeoTIFFs
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    x0=st.floats(200_000, 800_000),
    y0=st.floats(1_000_000, 8_000_000),
    res=st.sampled_from([3.2, 10.0, 30.0]),
    size=st.integers(8, 24),
)
def test_corners_and_gsd_follow_the_geotransform(tmp_path, x0, y0, res, size):
    from rasterio.warp import transform as warp

    path = tmp_path / "c.tif"
    write_chip(
        path,
        np.ones((10, size, size), np.uint16),
        BANDS,
        crs="EPSG:32632",
        transform=from_origin(x0, y0, res, res),
    )
    _, meta = read_chip(path, BandSpec("S2"))
    assert meta.gsd_m == pytest.approx(res)
    xs = [x0, x0 + size * res, x0 + size * res, x0]
    ys = [y0, y0, y0 - size * res, y0 - size * res]
    lon, lat = warp("EPSG:32632", "EPSG:4326", xs, ys)
    for (la, lo), la2, lo2 in zip(meta.corners, lat, lon, strict=True):
        assert la == pytest.approx(la2, abs=1e-9) and lo == pytest.approx(lo2, abs=1e-9)
    (ul, ur, _lr, ll) = meta.corners
    assert ul[0] > ll[0] and ur[1] > ul[1]  # north-up: UL above LL, UR east of UL


def test_chip_without_crs_takes_the_unknown_path_and_band_list_from_params(tmp_path):
    path = _chip(tmp_path / "c.tif", crs=None)
    with rasterio.open(path, "r+") as dst:
        for i in range(1, 11):
            dst.set_band_description(i, "")
    with pytest.raises(DatasetError, match=r"set finetune.bands"):
        read_chip(path, BandSpec("S2"))
    px, meta = read_chip(path, BandSpec("S2", BANDS))
    assert px.shape == (10, 16, 16) and meta.gsd_m is None and meta.corners is None
    with pytest.raises(DatasetError, match=r"10 bands in the file but finetune.bands lists 4"):
        read_chip(path, BandSpec("S2", BANDS[:4]))
    with pytest.raises(DatasetError, match=r"not a band of S2"):
        read_chip(path, BandSpec("S2", ("B99",) * 10))


# ------------------------------------------------------------------------------- classification
def test_classification_single_and_multi_label(cls_dataset):
    root = cls_dataset({"train": ["a", "b", "c"], "test": ["b", "a"]})
    ds = open_dataset("classification", root, "test", sensor="S2")
    assert not ds.info.multilabel and ds.info.classes == ("a", "b", "c")
    assert [int(ds[i].target) for i in range(2)] == [1, 0]
    multi = cls_dataset({"train": ["a|b", "c"], "val": ["a"], "test": ["b|c"]}, name="multi")
    dm = open_dataset("classification", multi, "validation", sensor="S2")
    assert dm.info.multilabel and dm.split == "val"
    assert dm[0].target.tolist() == [1.0, 0.0, 0.0]


def test_classification_unknown_label(cls_dataset):
    root = cls_dataset({"train": ["a", "b"], "test": ["a", "zebra"]})
    with pytest.raises(DatasetError, match=r"line 5: unknown label 'zebra' \(classes from the train split"):
        open_dataset("classification", root, "test", sensor="S2")
    fixed = cls_dataset({"train": ["a", "b"], "test": ["a", "c"]}, classes=["a", "b"], name="fixed")
    with pytest.raises(DatasetError, match=r"unknown label 'c' .*classes.txt"):
        open_dataset("classification", fixed, "test", sensor="S2")


def test_classification_empty_splits_and_missing_files(cls_dataset):
    root = cls_dataset({"test": ["a", "b"]})
    with pytest.raises(EmptySplitError, match=r"the train split is empty"):
        open_dataset("classification", root, "test", sensor="S2")
    root = cls_dataset({"train": ["a", "b"]}, name="notest")
    with pytest.raises(EmptySplitError, match=r"split 'test' is empty \(splits present: train\)"):
        open_dataset("classification", root, "test", sensor="S2")
    (root / "chips" / "train_1.tif").unlink()
    with pytest.raises(DatasetError, match=r"image 'chips/train_1.tif' not found"):
        open_dataset("classification", root, "train", sensor="S2")
    with pytest.raises(DatasetError, match=r"dataset folder not found"):
        open_dataset("classification", root / "nope", "train", sensor="S2")


def test_classification_single_label_mode_rejects_multi_labels_and_sizes_must_match(cls_dataset):
    root = cls_dataset({"train": ["a|b", "b"], "test": ["a"]})
    with pytest.raises(DatasetError, match=r"2 labels in single-label mode"):
        open_dataset("classification", root, "train", sensor="S2", label_mode="single")
    _chip(root / "chips" / "train_1.tif", size=(24, 24))
    with pytest.raises(DatasetError, match=r"train_1.tif: 24x24 px but train_0.tif is 16x16"):
        open_dataset("classification", root, "train", sensor="S2")


# ---------------------------------------------------------------------------------- segmentation
def test_segmentation_pairs(tmp_path):
    ds = open_dataset("segmentation", _seg(tmp_path / "seg"), "train", sensor="S2")
    assert ds.info.classes == ("land", "cloud") and len(ds) == 2
    assert ds[1].target.unique().tolist() == [1]


def test_segmentation_image_mask_size_mismatch(tmp_path):
    root = _seg(tmp_path / "seg")
    _mask(root / "train" / "masks" / "c1.tif", size=(8, 16))
    with pytest.raises(
        DatasetError, match=r"masks/c1.tif: 8x16 px but .*images/c1.tif is 16x16; image and mask"
    ):
        open_dataset("segmentation", root, "train", sensor="S2")


def test_segmentation_unknown_mask_value_missing_mask_and_empty_split(tmp_path):
    root = _seg(tmp_path / "seg")
    _mask(root / "test" / "masks" / "c0.tif", value=7)
    with pytest.raises(DatasetError, match=r"c0.tif: mask value 7 is not a class \(0..1 from classes.txt\)"):
        open_dataset("segmentation", root, "test", sensor="S2")
    (root / "train" / "masks" / "c1.tif").unlink()
    with pytest.raises(DatasetError, match=r"c1.*: no matching file in .*masks"):
        open_dataset("segmentation", root, "train", sensor="S2")
    with pytest.raises(EmptySplitError, match=r"split 'val' is empty"):
        open_dataset("segmentation", root, "val", sensor="S2")
    (root / "empty" / "images").mkdir(parents=True)
    with pytest.raises(EmptySplitError, match=r"split 'empty' is empty"):
        open_dataset("segmentation", root, "empty", sensor="S2")


# ------------------------------------------------------------------------------ change detection
def test_change_detection_pairs_and_levir_labels(tmp_path):
    ds = open_dataset("change_detection", _cd(tmp_path / "cd"), "train", sensor="S2")
    assert ds.info.classes == ("no_change", "change")
    s = ds[1]
    assert s.pixels.shape == (2, 10, 16, 16) and len(s.metas) == 2
    assert s.target.unique().tolist() == [1]  # LEVIR's 255 means change


def test_change_detection_bad_inputs(tmp_path):
    root = _cd(tmp_path / "cd")
    _chip(root / "train" / "B" / "p0.tif", size=(16, 8))
    with pytest.raises(DatasetError, match=r"B/p0.tif: 16x8 px but .*A/p0.tif is 16x16"):
        open_dataset("change_detection", root, "train", sensor="S2")
    (root / "test" / "B" / "p1.tif").unlink()
    with pytest.raises(DatasetError, match=r"p1.*: no matching file in .*B"):
        open_dataset("change_detection", root, "test", sensor="S2")
    (root / "val" / "A").mkdir(parents=True)
    (root / "val" / "B").mkdir()
    (root / "val" / "label").mkdir()
    with pytest.raises(EmptySplitError, match=r"split 'val' is empty"):
        open_dataset("change_detection", root, "val", sensor="S2")


def test_generated_change_pairs_load(tmp_path):
    counts = make_change_pairs(tmp_path / "cd", n_train=2, n_val=1, n_test=1, size=32)
    assert counts == {"train": 2, "val": 1, "test": 1}
    ds = open_dataset("change_detection", tmp_path / "cd", "train", sensor="S2")
    s = ds[0]
    assert s.target.sum() > 0 and s.metas[0].gsd_m == pytest.approx(10.0)
    changed = s.target.bool()
    diff = (s.pixels[1] - s.pixels[0]).abs().mean(0)
    assert diff[changed].mean() > 3 * diff[~changed].mean()  # the label marks where the images differ


# ---------------------------------------------------------------------------- hashes and samples
def test_split_hash_is_content_based(tmp_path):
    root = _seg(tmp_path / "seg")
    h1 = open_dataset("segmentation", root, "test", sensor="S2").content_hash()
    assert h1 == open_dataset("segmentation", root, "test", sensor="S2").content_hash()
    assert h1 != open_dataset("segmentation", root, "train", sensor="S2").content_hash()
    _chip(root / "test" / "images" / "c0.tif", value=1001)
    assert open_dataset("segmentation", root, "test", sensor="S2").content_hash() != h1


def test_scl_mapping():
    scl = np.arange(12, dtype=np.uint8)
    out = scl_to_classes(scl)
    assert out[0] == out[1] == 255
    for i, values in enumerate(SCL_CLASSES.values()):
        assert all(out[v] == i for v in values)
    assert set(out.tolist()) == {0, 1, 2, 255}


def test_prepare_scl_segmentation_on_a_small_scene(tmp_path):
    scene = tmp_path / "scene"
    scene.mkdir()
    rng = np.random.default_rng(0)
    t100, t200 = from_origin(300_000, 2_700_000, 100, 100), from_origin(300_000, 2_700_000, 200, 200)
    for b in BANDS:
        fine = b in ("B02", "B03", "B04", "B08")
        n, t = (64, t100) if fine else (32, t200)
        write_chip(
            scene / f"{b}.tif",
            rng.integers(500, 5000, (n, n)).astype(np.uint16),
            None,
            crs="EPSG:32629",
            transform=t,
        )
    scl = np.full((32, 32), 5, np.uint8)
    scl[:8, :8] = 9  # a cloud in the first chip
    write_chip(scene / "SCL.tif", scl, None, crs="EPSG:32629", transform=t200)
    counts = prepare_scl_segmentation(scene, tmp_path / "out", chip=16, clear_chips=3)
    assert sum(counts.values()) == 4  # 1 cloudy + 3 clear of 16 chips
    first = next((tmp_path / "out").glob("*/masks/scene_r00c00.tif"))
    with rasterio.open(first) as src:
        m = src.read(1)
        assert src.transform.a == pytest.approx(100) and src.crs.to_epsg() == 32629
    assert (m == 1).all()  # 8 px of 200 m = the whole 16 px chip at 100 m
    assert not math.isnan(float(m.mean()))
