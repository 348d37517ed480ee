"""The fine-tuned model: A²-MAE encoder + task head, taking plain tensors (pure torch, no I/O).

:class:`DownstreamModel` is what gets registered in MLflow. Its :meth:`~DownstreamModel.forward` takes
``pixels [N, C, H, W]`` float32 in the dataset's file units (``[N, 2, C, H, W]`` before/after for
change detection); the sensor, band list, default GSD and per-band normalisation are fixed in its
:class:`ModelSpec`, so the served signature is one tensor. Per-sample metadata (GSD and corners read
from GeoTIFFs) can be passed from Python as ``metas``; without it the GSD of the training data is used
and the corners are unknown (the encoder's metadata-unknown path).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from a2mae.models.a2mae import A2MAE
from a2mae.models.config import A2MAEConfig
from a2mae.models.vocab import ModelInputError
from a2mae.sensors.registry import SensorRegistry
from a2mae.types import ImageMeta, ImageSample

_DECODER_ATTRS = ("decoder_embed", "decoder_meta_embed", "decoder_blocks", "decoder_norm", "heads")


@dataclass
class ModelSpec:
    """Everything that defines a fine-tuned model besides its weights (JSON-serialisable).

    Attributes:
        task: ``classification``, ``segmentation`` or ``change_detection``.
        classes: Class names in index order.
        multilabel: Multi-label classification (sigmoid outputs).
        sensor: Sensor id of the inputs.
        bands: Band ids in channel order.
        size: ``[H, W]`` of the training chips (other multiples of the patch size work too).
        gsd_m: Default GSD used when no metadata is given (None: unknown).
        mean: Per-band mean in file units (normalisation).
        std: Per-band standard deviation in file units.
        protocol: ``linear_probe`` (frozen encoder) or ``full``.
        decoder_channels: Decoder width of dense tasks.
        ignore_index: Target value excluded from the loss and metrics.
        encoder_source: Where the encoder came from (``models:/...``, a path, or ``scratch``).
        encoder_config: :class:`A2MAEConfig` of the encoder as a dict.
        sensor_entries: Sensor registry entries the encoder was built with.
        scale: Units of the training pixels: ``reflectance = pixel * scale + offset`` (``a2mae predict``
            gives the model any product of the sensor in these units). None: not recorded (models
            fine-tuned before it was; taken as the sensor's first product).
        offset: See ``scale``.
    """

    task: str
    classes: list[str]
    multilabel: bool
    sensor: str
    bands: list[str]
    size: list[int]
    gsd_m: float | None
    mean: list[float]
    std: list[float]
    protocol: str
    decoder_channels: int
    ignore_index: int
    encoder_source: str
    encoder_config: dict[str, Any] = field(default_factory=dict)
    sensor_entries: dict[str, Any] = field(default_factory=dict)
    scale: float | None = None
    offset: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


def strip_decoder(encoder: A2MAE) -> A2MAE:
    """Drop the pre-training decoder (unused downstream) in place and return the encoder."""
    for name in _DECODER_ATTRS:
        if hasattr(encoder, name):
            delattr(encoder, name)
            setattr(encoder, name, nn.Identity())
    if hasattr(encoder, "mask_token"):
        del encoder.mask_token
        encoder.register_parameter("mask_token", None)
    return encoder


def build_encoder(spec: ModelSpec) -> A2MAE:
    """A fresh (random) encoder with the architecture recorded in ``spec``, decoder stripped."""
    if not spec.sensor_entries:
        raise ModelInputError("the model spec records no sensor_entries, so its encoder cannot be rebuilt")
    registry = SensorRegistry.from_dict(spec.sensor_entries)
    return strip_decoder(A2MAE(A2MAEConfig(**spec.encoder_config), registry))


class DownstreamModel(nn.Module):
    """Encoder + head for one task (the task object of :mod:`a2mae.tasks` picks the head and the wiring).

    Args:
        encoder: The A²-MAE encoder (decoder stripped or not).
        spec: Task, classes, bands and normalisation.
        head: Built by ``head(dim, levels)``: it takes the pooled embedding ``[N, D]`` when ``pooled``,
            else the token maps and the output size.
        pooled: The head reads the pooled embedding (per-chip tasks) instead of the token maps.
        paired: Inputs are before/after pairs ``[N, 2, C, H, W]``; the head reads the absolute
            difference of their token maps (siamese encoder).
    """

    mean: torch.Tensor  # [C, 1, 1] buffer
    std: torch.Tensor  # [C, 1, 1] buffer

    def __init__(
        self,
        encoder: A2MAE,
        spec: ModelSpec,
        head: Callable[[int, int], nn.Module],
        *,
        pooled: bool,
        paired: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = strip_decoder(encoder)
        self.spec = spec
        c = len(spec.bands)
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).reshape(c, 1, 1))
        self.register_buffer(
            "std", torch.tensor(spec.std, dtype=torch.float32).clamp(min=1e-6).reshape(c, 1, 1)
        )
        self.head = head(encoder.config.embed_dim, len(encoder.config.feature_blocks))
        self.pooled, self.paired = pooled, paired
        self.frozen = spec.protocol == "linear_probe"
        if self.frozen:
            self.encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> DownstreamModel:
        """Train mode, except a frozen encoder stays in eval mode (no drop-path, no metadata dropout)."""
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def default_meta(self) -> ImageMeta:
        """Metadata used when none is given: the training sensor/bands/GSD, unknown corners."""
        s = self.spec
        return ImageMeta(sensor=s.sensor, bands=tuple(s.bands), gsd_m=s.gsd_m)

    def _samples(self, x: torch.Tensor, metas: Sequence[ImageMeta] | None) -> list[ImageSample]:
        meta = self.default_meta()
        if metas is None:
            return [ImageSample(px, meta) for px in x]
        return [ImageSample(px, m) for px, m in zip(x, metas, strict=True)]

    def forward(
        self, pixels: torch.Tensor, metas: Sequence[Sequence[ImageMeta]] | None = None
    ) -> torch.Tensor:
        """Logits.

        Args:
            pixels: ``[N, C, H, W]`` float32 in file units (``[N, 2, C, H, W]`` for paired inputs).
            metas: Optional per-sample metadata, one tuple per sample (two images for paired inputs).

        Returns:
            ``[N, K]`` (pooled heads) or ``[N, K, H, W]`` (dense heads; ``K = 2`` for change).
        """
        x = (pixels.float() - self.mean) / self.std
        if self.paired:
            n = x.shape[0]
            flat = x.reshape(n * 2, *x.shape[2:])
            flat_meta = None if metas is None else [m for pair in metas for m in pair]
            ims = self._samples(flat, flat_meta)
            feats = self.encoder.forward_features([(ims[2 * i], ims[2 * i + 1]) for i in range(n)])
            diff = [(m[:, 0] - m[:, 1]).abs() for m in feats.maps]
            logits: torch.Tensor = self.head(diff, tuple(x.shape[-2:]))
            return logits
        single = None if metas is None else [m[0] for m in metas]
        feats = self.encoder.forward_features(self._samples(x, single))
        if self.pooled:
            pooled: torch.Tensor = self.head(feats.pooled)
            return pooled
        logits = self.head(feats.maps, tuple(x.shape[-2:]))
        return logits

    @torch.no_grad()
    def predict(self, pixels: torch.Tensor) -> torch.Tensor:
        """Class predictions: ``[N]`` indices, ``[N, K]`` 0/1 (multi-label) or ``[N, H, W]``."""
        self.eval()
        logits: torch.Tensor = self(pixels)
        if self.spec.multilabel:
            return (logits.sigmoid() > 0.5).long()
        return logits.argmax(1)
