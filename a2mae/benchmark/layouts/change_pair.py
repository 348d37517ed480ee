"""Change-pair layout: two co-registered rasters of one place plus a reference raster.

```
DATA/                          or DATA/<site>/... (one such folder per site)
  <date 1 raster>  <date 2 raster>     GeoTIFF or ENVI (binary + .hdr), sorted by name = date order
  reference.tif                        1 changed, 0 unchanged, nodata (or 255) not labelled
```

As in the Landsat Taizhou / Nanjing sets. No library reads this layout (torchgeo's change datasets each
fix one dataset's file names), so it is read here with rasterio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from a2mae.benchmark.data import IGNORE, BenchData, BenchmarkError, Chip, SceneImage, cut_scene
from a2mae.benchmark.layouts.common import BandChoice, image_files, read_image, read_label, when_of

REFERENCE_NAMES = ("reference.tif", "reference.tiff", "label.tif", "cm.tif")
EXPECTED = "two image rasters (GeoTIFF or ENVI) and reference.tif (1 changed, 0 unchanged, nodata unlabelled)"


def reference_of(folder: Path) -> Path | None:
    """The reference raster of a site folder, or None."""
    return next((folder / n for n in REFERENCE_NAMES if (folder / n).is_file()), None)


def sites(root: Path) -> list[Path]:
    """Site folders under ``root`` (``root`` itself when it is one)."""
    if reference_of(root) is not None:
        return [root]
    return (
        sorted(d for d in root.iterdir() if d.is_dir() and reference_of(d) is not None)
        if root.is_dir()
        else []
    )


def _site(folder: Path, choice: BandChoice, chip: int) -> tuple[list[Chip], str, tuple[str, ...]]:
    ref = reference_of(folder)
    assert ref is not None
    images = [p for p in image_files(folder, exclude=REFERENCE_NAMES)]
    if len(images) != 2:
        raise BenchmarkError(f"{folder}: found {len(images)} image rasters, expected {EXPECTED}")
    read = [read_image(p, choice, "S2") for p in images]
    (a, ia), (b, ib) = read
    if a.shape != b.shape or ia["transform"] != ib["transform"]:
        raise BenchmarkError(
            f"{folder}: {images[0].name} and {images[1].name} are not on one grid; co-register them"
        )
    label = read_label(ref, tuple(a.shape[1:]))
    label = np.where(label == IGNORE, IGNORE, (label > 0).astype(np.int64))
    if not (label != IGNORE).any():
        raise BenchmarkError(f"{ref}: no labelled pixel (1 changed, 0 unchanged)")
    scene = [
        SceneImage(px, str(info["sensor"]), info["bands"], info["gsd_m"], when_of(info))  # type: ignore[arg-type]
        for px, info in read
    ]
    chips = cut_scene(scene, label, ia["transform"], ia["crs"], chip, group=folder.name, name=folder.name)
    return chips, str(ia["sensor"]), ia["bands"]  # type: ignore[return-value]


def read_change_pairs(root: Path, choice: BandChoice, chip: int) -> BenchData:
    """Read every site under ``root``.

    Raises:
        BenchmarkError: No site folder, not two images, images off one grid, labels off the grid.
    """
    found = sites(root)
    if not found:
        raise BenchmarkError(
            f"{root}: not a change-pair layout; expected {EXPECTED} (or site folders of them)"
        )
    chips: list[Chip] = []
    sensor, bands = "", tuple[str, ...]()
    for folder in found:
        c, sensor, b = _site(folder, choice, chip)
        if bands and b != bands:
            raise BenchmarkError(f"{folder}: bands {list(b)} differ from the other sites' {list(bands)}")
        bands = b
        chips += c
    return BenchData("change", ["unchanged", "changed"], chips, "change-pair", root, sensor, bands)
