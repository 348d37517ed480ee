"""Each worker reads a disjoint share of the image sets; together they read every set once per epoch."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a2mae.pretrain.sharding import micro_batches_per_epoch, steps_per_epoch, worker_batches


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 300),
    world=st.integers(1, 8),
    batch=st.integers(1, 16),
    epoch=st.integers(0, 5),
    seed=st.integers(0, 2**31),
)
def test_union_over_ranks_covers_every_set_exactly_once(n, world, batch, epoch, seed):
    per_rank = [
        worker_batches(n, rank=r, world_size=world, batch_size=batch, seed=seed, epoch=epoch)
        for r in range(world)
    ]
    counts = Counter(i for batches in per_rank for b in batches for i in b)
    assert set(counts) == set(range(n))
    assert set(counts.values()) == {1}
    # every rank runs the same number of micro-batches (collectives stay in step) ...
    lengths = {len(batches) for batches in per_rank}
    assert lengths == {micro_batches_per_epoch(n, world, batch)}
    # ... of at most `batch` sets, and shares differ in size by at most one set
    assert all(len(b) <= batch for batches in per_rank for b in batches)
    sizes = [sum(len(b) for b in batches) for batches in per_rank]
    assert max(sizes) - min(sizes) <= 1


def test_epochs_reshuffle_deterministically():
    a0 = worker_batches(50, rank=0, world_size=2, batch_size=5, seed=1, epoch=0)
    a0_again = worker_batches(50, rank=0, world_size=2, batch_size=5, seed=1, epoch=0)
    a1 = worker_batches(50, rank=0, world_size=2, batch_size=5, seed=1, epoch=1)
    b0 = worker_batches(50, rank=0, world_size=2, batch_size=5, seed=2, epoch=0)
    assert a0 == a0_again
    assert a0 != a1 and a0 != b0
    ordered = worker_batches(6, rank=1, world_size=2, batch_size=2, seed=0, epoch=0, shuffle=False)
    assert ordered == [[1, 3], [5]]


def test_steps_per_epoch_rounds_up_the_last_accumulation():
    assert steps_per_epoch(37, 2, 4, 1) == 5  # ceil(19 / 4)
    assert steps_per_epoch(37, 2, 4, 2) == 3
    assert steps_per_epoch(1, 4, 8, 1) == 1


def test_bad_rank_and_empty_dataset_are_refused():
    with pytest.raises(ValueError, match="rank"):
        worker_batches(10, rank=2, world_size=2, batch_size=1, seed=0, epoch=0)
    with pytest.raises(ValueError, match="empty"):
        worker_batches(0, rank=0, world_size=1, batch_size=1, seed=0, epoch=0)
