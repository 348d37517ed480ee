"""Models built with the project's default parameters and sensor registry (tests and benchmarks)."""

from __future__ import annotations

import functools
from typing import Any

from a2mae.config import ModelConfig, load_params
from a2mae.models import A2MAE, create_model
from a2mae.sensors import SensorRegistry, get_registry


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
