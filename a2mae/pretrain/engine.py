"""One optimiser step: gradient accumulation, gradient sync across workers, clipping, non-finite guard.

The engine is pure torch (no Ray, no MLflow, no files). Gradients are synchronised by hand rather than
with ``DistributedDataParallel``: A²-MAE has one patch embedding and decoder head per (sensor, spectral
group), and a worker whose batch lacks a sensor has no gradient for its parameters. The engine
all-reduces a "has gradient" mask first, so a parameter that no worker used keeps ``grad = None`` (AdamW
then leaves it alone, as it would on one machine), and reduces the gradients of the others as one flat
buffer. Each micro-batch's loss is weighted by its number of sets and the sum divided by the global
number of sets of the step, so ``W`` workers x ``A`` accumulation steps x ``B`` sets give the gradient
of one batch of ``W * A * B`` sets (exactly, for a loss that is a mean over sets).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from a2mae.pretrain.errors import NonFiniteLossError as NonFiniteLossError  # re-exported


class _Batch(Protocol):
    @property
    def num_sets(self) -> int: ...

    def to(self, device: torch.device | str) -> Any: ...


def step_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed derived from the run seed and integer keys (step, rank, micro-batch, ...)."""
    h = hashlib.blake2b(repr((seed, *keys)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    """Seed torch's global generators (CPU and CUDA) for code that does not take a generator."""
    torch.manual_seed(seed)


def autocast_context(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA when ``bf16`` is set; a no-op context otherwise (CPU stays fp32)."""
    if bf16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class StepResult:
    """What one optimiser step did (values are global: reduced over workers).

    Attributes:
        step: The optimiser step number (1-based).
        loss: Mean loss over the step's sets (NaN when skipped for a non-finite loss).
        loss_per_sensor: Mean loss per sensor over the sets that contain it.
        num_sets: Image sets in the step over all workers.
        num_images: Images in the step over all workers.
        lr: Learning rate used.
        grad_norm: Total gradient norm before clipping.
        skipped: True when the update was skipped (non-finite loss or gradient).
        last: ``(batch, output)`` of the last micro-batch on this worker, when asked for.
    """

    step: int
    loss: float
    loss_per_sensor: dict[str, float]
    num_sets: int
    num_images: int
    lr: float
    grad_norm: float
    skipped: bool
    last: tuple[Any, Any] | None = None


@dataclass
class Engine:
    """Runs optimiser steps for one worker.

    Attributes:
        model: The model; ``model(batch, generator=g)`` returns an output with ``loss`` (scalar) and
            ``loss_per_sensor`` (dict of scalars).
        optimizer: Its optimiser.
        lr_at: Learning rate of a 1-based step.
        sensors: All sensor ids that may appear (fixes the layout of the per-sensor reduction).
        device: Where the model lives.
        grad_clip: Clip the total gradient norm to this (0: no clipping).
        bf16: bf16 autocast on CUDA.
        max_nonfinite_steps: Abort after this many consecutive non-finite steps.
        seed: Run seed (masking noise is drawn from ``(seed, step, rank, micro-batch)``).
        rank: This worker's rank.
        world_size: Number of workers; gradients are all-reduced when > 1.
        nonfinite_total: Steps skipped so far.
        nonfinite_streak: Consecutive steps skipped so far.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    lr_at: Callable[[int], float]
    sensors: Sequence[str]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    grad_clip: float = 0.0
    bf16: bool = True
    max_nonfinite_steps: int = 5
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    nonfinite_total: int = 0
    nonfinite_streak: int = 0

    def __post_init__(self) -> None:
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        self._sensor_index = {s: i for i, s in enumerate(self.sensors)}

    # ------------------------------------------------------------------------------------- helpers
    def _generator(self, step: int, micro: int) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(step_seed(self.seed, step, self.rank, micro))
        return g

    def _all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            dist.all_reduce(t)
        return t

    def _sync_gradients(self, divisor: float) -> None:
        """Sum gradients over workers (params nobody used keep ``None``) and divide by ``divisor``."""
        has = torch.tensor(
            [p.grad is not None for p in self._params], dtype=torch.float32, device=self.device
        )
        has = self._all_reduce(has)
        used = [p for p, h in zip(self._params, has.tolist(), strict=True) if h > 0]
        grads: list[torch.Tensor] = []
        for p in used:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        if not used:
            return
        if self.world_size > 1:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            offset = 0
            for g in grads:
                n = g.numel()
                g.copy_(flat[offset : offset + n].view_as(g))
                offset += n
        for g in grads:
            g.div_(divisor)

    def broadcast_parameters(self) -> None:
        """Copy rank 0's parameters and buffers to every worker (once, before training)."""
        if self.world_size <= 1:
            return
        with torch.no_grad():
            for t in [*self.model.parameters(), *self.model.buffers()]:
                dist.broadcast(t.data, src=0)

    # ---------------------------------------------------------------------------------------- step
    def step(self, micro_batches: Sequence[_Batch], step: int, keep_last: bool = False) -> StepResult:
        """Run one optimiser step over this worker's micro-batches.

        Every worker must call this with the same ``step`` (the micro-batch lists may differ in length
        or be empty on some workers).

        Args:
            micro_batches: This worker's micro-batches of the step (each a ``SetBatch``).
            step: 1-based optimiser step (sets the learning rate and the masking noise).
            keep_last: Return the last micro-batch and its output (for reconstruction figures).

        Returns:
            The step's global statistics.

        Raises:
            NonFiniteLossError: ``max_nonfinite_steps`` consecutive steps had a non-finite loss.
        """
        lr = self._begin_step(step)
        stats, last = self._accumulate_gradients(micro_batches, step, keep_last)
        stats = self._all_reduce(stats.to(self.device)).cpu()
        num_sets = int(stats[0])
        if num_sets == 0:
            raise ValueError(f"step {step}: no image set on any worker (empty micro-batches)")
        self._sync_gradients(float(num_sets))
        loss_mean = float(stats[2]) / num_sets
        grad_norm, skipped = self._apply_update(step, loss_mean)
        return StepResult(
            step=step,
            loss=loss_mean,
            loss_per_sensor=self._per_sensor_loss(stats),
            num_sets=num_sets,
            num_images=int(stats[1]),
            lr=lr,
            grad_norm=grad_norm,
            skipped=skipped,
            last=last,
        )

    def _begin_step(self, step: int) -> float:
        """Set the step's learning rate (times each group's ``lr_scale``), clear gradients, seed torch.

        Returns:
            The step's base learning rate.
        """
        self.model.train()
        lr = float(self.lr_at(step))
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.optimizer.zero_grad(set_to_none=True)
        seed_everything(step_seed(self.seed, step, self.rank, -1))
        return lr

    def _accumulate_gradients(
        self, micro_batches: Sequence[_Batch], step: int, keep_last: bool
    ) -> tuple[torch.Tensor, tuple[Any, Any] | None]:
        """Forward and backward every micro-batch, accumulating set-weighted gradients and loss sums.

        Each micro-batch's loss is multiplied by its number of sets ``n`` before ``backward``, so the
        accumulated gradient is a sum over sets (divided by the global set count in
        :meth:`_sync_gradients`). Masking noise comes from a generator seeded by
        ``(seed, step, rank, micro-batch index)``.

        Returns:
            ``(stats, last)``: ``stats`` is a float64 tensor ``[3 + 2 * S]`` (``S`` sensors) holding
            ``[num_sets, num_images, loss_sum, per-sensor loss sums (S), per-sensor set counts (S)]``
            on the CPU; ``last`` is ``(batch, output)`` of the last micro-batch when ``keep_last``.
        """
        n_sens = len(self.sensors)
        stats = torch.zeros(3 + 2 * n_sens, dtype=torch.float64)
        last = None
        for i, batch in enumerate(micro_batches):
            n = batch.num_sets
            if n == 0:
                continue
            batch = batch.to(self.device)
            with autocast_context(self.device, self.bf16):
                out = self.model(batch, generator=self._generator(step, i))
            loss = out.loss.float()
            (loss * n).backward()
            stats[0] += n
            stats[1] += len(batch.images)
            stats[2] += float(loss.detach()) * n
            for sensor, value in out.loss_per_sensor.items():
                k = self._sensor_index.get(sensor)
                if k is not None:
                    stats[3 + k] += float(value.detach()) * n
                    stats[3 + n_sens + k] += n
            if keep_last:
                last = (batch, out)
        return stats, last

    def _apply_update(self, step: int, loss_mean: float) -> tuple[float, bool]:
        """Clip the synchronised gradients and step the optimiser, unless loss or norm is not finite.

        A non-finite step is skipped (gradients dropped) rather than applied, so one bad batch does not
        poison the weights; only ``max_nonfinite_steps`` consecutive ones abort the run.

        Returns:
            ``(grad_norm, skipped)``: the total gradient norm before clipping, and whether the update
            was skipped.

        Raises:
            NonFiniteLossError: ``max_nonfinite_steps`` consecutive steps were skipped.
        """
        clip = self.grad_clip if self.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self._params, clip))
        skipped = not (math.isfinite(loss_mean) and math.isfinite(grad_norm))
        if skipped:
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite_total += 1
            self.nonfinite_streak += 1
            if self.nonfinite_streak >= self.max_nonfinite_steps:
                raise NonFiniteLossError(
                    f"loss or gradient was not finite for {self.nonfinite_streak} consecutive steps "
                    f"(last: step {step}); lower pretrain.blr or check the snapshot's statistics"
                )
        else:
            self.optimizer.step()
            self.nonfinite_streak = 0
        return grad_norm, skipped

    def _per_sensor_loss(self, stats: torch.Tensor) -> dict[str, float]:
        """Mean loss per sensor over the sets containing it, from the reduced ``stats`` (``[3 + 2 * S]``).

        Sensors absent from the whole step (on every worker) are left out.
        """
        n_sens = len(self.sensors)
        return {
            s: float(stats[3 + k]) / float(stats[3 + n_sens + k])
            for s, k in self._sensor_index.items()
            if stats[3 + n_sens + k] > 0
        }
