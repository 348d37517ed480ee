"""Architecture and objective configuration of an A²-MAE model (JSON-serialisable, stored in checkpoints).

:class:`A2MAEConfig` is the ``model`` section of ``params.yaml`` (:class:`a2mae.config.ModelConfig`: the
variant name, the objective and the training-time knobs, whose defaults live in ``params.yaml`` only)
plus the architecture of the registered variant (:mod:`a2mae.models.variants`). Nothing here has a
default that ``params.yaml`` also holds: a model is always built from explicit settings.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from a2mae.config import ModelConfig


class A2MAEConfig(ModelConfig):
    """Everything needed to rebuild an :class:`~a2mae.models.a2mae.A2MAE` (besides the sensor registry)."""

    # ---------------------------------------------------------------------------- architecture
    patch_size: int = Field(gt=0, description="Square patch side in pixels.")
    tile_size: int = Field(gt=0, description="Pre-training chip side in pixels (informational).")
    embed_dim: int = Field(gt=0, multiple_of=4, description="Encoder width D.")
    depth: int = Field(gt=0, description="Encoder blocks.")
    num_heads: int = Field(gt=0)
    decoder_embed_dim: int = Field(gt=0, multiple_of=4, description="Decoder width Dd.")
    decoder_depth: int = Field(gt=0)
    decoder_num_heads: int = Field(gt=0)
    sensors: list[str] | None = Field(
        default=None, description="Sensor ids the model is built for (None: every registered sensor)."
    )

    @model_validator(mode="after")
    def _check_heads(self) -> A2MAEConfig:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.decoder_embed_dim % self.decoder_num_heads:
            raise ValueError(
                f"decoder_embed_dim {self.decoder_embed_dim} is not divisible by "
                f"decoder_num_heads {self.decoder_num_heads}"
            )
        return self

    @property
    def budget_fraction(self) -> float:
        """Fraction of a set's tokens the encoder sees."""
        return self.visible_fraction if self.visible_fraction is not None else 1.0 - self.mask_ratio

    @property
    def feature_blocks(self) -> tuple[int, ...]:
        """Encoder block indices (0-based) whose outputs form the multi-level features."""
        d = self.depth
        return tuple(sorted({max(0, d // 4 - 1), max(0, d // 2 - 1), max(0, 3 * d // 4 - 1), d - 1}))
