"""Which image sets each worker reads in an epoch.

Every epoch draws one permutation of the dataset from ``(seed, epoch)`` (the same on every worker) and
deals it out round-robin: worker ``r`` of ``W`` takes positions ``r, r + W, r + 2W, ...``. The union over
workers is the whole dataset and no set is read twice in an epoch (unlike ``DistributedSampler``, which
pads by repeating sets). All workers run the same number of micro-batches, so collective operations
stay in step; a worker whose share is one set shorter gets a shorter (possibly empty) last batch, and
the engine weights gradients by the number of sets each worker actually saw.
"""

from __future__ import annotations

import math

import torch


def epoch_permutation(num_samples: int, *, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The order of all samples in ``epoch`` (identical on every worker).

    Args:
        num_samples: Dataset length.
        seed: Run seed.
        epoch: 0-based epoch.
        shuffle: False keeps the dataset order.
    """
    if not shuffle:
        return list(range(num_samples))
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_samples, generator=g).tolist()


def micro_batches_per_epoch(num_samples: int, world_size: int, batch_size: int) -> int:
    """Micro-batches every worker runs per epoch: ``ceil(ceil(N / W) / batch_size)``."""
    return math.ceil(math.ceil(num_samples / world_size) / batch_size)


def steps_per_epoch(num_samples: int, world_size: int, batch_size: int, accum_steps: int) -> int:
    """Optimiser steps per epoch (the last one may accumulate fewer micro-batches)."""
    return math.ceil(micro_batches_per_epoch(num_samples, world_size, batch_size) / accum_steps)


def worker_batches(
    num_samples: int,
    *,
    rank: int,
    world_size: int,
    batch_size: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
) -> list[list[int]]:
    """The micro-batches (lists of dataset indices) worker ``rank`` reads in ``epoch``.

    Args:
        num_samples: Dataset length ``N``.
        rank: This worker's rank in ``[0, world_size)``.
        world_size: Number of workers ``W``.
        batch_size: Sets per micro-batch and worker.
        seed: Run seed.
        epoch: 0-based epoch.
        shuffle: Draw a new permutation per epoch.

    Returns:
        ``micro_batches_per_epoch(N, W, batch_size)`` lists; concatenated over all ranks they hold every
        index in ``[0, N)`` exactly once. Trailing lists may be shorter or empty.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, {world_size})")
    if num_samples < 1:
        raise ValueError("the dataset is empty")
    mine = epoch_permutation(num_samples, seed=seed, epoch=epoch, shuffle=shuffle)[rank::world_size]
    n = micro_batches_per_epoch(num_samples, world_size, batch_size)
    return [mine[i * batch_size : (i + 1) * batch_size] for i in range(n)]
