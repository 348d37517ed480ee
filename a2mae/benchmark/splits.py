"""Folds of the chips: spatial blocks, chips sharing pixels kept together, the dataset's fixed split.

Chips are grouped so that chips in one spatial block (``benchmark.block_m``, by chip centre) or sharing
any pixel end in one fold (:mod:`a2mae.benchmark.folds`); the groups are then drawn into train / val /
test with ``benchmark.fold_fractions``. Where the dataset fixes a test split (OSCD's ``test.txt``
cities), those chips are the test fold and the other chips' groups are drawn into train and val only.
Chips without a georeference are each their own group.
"""

from __future__ import annotations

import numpy as np

from a2mae.benchmark import folds
from a2mae.benchmark.data import TEST, TRAIN, VAL, BenchData, BenchmarkError


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of "same id in ``a`` or same id in ``b``" (``(N,)`` int group ids)."""
    parent = list(range(len(a)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for ids in (a, b):
        first: dict[int, int] = {}
        for i, g in enumerate(ids.tolist()):
            if g in first:
                parent[find(i)] = find(first[g])
            else:
                first[g] = i
    roots = np.array([find(i) for i in range(len(a))])
    return np.unique(roots, return_inverse=True)[1]


def chip_groups(data: BenchData, block_m: float) -> np.ndarray:
    """``(N,)`` group id per chip: same spatial block or shared pixels -> same group."""
    if any(c.bounds is None for c in data.chips):
        return np.arange(len(data.chips))
    b = np.array([c.bounds for c in data.chips], dtype=np.float64)
    keys = np.unique(np.array([c.group for c in data.chips]), return_inverse=True)[1]
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    blocks = folds.spatial_blocks(cx, cy, block_m, crs_key=keys)
    return _union(np.asarray(blocks), np.asarray(folds.overlap_groups(b, crs_key=keys)))


def _train_val(groups: np.ndarray, val_share: float, seed: int) -> np.ndarray:
    ug = np.unique(groups)
    if len(ug) < 2:
        raise BenchmarkError(
            f"only {len(ug)} spatial group outside the fixed test split: too small to probe; "
            "lower benchmark.block_m"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(ug)
    n_val = min(max(1, round(val_share * len(ug))), len(ug) - 1)
    return np.where(np.isin(groups, order[:n_val]), VAL, TRAIN)


def chip_folds(
    data: BenchData, block_m: float, fractions: tuple[float, float, float], seed: int
) -> np.ndarray:
    """``(N,)`` fold per chip (0 train, 1 val, 2 test) for one seed.

    Raises:
        BenchmarkError: Too few groups for three folds (a split too small to probe).
    """
    groups = chip_groups(data, block_m)
    fixed = np.array([c.fixed_fold for c in data.chips])
    if (fixed == TEST).any():
        out = fixed.copy()
        free = fixed != TEST
        if not free.any():
            raise BenchmarkError(f"{data.root}: every chip is in the fixed test split; no training data")
        out[free] = _train_val(groups[free], fractions[1] / (fractions[0] + fractions[1]), seed)
        return out
    labels = None
    if data.kind == "single-label":
        labels = np.array([int(c.label) for c in data.chips])
    try:
        return np.asarray(
            folds.assign_folds(groups, fractions=fractions, seed=seed, labels=labels, fixed=fixed)
        )
    except folds.FoldError as err:
        raise BenchmarkError(
            f"{data.root}: {err} ({len(np.unique(groups))} spatial groups of {block_m:g} m; "
            "too small to probe "
            "- lower benchmark.block_m or benchmark.chip_size)"
        ) from None
