"""What an arm is: a frozen embedding function of chips, with its own input normalisation.

Every arm sees the same chips, splits and probe code; only :meth:`Arm.embed` differs. An arm returns,
per image, a pooled embedding ``[D]`` (scene probes) and a token map ``[D, h, w]`` on the encoder's
patch grid (dense probes). Normalisation: the encoder its pre-training statistics
(``benchmark.normalization=encoder``), every other arm the data's per-band mean and std.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from a2mae.benchmark.data import BenchData, BenchmarkError
from a2mae.types import ImageMeta


@dataclass
class Embeddings:
    """Embeddings of every image of every chip of a set (one arm).

    Attributes:
        pooled: ``[N, T, D]`` float32 (``T`` images per chip: 1, or 2 for change pairs).
        tokens: ``[N, T, D, h, w]`` float32 on the patch grid, or None (scene tasks).
    """

    pooled: np.ndarray
    tokens: np.ndarray | None


@dataclass
class Arm(ABC):
    """Base of the arms. Subclasses set ``model`` and implement :meth:`forward`.

    Attributes:
        name: Arm name in the results (``encoder``, ``scratch``, ``rcf-gaussian``, ``mae``, ...).
        patch: Token side in pixels (the token grid of dense probes).
        mean: ``[C]`` per-band mean of the inputs (file units); set by :meth:`prepare`.
        std: ``[C]`` per-band standard deviation.
        lineage: Where the arm comes from (URI, version, run id, seed, ...), logged to MLflow.
    """

    name: str
    patch: int = 8
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    lineage: dict[str, str] = field(default_factory=dict)

    def prepare(self, data: BenchData, data_stats: tuple[np.ndarray, np.ndarray]) -> None:
        """Fix the normalisation (default: the data's statistics)."""
        self.mean, self.std = data_stats

    @abstractmethod
    def key(self) -> str:
        """Identity of the arm's embedding function (weights, filters, statistics): the cache key."""

    @abstractmethod
    def forward(self, x: torch.Tensor, metas: Sequence[ImageMeta]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed normalised images.

        Args:
            x: ``[B, C, H, W]`` normalised pixels.
            metas: One metadata per image.

        Returns:
            ``(pooled [B, D], tokens [B, D, H/patch, W/patch])``.
        """

    def normalise(self, pixels: np.ndarray) -> torch.Tensor:
        """``[B, C, H, W]`` file units -> normalised float32 tensor."""
        assert self.mean is not None and self.std is not None
        m = torch.as_tensor(self.mean, dtype=torch.float32)[:, None, None]
        s = torch.as_tensor(self.std, dtype=torch.float32).clamp(min=1e-6)[:, None, None]
        return (torch.as_tensor(pixels, dtype=torch.float32) - m) / s


def data_statistics(data: BenchData) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std ``[C]`` over all chips' pixels (no labels used, so no leakage)."""
    c = data.chips[0].pixels.shape[1]
    s = np.zeros(c, np.float64)
    s2 = np.zeros(c, np.float64)
    n = 0
    for chip in data.chips:
        px = chip.pixels.reshape(-1, c, chip.pixels.shape[-2] * chip.pixels.shape[-1]).astype(np.float64)
        s += px.sum((0, 2))
        s2 += (px**2).sum((0, 2))
        n += px.shape[0] * px.shape[2]
    mean = s / max(n, 1)
    std = np.sqrt(np.maximum(s2 / max(n, 1) - mean**2, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def encoder_statistics(
    norm_stats: dict[str, Any], sensor: str, bands: Sequence[str]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Pre-training statistics of an encoder for ``bands`` of ``sensor``, in the data's file units.

    Reads the statistics as checkpoints store them today: a whole ``stats.json`` document
    (``{"sensors": {S: {band: {mean, std}}}, "units": "reflectance", ...}``) or ``{S: {band: {...}}}``.
    Reflectance statistics are turned into file units with the scale most of the sensor's products
    share (S2: 1e-4; none when it is a tie, as for L8). This is the one function to swap for the typed
    statistics object.

    Returns:
        ``(mean [C], std [C])`` or None when a band is missing or the units cannot be matched.
    """
    doc = norm_stats.get("sensors", norm_stats) if isinstance(norm_stats, dict) else {}
    per = doc.get(sensor) if isinstance(doc, dict) else None
    if not isinstance(per, dict) or not all(b in per for b in bands):
        return None
    mean = np.array([float(per[b]["mean"]) for b in bands], np.float32)
    std = np.array([max(float(per[b]["std"]), 1e-6) for b in bands], np.float32)
    if norm_stats.get("units") == "reflectance":
        from a2mae.sensors import get_registry

        reg = get_registry()
        from collections import Counter

        counts = (
            Counter(p.scale for p in reg.get(sensor).products.values()).most_common() if sensor in reg else []
        )
        if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
            return None
        scale = counts[0][0]
        mean, std = mean / scale, std / scale
    return mean, std


def missing_statistics(arm: str, source: str, sensor: str, bands: Sequence[str]) -> BenchmarkError:
    """The one-line error of an encoder without statistics for the data's bands."""
    return BenchmarkError(
        f"encoder {source} ({arm}): no pre-training statistics for {sensor} bands {list(bands)} in its "
        "checkpoint; use data in its sensors' units or --set benchmark.normalization=dataset"
    )
