"""Models for tests and benchmarks (no training, no downloads).

* :func:`build_model` -- a variant built with the project's default parameters and sensor registry.
* :func:`tiny_downstream` -- a real :class:`~a2mae.models.downstream.DownstreamModel` with a tiny random
  A²-MAE encoder (2 blocks, width 32), for any task (``a2mae predict`` tests and benchmarks).
* :class:`BandThresholdTestModel` -- a **test model** with a known output: class 1 where one band
  exceeds a threshold, class 0 elsewhere (logits ``+-10``), pixel by pixel, so the expected map of
  ``a2mae predict`` is exactly ``band > threshold`` (and for change detection: the threshold flips
  between before and after). Not a model for real use.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from a2mae import tasks
from a2mae.config import ModelConfig, load_params
from a2mae.models import A2MAE, create_model
from a2mae.models.downstream import DownstreamModel, ModelSpec
from a2mae.sensors import SensorRegistry, get_registry
from a2mae.types import ImageMeta


@functools.cache
def default_settings() -> ModelConfig:
    """The ``model`` section of the default ``params.yaml``."""
    return load_params().model


def default_registry() -> SensorRegistry:
    """The built-in sensor registry (plus ``$A2MAE_SENSOR_FILES``)."""
    return get_registry()


def build_model(name: str = "a2mae_vit_tiny_p8_t96", **overrides: Any) -> A2MAE:
    """A variant built with the default settings and registry; ``overrides`` as for ``create_model``."""
    return create_model(name, default_settings(), default_registry(), **overrides)


#: The tiny encoder's options (seconds on 2 cores).
TINY_ENCODER = {
    "depth": 2,
    "embed_dim": 32,
    "num_heads": 2,
    "decoder_embed_dim": 32,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
    "sensors": ["S2"],
}


def spec_for(
    task: str,
    bands: Sequence[str],
    classes: Sequence[str],
    size: int = 32,
    sensor: str = "S2",
    **extra: Any,
) -> ModelSpec:
    """A :class:`ModelSpec` without an encoder (for :class:`BandThresholdTestModel`)."""
    return ModelSpec(
        task=task,
        classes=list(classes),
        multilabel=False,
        sensor=sensor,
        bands=list(bands),
        size=[size, size],
        gsd_m=extra.get("gsd_m", 10.0),
        mean=[0.0] * len(bands),
        std=[1.0] * len(bands),
        protocol="full",
        decoder_channels=16,
        ignore_index=255,
        encoder_source="test",
    )


def tiny_encoder(seed: int = 0, **overrides: Any) -> A2MAE:
    """A random tiny A²-MAE (with its decoder, as pre-training leaves it).

    ``overrides`` replace :data:`TINY_ENCODER` (``{"sensors": ["S2"]}``: the registered tiny variant).
    """
    torch.manual_seed(seed)
    return build_model("a2mae_vit_tiny_p8_t96", **(overrides or TINY_ENCODER))


def tiny_downstream(
    task: str = "segmentation",
    bands: Sequence[str] | None = None,
    k: int = 3,
    size: int = 32,
    seed: int = 0,
    encoder: dict[str, Any] | None = None,
) -> DownstreamModel:
    """A random fine-tuned model with the tiny encoder (S2; default bands: all the encoder knows)."""
    enc = tiny_encoder(seed, **(encoder or {}))
    bands = list(bands or [b for kb in enc.vocab.key_bands for b in kb])
    spec = ModelSpec(
        task, [f"class{i}" for i in range(k)], False, "S2", bands, [size, size], 10.0,
        [1000.0] * len(bands), [300.0] * len(bands), "full", 16, 255, "scratch",
        enc.config.model_dump(mode="json"), enc.sensor_entries,
    )  # fmt: skip
    return tasks.get(task).build_model(enc, spec).eval()


class BandThresholdTestModel(nn.Module):
    """Test model: class 1 where band ``band`` > ``threshold``, else 0 (see the module docstring).

    Args:
        spec: Task (``segmentation``, ``change_detection`` or ``classification``), bands, classes (2).
        band: Channel index tested.
        threshold: Threshold in file units.
    """

    def __init__(self, spec: ModelSpec, band: int = 0, threshold: float = 1000.0) -> None:
        super().__init__()
        self.spec, self.band, self.threshold = spec, band, threshold

    def forward(
        self, pixels: torch.Tensor, metas: Sequence[Sequence[ImageMeta]] | None = None
    ) -> torch.Tensor:
        """Logits ``[N, 2, H, W]`` (``[N, 2]`` for classification: the chip mean is tested)."""
        x = pixels.float()
        task = tasks.get(self.spec.task)
        if task.paired:
            on = (x[:, 0, self.band] > self.threshold) != (x[:, 1, self.band] > self.threshold)
        elif not task.dense:
            on = x[:, self.band].mean((-1, -2)) > self.threshold
        else:
            on = x[:, self.band] > self.threshold
        s = on.float() * 20.0 - 10.0
        return torch.stack([-s, s], 1)
