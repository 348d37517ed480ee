"""Datasets a user brings for fine-tuning, validated when opened.

Three layouts (``docs/finetune.md`` has examples):

* **classification** -- a folder of GeoTIFF chips and one labels CSV (``labels.csv``) with the columns
  ``image`` (path relative to the folder; also ``path``/``file``/``filename``), ``labels`` (class names
  separated by ``|``; also ``label``) and ``split`` (``train``/``val``/``test``; ``validation`` is
  ``val``). An optional ``classes.txt`` (one name a line) fixes the classes and their order; without
  it the classes are those of the train split. Single-label when every row has one label (or
  ``finetune.label_mode=single``), multi-label otherwise.
* **segmentation** -- ``<split>/images/<name>.tif`` with ``<split>/masks/<name>.tif`` (or ``.png``), the
  mask holding class indices; ``classes.txt`` names class 0, 1, ... (without it: 0..max of the train
  masks). ``finetune.ignore_index`` (255) marks pixels excluded from loss and metrics.
* **change_detection** -- OSCD/LEVIR-style ``<split>/A``, ``<split>/B`` and ``<split>/label`` (also
  ``before``/``after``/``mask`` or ``imgs_1``/``imgs_2``/``cm``) with matching file names; a label
  pixel is "change" when non-zero (LEVIR's 0/255 and 0/1 both work; no ignore value).

Pixels are returned in file units (float32); the fine-tuned model normalises them itself.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from a2mae.finetune.chips import BandSpec, DatasetError, EmptySplitError, raster_size, read_chip, read_mask
from a2mae.types import ImageMeta

TASKS: tuple[str, ...] = ("classification", "segmentation", "change_detection")
IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
_CD_FOLDERS = (
    ("A", "B", "label"),
    ("before", "after", "mask"),
    ("imgs_1", "imgs_2", "cm"),
    ("t1", "t2", "label"),
)
CHANGE_CLASSES = ("no_change", "change")


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
class _Item:
    images: tuple[Path, ...]
    target: Path | tuple[int, ...] | None
    name: str


class DownstreamDataset(Dataset[Sample]):
    """A validated split of a downstream dataset (see the module docstring for layouts)."""

    def __init__(
        self, root: Path, split: str, items: list[_Item], info: DatasetInfo, extra: Sequence[str] = ()
    ):
        self.root = root
        self.split = split
        self.items = items
        self.info = info
        self.spec = BandSpec(info.sensor, info.bands)
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
        info = self.info
        if info.task == "classification":
            idx = it.target
            assert isinstance(idx, tuple)
            if info.multilabel:
                target = torch.zeros(len(info.classes), dtype=torch.float32)
                target[list(idx)] = 1.0
            else:
                target = torch.tensor(idx[0], dtype=torch.long)
        else:
            assert isinstance(it.target, Path)
            mask = read_mask(it.target)
            if info.task == "change_detection":
                mask = (mask > 0).astype(np.int64)  # LEVIR 0/255, or 0/1: any non-zero is change
            target = torch.from_numpy(mask)
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
def _read_classes(root: Path) -> tuple[str, ...] | None:
    f = root / "classes.txt"
    if not f.is_file():
        return None
    names = tuple(line.strip() for line in f.read_text().splitlines() if line.strip())
    if not names:
        raise DatasetError(f"{f}: no class names; write one class name a line")
    if len(set(names)) != len(names):
        raise DatasetError(f"{f}: duplicate class names")
    return names


def _check_root(root: Path, task: str) -> Path:
    if task not in TASKS:
        raise DatasetError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"{root}: dataset folder not found (pass --data FOLDER; layouts in docs/finetune.md)"
        )
    return root


def _find_image(base: Path, stem_or_rel: str) -> Path | None:
    p = base / stem_or_rel
    if p.is_file():
        return p
    for suf in IMAGE_SUFFIXES:
        q = base / f"{stem_or_rel}{suf}"
        if q.is_file():
            return q
    return None


def _check_sizes(paths: Sequence[Path], what: str) -> tuple[int, int]:
    size0 = raster_size(paths[0])
    for p in paths[1:]:
        s = raster_size(p)
        if s != size0:
            raise DatasetError(
                f"{p}: {s[0]}x{s[1]} px but {paths[0].name} is {size0[0]}x{size0[1]}; all {what} of a "
                "dataset must have one size (crop or resample them)"
            )
    return size0


def _first_meta(path: Path, spec: BandSpec) -> ImageMeta:
    _, meta = read_chip(path, spec)
    return meta


# ---------------------------------------------------------------------------------- classification
def _labels_csv(root: Path) -> Path:
    f = root / "labels.csv"
    if f.is_file():
        return f
    found = sorted(root.glob("*.csv"))
    if len(found) == 1:
        return found[0]
    raise DatasetError(f"{root}: no labels.csv (columns image, labels, split); see docs/finetune.md")


def _pick(header: Sequence[str], names: Sequence[str], f: Path, what: str) -> str:
    low = {h.strip().lower(): h for h in header}
    for n in names:
        if n in low:
            return low[n]
    raise DatasetError(f"{f}: no {what} column (one of {', '.join(names)}); header is {list(header)}")


def _open_classification(root: Path, split: str, spec: BandSpec, label_mode: str) -> DownstreamDataset:
    f = _labels_csv(root)
    with f.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        c_img = _pick(header, ("image", "path", "file", "filename", "chip"), f, "image")
        c_lab = _pick(header, ("labels", "label"), f, "labels")
        c_split = _pick(header, ("split",), f, "split")
        rows = [(i + 2, r) for i, r in enumerate(reader)]  # line numbers (header is line 1)
    parsed = []
    for line, r in rows:
        labels = tuple(x.strip() for x in (r[c_lab] or "").split("|") if x.strip())
        parsed.append((line, (r[c_img] or "").strip(), labels, canonical_split(r[c_split] or "")))
    train = [p for p in parsed if p[3] == "train"]
    if not train:
        raise EmptySplitError(f"{f}: the train split is empty (column {c_split!r} has no 'train' row)")
    classes = _read_classes(root)
    source = "classes.txt" if classes else "the train split"
    if classes is None:
        classes = tuple(sorted({lab for p in train for lab in p[2]}))
    auto_multi = any(len(p[2]) != 1 for p in parsed)
    multilabel = auto_multi if label_mode == "auto" else label_mode == "multi"
    index = {c: i for i, c in enumerate(classes)}
    sel = [p for p in parsed if p[3] == split]
    if not sel:
        have = sorted({p[3] for p in parsed})
        raise EmptySplitError(f"{f}: split {split!r} is empty (splits present: {', '.join(have)})")
    items, extra = [], []
    for line, img, labels, _ in sel:
        if not img:
            raise DatasetError(f"{f}: line {line}: empty image path")
        path = _find_image(root, img)
        if path is None:
            raise DatasetError(f"{f}: line {line}: image {img!r} not found under {root}")
        unknown = [lab for lab in labels if lab not in index]
        if unknown:
            raise DatasetError(
                f"{f}: line {line}: unknown label {unknown[0]!r} (classes from {source}: "
                f"{', '.join(classes)})"
            )
        if not multilabel and len(labels) != 1:
            raise DatasetError(
                f"{f}: line {line}: {len(labels)} labels in single-label mode; use one label a row or "
                "finetune.label_mode=multi"
            )
        items.append(_Item((path,), tuple(index[lab] for lab in labels), path.stem))
        extra.append(f"{img}|{'|'.join(labels)}")
    size = _check_sizes([it.images[0] for it in items], "chips")
    meta = _first_meta(items[0].images[0], spec)
    info = DatasetInfo("classification", classes, multilabel, meta.sensor, meta.bands, size, meta.gsd_m, 255)
    return DownstreamDataset(root, split, items, info, extra)


# ------------------------------------------------------------------------------------ segmentation
def _split_dir(root: Path, split: str) -> Path:
    for name in [split, *[k for k, v in _SPLIT_ALIASES.items() if v == split]]:
        d = root / name
        if d.is_dir():
            return d
    have = sorted(p.name for p in root.iterdir() if p.is_dir())
    raise EmptySplitError(
        f"{root}: split {split!r} is empty (no folder {split}/; folders: {', '.join(have) or 'none'})"
    )


def _images_in(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def _pair_up(folders: Sequence[Path], split_dir: Path) -> list[tuple[Path, ...]]:
    found = [_images_in(d) for d in folders]
    if not found[0]:
        raise EmptySplitError(f"{folders[0]}: split {split_dir.name!r} is empty (no .tif/.png images)")
    for d, names in zip(folders[1:], found[1:], strict=True):
        missing = sorted(set(found[0]) - set(names))
        if missing:
            raise DatasetError(f"{folders[0] / missing[0]}.*: no matching file in {d}/ (same name expected)")
        extra = sorted(set(names) - set(found[0]))
        if extra:
            raise DatasetError(f"{names[extra[0]]}: no matching image in {folders[0]}/ (same name expected)")
    return [tuple(f[name] for f in found) for name in found[0]]


def _check_pair_sizes(groups: list[tuple[Path, ...]]) -> tuple[int, int]:
    for g in groups:
        sizes = [raster_size(p) for p in g]
        for p, s in zip(g[1:], sizes[1:], strict=True):
            if s != sizes[0]:
                raise DatasetError(
                    f"{p}: {s[0]}x{s[1]} px but {g[0]} is {sizes[0][0]}x{sizes[0][1]}; image and mask "
                    "(and before/after) must have the same size"
                )
    return _check_sizes([g[0] for g in groups], "images")


def _mask_values(paths: Sequence[Path], ignore_index: int) -> dict[Path, np.ndarray]:
    out = {}
    for p in paths:
        v = np.unique(read_mask(p))
        out[p] = v[v != ignore_index]
    return out


def _open_segmentation(root: Path, split: str, spec: BandSpec, ignore_index: int) -> DownstreamDataset:
    sdir = _split_dir(root, split)
    groups = _pair_up([sdir / "images", sdir / "masks"], sdir)
    size = _check_pair_sizes(groups)
    classes = _read_classes(root)
    if classes is None:
        tdir = _split_dir(root, "train")
        tmasks = [g[1] for g in _pair_up([tdir / "images", tdir / "masks"], tdir)]
        vmax = max((int(v.max()) for v in _mask_values(tmasks, ignore_index).values() if v.size), default=0)
        classes = tuple(str(i) for i in range(vmax + 1))
        source = "the train masks (no classes.txt)"
    else:
        source = "classes.txt"
    for p, vals in _mask_values([g[1] for g in groups], ignore_index).items():
        bad = vals[(vals < 0) | (vals >= len(classes))]
        if bad.size:
            raise DatasetError(
                f"{p}: mask value {int(bad[0])} is not a class (0..{len(classes) - 1} from {source}) nor "
                f"finetune.ignore_index {ignore_index}"
            )
    items = [_Item((g[0],), g[1], g[0].stem) for g in groups]
    meta = _first_meta(groups[0][0], spec)
    info = DatasetInfo(
        "segmentation", classes, False, meta.sensor, meta.bands, size, meta.gsd_m, ignore_index
    )
    return DownstreamDataset(root, split, items, info)


# -------------------------------------------------------------------------------- change detection
def _cd_folders(sdir: Path) -> tuple[Path, Path, Path]:
    for a, b, lab in _CD_FOLDERS:
        if (sdir / a).is_dir() or (sdir / b).is_dir():
            return sdir / a, sdir / b, sdir / lab
    raise DatasetError(
        f"{sdir}: no before/after folders (expected A/, B/ and label/; or before/after/mask, "
        "imgs_1/imgs_2/cm)"
    )


def _open_change(root: Path, split: str, spec: BandSpec, ignore_index: int) -> DownstreamDataset:
    sdir = _split_dir(root, split)
    fa, fb, fl = _cd_folders(sdir)
    for d in (fa, fb, fl):
        if not d.is_dir():
            raise DatasetError(f"{d}: folder missing (before/after/label folders must all exist)")
    groups = _pair_up([fa, fb, fl], sdir)
    size = _check_pair_sizes(groups)
    meta_a = _first_meta(groups[0][0], spec)
    meta_b = _first_meta(groups[0][1], spec)
    if meta_a.bands != meta_b.bands:
        raise DatasetError(
            f"{groups[0][1]}: bands {list(meta_b.bands)} differ from {groups[0][0]} {list(meta_a.bands)}"
        )
    items = [_Item((g[0], g[1]), g[2], g[0].stem) for g in groups]
    info = DatasetInfo(
        "change_detection",
        CHANGE_CLASSES,
        False,
        meta_a.sensor,
        meta_a.bands,
        size,
        meta_a.gsd_m,
        ignore_index,
    )
    return DownstreamDataset(root, split, items, info)


def open_dataset(
    task: str,
    root: str | Path,
    split: str,
    *,
    sensor: str,
    bands: Sequence[str] | None = None,
    label_mode: str = "auto",
    ignore_index: int = 255,
) -> DownstreamDataset:
    """Open and validate one split of a downstream dataset.

    Args:
        task: ``classification``, ``segmentation`` or ``change_detection``.
        root: The dataset folder.
        split: ``train``, ``val`` or ``test`` (aliases accepted).
        sensor: Sensor of the chips unless a chip's ``A2MAE_SENSOR`` tag says otherwise.
        bands: Band ids in file order (None: from the band descriptions).
        label_mode: Classification: ``auto``, ``single`` or ``multi``.
        ignore_index: Mask value excluded from loss and metrics.

    Returns:
        The dataset; ``info`` describes classes, bands and chip size.

    Raises:
        DatasetError: Missing folder or file, empty split, unknown label or mask value, or
            mismatched sizes; the message names the file.
    """
    root = _check_root(Path(root), task)
    spec = BandSpec(sensor, tuple(bands) if bands is not None else None)
    split = canonical_split(split)
    if task == "classification":
        return _open_classification(root, split, spec, label_mode)
    if task == "segmentation":
        return _open_segmentation(root, split, spec, ignore_index)
    return _open_change(root, split, spec, ignore_index)


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
