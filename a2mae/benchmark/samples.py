"""Probe samples: which embeddings and labels the probes see, per fold.

* Scene tasks: one sample per chip, its pooled embedding.
* Dense tasks, ``benchmark.dense_labels=pixel`` (default): one sample per labelled pixel, whose
  feature is the embedding of the token it lies in (no interpolation: no arm gets sub-token detail the
  others lack); per fold, at most ``benchmark.max_pixels_per_class`` pixels of each class (seeded).
* Dense tasks, ``token``: one sample per token whose pixels are at least half labelled, labelled with
  the majority label of its pixels (the earlier protocol).
* Change: the feature is ``|e1 - e2|``, the per-token difference of the two dates' embeddings.

Each test sample carries its spatial block (``benchmark.block_m``) for the block bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from a2mae.benchmark import folds
from a2mae.benchmark.arms.base import Embeddings
from a2mae.benchmark.data import IGNORE, TEST, BenchData


@dataclass(frozen=True)
class Index:
    """Which samples a fold holds: chip, row and column on the chip's grid (pixels or tokens), label.

    Attributes:
        chip: ``(n,)`` chip index.
        row: ``(n,)`` row (pixel or token), ``-1`` for scene samples.
        col: ``(n,)`` column.
        y: ``(n,)`` class or ``(n, K)`` multi-hot.
        x_m: ``(n,)`` sample centre x in metres (NaN without a georeference).
        y_m: ``(n,)`` sample centre y in metres.
    """

    chip: np.ndarray
    row: np.ndarray
    col: np.ndarray
    y: np.ndarray
    x_m: np.ndarray
    y_m: np.ndarray

    def __len__(self) -> int:
        return len(self.chip)

    def take(self, idx: np.ndarray) -> Index:
        """A subset."""
        return Index(*(a[idx] for a in (self.chip, self.row, self.col, self.y, self.x_m, self.y_m)))


def _centres(
    data: BenchData, chip: np.ndarray, row: np.ndarray, col: np.ndarray, cell: int
) -> tuple[np.ndarray, np.ndarray]:
    h, w = data.size
    xs, ys = np.full(len(chip), np.nan), np.full(len(chip), np.nan)
    for i in np.unique(chip):
        b = data.chips[int(i)].bounds
        if b is None:
            continue
        sel = chip == i
        if row[sel][0] < 0:
            xs[sel], ys[sel] = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            continue
        xs[sel] = b[0] + (col[sel] + 0.5) * cell * (b[2] - b[0]) / w
        ys[sel] = b[3] - (row[sel] + 0.5) * cell * (b[3] - b[1]) / h
    return xs, ys


def _dense_labels(label: np.ndarray, mode: str, patch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and labels of one chip's samples (pixels, or tokens by majority)."""
    if mode == "pixel":
        r, c = np.nonzero(label != IGNORE)
        return r, c, label[r, c]
    h, w = label.shape[0] // patch, label.shape[1] // patch
    cells = (
        label[: h * patch, : w * patch].reshape(h, patch, w, patch).transpose(0, 2, 1, 3).reshape(h, w, -1)
    )
    rows: list[int] = []
    cols: list[int] = []
    ys: list[int] = []
    for ri in range(int(h)):
        for ci in range(int(w)):
            cell = cells[ri, ci]
            v = cell[cell != IGNORE]
            if len(v) * 2 < patch * patch:
                continue
            rows.append(ri)
            cols.append(ci)
            ys.append(int(np.bincount(v).argmax()))
    return np.array(rows, int), np.array(cols, int), np.array(ys, np.int64)


def fold_index(
    data: BenchData, chip_fold: np.ndarray, fold: int, mode: str, patch: int, max_per_class: int, seed: int
) -> Index:
    """The samples of one fold (dense: subsampled per class, seeded)."""
    chips = np.flatnonzero(chip_fold == fold)
    if not data.dense:
        ys = np.stack([data.chips[i].label for i in chips]) if len(chips) else np.zeros((0,), np.int64)
        neg = -np.ones(len(chips), int)
        xm, ym = _centres(data, chips, neg, neg, 1)
        return Index(chips, neg, neg, ys, xm, ym)
    parts = [(_dense_labels(data.chips[i].label, mode, patch), i) for i in chips]
    chip = np.concatenate([np.full(len(r), i) for (r, _, _), i in parts]) if parts else np.zeros(0, int)
    row = np.concatenate([r for (r, _, _), _ in parts]) if parts else np.zeros(0, int)
    col = np.concatenate([c for (_, c, _), _ in parts]) if parts else np.zeros(0, int)
    y = np.concatenate([v for (_, _, v), _ in parts]) if parts else np.zeros(0, np.int64)
    rng = np.random.default_rng([seed, fold])
    keep = []
    for k in np.unique(y):
        idx = np.flatnonzero(y == k)
        keep.append(idx if len(idx) <= max_per_class else rng.choice(idx, max_per_class, replace=False))
    sel = np.sort(np.concatenate(keep)) if keep else np.zeros(0, int)
    cell = 1 if mode == "pixel" else patch
    xm, ym = _centres(data, chip[sel], row[sel], col[sel], cell)
    return Index(chip[sel], row[sel], col[sel], y[sel], xm, ym)


def features(emb: Embeddings, ix: Index, mode: str, patch: int, change: bool) -> np.ndarray:
    """``(n, D)`` features of the samples of ``ix``."""
    if ix.row.size == 0 or ix.row[0] < 0:
        p = emb.pooled[ix.chip]
        pooled: np.ndarray = np.abs(p[:, 0] - p[:, 1]) if change else p[:, 0]
        return pooled
    assert emb.tokens is not None
    tr, tc = (ix.row // patch, ix.col // patch) if mode == "pixel" else (ix.row, ix.col)
    t = emb.tokens[ix.chip, :, :, tr, tc]  # [n, T, D]
    return np.abs(t[:, 0] - t[:, 1]) if change else t[:, 0]


def test_blocks(data: BenchData, ix: Index, block_m: float) -> np.ndarray | None:
    """``(n,)`` spatial block of each test sample, or None without a georeference."""
    if len(ix) == 0 or np.isnan(ix.x_m).any():
        return None
    keys = np.unique(np.array([data.chips[int(i)].group for i in ix.chip]), return_inverse=True)[1]
    return np.asarray(folds.spatial_blocks(ix.x_m, ix.y_m, block_m, crs_key=keys))


def fraction_of(ix: Index, fraction: float, seed: int) -> np.ndarray:
    """Indices of a stratified, seeded ``fraction`` of a training fold (at least one per class)."""
    if fraction >= 1:
        return np.arange(len(ix))
    rng = np.random.default_rng([seed, 7919])
    if ix.y.ndim > 1:  # multi-label: a plain random share
        n = max(1, int(np.ceil(fraction * len(ix))))
        return np.sort(rng.choice(len(ix), n, replace=False))
    keep = []
    for k in np.unique(ix.y):
        idx = np.flatnonzero(ix.y == k)
        keep.append(rng.choice(idx, max(1, int(np.ceil(fraction * len(idx)))), replace=False))
    return np.sort(np.concatenate(keep))


__all__ = ["TEST", "Index", "features", "fold_index", "fraction_of", "test_blocks"]
