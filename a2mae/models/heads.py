"""Task heads over the encoder's features (pure torch).

* :class:`LinearHead` -- ``[B, D] -> [B, K]`` (LayerNorm + Linear) on the pooled embedding.
* :class:`UPerNetDecoder` -- UPerNet-style decoder over the ViT's multi-level token maps: a simple
  feature pyramid (ViTDet-style rescaling of the single-scale maps by 4, 2, 1 and 1/2), a pyramid
  pooling module on the coarsest level, an FPN top-down path, fusion at the finest level, and a 1x1
  classifier upsampled to the input size.
* Change detection uses the same decoder on the absolute feature difference of the two images
  (siamese encoder; see :class:`a2mae.models.downstream.DownstreamModel`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class LinearHead(nn.Module):
    """LayerNorm + Linear classifier.

    Args:
        dim: Embedding width ``D``.
        num_classes: ``K``.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, D] -> [B, K]`` logits."""
        logits: torch.Tensor = self.fc(self.norm(x))
        return logits


def _conv(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
        nn.GroupNorm(min(8, cout), cout),
        nn.ReLU(inplace=True),
    )


def pyramid_scales(levels: int) -> tuple[float, ...]:
    """Rescaling factor of each feature level: 4 levels -> (4, 2, 1, 0.5); fewer -> the last of (4, 2, 1)."""
    if levels >= 4:
        return (4.0, 2.0, 1.0, 0.5) + (0.5,) * (levels - 4)
    return (4.0, 2.0, 1.0)[3 - levels :]


class _Rescale(nn.Module):
    def __init__(self, dim: int, channels: int, scale: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if scale == 4:
            layers += [
                nn.ConvTranspose2d(dim, channels, 2, 2),
                nn.GroupNorm(min(8, channels), channels),
                nn.GELU(),
            ]
            layers += [nn.ConvTranspose2d(channels, channels, 2, 2)]
        elif scale == 2:
            layers += [nn.ConvTranspose2d(dim, channels, 2, 2)]
        elif scale == 1:
            layers += [nn.Conv2d(dim, channels, 1)]
        else:
            layers += [nn.MaxPool2d(2, ceil_mode=True), nn.Conv2d(dim, channels, 1)]
        self.op = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.op(x)
        return y


class UPerNetDecoder(nn.Module):
    """UPerNet-style decoder for single-scale ViT features.

    Args:
        dim: Encoder width ``D``.
        levels: Number of feature maps ``L`` given to :meth:`forward`.
        channels: Decoder width.
        num_classes: ``K``.
        pool_bins: Bins of the pyramid pooling module.
    """

    def __init__(
        self, dim: int, levels: int, channels: int, num_classes: int, pool_bins: Sequence[int] = (1, 2, 3)
    ) -> None:
        super().__init__()
        self.scales = pyramid_scales(levels)
        self.rescale = nn.ModuleList(_Rescale(dim, channels, s) for s in self.scales)
        self.pool_bins = tuple(pool_bins)
        self.ppm = nn.ModuleList(_conv(channels, channels, 1) for _ in self.pool_bins)
        self.ppm_out = _conv(channels * (1 + len(self.pool_bins)), channels)
        self.lateral = nn.ModuleList(_conv(channels, channels, 1) for _ in self.scales[:-1])
        self.fpn = nn.ModuleList(_conv(channels, channels) for _ in self.scales[:-1])
        self.fuse = _conv(channels * len(self.scales), channels)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, maps: Sequence[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        """Decode.

        Args:
            maps: ``L`` tensors ``[B, D, h, w]`` (shallow to deep).
            out_size: ``(H, W)`` of the logits.

        Returns:
            ``[B, K, H, W]`` logits.
        """
        feats = [op(m) for op, m in zip(self.rescale, maps, strict=True)]
        top = feats[-1]
        pooled = [top]
        for bins, conv in zip(self.pool_bins, self.ppm, strict=True):
            p = conv(F.adaptive_avg_pool2d(top, bins))
            pooled.append(F.interpolate(p, size=top.shape[-2:], mode="bilinear", align_corners=False))
        lat = [
            *(lc(f) for lc, f in zip(self.lateral, feats[:-1], strict=True)),
            self.ppm_out(torch.cat(pooled, 1)),
        ]
        for i in range(len(lat) - 2, -1, -1):  # top-down
            lat[i] = lat[i] + F.interpolate(
                lat[i + 1], size=lat[i].shape[-2:], mode="bilinear", align_corners=False
            )
        outs = [conv(x) for conv, x in zip(self.fpn, lat[:-1], strict=True)] + [lat[-1]]
        size = outs[0].shape[-2:]
        fused = self.fuse(
            torch.cat(
                [outs[0]]
                + [F.interpolate(o, size=size, mode="bilinear", align_corners=False) for o in outs[1:]],
                1,
            )
        )
        return F.interpolate(self.classifier(fused), size=out_size, mode="bilinear", align_corners=False)
