"""The per-band statistics a fine-tuned model normalises its inputs with (``finetune.normalization``)."""

from __future__ import annotations

import math
from typing import Any

from a2mae.finetune import engine
from a2mae.finetune.encoder import EncoderHandle
from a2mae.normstats import NormStatsError
from a2mae.tasks.data import DatasetInfo
from a2mae.tasks.errors import DatasetError

#: Largest per-band mean (reflectance) of chips stored as reflectance; larger means are DNs.
_REFLECTANCE_MAX = 3.2767


def normalization_used(mode: str, handle: EncoderHandle, info: DatasetInfo) -> str:
    """The normalisation a run uses: ``encoder`` (pre-training statistics) or ``dataset`` (train split).

    ``mode`` is ``finetune.normalization``: ``auto`` (the default) takes the encoder's statistics for a
    pre-trained encoder that has them for the chips' sensor and bands, and the train split's for a
    scratch encoder (or one without them).
    """
    if not handle.pretrained:
        return "dataset"
    if mode == "auto":
        return "encoder" if handle.norm_stats.covers(info.sensor, info.bands) else "dataset"
    return mode


def _file_unit(handle: EncoderHandle, info: DatasetInfo, data_mean: list[float]) -> tuple[float, float]:
    """``(scale, offset)`` from the chips' file units to reflectance (reflectance = value x scale + offset).

    Chips whose band means all lie within the storable reflectance range are reflectance already;
    otherwise they are DNs of one of the sensor's products (the encoder's sensor entry): the product
    whose scale brings the chips' band means closest to the encoder's (S2 L1C/L2A DNs are reflectance x
    10000, ARCSI stacks x 1000).

    Raises:
        DatasetError: DNs of a sensor without products, or with no band statistics to compare with.
    """
    if max(abs(m) for m in data_mean) <= _REFLECTANCE_MAX:
        return 1.0, 0.0
    products = (handle.model.sensor_entries.get(info.sensor) or {}).get("products") or {}
    scales = sorted({(float(p.get("scale", 1.0)), float(p.get("offset", 0.0))) for p in products.values()})
    known = handle.norm_stats.known_bands(info.sensor, info.bands)
    if not scales or not known:
        raise DatasetError(
            f"finetune.normalization=encoder: cannot tell how the {info.sensor} chips' DNs map to "
            "reflectance; store the chips as reflectance or use finetune.normalization=dataset"
        )
    enc = handle.norm_stats.sensors[info.sensor]
    pairs = [(data_mean[info.bands.index(b)], enc[b].mean) for b in known]

    def misfit(so: tuple[float, float]) -> float:
        logs = [abs(math.log(max(d * so[0] + so[1], 1e-6) / max(e, 1e-6))) for d, e in pairs]
        return sorted(logs)[len(logs) // 2]

    return min(scales, key=misfit)


def input_norm(
    mode: str, handle: EncoderHandle, info: DatasetInfo, train: Any
) -> tuple[list[float], list[float]]:
    """Per-band ``(mean, std)`` of the inputs, in file units (see :func:`normalization_used`).

    Raises:
        DatasetError: ``finetune.normalization=encoder`` and a pre-trained encoder lacks these bands.
    """
    mean, std = engine.norm_stats(train)
    if normalization_used(mode, handle, info) == "dataset":
        return mean, std
    scale, offset = _file_unit(handle, info, mean)
    try:
        enc_mean, enc_std = handle.norm_stats.mean_std(
            info.sensor, info.bands, unit=scale, offset=offset, source=f"the encoder {handle.source}"
        )
    except NormStatsError as err:
        raise DatasetError(f"finetune.normalization: {err}, or finetune.normalization=dataset") from None
    return list(enc_mean), list(enc_std)
