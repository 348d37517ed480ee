"""Spatial folds: chips that share pixels never straddle folds; blocks, fixed folds, balance, FoldError."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a2mae.benchmark.folds import (
    FoldError,
    assign_folds,
    join_groups,
    overlap_groups,
    spatial_blocks,
)
from a2mae.errors import A2maeError

SEEDS = st.integers(0, 2**32 - 1)


def _rectangles(seed, n, extent=1000, max_size=150):
    """Random chip footprints on an integer grid (many touch or overlap; a few have zero width)."""
    rng = np.random.default_rng(seed)
    left = rng.integers(0, extent, n)
    bottom = rng.integers(0, extent, n)
    w = rng.integers(0, max_size, n)
    h = rng.integers(1, max_size + 1, n)
    return np.column_stack([left, bottom, left + w, bottom + h]).astype(np.float64)


def _shares_pixels(a, b):
    """The intersection has positive width and height."""
    return max(a[0], b[0]) < min(a[2], b[2]) and max(a[1], b[1]) < min(a[3], b[3])


def _brute_components(n, linked):
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i, j in itertools.combinations(range(n), 2):
        if linked(i, j):
            parent[find(i)] = find(j)
    return np.array([find(i) for i in range(n)])


def _same_partition(a, b):
    """Two labelings describe the same partition."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, n=st.integers(1, 120), max_size=st.integers(1, 300))
def test_overlap_groups_are_exactly_the_connected_chips(seed, n, max_size):
    b = _rectangles(seed, n, max_size=max_size)
    groups = overlap_groups(b)
    brute = _brute_components(n, lambda i, j: _shares_pixels(b[i], b[j]))
    assert _same_partition(groups, brute)
    assert groups.min() == 0 and groups.max() == len(set(brute.tolist())) - 1  # dense ids


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, n=st.integers(10, 150), block_m=st.sampled_from([50.0, 200.0, 1e9]))
def test_chips_sharing_pixels_never_straddle_folds(seed, n, block_m):
    """Random rectangles -> groups -> folds: every pair with a positive-area intersection shares a fold."""
    b = _rectangles(seed, n, max_size=80)
    rng = np.random.default_rng(seed)
    groups = join_groups(
        overlap_groups(b), spatial_blocks((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, block_m)
    )
    try:
        folds = assign_folds(groups, seed=seed % 100, labels=rng.integers(0, 3, n))
    except FoldError:
        assert len(np.unique(groups)) < 3  # only then can a fold be empty
        return
    for i, j in itertools.combinations(range(n), 2):
        if _shares_pixels(b[i], b[j]):
            assert folds[i] == folds[j], (b[i], b[j], folds[i], folds[j])
    assert set(folds.tolist()) == {0, 1, 2}


def test_no_test_pixel_lies_inside_a_training_chip():
    """The issue's wording, checked pixel by pixel: 1 m pixels of 8 x 8 m chips on overlapping strides."""
    rng = np.random.default_rng(0)
    origins = rng.integers(0, 120, (300, 2))
    b = np.column_stack([origins, origins + 8]).astype(np.float64)
    folds = assign_folds(overlap_groups(b), seed=1)
    train = b[folds == 0]
    for chip in b[folds == 2]:
        xs, ys = np.meshgrid(np.arange(chip[0], chip[2]) + 0.5, np.arange(chip[1], chip[3]) + 0.5)
        inside = (
            (xs.ravel()[:, None] > train[:, 0])
            & (xs.ravel()[:, None] < train[:, 2])
            & (ys.ravel()[:, None] > train[:, 1])
            & (ys.ravel()[:, None] < train[:, 3])
        )
        assert not inside.any()
    assert (folds == 2).sum() > 0 and (folds == 0).sum() > 0


def test_touching_chips_are_not_grouped_and_crs_keys_separate():
    grid = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 10, 20], [5, 5, 15, 15]], dtype=float)
    assert overlap_groups(grid[:3]).tolist() == [0, 1, 2]  # edges touch, no pixel shared
    assert overlap_groups(grid).tolist() == [0, 0, 0, 0]  # the fourth overlaps all three
    assert overlap_groups(grid, crs_key=np.array(["a", "a", "a", "b"])).tolist() == [0, 1, 2, 3]
    lines = np.array([[0, 0, 0, 10], [0, 0, 10, 10], [3, 0, 3, 10]], dtype=float)  # zero-width footprints
    assert overlap_groups(lines).tolist() == [0, 1, 2]


def test_thousands_of_overlapping_chips_form_the_expected_strips():
    """8 strips of 600 chips each, 50 % overlap along a strip, gaps between strips."""
    x = np.tile(np.arange(600) * 128.0, 8)
    y = np.repeat(np.arange(8) * 1000.0, 600)
    b = np.column_stack([x, y, x + 256, y + 256])
    groups = overlap_groups(b)
    assert groups.tolist() == np.repeat(np.arange(8), 600).tolist()


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, n=st.integers(1, 200), block_m=st.floats(1.0, 500.0))
def test_spatial_blocks_are_the_floor_cells_per_crs(seed, n, block_m):
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(-1e4, 1e4, n), rng.uniform(0, 5e3, n)
    key = rng.integers(0, 2, n)
    blocks = spatial_blocks(x, y, block_m, crs_key=key)
    cell = list(
        zip(key.tolist(), np.floor(x / block_m).tolist(), np.floor(y / block_m).tolist(), strict=True)
    )
    for i, j in itertools.combinations(range(min(n, 60)), 2):
        assert (blocks[i] == blocks[j]) == (cell[i] == cell[j])
    assert sorted(set(blocks.tolist())) == list(range(len(set(cell))))


def test_join_groups_keeps_every_partition_whole():
    a = np.array([0, 0, 1, 1, 2, 3])
    b = np.array(["x", "y", "y", "z", "w", "w"])
    assert join_groups(a, b).tolist() == [0, 0, 0, 0, 1, 1]
    assert join_groups(a).tolist() == [0, 0, 1, 1, 2, 3]


def test_folds_keep_groups_whole_and_follow_the_fractions():
    groups = np.repeat(np.arange(500), 4)
    folds = assign_folds(groups, seed=3)
    for g in range(500):
        assert len(set(folds[groups == g].tolist())) == 1
    share = np.bincount(folds, minlength=3) / folds.size
    assert share == pytest.approx([0.6, 0.2, 0.2], abs=0.01)
    assert (assign_folds(groups, seed=3) == folds).all()
    assert (assign_folds(groups, seed=4) != folds).any()
    # uneven groups: placing the large ones first lets the small ones even out the shares
    groups = np.concatenate([np.zeros(400), np.ones(200), np.full(200, 2), np.arange(3, 203)])
    share = np.bincount(assign_folds(groups, seed=0), minlength=3) / groups.size
    assert share == pytest.approx([0.6, 0.2, 0.2], abs=0.02)


def test_labels_are_balanced_across_folds_where_groups_allow():
    """Pure-class groups of uneven sizes: every fold gets every class near its share."""
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 30, 300)
    groups = np.repeat(np.arange(300), sizes)
    group_class = np.where(np.arange(300) < 40, 2, np.where(np.arange(300) < 120, 1, 0))  # rare class 2
    labels = group_class[groups]
    folds = assign_folds(groups, labels=labels, seed=0)
    for c in range(3):
        share = np.bincount(folds[labels == c], minlength=3) / (labels == c).sum()
        assert share == pytest.approx([0.6, 0.2, 0.2], abs=0.05), c


def test_fixed_folds_are_honoured():
    """OSCD: test cities fixed, the rest split into train and val only."""
    rng = np.random.default_rng(0)
    groups = np.arange(200)
    fixed = np.where(np.arange(200) < 50, 2, -1)
    folds = assign_folds(groups, fixed=fixed, fractions=(0.6, 0.2, 0.2), free_to=(0, 1), seed=0)
    assert (folds[:50] == 2).all()
    assert set(folds[50:].tolist()) == {0, 1}
    # a fixed sample pins its whole group, whatever the other samples say
    groups = rng.integers(0, 60, 400)
    fixed = np.full(400, -1)
    fixed[np.flatnonzero(groups == 7)[0]] = 1
    folds = assign_folds(groups, fixed=fixed, seed=1)
    assert (folds[groups == 7] == 1).all()


def test_fold_errors_are_one_line():
    cases = [
        lambda: assign_folds(np.array([0, 0, 1])),  # two groups cannot fill three folds
        lambda: assign_folds(np.zeros(0, int)),
        lambda: assign_folds(np.array([0, 0, 1, 2]), fixed=np.array([0, 2, -1, -1])),  # one group, two folds
        lambda: assign_folds(np.arange(10), fixed=np.full(10, 2), free_to=(0, 1)),  # all test: train empty
        lambda: assign_folds(np.arange(10), fixed=np.full(10, 5)),
        lambda: spatial_blocks(np.zeros(3), np.zeros(3), 0.0),
        lambda: overlap_groups(np.array([[0.0, 0.0, -1.0, 1.0]])),
    ]
    for case in cases:
        with pytest.raises(FoldError) as err:
            case()
        assert "\n" not in str(err.value)
        assert isinstance(err.value, ValueError) and isinstance(err.value, A2maeError)
    with pytest.raises(FoldError, match=r"the (val|test) fold would be empty: 2 group"):
        assign_folds(np.array([0, 0, 1]))
    with pytest.raises(FoldError, match="test fold would be empty: no sample is fixed to it"):
        assign_folds(np.arange(10), free_to=(0, 1))


def test_three_groups_fill_three_folds():
    folds = assign_folds(np.array([5, 5, 5, 5, 5, 5, 5, 9, 11]))
    assert set(folds.tolist()) == {0, 1, 2}
    assert len(set(folds[:7].tolist())) == 1
