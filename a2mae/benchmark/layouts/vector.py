"""Vector layout: rasters plus GeoJSON / GeoPackage / GeoParquet labels; chips are cut around the labels.

```
DATA/*.tif                                 the rasters (one grid each; any CRS)
DATA/labels.geojson | .gpkg | .parquet     one file with a class column (class, label, or benchmark.bands...)
  -- or --
DATA/labels/<class>.geojson ...            one file per class: the file name is the class
```

Polygons label the pixels whose centre they contain, points the pixel they fall in. The labels are
burnt into a label raster per image (``rasterio.features.rasterize``, the labels reprojected to the
raster's CRS with geopandas), then the raster is cut into chips on a grid and chips without any labelled
pixel are dropped, so the chips lie around the labels. A label that falls outside every raster is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from a2mae.benchmark.data import IGNORE, BenchData, BenchmarkError, Chip, SceneImage, cut_scene
from a2mae.benchmark.layouts.common import BandChoice, image_files, read_image, when_of

VECTOR_EXT = (".geojson", ".json", ".gpkg", ".parquet", ".geoparquet")
CLASS_COLUMNS = ("class", "label", "class_name", "classname", "category")


def vector_files(root: Path) -> list[Path]:
    """Label files in ``root`` and ``root/labels``."""
    out: list[Path] = []
    for d in (root, root / "labels"):
        if d.is_dir():
            out += sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in VECTOR_EXT)
    return out


def _read_vector(path: Path):  # type: ignore[no-untyped-def]
    import geopandas as gpd

    try:
        if path.suffix.lower() in (".parquet", ".geoparquet"):
            return gpd.read_parquet(path)
        return gpd.read_file(path)
    except Exception as err:  # pyogrio/pyarrow raise several types for unreadable files
        raise BenchmarkError(
            f"{path}: cannot read as vector labels ({' '.join(str(err).split())[:120]})"
        ) from None


def read_labels(files: list[Path]):  # type: ignore[no-untyped-def]
    """One GeoDataFrame with a ``_class`` column (from a class column, or the file name)."""
    import pandas as pd

    frames = []
    for f in files:
        gdf = _read_vector(f)
        if gdf.crs is None:
            raise BenchmarkError(f"{f}: the labels have no CRS; write them with one (e.g. EPSG:4326)")
        col = next((c for c in gdf.columns if c.lower() in CLASS_COLUMNS), None)
        gdf = gdf.to_crs("EPSG:4326")
        gdf["_class"] = gdf[col].astype(str) if col is not None else f.stem
        frames.append(gdf[["_class", "geometry"]])
    return pd.concat(frames, ignore_index=True)


def _burn(labels, classes: list[str], info: dict[str, object]) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """Label raster of one image and which label rows fell inside it."""
    from rasterio.features import rasterize

    shape = info["shape"]
    local = labels.to_crs(info["crs"])
    out = np.full(shape, IGNORE, np.int64)  # type: ignore[call-overload]
    hit = np.zeros(len(local), bool)
    for i, (cls, geom) in enumerate(zip(local["_class"], local.geometry, strict=True)):
        if geom is None or geom.is_empty:
            continue
        one = rasterize(
            [(geom, 1)],
            out_shape=shape,
            transform=info["transform"],
            fill=0,
            dtype="uint8",
            all_touched=geom.geom_type in ("Point", "MultiPoint"),
        )
        if one.any():
            out[one > 0] = classes.index(cls)
            hit[i] = True
    return out, hit


def read_vector(root: Path, choice: BandChoice, chip: int) -> BenchData:
    """Read the rasters and labels of a vector layout.

    Raises:
        BenchmarkError: No raster or no label file, labels without CRS, labels outside every raster.
    """
    rasters = image_files(root)
    files = vector_files(root)
    if not rasters or not files:
        raise BenchmarkError(
            f"{root}: not a vector layout; expected *.tif rasters and labels as GeoJSON / GeoPackage / "
            "GeoParquet (a class column, or labels/<class>.geojson)"
        )
    labels = read_labels(files)
    classes = sorted(set(labels["_class"]))
    if len(classes) < 2:
        raise BenchmarkError(f"{files[0]}: labels of {len(classes)} class; need 2 or more")
    chips: list[Chip] = []
    inside = np.zeros(len(labels), bool)
    sensor, bands = "", ()
    for r in rasters:
        px, info = read_image(r, choice, "S2")
        lab, hit = _burn(labels, classes, info)
        inside |= hit
        scene = [SceneImage(px, str(info["sensor"]), info["bands"], info["gsd_m"], when_of(info))]  # type: ignore[arg-type]
        chips += cut_scene(scene, lab, info["transform"], info["crs"], chip, group=r.stem, name=r.name)
        sensor, bands = str(info["sensor"]), info["bands"]  # type: ignore[assignment]
    if not inside.all():
        n = int((~inside).sum())
        raise BenchmarkError(
            f"{files[0].parent}: {n} of {len(labels)} labels lie outside every raster (labels outside the "
            "rasters); drop them or add the rasters they fall on"
        )
    if not chips:
        raise BenchmarkError(f"{root}: no {chip}x{chip} px chip holds a label; lower benchmark.chip_size")
    notes = [f"labels from {', '.join(f.name for f in files)} burnt into the rasters' grids"]
    return BenchData("segmentation", classes, chips, "vector", root, sensor, bands, notes)
