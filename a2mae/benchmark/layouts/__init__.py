"""Layout readers: one module per family of layouts, and :func:`read_data` choosing one (``auto``)."""

from __future__ import annotations

from pathlib import Path

from a2mae import tasks
from a2mae.benchmark.data import BenchData, BenchmarkError
from a2mae.benchmark.layouts.common import BandChoice
from a2mae.config import BenchmarkConfig
from a2mae.tasks import classification

FORMATS = ("eurosat", "bigearthnet", "oscd", "change-pair", "vector", "finetune")


def detect(root: Path) -> str | None:
    """The layout of ``root`` (see docs/benchmark.md), or None."""
    from a2mae.benchmark.layouts import change_pair, folders, oscd, vector

    if not root.is_dir():
        return None
    if oscd.images_root(root) is not None:
        return "oscd"
    if change_pair.sites(root):
        return "change-pair"
    if folders.finetune_task(root) is not None:
        return "finetune"
    if any(root.glob("*/*_labels_metadata.json")):
        return "bigearthnet"
    if vector.vector_files(root):
        return "vector"
    subs = [d for d in root.iterdir() if d.is_dir()]
    if len(subs) >= 2 and all(any(d.glob("*.tif")) for d in subs):
        return "eurosat"
    return None


def read_data(root: Path, cfg: BenchmarkConfig, fmt: str | None = None) -> BenchData:
    """Read ``root`` in layout ``fmt`` (``benchmark.format``; ``auto`` detects it).

    Raises:
        BenchmarkError: Missing folder, undetectable or unreadable layout (the message names the files
            expected).
    """
    from a2mae.benchmark.layouts import change_pair, folders, oscd, vector

    fmt = fmt or cfg.format
    if not root.exists():
        raise BenchmarkError(f"{root}: no such file or folder")
    if fmt == "auto":
        found = detect(root)
        if found is None:
            raise BenchmarkError(
                f"{root}: layout not recognised; expected one of: OSCD ('... - Images/train.txt'), "
                "change pairs (two rasters + reference.tif), finetune (labels.csv or <split>/images+masks), "
                "BigEarthNet v1 "
                "(<patch>/*_labels_metadata.json), vector (*.tif + *.geojson/.gpkg/.parquet), EuroSAT "
                "(<class>/*.tif); or set --format"
            )
        fmt = found
    choice = BandChoice.of(cfg)
    chip = cfg.chip_size
    if fmt == "oscd":
        return oscd.read_oscd(root, choice.bands, chip)
    if fmt == "change-pair":
        return change_pair.read_change_pairs(root, choice, chip)
    if fmt == "vector":
        return vector.read_vector(root, choice, chip)
    if fmt == "finetune":
        return folders.read_finetune(root, choice)
    if fmt == "bigearthnet":
        if tasks.find(folders.finetune_task(root) or "") is classification.TASK:
            return folders.read_finetune(root, choice)
        return folders.read_bigearthnet_v1(root)
    if fmt == "eurosat":
        return folders.read_eurosat(root, choice)
    raise BenchmarkError(f"benchmark.format: unknown layout {fmt!r} (known: auto, {', '.join(FORMATS)})")
