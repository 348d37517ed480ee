"""OSCD layout (Onera Satellite Change Detection), as the dataset ships it.

```
DATA/Onera Satellite Change Detection dataset - Images/
  train.txt  test.txt                     comma-separated city names (the dataset's own split, kept)
  <city>/imgs_1/*_B01.tif ... *_B12.tif   one uint16 GeoTIFF per band, native 10/20/60 m
  <city>/imgs_2/...                       (imgs_1_rect / imgs_2_rect, the registered crops, win)
  <city>/dates.txt                        date_1: YYYYMMDD / date_2: YYYYMMDD
DATA/Onera Satellite Change Detection dataset - Train Labels/<city>/cm/<city>-cm.tif
DATA/Onera Satellite Change Detection dataset - Test Labels/<city>/cm/<city>-cm.tif
```

Change maps hold 1 unchanged / 2 changed (OSCD's GeoTIFFs) or 0 / non-zero. Bands at 20 and 60 m are
resampled (bilinear) to the 10 m grid of B02. torchgeo's ``OSCD`` reads only the ``*_rect`` folders and
checks the dataset's zip files, so this layout (the unregistered crops of ``../shared/data``) is read here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from a2mae.benchmark.data import IGNORE, TEST, BenchData, BenchmarkError, Chip, SceneImage, cut_scene
from a2mae.benchmark.layouts.common import open_raster, read_label

IMAGES = "Onera Satellite Change Detection dataset - Images"
LABELS = (
    "Onera Satellite Change Detection dataset - Train Labels",
    "Onera Satellite Change Detection dataset - Test Labels",
)
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")


def images_root(root: Path) -> Path | None:
    """The ``... - Images`` folder under (or at) ``root``."""
    for cand in (root / IMAGES, root):
        if (cand / "train.txt").is_file() and (cand / "test.txt").is_file():
            return cand
    return None


def _cities(path: Path) -> list[str]:
    return [c.strip() for c in path.read_text().replace("\n", ",").split(",") if c.strip()]


def _band_files(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in folder.glob("*.tif"):
        stem = p.stem.upper()
        for b in S2_BANDS:
            if stem.endswith("_" + b) or stem == b:
                out[b] = p
    return out


def _read_date(city_dir: Path, i: int) -> datetime | None:
    f = city_dir / "dates.txt"
    if not f.is_file():
        return None
    for line in f.read_text().splitlines():
        key, _, val = line.partition(":")
        if key.strip() == f"date_{i}":
            try:
                return datetime.strptime(val.strip(), "%Y%m%d").replace(tzinfo=UTC)
            except ValueError:
                return None
    return None


def _read_stack(folder: Path, bands: tuple[str, ...]) -> tuple[np.ndarray, object, object]:
    """Bands resampled to the B02 grid: ``[C, H, W]`` float32, transform, crs."""
    from rasterio.enums import Resampling

    files = _band_files(folder)
    missing = [b for b in bands if b not in files]
    if missing:
        raise BenchmarkError(
            f"{folder}: no GeoTIFF for bands {missing} (expected <name>_B01.tif ... _B12.tif)"
        )
    with open_raster(files["B02"]) as ref:
        shape, transform, crs = (ref.height, ref.width), ref.transform, ref.crs
    out = np.empty((len(bands), *shape), np.float32)
    for i, b in enumerate(bands):
        with open_raster(files[b]) as src:
            out[i] = src.read(1, out_shape=shape, resampling=Resampling.bilinear).astype(np.float32)
    return out, transform, crs


def _label_of(root: Path, city: str) -> Path | None:
    for lab in LABELS:
        for cand in (
            root / lab / city / "cm" / f"{city}-cm.tif",
            root.parent / lab / city / "cm" / f"{city}-cm.tif",
        ):
            if cand.is_file():
                return cand
    return None


def _city_chips(img_root: Path, city: str, bands: tuple[str, ...], chip: int, fold: int) -> list[Chip]:
    d = img_root / city
    sub = [("imgs_1_rect", "imgs_2_rect") if (d / "imgs_1_rect").is_dir() else ("imgs_1", "imgs_2")][0]
    (a, transform, crs), (b, _, _) = (_read_stack(d / s, bands) for s in sub)
    lab_path = _label_of(img_root.parent, city)
    if lab_path is None:
        raise BenchmarkError(
            f"{img_root.parent}: no change map for {city}; expected "
            f"'{LABELS[0]}/{city}/cm/{city}-cm.tif' (or '{LABELS[1]}/...')"
        )
    raw = read_label(lab_path, a.shape[1:])
    if raw.max() == 2 and raw[raw != IGNORE].min() >= 1:
        lab = np.where(raw == IGNORE, IGNORE, (raw == 2).astype(np.int64))
    else:
        lab = np.where(raw == IGNORE, IGNORE, (raw > 0).astype(np.int64))
    gsd = 10.0
    scene = [
        SceneImage(a, "S2", bands, gsd, _read_date(d, 1)),
        SceneImage(b, "S2", bands, gsd, _read_date(d, 2)),
    ]
    return cut_scene(scene, lab, transform, crs, chip, group=city, name=city, fixed_fold=fold)


def read_oscd(root: Path, bands: tuple[str, ...] | None, chip: int) -> BenchData:
    """Read the OSCD cities of ``train.txt`` (train/val) and ``test.txt`` (test) that have change maps.

    Raises:
        BenchmarkError: Not the layout, missing band files or change maps, labels off the image grid.
    """
    img_root = images_root(root)
    if img_root is None:
        raise BenchmarkError(f"{root}: not an OSCD layout; expected '{IMAGES}/train.txt' and 'test.txt'")
    use = tuple(bands) if bands else tuple(b for b in S2_BANDS if b not in ("B01", "B09", "B10"))
    chips: list[Chip] = []
    for split_file, fold in (("train.txt", -1), ("test.txt", TEST)):
        for city in _cities(img_root / split_file):
            if not (img_root / city).is_dir():
                raise BenchmarkError(
                    f"{img_root / split_file}: city {city!r} has no folder {img_root / city}"
                )
            chips += _city_chips(img_root, city, use, chip, fold)
    notes = [f"bands {', '.join(use)} resampled to the 10 m grid of B02 (bilinear)"]
    return BenchData("change", ["unchanged", "changed"], chips, "oscd", root, "S2", use, notes)
