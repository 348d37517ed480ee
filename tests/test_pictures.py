"""The README's pictures: the matplotlib parts of ``scripts/pictures.py`` on tiny inputs, and the README
showing exactly the committed PNGs (the script itself needs Chromium and minutes: not run here)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
IMG = REPO / "docs" / "img"


@pytest.fixture(scope="module")
def pictures():
    spec = importlib.util.spec_from_file_location("a2mae_pictures_script", REPO / "scripts" / "pictures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _raster(path: Path, data: np.ndarray, **extra) -> Path:
    profile = {
        "driver": "GTiff",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": str(data.dtype),
        "crs": "EPSG:32629",
        "transform": Affine(100, 0, 300000, 0, -100, 2750000),
    }
    with rasterio.open(path, "w", **profile, **extra) as ds:
        ds.write(data, 1)
    return path


@pytest.fixture
def class_map(tmp_path):
    classes = np.zeros((24, 40), np.uint8)
    classes[5:15, 10:30] = 1
    classes[18:, :] = 2
    classes[0, 0] = 255  # nodata
    path = _raster(tmp_path / "classmap.tif", classes, nodata=255)
    with rasterio.open(path, "r+") as ds:
        ds.write_colormap(1, {0: (31, 119, 180, 255), 1: (255, 127, 14, 255), 2: (44, 160, 44, 255)})
        ds.update_tags(A2MAE_CLASS_NAMES=json.dumps(["clear", "cloud_or_shadow", "cirrus"]))
    return path


def test_the_map_renderer_draws_scene_and_classes_at_the_figure_size(pictures, class_map, tmp_path):
    rng = np.random.default_rng(0)
    rgb = [
        _raster(tmp_path / f"B0{b}.tif", rng.integers(0, 4000, (12, 20), dtype=np.uint16)) for b in (4, 3, 2)
    ]
    dst = pictures.render_class_map(class_map, tmp_path / "out" / "map.png", rgb, title="tiny")
    (w, h), dpi = pictures.MAP_FIGSIZE, pictures.MAP_DPI
    with Image.open(dst) as im:
        assert im.format == "PNG" and im.size == (round(w * dpi), round(h * dpi))
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    colours = {tuple(p) for p in pixels}
    assert {(31, 119, 180), (255, 127, 14), (44, 160, 44)} <= colours  # the table's colours are drawn
    assert not list(dst.parent.glob(".*.tmp"))  # written atomically


def test_the_class_names_come_from_the_tag_or_are_numbered(pictures, class_map, tmp_path):
    classes, names, colours = pictures.read_class_map(class_map)
    assert classes.shape == (24, 40) and names == ["clear", "cloud_or_shadow", "cirrus"]
    assert colours[1] == (255, 127, 14, 255)
    bare = _raster(tmp_path / "bare.tif", np.array([[0, 3], [255, 1]], np.uint8), nodata=255)
    _, names, colours = pictures.read_class_map(bare)
    assert names == ["class 0", "class 1", "class 2", "class 3"] and len(colours) == 4
    dst = pictures.render_class_map(bare, tmp_path / "bare.png")  # the map alone
    with Image.open(dst) as im:
        assert im.size == (1000, 500)


def test_a_large_png_is_quantised_below_the_limit(pictures, tmp_path):
    noisy = np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    path = tmp_path / "big.png"
    Image.fromarray(noisy).save(path)
    before = path.stat().st_size
    after = pictures.shrink_png(path, before - 1)
    assert after < before
    with Image.open(path) as im:
        assert im.mode == "P" and im.size == (400, 300)
    assert pictures.shrink_png(path, 10**9) == after  # small enough: left as it is


def test_a_missing_browser_is_one_line_naming_the_bootstrap(pictures, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(pictures, "CHROMIUM", str(tmp_path / "no-chromium"))
    assert pictures.main(["--demo-output", str(tmp_path / "demo"), "--out", str(tmp_path / "img")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "chromium" in err and "scripts/bootstrap-browser.sh" in err
    assert not (tmp_path / "demo").exists() and not (tmp_path / "img").exists()  # nothing started


def test_the_readme_shows_exactly_the_committed_pictures(pictures):
    readme = (REPO / "README.md").read_text()
    shown = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", readme)
    assert shown, "the README shows no picture"
    for ref in shown:
        assert ref.startswith("docs/img/") and ref.endswith(".png"), ref
        assert (REPO / ref).is_file(), f"{ref} is not committed"
    assert sorted(Path(r).name for r in shown) == sorted(pictures.PICTURES.values())
    sizes = [(IMG / name).stat().st_size for name in pictures.PICTURES.values()]
    assert max(sizes) <= 300 * 1024 and sum(sizes) <= 1536 * 1024
    assert "scripts/pictures.py" in readme
