"""A²-MAE arms: the encoder(s) under test, the same architecture at random init (``scratch``).

The encoder is loaded as ``a2mae finetune`` loads it (registry URI, ``.safetensors`` checkpoint;
``@champion`` is ``models:/<registry.encoder_model>@<registry.champion_alias>``); its decoder is dropped.
Embeddings: the final normalised tokens, averaged per image (pooled) and per cell (token map).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from a2mae.benchmark.arms.base import Arm, encoder_statistics, missing_statistics
from a2mae.benchmark.data import BenchData, BenchmarkError
from a2mae.config import RegistryConfig
from a2mae.finetune.encoder import EncoderError, EncoderHandle
from a2mae.finetune.stage import FinetuneStage
from a2mae.models.a2mae import A2MAE
from a2mae.types import ImageMeta, ImageSample


def resolve_uri(uri: str, registry: RegistryConfig) -> str:
    """``@champion`` (or ``@ALIAS``) -> ``models:/<encoder model>@ALIAS``; anything else unchanged."""
    if uri.startswith("@"):
        return f"models:/{registry.encoder_model}{uri}"
    return uri


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 (16 hex) of a model's state dict (names and values)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class EncoderArm(Arm):
    """An A²-MAE encoder (pre-trained, plain MAE, or random init)."""

    handle: EncoderHandle | None = None
    use_encoder_stats: bool = False
    stats_source: str = "dataset"

    def __post_init__(self) -> None:
        assert self.handle is not None
        self.model: A2MAE = self.handle.model
        self.model.eval()
        self.patch = self.model.config.patch_size
        self._key = weights_hash(self.model)

    def prepare(self, data: BenchData, data_stats: tuple[np.ndarray, np.ndarray]) -> None:
        """The encoder's pre-training statistics, or the data's (scratch, normalization=dataset).

        Raises:
            BenchmarkError: The encoder lacks the data's sensor, or statistics for its bands.
        """
        assert self.handle is not None
        if data.sensor not in self.model.sensor_ids:
            raise BenchmarkError(
                f"encoder {self.handle.source} ({self.name}) was built for sensors {self.model.sensor_ids}, "
                f"not {data.sensor}; set benchmark.sensor/bands to a sensor it knows"
            )
        if not self.use_encoder_stats:
            self.mean, self.std = data_stats
            return
        ns = self.handle.norm_stats
        doc = ns.to_doc()
        got = encoder_statistics(doc, data.sensor, data.bands)
        if got is None:
            raise missing_statistics(self.name, self.handle.source, data.sensor, data.bands)
        self.mean, self.std = got
        self.stats_source = "encoder"

    def key(self) -> str:
        """Weights and statistics."""
        assert self.mean is not None and self.std is not None
        st = hashlib.sha256(self.mean.tobytes() + self.std.tobytes()).hexdigest()[:8]
        return f"{self.name}-{self._key}-{st}"

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, metas: Sequence[ImageMeta]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled final tokens ``[B, D]`` and the final token map ``[B, D, h, w]``."""
        feats = self.model.forward_features([ImageSample(px, m) for px, m in zip(x, metas, strict=True)])
        return feats.pooled, feats.maps[-1]


def encoder_arm(name: str, uri: str, stage: FinetuneStage, *, use_encoder_stats: bool) -> EncoderArm:
    """The encoder under test.

    Args:
        name: The arm's name.
        uri: The encoder (see :func:`resolve_uri`).
        stage: Loads the encoder (``registry`` section, scratch encoder).
        use_encoder_stats: Normalise with the encoder's pre-training statistics
            (``benchmark.normalization=encoder``), not the data's.

    Raises:
        BenchmarkError: The URI does not resolve to an a2mae encoder.
    """
    try:
        handle = stage.load_encoder(resolve_uri(uri, stage.registry))
    except EncoderError as err:
        raise BenchmarkError(str(err)) from None
    info = {k: str(v) for k, v in handle.info.items() if not isinstance(v, dict)}
    lineage = {"source": handle.source, **info}
    return EncoderArm(name, lineage=lineage, handle=handle, use_encoder_stats=use_encoder_stats)


def scratch_arm(of: EncoderArm, seed: int) -> EncoderArm:
    """The same architecture and sensors as ``of``, randomly initialised with ``seed``."""
    from a2mae.finetune.run import scratch_like

    assert of.handle is not None
    h = scratch_like(of.handle, seed)
    return EncoderArm("scratch", lineage={"architecture_of": of.handle.source, "seed": str(seed)}, handle=h)
