"""Architecture and objective configuration of an A²-MAE model (JSON-serialisable, stored in checkpoints).

The architecture fields come from the registered variant (:mod:`a2mae.models.variants`); the objective
fields (mask ratio, anchor and masking policies, metadata dropout, ...) mirror the ``model`` section of
``params.yaml``. The defaults of the objective fields here equal those of ``params.yaml`` (a test checks
it): a model created by name without overrides behaves like the project's default configuration.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

AnchorPolicy = Literal["random", "finest_gsd", "coarsest_gsd"]
MaskingPolicy = Literal["aligned", "complementary", "independent"]
AnchorGroupMask = Literal["consistent", "independent"]


class A2MAEConfig(BaseModel):
    """Everything needed to rebuild an :class:`~a2mae.models.a2mae.A2MAE` (besides the sensor registry)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # ---------------------------------------------------------------------------- architecture
    name: str = Field(description="Registered variant name, e.g. a2mae_vit_tiny_p8_t96.")
    patch_size: int = Field(gt=0, description="Square patch side in pixels.")
    tile_size: int = Field(gt=0, description="Pre-training chip side in pixels (informational).")
    embed_dim: int = Field(gt=0, multiple_of=4, description="Encoder width D.")
    depth: int = Field(gt=0, description="Encoder blocks.")
    num_heads: int = Field(gt=0)
    decoder_embed_dim: int = Field(gt=0, multiple_of=4, description="Decoder width Dd.")
    decoder_depth: int = Field(gt=0)
    decoder_num_heads: int = Field(gt=0)
    mlp_ratio: float = Field(default=4.0, gt=0)
    drop_path_rate: float = Field(default=0.0, ge=0, lt=1)
    sensors: list[str] | None = Field(
        default=None, description="Sensor ids the model is built for (None: every registered sensor)."
    )

    # -------------------------------------------------------------------- geographic encoding
    geo_encoding: bool = Field(
        default=True,
        description="Eq. 1/Eq. 2 metric sin-cos plus global and GSD terms; False: grid-index sin-cos.",
    )
    g_ref_m: float = Field(default=80.0, gt=0, description="Reference distance G_ref of Eq. 2 (metres).")
    metadata_dropout: float = Field(
        default=0.1, ge=0, le=1, description="P(drop location/GSD/time), training."
    )

    # ------------------------------------------------------------------------------ objective
    mask_ratio: float = Field(default=0.75, gt=0, lt=1, description="Mask ratio r_a on the anchor image.")
    anchor_policy: AnchorPolicy = "random"
    masking: MaskingPolicy = "aligned"
    anchor_group_mask: AnchorGroupMask = Field(
        default="consistent", description="Anchor groups share one cell mask, or draw their own."
    )
    stratified_anchor_mask: bool = Field(
        default=True, description="Mask the anchor ground under the other images at ratio r exactly."
    )
    r_extra: float = Field(default=0.25, ge=0, le=1, description="Mask ratio of free in-footprint tokens.")
    r_out: float = Field(default=0.75, ge=0, le=1, description="Mask ratio outside the anchor footprint.")
    visible_fraction: float | None = Field(
        default=None, gt=0, le=1, description="Visible-token budget per set (None: 1 - mask_ratio)."
    )
    supersample: int = Field(default=4, ge=1, le=16, description="Points per token side for footprints.")
    decoder_token_cap: int | None = Field(
        default=2048, gt=0, description="Max decoder tokens per set (random masked subset); None: all."
    )
    norm_pix_loss: bool = True

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
