"""Fine-tuning and scoring loops (no MLflow here; :mod:`a2mae.finetune.run` does the tracking).

One optimiser step per batch, AdamW with layer-wise lr decay (:func:`a2mae.finetune.optim.param_groups`),
linear warm-up then cosine decay per step. The budget is ``finetune.epochs`` passes over the train split,
capped at ``finetune.max_steps``; with the same seed, two arms (pre-trained vs scratch) see the same
batches in the same order.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch.utils.data import DataLoader, Dataset

from a2mae import tasks
from a2mae.finetune.optim import param_groups
from a2mae.models.downstream import DownstreamModel
from a2mae.tasks.base import Metrics
from a2mae.tasks.data import Batch, DownstreamDataset, Sample, collate


class CachedDataset(Dataset[Sample]):
    """Keeps every sample of a small dataset in memory after its first read."""

    def __init__(self, ds: DownstreamDataset) -> None:
        self.ds = ds
        self._cache: dict[int, Sample] = {}

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> Sample:
        if i not in self._cache:
            self._cache[i] = self.ds[i]
        return self._cache[i]


def loader(ds: Dataset[Sample], batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader[Sample]:
    """A single-process loader (chips are small); ``seed`` fixes the shuffling order."""
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        ds, batch_size=batch_size, shuffle=shuffle, generator=gen, collate_fn=collate, num_workers=0
    )


class SizedDataset(Protocol):
    """A dataset that has a length (torch's ``Dataset`` declares none)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


def norm_stats(ds: SizedDataset, max_samples: int = 256) -> tuple[list[float], list[float]]:
    """Per-band mean and standard deviation (file units) over up to ``max_samples`` samples."""
    n = min(len(ds), max_samples)
    total = count = sq = None
    for i in range(n):
        px = ds[i].pixels.double()
        px = px.reshape(-1, *px.shape[-3:]) if px.dim() == 4 else px[None]
        s, s2 = px.sum(dim=(0, 2, 3)), (px**2).sum(dim=(0, 2, 3))
        c = px.shape[0] * px.shape[2] * px.shape[3]
        total = s if total is None else total + s
        sq = s2 if sq is None else sq + s2
        count = c if count is None else count + c
    assert total is not None and sq is not None and count is not None
    mean = total / count
    std = (sq / count - mean**2).clamp(min=0).sqrt()
    return mean.tolist(), std.clamp(min=1e-3).tolist()


def loss_fn(model: DownstreamModel, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The loss of the model's task (:meth:`a2mae.tasks.base.Task.loss`)."""
    return tasks.get(model.spec.task).loss(model.spec, logits, target)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Warm-up then cosine factor of the base lr at ``step`` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class TrainLog:
    """What a training loop did.

    Attributes:
        steps: Optimiser steps taken.
        losses: Loss of each step.
        seconds: Wall time of the loop.
    """

    steps: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def budget(num_train: int, batch_size: int, epochs: int, max_steps: int | None) -> int:
    """Optimiser steps: ``epochs`` passes, capped at ``max_steps``."""
    steps = epochs * max(1, math.ceil(num_train / batch_size))
    return min(steps, max_steps) if max_steps else steps


def _batches(ds: Dataset[Sample], batch_size: int, seed: int) -> Iterator[Batch]:
    epoch = 0
    while True:
        yield from loader(ds, batch_size, shuffle=True, seed=seed + epoch)
        epoch += 1


def train(
    model: DownstreamModel,
    ds: Dataset[Sample],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    layer_decay: float,
    warmup_fraction: float,
    seed: int,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainLog:
    """Fine-tune ``model`` in place.

    Args:
        model: The model (its ``frozen`` flag decides the protocol).
        ds: Train split.
        steps: Optimiser steps.
        batch_size: Samples per step.
        lr: Base learning rate (of the head; encoder layers get ``lr * layer_decay ** depth_gap``).
        weight_decay: AdamW weight decay (not on biases, norms, embedding tables).
        layer_decay: Layer-wise lr decay factor.
        warmup_fraction: Share of the steps with linear warm-up.
        seed: Seed of the batch order and of dropout.
        on_step: Called with ``(step, loss)`` after every step (progress, logging).

    Returns:
        The loop's log.
    """
    groups = param_groups(model, lr, weight_decay, layer_decay)
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    warmup = round(warmup_fraction * steps)
    log = TrainLog()
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model.train()
    batches = _batches(ds, batch_size, seed)
    for step in range(steps):
        b = next(batches)
        f = lr_factor(step, steps, warmup)
        for g in opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0) * f
        logits = model(b.pixels, b.metas)
        loss = loss_fn(model, logits, b.target)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {step}; lower finetune.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 5.0)
        opt.step()
        log.losses.append(float(loss.detach()))
        log.steps = step + 1
        if on_step is not None:
            on_step(step, log.losses[-1])
    log.seconds = time.perf_counter() - t0
    model.eval()
    return log


@torch.no_grad()
def score(
    model: DownstreamModel, ds: Dataset[Sample], batch_size: int, use_metadata: bool = True
) -> tuple[dict[str, float], Metrics]:
    """Metrics of ``model`` on a dataset split.

    Args:
        model: The model.
        ds: The split.
        batch_size: Samples per forward pass.
        use_metadata: Pass each chip's metadata (GSD, corners) to the model; False uses the model's
            default metadata (what the served signature does).

    Returns:
        ``(metrics, the task's accumulated metrics)``: their ``figures()`` are the split's confusion
        matrix or precision-recall curves (the task decides).
    """
    model.eval()
    s = model.spec
    m = tasks.get(s.task).metrics(s)
    for b in loader(ds, batch_size, shuffle=False):
        m.update(model(b.pixels, b.metas if use_metadata else None), b.target)
    return m.compute(), m
