"""Layout readers of `a2mae benchmark`: each layout from generated rasters and labels, and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from a2mae.benchmark.data import IGNORE, TEST, BenchmarkError
from a2mae.benchmark.layouts import detect, read_data
from a2mae.config import load_params
from a2mae.testing.bench import TM_BANDS, write_change_pairs, write_oscd, write_raster


def cfg(*over: str):
    return load_params(overrides=["benchmark.chip_size=16", *over]).benchmark


def test_change_pairs_cut_into_labelled_chips(tmp_path):
    root = write_change_pairs(tmp_path / "cp", sites=2, size=64)
    assert detect(root) == "change-pair"
    d = read_data(root, cfg("benchmark.sensor=L8"))
    assert d.kind == "change" and d.layout == "change-pair" and d.bands == TM_BANDS and d.sensor == "L8"
    assert d.size == (16, 16) and all(c.pixels.shape == (2, 6, 16, 16) for c in d.chips)
    assert {c.group for c in d.chips} == {"site0", "site1"}
    labels = np.concatenate([c.label.ravel() for c in d.chips])
    assert set(np.unique(labels)) <= {0, 1, IGNORE} and (labels == 1).any() and (labels == 0).any()
    b = np.array([c.bounds for c in d.chips])
    assert np.allclose(b[:, 2] - b[:, 0], 16 * 30) and np.allclose(b[:, 3] - b[:, 1], 16 * 30)


def test_change_pair_labels_off_the_grid_is_one_line(tmp_path):
    root = write_change_pairs(tmp_path / "cp", sites=1, size=32)
    write_raster(root / "site0" / "reference.tif", np.zeros((20, 20), np.uint8))
    with pytest.raises(BenchmarkError, match="labels outside the rasters"):
        read_data(root, cfg("benchmark.sensor=L8"))


def test_oscd_keeps_its_city_split_and_maps_1_2(tmp_path):
    root = write_oscd(tmp_path / "oscd")
    assert detect(root) == "oscd"
    d = read_data(root, cfg())
    assert d.layout == "oscd" and d.sensor == "S2" and len(d.bands) == 10
    test = {c.group for c in d.chips if c.fixed_fold == TEST}
    assert test == {"gamma"} and {c.group for c in d.chips if c.fixed_fold == -1} == {"alpha", "beta"}
    labels = np.concatenate([c.label.ravel() for c in d.chips])
    assert set(np.unique(labels)) == {0, 1}  # 1/2 in the cm rasters -> unchanged/changed
    assert d.chips[0].metas[0].datetime.year == 2016 and d.chips[0].metas[1].datetime.year == 2017


def test_oscd_missing_change_map_names_the_file(tmp_path):
    root = write_oscd(tmp_path / "oscd")
    for f in root.rglob("alpha-cm.tif"):
        f.unlink()
    with pytest.raises(BenchmarkError, match=r"alpha/cm/alpha-cm\.tif"):
        read_data(root, cfg())


def _vector_rasters(root, n=2):
    rng = np.random.default_rng(0)
    for i in range(n):
        write_raster(
            root / f"r{i}.tif",
            rng.uniform(0, 100, (6, 48, 48)).astype(np.float32),
            x0=500_000 + i * 5000,
            descriptions=TM_BANDS,
        )


def _boxes(xs, ys, half=200.0):
    from shapely.geometry import box

    return [box(x - half, y - half, x + half, y + half) for x, y in zip(xs, ys, strict=True)]


@pytest.mark.parametrize("ext", ["geojson", "gpkg", "parquet"])
def test_vector_class_column_polygons(tmp_path, ext):
    import geopandas as gpd

    root = tmp_path / "v"
    _vector_rasters(root)
    geoms = _boxes([500_300, 500_900, 505_300, 505_900], [3_999_500, 3_999_100, 3_999_500, 3_999_100])
    gdf = gpd.GeoDataFrame(
        {"class": ["water", "forest", "water", "forest"]}, geometry=geoms, crs="EPSG:32633"
    )
    path = root / f"labels.{ext}"
    gdf.to_parquet(path) if ext == "parquet" else gdf.to_file(path)
    assert detect(root) == "vector"
    d = read_data(root, cfg("benchmark.sensor=L8"))
    assert d.kind == "segmentation" and d.classes == ["forest", "water"]
    labelled = sum(int((c.label != IGNORE).sum()) for c in d.chips)
    assert labelled > 0 and all((c.label != IGNORE).any() for c in d.chips)


def test_vector_one_file_per_class_points_and_outside_error(tmp_path):
    import geopandas as gpd
    from shapely.geometry import Point

    root = tmp_path / "v"
    _vector_rasters(root, n=1)
    (root / "labels").mkdir()
    for name, pts in (
        ("crop", [(500_100, 3_999_900), (500_500, 3_999_500)]),
        ("urban", [(500_900, 3_999_200)]),
    ):
        gpd.GeoDataFrame(geometry=[Point(*p) for p in pts], crs="EPSG:32633").to_file(
            root / "labels" / f"{name}.geojson"
        )
    d = read_data(root, cfg("benchmark.sensor=L8"))
    assert d.classes == ["crop", "urban"]
    assert sum(int((c.label != IGNORE).sum()) for c in d.chips) == 3  # one pixel per point
    gpd.GeoDataFrame(geometry=[Point(900_000, 3_000_000)], crs="EPSG:32633").to_file(
        root / "labels" / "lost.geojson"
    )
    with pytest.raises(BenchmarkError, match="outside every raster"):
        read_data(root, cfg("benchmark.sensor=L8"))


def test_eurosat_class_folders_via_torchgeo(tmp_path):
    rng = np.random.default_rng(0)
    for k in ("A", "B"):
        for i in range(3):
            write_raster(
                tmp_path / "e" / k / f"{i}.tif",
                rng.uniform(0, 3000, (4, 16, 16)).astype(np.uint16),
                descriptions=("B02", "B03", "B04", "B08"),
            )
    assert detect(tmp_path / "e") == "eurosat"
    d = read_data(tmp_path / "e", cfg())
    assert d.kind == "single-label" and d.classes == ["A", "B"] and len(d.chips) == 6
    assert sorted(int(c.label) for c in d.chips) == [0, 0, 0, 1, 1, 1]


def test_bigearthnet_v1_patches(tmp_path):
    import json

    rng = np.random.default_rng(0)
    for i, labels in enumerate((["Forest"], ["Forest", "Water"], ["Urban"])):
        p = tmp_path / "ben" / f"P{i}"
        for b in ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"):
            size = 8 if b in ("B02", "B03", "B04", "B08") else 4
            write_raster(p / f"P{i}_{b}.tif", rng.uniform(0, 1000, (size, size)).astype(np.uint16))
        (p / f"P{i}_labels_metadata.json").write_text(json.dumps({"labels": labels}))
    assert detect(tmp_path / "ben") == "bigearthnet"
    d = read_data(tmp_path / "ben", cfg())
    assert d.kind == "multi-label" and d.classes == ["Forest", "Urban", "Water"]
    assert d.chips[1].label.tolist() == [1, 0, 1] and d.chips[0].pixels.shape == (1, 10, 8, 8)


def test_unknown_layout_names_what_it_expected(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("hi")
    with pytest.raises(BenchmarkError, match="layout not recognised; expected one of: OSCD"):
        read_data(tmp_path / "x", cfg())
