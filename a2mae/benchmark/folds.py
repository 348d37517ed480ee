"""Folds that respect space: spatial blocks, groups of chips that share pixels, grouped fold assignment.

Neighbouring chips are nearly identical and overlapping chips share pixels, so a random split puts the same
ground in train and test and overstates every score. The benchmark therefore

1. cuts the ground into square blocks of ``block_m`` metres (:func:`spatial_blocks`), per CRS or scene;
2. joins chips whose footprints share any pixel into one group, transitively (:func:`overlap_groups`,
   a sort-and-sweep over the footprints and a union-find over the overlapping pairs), and joins these
   with the blocks (:func:`join_groups`);
3. assigns whole groups to train / val / test (:func:`assign_folds`), balancing the class counts across
   folds where it can and honouring folds a dataset fixes itself (OSCD's train and test cities).

A fold that would come out empty is a :class:`FoldError`, a one-line message saying what to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from a2mae.errors import A2maeError

IntArray = NDArray[np.int64]
FOLD_NAMES = ("train", "val", "test")


class FoldError(A2maeError, ValueError):
    """Folds cannot be formed from the given samples (too few groups, contradictory fixed folds)."""


def _key_index(crs_key: NDArray[Any] | None, n: int) -> IntArray:
    """``(N,)`` dense int index of each sample's CRS / scene key (all 0 without keys)."""
    if crs_key is None:
        return np.zeros(n, dtype=np.int64)
    k = np.asarray(crs_key)
    if k.shape != (n,):
        raise ValueError(f"crs_key must have shape ({n},), got {k.shape}")
    _, inverse = np.unique(k, return_inverse=True)
    return inverse.astype(np.int64).reshape(n)


def spatial_blocks(
    x: NDArray[Any], y: NDArray[Any], block_m: float, crs_key: NDArray[Any] | None = None
) -> IntArray:
    """Square spatial block of each sample, from projected coordinates in metres.

    Block ``(floor(x / block_m), floor(y / block_m))`` within each ``crs_key``; samples of different keys
    (CRS, UTM zone or scene) never share a block, since their metres are not comparable.

    Args:
        x: ``(N,)`` easting in metres (e.g. a chip's or pixel's centre).
        y: ``(N,)`` northing in metres.
        block_m: block edge in metres (> 0).
        crs_key: ``(N,)`` hashable id of each sample's CRS or scene; None: one CRS.

    Returns:
        ``(N,)`` int64 block ids, dense from 0 (ordered by key, then block column, then row).
    """
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.ndim != 1 or xs.shape != ys.shape:
        raise ValueError(f"x and y must both be (N,), got {xs.shape} and {ys.shape}")
    if not (np.isfinite(block_m) and block_m > 0):
        raise FoldError(f"the spatial block size must be a positive number of metres, got {block_m}")
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise FoldError("sample coordinates hold NaN or infinity: every sample needs a projected position")
    key = _key_index(crs_key, xs.shape[0])
    cells = np.stack([key, np.floor(xs / block_m), np.floor(ys / block_m)], axis=1)
    if cells.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    _, inverse = np.unique(cells, axis=0, return_inverse=True)
    return inverse.astype(np.int64).reshape(-1)


def _components(n: int, pairs: Sequence[tuple[IntArray, IntArray]]) -> IntArray:
    """Connected components of ``n`` nodes under the edges ``(u, v)`` (union-find, path halving).

    Returns:
        ``(n,)`` int64 component ids, dense from 0 in order of each component's first node.
    """
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for us, vs in pairs:
        for u, v in zip(us.tolist(), vs.tolist(), strict=True):
            ru, rv = find(u), find(v)
            if ru != rv:
                parent[max(ru, rv)] = min(ru, rv)
    roots = np.fromiter((find(i) for i in range(n)), dtype=np.int64, count=n)
    _, first, inverse = np.unique(roots, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))  # number components by their first node
    return rank[inverse].astype(np.int64).reshape(n)


def _overlap_pairs(b: NDArray[np.float64], chunk: int = 1 << 20) -> list[tuple[IntArray, IntArray]]:
    """Pairs ``(i, j)`` of footprints ``(M, 4)``, all of positive area, whose intersection has area.

    Footprints sorted by left edge: chip ``i`` can only meet the chips after it whose left edge is left
    of its right edge, found by one ``searchsorted``; those candidates are then tested on y. Candidates
    are generated in chunks of about ``chunk`` pairs to bound memory.
    """
    order = np.argsort(b[:, 0], kind="stable")
    s = b[order]
    end = np.searchsorted(s[:, 0], s[:, 2], side="left")  # candidates of i: i+1 .. end[i]-1
    count = np.maximum(end - np.arange(len(s)) - 1, 0)
    out: list[tuple[IntArray, IntArray]] = []
    start = 0
    while start < len(s):
        stop = start + 1
        total = int(count[start])
        while stop < len(s) and total + int(count[stop]) <= chunk:
            total += int(count[stop])
            stop += 1
        rows = np.repeat(np.arange(start, stop), count[start:stop])
        offsets = np.arange(rows.size) - np.repeat(
            np.cumsum(count[start:stop]) - count[start:stop], count[start:stop]
        )
        cols = rows + 1 + offsets
        # x: left[col] < right[row] by the sweep, left[row] <= left[col] < right[col] as footprints have area
        hit = (s[cols, 1] < s[rows, 3]) & (s[rows, 1] < s[cols, 3])
        out.append((order[rows[hit]], order[cols[hit]]))
        start = stop
    return out


def overlap_groups(bounds: NDArray[Any], crs_key: NDArray[Any] | None = None) -> IntArray:
    """Groups of chips that share any pixel, transitively.

    Two footprints share pixels where their intersection has positive area (touching edges do not).
    Chips of different ``crs_key`` never share pixels.

    Args:
        bounds: ``(N, 4)`` chip footprints ``(left, bottom, right, top)`` in metres.
        crs_key: ``(N,)`` hashable id of each chip's CRS or scene; None: one CRS.

    Returns:
        ``(N,)`` int64 group ids, dense from 0 in order of each group's first chip.
    """
    b = np.asarray(bounds, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"bounds must be (N, 4) (left, bottom, right, top), got {b.shape}")
    if not np.isfinite(b).all() or (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
        raise FoldError(
            "chip bounds must be finite (left, bottom, right, top) with right >= left, top >= bottom"
        )
    n = b.shape[0]
    key = _key_index(crs_key, n)
    solid = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])  # a footprint of zero area shares no pixel
    pairs: list[tuple[IntArray, IntArray]] = []
    for k in np.unique(key):
        members = np.flatnonzero((key == k) & solid)
        pairs.extend((members[u], members[v]) for u, v in _overlap_pairs(b[members]))
    return _components(n, pairs)


def join_groups(*partitions: NDArray[Any]) -> IntArray:
    """The finest grouping that keeps every group of every partition whole.

    E.g. ``join_groups(blocks, overlap_groups(bounds))``: two chips end up together when they share a block
    or a pixel, directly or through other chips.

    Args:
        *partitions: ``(N,)`` group ids each (any hashable values).

    Returns:
        ``(N,)`` int64 group ids, dense from 0 in order of each group's first sample.
    """
    if not partitions:
        raise ValueError("join_groups needs at least one partition")
    arrays = [np.asarray(p) for p in partitions]
    n = arrays[0].shape[0]
    pairs: list[tuple[IntArray, IntArray]] = []
    for a in arrays:
        if a.shape != (n,):
            raise ValueError(f"every partition must have shape ({n},), got {a.shape}")
        _, inverse = np.unique(a, return_inverse=True)
        inv = inverse.reshape(n)
        order = np.argsort(inv, kind="stable")
        same = inv[order][1:] == inv[order][:-1]  # link each sample to the previous one of its group
        pairs.append((order[1:][same].astype(np.int64), order[:-1][same].astype(np.int64)))
    return _components(n, pairs)


def _fold_checks(
    n: int, fractions: tuple[float, float, float], fixed: NDArray[Any] | None, free_to: Sequence[int]
) -> tuple[NDArray[np.float64], IntArray]:
    """Validated fractions (summing to 1) and ``(N,)`` fixed folds (-1 free)."""
    frac = np.asarray(fractions, dtype=np.float64)
    if frac.shape != (3,) or not np.isfinite(frac).all() or (frac < 0).any() or frac.sum() <= 0:
        raise FoldError(
            f"fold fractions must be three non-negative numbers (train, val, test), got {fractions}"
        )
    if not set(free_to) <= {0, 1, 2} or not free_to:
        raise ValueError(f"free_to must name folds among 0, 1, 2, got {tuple(free_to)}")
    fix = np.full(n, -1, dtype=np.int64) if fixed is None else np.asarray(fixed).astype(np.int64)
    if fix.shape != (n,):
        raise ValueError(f"fixed must have shape ({n},), got {fix.shape}")
    if not np.isin(fix, (-1, 0, 1, 2)).all():
        raise FoldError("fixed folds must be -1 (free), 0 (train), 1 (val) or 2 (test)")
    return frac / frac.sum(), fix


def _group_fixed(gid: IntArray, fix: IntArray, n_groups: int) -> IntArray:
    """``(G,)`` the fold each group is fixed to (-1 free); FoldError where a group has two fixed folds."""
    hi = np.full(n_groups, -1, dtype=np.int64)
    np.maximum.at(hi, gid, fix)
    lo = np.full(n_groups, 3, dtype=np.int64)
    np.minimum.at(lo, gid, np.where(fix < 0, 3, fix))
    clash = np.flatnonzero((hi >= 0) & (lo != hi))
    if clash.size:
        g = int(clash[0])
        raise FoldError(
            f"samples of one group (chips sharing pixels or a spatial block, group {g}) are fixed to "
            f"different folds ({FOLD_NAMES[int(lo[g])]} and {FOLD_NAMES[int(hi[g])]}): "
            "fix whole groups, or use a smaller block size"
        )
    return hi


def assign_folds(
    groups: NDArray[Any],
    *,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    labels: NDArray[Any] | None = None,
    fixed: NDArray[Any] | None = None,
    free_to: Sequence[int] = (0, 1, 2),
) -> IntArray:
    """A fold per sample (0 train, 1 val, 2 test), whole groups to one fold.

    Groups are placed greedily, largest first (ties in a seeded random order), each into the allowed fold
    where it most reduces the squared shortfall of every class count from its target
    ``fraction[f] * total[class]``; so the folds approach the fractions in size and, with ``labels``, in
    class balance. Fixed samples pin their group; their counts are placed first.

    Args:
        groups: ``(N,)`` group id per sample (e.g. :func:`join_groups` of blocks and overlap groups).
        fractions: target shares of train, val and test (normalised to sum 1).
        seed: orders groups of equal size.
        labels: ``(N,)`` class id per sample to balance across folds (None: sizes only).
        fixed: ``(N,)`` int, -1 for free samples, else the fold the sample must go to (OSCD's cities).
        free_to: the folds free groups may go to (e.g. ``(0, 1)`` keeps the test fold to the fixed
            samples, OSCD's test cities).

    Returns:
        ``(N,)`` int64 fold per sample.

    Raises:
        FoldError: a fold would be empty, or one group is fixed to two folds.
    """
    g = np.asarray(groups)
    if g.ndim != 1:
        raise ValueError(f"groups must be (N,), got {g.shape}")
    n = g.shape[0]
    frac, fix = _fold_checks(n, fractions, fixed, free_to)
    if n == 0:
        raise FoldError("no samples to split into train, val and test folds")
    _, gid_raw = np.unique(g, return_inverse=True)
    gid = gid_raw.astype(np.int64).reshape(n)
    n_groups = int(gid.max()) + 1
    cls = np.zeros(n, dtype=np.int64) if labels is None else _label_index(labels, n)
    counts = np.zeros((n_groups, int(cls.max()) + 1), dtype=np.float64)  # (G, K) class counts per group
    np.add.at(counts, (gid, cls), 1.0)
    group_fold = _greedy(counts, _group_fixed(gid, fix, n_groups), frac, seed, tuple(free_to))
    return group_fold[gid]


def _label_index(labels: NDArray[Any], n: int) -> IntArray:
    lab = np.asarray(labels)
    if lab.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) (one class per sample), got {lab.shape}")
    _, inverse = np.unique(lab, return_inverse=True)
    return inverse.astype(np.int64).reshape(n)


def _greedy(
    counts: NDArray[np.float64],
    pinned: IntArray,
    frac: NDArray[np.float64],
    seed: int,
    free_to: tuple[int, ...],
) -> IntArray:
    """``(G,)`` fold per group: pinned groups first, then free ones largest first (see assign_folds)."""
    total = counts.sum(axis=0)  # (K,)
    target = frac[:, None] * total[None, :]  # (3, K)
    scale = 1.0 / np.maximum(total, 1.0) ** 2  # classes weigh alike whatever their size
    filled = np.zeros_like(target)
    fold = pinned.copy()
    for f in range(3):
        filled[f] = counts[pinned == f].sum(axis=0)
    free = np.flatnonzero(pinned < 0)
    rng = np.random.default_rng(seed)
    free = free[rng.permutation(free.size)]
    free = free[np.argsort(-counts[free].sum(axis=1), kind="stable")]
    allowed = np.array(sorted(set(free_to)), dtype=np.int64)
    for grp in free.tolist():
        c = counts[grp]
        gain = ((2 * c * (filled[allowed] - target[allowed]) + c * c) * scale).sum(axis=1)
        f = int(allowed[int(np.argmin(gain))])
        fold[grp] = f
        filled[f] += c
    _fill_empty(fold, counts.sum(axis=1), pinned, free_to)
    return fold


def _fill_empty(
    fold: IntArray, sizes: NDArray[np.float64], pinned: IntArray, free_to: tuple[int, ...]
) -> None:
    """Move the smallest free group into each empty fold from a fold with several; else FoldError."""
    for f in range(3):
        if (fold == f).any():
            continue
        donors = [d for d in range(3) if d != f and ((fold == d) & (pinned < 0)).sum() >= 2]
        if f in free_to and donors:
            d = max(donors, key=lambda k: int((fold == k).sum()))
            movable = np.flatnonzero((fold == d) & (pinned < 0))
            fold[movable[int(np.argmin(sizes[movable]))]] = f
            continue
        if f not in free_to:
            allowed = " and ".join(FOLD_NAMES[k] for k in sorted(set(free_to)))
            raise FoldError(
                f"the {FOLD_NAMES[f]} fold would be empty: no sample is fixed to it and the free ones may "
                f"only go to {allowed}; check the dataset's split files"
            )
        raise FoldError(
            f"the {FOLD_NAMES[f]} fold would be empty: {fold.size} group(s) of chips sharing pixels or a "
            "spatial block cannot fill train, val and test; add labelled data or use a smaller block size"
        )
