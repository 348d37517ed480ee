"""A²-MAE model code: pure torch + timm layers (no file I/O, Ray, Prefect or MLflow).

Public API::

    from a2mae.config import load_params
    from a2mae.models import create_model, list_models
    from a2mae.sensors import get_registry

    params = load_params()
    model = create_model("a2mae_vit_tiny_p8_t96", params.model, get_registry(), mask_ratio=0.75)
    out = model(batch, generator=torch.Generator().manual_seed(0))   # A2MAEOutput
    out.loss.backward()
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module defining it. Loaded on first use, so ``a2mae.models.variants`` (the variant
#: registry and configs: no torch) stays cheap for the parameter checks of every command.
_EXPORTS = {
    "A2MAE": "a2mae.models.a2mae",
    "A2MAEOutput": "a2mae.models.a2mae",
    "FeatureOutput": "a2mae.models.a2mae",
    "A2MAEConfig": "a2mae.models.config",
    "ModelConfigError": "a2mae.models.variants",
    "UnknownModelError": "a2mae.models.variants",
    "check_chip_size": "a2mae.models.variants",
    "create_model": "a2mae.models.variants",
    "create_model_from_params": "a2mae.models.variants",
    "list_models": "a2mae.models.variants",
    "model_config": "a2mae.models.variants",
    "register_model": "a2mae.models.variants",
    "ModelInputError": "a2mae.models.vocab",
}

if TYPE_CHECKING:
    from a2mae.models.a2mae import A2MAE, A2MAEOutput, FeatureOutput
    from a2mae.models.config import A2MAEConfig
    from a2mae.models.variants import (
        ModelConfigError,
        UnknownModelError,
        check_chip_size,
        create_model,
        create_model_from_params,
        list_models,
        model_config,
        register_model,
    )
    from a2mae.models.vocab import ModelInputError


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'a2mae.models' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "A2MAE",
    "A2MAEConfig",
    "A2MAEOutput",
    "FeatureOutput",
    "ModelConfigError",
    "ModelInputError",
    "UnknownModelError",
    "check_chip_size",
    "create_model",
    "create_model_from_params",
    "list_models",
    "model_config",
    "register_model",
]
