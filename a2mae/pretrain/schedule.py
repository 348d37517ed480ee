"""Per-step learning-rate schedule: linear warm-up, then half-cosine decay to ``min_lr``."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class CosineSchedule:
    """Learning rate as a function of the optimiser step.

    Step ``s`` (1-based, the step about to be taken) gets ``peak * s / warmup`` during warm-up
    (``s <= warmup``) and ``min_lr + (peak - min_lr) * (1 + cos(pi * t)) / 2`` afterwards, with
    ``t = (s - warmup) / (total - warmup)`` in ``(0, 1]``; so the last step uses ``min_lr``.

    Attributes:
        peak_lr: Learning rate at the end of warm-up.
        total_steps: Optimiser steps of the whole run.
        warmup_steps: Steps of linear warm-up (0 for none).
        min_lr: Final learning rate.
    """

    peak_lr: float
    total_steps: int
    warmup_steps: int = 0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1 (got {self.total_steps})")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps] (got {self.warmup_steps})")

    @classmethod
    def from_fraction(
        cls, peak_lr: float, total_steps: int, warmup_fraction: float, min_lr: float = 0.0
    ) -> CosineSchedule:
        """Schedule whose warm-up lasts ``round(warmup_fraction * total_steps)`` steps."""
        warmup = min(total_steps, round(warmup_fraction * total_steps))
        return cls(peak_lr, total_steps, warmup, min_lr)

    def __call__(self, step: int) -> float:
        """Learning rate of optimiser step ``step`` (1-based; clamped to ``[1, total_steps]``)."""
        s = min(max(step, 1), self.total_steps)
        if s <= self.warmup_steps:
            return self.peak_lr * s / self.warmup_steps
        span = self.total_steps - self.warmup_steps
        t = (s - self.warmup_steps) / span
        return self.min_lr + (self.peak_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
