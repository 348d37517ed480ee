"""What every downstream dataset shares: samples, batches, the validated split and the layout helpers.

The layouts themselves (which files, which labels) belong to the tasks (:mod:`a2mae.tasks`); each
task's ``open`` builds a :class:`DownstreamDataset` with :class:`Item` rows and decodes their targets
(:meth:`a2mae.tasks.base.Task.target`). ``docs/finetune.md`` has examples of every layout.

Pixels are returned in file units (float32); the fine-tuned model normalises them itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from a2mae.tasks.chips import BandSpec, DatasetError, EmptySplitError, raster_size, read_chip, read_mask
from a2mae.types import ImageMeta

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}


def canonical_split(name: str) -> str:
    """``validation`` -> ``val`` etc.; unknown names pass through lower-cased."""
    low = name.strip().lower()
    return _SPLIT_ALIASES.get(low, low)


@dataclass
class Sample:
    """One example.

    Attributes:
        pixels: ``[C, H, W]`` float32 (``[2, C, H, W]`` before/after for change detection), file units.
        metas: Metadata of the image(s), one per image.
        target: int64 scalar class (single-label), ``[K]`` float32 multi-hot (multi-label), or ``[H, W]``
            int64 (segmentation classes; change detection 0/1), ``ignore_index`` where excluded.
        name: Identifier (file stem).
    """

    pixels: torch.Tensor
    metas: tuple[ImageMeta, ...]
    target: torch.Tensor
    name: str


@dataclass
class Batch:
    """A batch of :class:`Sample` (all chips of a dataset share size and bands).

    Attributes:
        pixels: ``[B, C, H, W]`` (``[B, 2, C, H, W]`` for change detection).
        metas: Per sample, the metadata of its image(s).
        target: ``[B]``, ``[B, K]`` or ``[B, H, W]``.
        names: Sample names.
    """

    pixels: torch.Tensor
    metas: list[tuple[ImageMeta, ...]]
    target: torch.Tensor
    names: list[str] = field(default_factory=list)


def collate(samples: list[Sample]) -> Batch:
    """Stack samples into a :class:`Batch`."""
    return Batch(
        pixels=torch.stack([s.pixels for s in samples]),
        metas=[s.metas for s in samples],
        target=torch.stack([s.target for s in samples]),
        names=[s.name for s in samples],
    )


@dataclass(frozen=True)
class DatasetInfo:
    """What a model trained on a dataset must agree with.

    Attributes:
        task: The task.
        classes: Class names, in index order.
        multilabel: Multi-label classification.
        sensor: Sensor id of the chips.
        bands: Band ids in channel order.
        size: ``(H, W)`` of every chip.
        gsd_m: GSD of the first chip (None when not georeferenced).
        ignore_index: Excluded mask value (segmentation).
    """

    task: str
    classes: tuple[str, ...]
    multilabel: bool
    sensor: str
    bands: tuple[str, ...]
    size: tuple[int, int]
    gsd_m: float | None
    ignore_index: int


@dataclass
class Item:
    """One row of a split: its image file(s), its target (a mask file, or class indices / values) and name."""

    images: tuple[Path, ...]
    target: Path | tuple[float, ...]
    name: str


class DownstreamDataset(Dataset[Sample]):
    """A validated split of a downstream dataset (see the module docstring for layouts)."""

    def __init__(
        self,
        root: Path,
        split: str,
        items: list[Item],
        info: DatasetInfo,
        target: Callable[[Item, DatasetInfo], torch.Tensor],
        extra: Sequence[str] = (),
    ) -> None:
        self.root = root
        self.split = split
        self.items = items
        self.info = info
        self.spec = BandSpec(info.sensor, info.bands)
        self._target = target  # the task's decoding of an item's target
        self._extra = tuple(extra)  # label rows hashed with the files (classification)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        it = self.items[i]
        pix, metas = [], []
        for p in it.images:
            arr, meta = read_chip(p, self.spec)
            if arr.shape[0] != len(self.info.bands) or arr.shape[1:] != self.info.size:
                raise DatasetError(
                    f"{p}: {arr.shape[0]} bands of {arr.shape[1]}x{arr.shape[2]} px; the dataset has "
                    f"{len(self.info.bands)} bands of {self.info.size[0]}x{self.info.size[1]} px"
                )
            pix.append(torch.from_numpy(arr))
            metas.append(meta)
        pixels = pix[0] if len(pix) == 1 else torch.stack(pix)
        target = self._target(it, self.info)
        return Sample(pixels=pixels, metas=tuple(metas), target=target, name=it.name)

    def files(self) -> list[Path]:
        """Every file of this split (images and masks), sorted."""
        out: set[Path] = set()
        for it in self.items:
            out.update(it.images)
            if isinstance(it.target, Path):
                out.add(it.target)
        return sorted(out)

    def content_hash(self) -> str:
        """sha256 over the split's file contents (by relative path) and label rows: the frozen split id."""
        h = hashlib.sha256()
        h.update(f"{self.info.task}|{self.split}|{','.join(self.info.classes)}\n".encode())
        for f in self.files():
            h.update(f.relative_to(self.root).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(f.read_bytes()).digest())
        for row in self._extra:
            h.update(row.encode() + b"\n")
        return h.hexdigest()


# --------------------------------------------------------------------------------------- helpers
def read_classes(root: Path) -> tuple[str, ...] | None:
    """Class names of ``classes.txt`` in ``root`` (one a line), None without the file.

    Raises:
        DatasetError: The file is empty or names a class twice.
    """
    f = root / "classes.txt"
    if not f.is_file():
        return None
    names = tuple(line.strip() for line in f.read_text().splitlines() if line.strip())
    if not names:
        raise DatasetError(f"{f}: no class names; write one class name a line")
    if len(set(names)) != len(names):
        raise DatasetError(f"{f}: duplicate class names")
    return names


def check_root(root: Path) -> Path:
    """The dataset folder, which must exist.

    Raises:
        DatasetError: It does not.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"{root}: dataset folder not found (pass --data FOLDER; layouts in docs/finetune.md)"
        )
    return root


def find_image(base: Path, stem_or_rel: str) -> Path | None:
    """The image ``base/stem_or_rel``, with or without one of :data:`IMAGE_SUFFIXES` (None: not found)."""
    p = base / stem_or_rel
    if p.is_file():
        return p
    for suf in IMAGE_SUFFIXES:
        q = base / f"{stem_or_rel}{suf}"
        if q.is_file():
            return q
    return None


def check_sizes(paths: Sequence[Path], what: str) -> tuple[int, int]:
    """The one ``(H, W)`` of every file of ``paths``.

    Raises:
        DatasetError: Two sizes differ (the message names the file and ``what`` they are).
    """
    size0 = raster_size(paths[0])
    for p in paths[1:]:
        s = raster_size(p)
        if s != size0:
            raise DatasetError(
                f"{p}: {s[0]}x{s[1]} px but {paths[0].name} is {size0[0]}x{size0[1]}; all {what} of a "
                "dataset must have one size (crop or resample them)"
            )
    return size0


def first_meta(path: Path, spec: BandSpec) -> ImageMeta:
    """Metadata (sensor, bands, GSD, corners) of one chip."""
    _, meta = read_chip(path, spec)
    return meta


# ---------------------------------------------------------------------- folder layouts (per split)
def split_dir(root: Path, split: str) -> Path:
    """The folder of ``split`` under ``root`` (any alias of its name, e.g. ``validation/``).

    Raises:
        EmptySplitError: No such folder.
    """
    for name in [split, *[k for k, v in _SPLIT_ALIASES.items() if v == split]]:
        d = root / name
        if d.is_dir():
            return d
    have = sorted(p.name for p in root.iterdir() if p.is_dir())
    raise EmptySplitError(
        f"{root}: split {split!r} is empty (no folder {split}/; folders: {', '.join(have) or 'none'})"
    )


def images_in(folder: Path) -> dict[str, Path]:
    """The images of ``folder`` by file stem (empty when it does not exist)."""
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def pair_up(folders: Sequence[Path], sdir: Path) -> list[tuple[Path, ...]]:
    """Files of the same name across ``folders`` (e.g. images/ and masks/ of the split folder ``sdir``).

    Raises:
        EmptySplitError: The first folder has no image. DatasetError: A file has no partner.
    """
    found = [images_in(d) for d in folders]
    if not found[0]:
        raise EmptySplitError(f"{folders[0]}: split {sdir.name!r} is empty (no .tif/.png images)")
    for d, names in zip(folders[1:], found[1:], strict=True):
        missing = sorted(set(found[0]) - set(names))
        if missing:
            raise DatasetError(f"{folders[0] / missing[0]}.*: no matching file in {d}/ (same name expected)")
        extra = sorted(set(names) - set(found[0]))
        if extra:
            raise DatasetError(f"{names[extra[0]]}: no matching image in {folders[0]}/ (same name expected)")
    return [tuple(f[name] for f in found) for name in found[0]]


def check_pair_sizes(groups: list[tuple[Path, ...]]) -> tuple[int, int]:
    """The one ``(H, W)`` of grouped files (image and mask, before and after), checked per group and across.

    Raises:
        DatasetError: Two sizes differ.
    """
    for g in groups:
        sizes = [raster_size(p) for p in g]
        for p, s in zip(g[1:], sizes[1:], strict=True):
            if s != sizes[0]:
                raise DatasetError(
                    f"{p}: {s[0]}x{s[1]} px but {g[0]} is {sizes[0][0]}x{sizes[0][1]}; image and mask "
                    "(and before/after) must have the same size"
                )
    return check_sizes([g[0] for g in groups], "images")


def mask_values(paths: Sequence[Path], ignore_index: int) -> dict[Path, np.ndarray]:
    """The distinct values of each mask, less ``ignore_index``."""
    out = {}
    for p in paths:
        v = np.unique(read_mask(p))
        out[p] = v[v != ignore_index]
    return out


def check_compatible(info: DatasetInfo, expected: DatasetInfo, where: str) -> None:
    """Check a dataset fits a model trained on ``expected`` (task, classes, sensor, bands).

    Raises:
        DatasetError: They differ; the message says how.
    """
    for key in ("task", "classes", "multilabel", "sensor", "bands"):
        a, b = getattr(info, key), getattr(expected, key)
        a, b = (tuple(a), tuple(b)) if isinstance(a, list | tuple) else (a, b)
        if a != b:
            raise DatasetError(f"{where}: dataset {key} {a!r} differs from the model's {b!r}")
