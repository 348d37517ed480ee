"""A²-MAE model code: pure torch + timm layers (no file I/O, Ray, Prefect or MLflow).

Public API::

    from a2mae.models import create_model, list_models
    model = create_model("a2mae_vit_tiny_p8_t96", mask_ratio=0.75)
    out = model(batch, generator=torch.Generator().manual_seed(0))   # A2MAEOutput
    out.loss.backward()
"""

from __future__ import annotations

from a2mae.models.a2mae import A2MAE, A2MAEOutput, FeatureOutput
from a2mae.models.config import A2MAEConfig
from a2mae.models.variants import (
    ModelConfigError,
    UnknownModelError,
    create_model,
    create_model_from_params,
    list_models,
    model_config,
    register_model,
)
from a2mae.models.vocab import ModelInputError

__all__ = [
    "A2MAE",
    "A2MAEConfig",
    "A2MAEOutput",
    "FeatureOutput",
    "ModelConfigError",
    "ModelInputError",
    "UnknownModelError",
    "create_model",
    "create_model_from_params",
    "list_models",
    "model_config",
    "register_model",
]
