"""Reconstruction figures: original / masked / reconstructed images, one PNG per sensor (matplotlib Agg).

Multispectral chips are shown as true colour when the image has bands near 665, 560 and 490 nm (red,
green, blue; looked up in the sensor registry), else as the first band in grey. Each image is stretched
to the 2nd-98th percentile of its original, and the same stretch is used for its masked and
reconstructed versions so that they compare directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from a2mae.sensors.registry import SensorRegistry

_RGB_NM = (665.0, 560.0, 490.0)
_RGB_TOLERANCE_NM = 45.0


def display_channels(sensor: str, bands: Sequence[str], registry: SensorRegistry) -> list[int]:
    """Channel indices to show: true colour (red, green, blue) when available, else ``[0]``."""
    try:
        s = registry.get(sensor)
    except Exception:
        return [0]
    chans = []
    for nm in _RGB_NM:
        best = min(
            ((abs(s.bands[b].center_nm - nm), i) for i, b in enumerate(bands) if b in s.bands),
            default=None,
        )
        if best is None or best[0] > _RGB_TOLERANCE_NM or best[1] in chans:
            return [0]
        chans.append(best[1])
    return chans


def _stretch(img: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    out = (img - lo) / np.maximum(hi - lo, 1e-6)
    clipped: np.ndarray = np.clip(out, 0.0, 1.0)
    return clipped


def _to_display(t: torch.Tensor, chans: list[int]) -> np.ndarray:
    arr = t.detach().float().cpu().numpy()[chans]  # [c, H, W]
    return np.moveaxis(arr, 0, -1)  # [H, W, c]


def reconstruction_figure(
    sensor: str,
    items: Sequence[tuple[Sequence[str], torch.Tensor, torch.Tensor, torch.Tensor]],
    registry: SensorRegistry,
    title: str = "",
) -> Any:
    """A figure with one row per image: original, masked input, reconstruction.

    Args:
        sensor: Sensor id of the images.
        items: Per image ``(bands, target, masked, recon)``, tensors ``[C, H, W]``.
        registry: Sensor registry (band wavelengths, for true colour).
        title: Figure title.

    Returns:
        A matplotlib ``Figure`` (Agg canvas; close it after saving).
    """
    from matplotlib.figure import Figure

    rows = max(1, len(items))
    fig = Figure(figsize=(7.5, 2.5 * rows + 0.4), dpi=80)
    axes = fig.subplots(rows, 3, squeeze=False)
    for r, (bands, target, masked, recon) in enumerate(items):
        chans = display_channels(sensor, bands, registry)
        tgt = _to_display(target, chans)
        lo = np.percentile(tgt, 2, axis=(0, 1))
        hi = np.percentile(tgt, 98, axis=(0, 1))
        for c, (name, img) in enumerate(
            (
                ("original", tgt),
                ("masked", _to_display(masked, chans)),
                ("reconstructed", _to_display(recon, chans)),
            )
        ):
            shown = _stretch(img, lo, hi)
            ax = axes[r][c]
            ax.imshow(shown[..., 0] if shown.shape[-1] == 1 else shown, cmap="gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name)
    fig.suptitle(title or sensor)
    fig.tight_layout()
    return fig


def figures_per_sensor(
    images: Sequence[Any],
    triples: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    registry: SensorRegistry,
    step: int,
    max_per_sensor: int = 4,
) -> dict[str, Any]:
    """One figure per sensor present, from ``model.reconstruct`` output.

    Args:
        images: The batch's ``ImageSample`` list (for sensor and bands).
        triples: ``(target, masked, recon)`` per image, aligned with ``images``.
        registry: Sensor registry.
        step: Optimiser step (for the titles).
        max_per_sensor: Images shown per sensor.

    Returns:
        ``{sensor: Figure}``.
    """
    grouped: dict[str, list[tuple[Sequence[str], torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
    for im, (target, masked, recon) in zip(images, triples, strict=True):
        items = grouped.setdefault(im.meta.sensor, [])
        if len(items) < max_per_sensor:
            items.append((im.meta.bands, target, masked, recon))
    return {
        sensor: reconstruction_figure(sensor, items, registry, title=f"{sensor} at step {step}")
        for sensor, items in sorted(grouped.items())
    }
