"""Chip-folder layouts: EuroSAT-style class folders, BigEarthNet v1 patches, and ``a2mae finetune``'s layouts.

* **eurosat** -- ``DATA/<class>/*.tif`` multispectral GeoTIFFs, read with torchgeo's
  ``NonGeoClassificationDataset`` (the class-folder reader torchgeo's ``EuroSAT`` builds on; ``EuroSAT``
  itself insists on its split files and download folder).
* **bigearthnet** -- v1 patch folders ``DATA/<patch>/<patch>_B01.tif ... _B12.tif`` with
  ``<patch>_labels_metadata.json`` (``labels``), bands resampled to the 10 m grid; the v2 form of the
  bundled patches (``labels.csv``) is the finetune classification layout. torchgeo's ``BigEarthNet``
  requires its split CSVs and the full archive folder names, so v1 folders are read here.
* **finetune** -- what ``a2mae finetune`` reads (docs/finetune.md), through its own dataset classes.

The dataset's own splits of these layouts are not used: chips are re-split by spatial blocks (chips
without a georeference are each their own block).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from a2mae import tasks
from a2mae.benchmark.data import BenchData, BenchmarkError, Chip, metres_box
from a2mae.benchmark.layouts.common import BandChoice, open_raster
from a2mae.finetune.chips import BandSpec as FtBandSpec
from a2mae.tasks.chips import DatasetError, _corners_wgs84, _gsd_m, read_chip
from a2mae.types import ImageMeta

S2_10M = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")


def _bounds(path: Path) -> tuple[tuple[float, float, float, float] | None, str]:
    with open_raster(path) as src:
        if src.crs is None or src.transform.is_identity:
            return None, path.stem
        b = src.bounds
        return tuple(metres_box(src.crs, b.left, b.bottom, b.right, b.top)), str(src.crs)  # type: ignore[return-value]


def _check_size(chips: list[Chip], root: Path) -> None:
    sizes = {c.pixels.shape[-2:] for c in chips}
    if len(sizes) > 1:
        raise BenchmarkError(f"{root}: chips of different sizes {sorted(sizes)}; cut them to one size")


def read_eurosat(root: Path, choice: BandChoice) -> BenchData:
    """Class folders of GeoTIFFs (torchgeo ``NonGeoClassificationDataset``)."""
    classes = (
        sorted(d.name for d in root.iterdir() if d.is_dir() and any(d.glob("*.tif"))) if root.is_dir() else []
    )
    if len(classes) < 2:
        raise BenchmarkError(
            f"{root}: not a class-folder layout; expected <class>/*.tif for 2 or more classes"
        )
    from torchgeo.datasets import NonGeoClassificationDataset
    from torchgeo.datasets.utils import rasterio_loader

    ds = NonGeoClassificationDataset(root=str(root), loader=rasterio_loader)  # integer DNs, as EuroSAT ships
    spec = FtBandSpec(choice.sensor or "S2", choice.bands)
    chips = []
    for (path, _label), _ in zip(ds.imgs, range(len(ds)), strict=False):
        item = ds[_]
        p = Path(path)
        try:
            _, meta = read_chip(p, spec)
        except DatasetError as err:
            raise BenchmarkError(str(err)) from None
        bounds, group = _bounds(p)
        px = item["image"].numpy().astype(np.float32)[None]
        chips.append(Chip(px, (meta,), np.asarray(int(item["label"])), bounds, group, name=str(p)))
    _check_size(chips, root)
    return BenchData(
        "single-label",
        list(ds.classes),
        chips,
        "eurosat",
        root,
        chips[0].metas[0].sensor,
        chips[0].metas[0].bands,
    )


def read_bigearthnet_v1(root: Path) -> BenchData:
    """BigEarthNet v1 patch folders with ``*_labels_metadata.json``."""
    from rasterio.enums import Resampling

    patches = sorted(p.parent for p in root.glob("*/*_labels_metadata.json"))
    if not patches:
        raise BenchmarkError(
            f"{root}: not a BigEarthNet v1 layout; expected <patch>/<patch>_labels_metadata.json"
        )
    labels = [
        json.loads(next(p.glob("*_labels_metadata.json")).read_text()).get("labels", []) for p in patches
    ]
    classes = sorted({c for ls in labels for c in ls})
    chips = []
    for p, ls in zip(patches, labels, strict=True):
        files = {b: next(iter(p.glob(f"*_{b}.tif")), None) for b in S2_10M}
        if None in files.values():
            raise BenchmarkError(
                f"{p}: missing band files {[b for b, f in files.items() if f is None]} (*_B02.tif ...)"
            )
        with open_raster(files["B02"]) as ref:  # type: ignore[arg-type]
            shape, gsd, corners = (ref.height, ref.width), _gsd_m(ref), _corners_wgs84(ref)
        px = np.empty((len(S2_10M), *shape), np.float32)
        for i, b in enumerate(S2_10M):
            with open_raster(files[b]) as src:  # type: ignore[arg-type]
                px[i] = src.read(1, out_shape=shape, resampling=Resampling.bilinear)
        y = np.zeros(len(classes), np.int64)
        y[[classes.index(c) for c in ls]] = 1
        meta = ImageMeta(sensor="S2", bands=S2_10M, gsd_m=gsd, corners=corners, image_id=p.name)
        bounds, group = _bounds(files["B02"])  # type: ignore[arg-type]
        chips.append(Chip(px[None], (meta,), y, bounds, group, name=p.name))
    _check_size(chips, root)
    return BenchData("multi-label", classes, chips, "bigearthnet", root, "S2", S2_10M)


def finetune_task(root: Path) -> str | None:
    """The ``a2mae finetune`` task whose layout ``root`` holds, or None."""
    if (root / "labels.csv").is_file():
        return "classification"
    for split in ("train", "test"):
        d = root / split
        if (d / "images").is_dir() and (d / "masks").is_dir():
            return "segmentation"
        if any((d / a).is_dir() for a in ("A", "before", "imgs_1", "t1")):
            return "change_detection"
    return None


def read_finetune(root: Path, choice: BandChoice, label_mode: str = "auto") -> BenchData:
    """All splits of a finetune layout as one pool (re-split spatially)."""
    from a2mae.finetune.chips import EmptySplitError
    from a2mae.finetune.datasets import open_dataset

    task = finetune_task(root)
    if task is None:
        raise BenchmarkError(
            f"{root}: not a finetune layout; expected labels.csv, <split>/images + <split>/masks, or "
            "<split>/A + B + label"
        )
    chips: list[Chip] = []
    info = None
    for split in ("train", "val", "test"):
        try:
            ds = open_dataset(
                task, root, split, sensor=choice.sensor or "S2", bands=choice.bands, label_mode=label_mode
            )
        except EmptySplitError:
            continue
        except DatasetError as err:
            raise BenchmarkError(str(err)) from None
        info = info or ds.info
        for i in range(len(ds)):
            s = ds[i]
            first = ds.items[i].images[0]
            bounds, group = _bounds(first)
            px = s.pixels.numpy()
            px = px if tasks.get(task).paired else px[None]
            chips.append(
                Chip(
                    px.astype(np.float32),
                    s.metas,
                    s.target.numpy().astype(np.int64),
                    bounds,
                    group,
                    name=s.name,
                )
            )
    if info is None or not chips:
        raise BenchmarkError(f"{root}: no sample in any split")
    kind = {"segmentation": "segmentation", "change_detection": "change"}.get(
        task, "multi-label" if info.multilabel else "single-label"
    )
    classes = ["unchanged", "changed"] if kind == "change" else list(info.classes)
    return BenchData(kind, classes, chips, "finetune", root, info.sensor, info.bands)  # type: ignore[arg-type]
