"""RCF: torchgeo's random convolutional features (MOSAIKS), as shipped, the training-free baseline.

``torchgeo.models.RCF(in_channels, features=benchmark.rcf_features, kernel_size=3, bias=-1, seed,
mode)`` with ``mode="gaussian"`` (filters drawn from N(0, 1)) or ``"empirical"`` (ZCA-whitened 3x3
patches drawn from the chips). As torchgeo computes it, ``y = conv(x, w) - 1`` and the features are
``[relu(y), relu(-y)]``: the second half is ``relu(1 - conv)``, where the MOSAIKS paper writes
``relu(-conv - 1)``; we keep torchgeo's. torchgeo treats ``seed=0`` as "no seed", so the arm is seeded
with ``seed + 1`` (>= 1). Scene embeddings are RCF's own output (mean over the chip); token maps apply
the same two halves and average them over each ``patch x patch`` cell (``same`` padding), so dense
probes see RCF on the same token grid as the encoders.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from a2mae.benchmark.arms.base import Arm
from a2mae.benchmark.data import BenchData
from a2mae.types import ImageMeta


class _ChipImages(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """The chips' images as torchgeo's samples (``{"image": [C, H, W]}``), normalised."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": torch.as_tensor(self.images[i])}


@dataclass
class RCFArm(Arm):
    """torchgeo ``RCF`` with Gaussian or data-drawn filters."""

    mode: str = "gaussian"
    features: int = 512
    seed: int = 0

    def prepare(self, data: BenchData, data_stats: tuple[np.ndarray, np.ndarray]) -> None:
        """Data statistics; build the filters (empirical: from up to 256 normalised chip images)."""
        from torchgeo.models import RCF

        self.mean, self.std = data_stats
        c = data.chips[0].pixels.shape[1]
        dataset: Any = None
        if self.mode == "empirical":
            rng = np.random.default_rng(self.seed)
            pick = rng.choice(len(data.chips), size=min(256, len(data.chips)), replace=False)
            imgs = np.stack([data.chips[i].pixels[0] for i in sorted(pick)])
            dataset = _ChipImages(self.normalise(imgs).numpy())
        torch_seed = self.seed + 1  # torchgeo ignores seed=0
        with torch.random.fork_rng(devices=[]):
            self.rcf = RCF(
                in_channels=c,
                features=self.features,
                kernel_size=3,
                bias=-1.0,
                seed=torch_seed,
                mode=self.mode,
                dataset=dataset,
            )
        self.lineage = {
            "class": "torchgeo.models.RCF",
            "mode": self.mode,
            "features": str(self.features),
            "seed": str(torch_seed),
        }

    def key(self) -> str:
        """Filters and statistics."""
        assert self.mean is not None and self.std is not None
        h = hashlib.sha256(self.rcf.weights.numpy().tobytes() + self.mean.tobytes() + self.std.tobytes())
        return f"{self.name}-{h.hexdigest()[:16]}"

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, metas: Sequence[ImageMeta]) -> tuple[torch.Tensor, torch.Tensor]:
        """RCF's pooled features ``[B, F]`` and per-token features ``[B, F, H/p, W/p]``."""
        pooled = self.rcf(x)
        y = F.conv2d(x, self.rcf.weights, bias=self.rcf.biases, padding=self.rcf.weights.shape[-1] // 2)
        maps = torch.cat((y.clamp_min(0), y.clamp_max(0).neg()), dim=1)
        return pooled, F.avg_pool2d(maps, self.patch)
