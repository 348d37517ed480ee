"""Registry of A²-MAE variants (timm style): ``@register_model``, :func:`create_model`, :func:`list_models`.

Variant names encode the encoder size, the patch size and the pre-training tile size, e.g.
``a2mae_vit_base_p8_t96``. A variant function returns the architecture fields of
:class:`~a2mae.models.config.A2MAEConfig`; :func:`create_model` joins them with the ``model`` section of
the parameters and the sensor registry the caller passes, applies overrides (any config field) and builds
the model. Building a model reads no file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from a2mae.config import ModelConfig, Params, register_check
from a2mae.errors import A2maeError
from a2mae.models.config import A2MAEConfig
from a2mae.sensors.registry import SensorRegistry

if TYPE_CHECKING:
    from a2mae.models.a2mae import A2MAE


class UnknownModelError(A2maeError, KeyError):
    """No variant of that name; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ModelConfigError(A2maeError, ValueError):
    """An override is not a config field or has an invalid value."""


_VARIANTS: dict[str, Callable[[], dict[str, Any]]] = {}


def register_model(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """Register a variant function under its own name."""
    _VARIANTS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Registered variant names, sorted."""
    return sorted(_VARIANTS)


def model_config(name: str, settings: ModelConfig, **overrides: Any) -> A2MAEConfig:
    """The config of a variant built with ``settings`` and ``overrides``.

    Args:
        name: Variant name (see :func:`list_models`); it wins over ``settings.name``.
        settings: The ``model`` section of the parameters (objective and knobs).
        **overrides: Any :class:`A2MAEConfig` field, e.g. ``depth=2`` (they win).

    Raises:
        UnknownModelError: ``name`` is not registered.
        ModelConfigError: An override is unknown or invalid.
    """
    if name not in _VARIANTS:
        raise UnknownModelError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    unknown = sorted(set(overrides) - set(A2MAEConfig.model_fields))
    if unknown:
        raise ModelConfigError(
            f"model {name}: unknown option {unknown[0]!r} (options: {', '.join(A2MAEConfig.model_fields)})"
        )
    fields = {**settings.model_dump(), **_VARIANTS[name](), "name": name, **overrides}
    try:
        return A2MAEConfig(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "config"
        raise ModelConfigError(f"model {name}: {loc}: {first['msg']} (got {first.get('input')!r})") from None


def create_model(name: str, settings: ModelConfig, registry: SensorRegistry, **overrides: Any) -> A2MAE:
    """Build a registered variant (randomly initialised).

    Args:
        name: Variant name (see :func:`list_models`).
        settings: The ``model`` section of the parameters, e.g. ``load_params().model``.
        registry: The sensor registry the model takes its sensors, bands and groups from.
        **overrides: Any :class:`A2MAEConfig` field, e.g. ``mask_ratio=0.8, depth=2, sensors=["S2"]``.

    Returns:
        The model.

    Raises:
        UnknownModelError: Unknown name.
        ModelConfigError: Unknown or invalid override.
    """
    from a2mae.models.a2mae import A2MAE  # torch: loaded only when a model is built

    return A2MAE(model_config(name, settings, **overrides), registry)


def create_model_from_params(model_params: ModelConfig, registry: SensorRegistry, **extra: Any) -> A2MAE:
    """Build the model the ``model`` section of the parameters names.

    Args:
        model_params: :class:`a2mae.config.ModelConfig` (``Params.model``).
        registry: Sensor registry.
        **extra: Further overrides (they win), e.g. ``pretrain.model_overrides``.
    """
    return create_model(model_params.name, model_params, registry, **extra)


def check_chip_size(model_params: ModelConfig, chip_size: int, **extra: Any) -> None:
    """Fail early, with one line, when chips of ``chip_size`` pixels cannot be patchified by the model.

    Raises:
        ModelConfigError: The model options are invalid, or the chip size is no multiple of the patch.
    """
    config = model_config(model_params.name, model_params, **extra)
    if chip_size % config.patch_size:
        raise ModelConfigError(
            f"tile.chip_size {chip_size} is not a multiple of the patch size {config.patch_size} of "
            f"model {config.name}; use a multiple of {config.patch_size} (e.g. {config.tile_size})"
        )


@register_check
def _chip_fits_patch(params: Params) -> None:
    """The check across sections of this layer: tiled chips fit the model (run by ``validate_params``)."""
    check_chip_size(params.model, params.tile.chip_size, **params.pretrain.model_overrides)


def _vit(
    dim: int, depth: int, heads: int, dec_dim: int, dec_depth: int, dec_heads: int, p: int, t: int
) -> dict[str, Any]:
    return {
        "embed_dim": dim,
        "depth": depth,
        "num_heads": heads,
        "decoder_embed_dim": dec_dim,
        "decoder_depth": dec_depth,
        "decoder_num_heads": dec_heads,
        "patch_size": p,
        "tile_size": t,
    }


@register_model
def a2mae_vit_nano_p8_t96() -> dict[str, Any]:
    """ViT-Nano (128-d, 6 blocks, 4 heads), decoder 64-d / 1 block: smoke runs and CI on a laptop CPU."""
    return _vit(128, 6, 4, 64, 1, 2, 8, 96)


@register_model
def a2mae_vit_tiny_p8_t96() -> dict[str, Any]:
    """ViT-Tiny (192-d, 12 blocks, 3 heads), decoder 128-d / 2 blocks: the CPU demo size."""
    return _vit(192, 12, 3, 128, 2, 4, 8, 96)


@register_model
def a2mae_vit_small_p8_t96() -> dict[str, Any]:
    """ViT-Small (384-d, 12 blocks, 6 heads), decoder 256-d / 4 blocks."""
    return _vit(384, 12, 6, 256, 4, 8, 8, 96)


@register_model
def a2mae_vit_base_p8_t96() -> dict[str, Any]:
    """ViT-Base (768-d, 12 blocks, 12 heads), decoder 512-d / 8 blocks (MAE's ViT-B)."""
    return _vit(768, 12, 12, 512, 8, 16, 8, 96)


@register_model
def a2mae_vit_large_p8_t96() -> dict[str, Any]:
    """ViT-Large (1024-d, 24 blocks, 16 heads), decoder 512-d / 8 blocks."""
    return _vit(1024, 24, 16, 512, 8, 16, 8, 96)
