"""Validation of a fine-tuned model's ``spec.json`` before anything is allocated.

A ``spec.json`` read from the model store is untrusted input: one edited number (``embed_dim``,
``decoder_channels``, the class list) decides how much memory building the model takes. It is checked
in three steps, each failing with one line that names the file and the key:

1. **types and bounds** (:class:`SpecDoc`, pydantic): every field has a type and a range;
2. **consistency**: as many means/stds as bands, chip size a multiple of the patch size, the encoder
   config valid (:class:`~a2mae.models.config.A2MAEConfig`);
3. **against the weights**: the model is built on PyTorch's ``meta`` device (no memory) and the shape
   of every tensor is compared with the ``weights.safetensors`` header (read without loading a tensor).

Only then is the model built for real, so its size is the size of the weights file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from a2mae import tasks
from a2mae.registry.errors import RegistryError

#: Largest encoder accepted from a spec (a ViT-Huge has 1280 x 32).
MAX_EMBED_DIM = 4096
MAX_DEPTH = 64
MAX_CLASSES = 1024
MAX_BANDS = 64
MAX_CHIP = 4096


class EncoderConfigBounds(BaseModel):
    """Bounds of the encoder config fields that decide its size (the rest: A2MAEConfig's own checks)."""

    model_config = ConfigDict(extra="allow")

    patch_size: int = Field(ge=1, le=64)
    embed_dim: int = Field(ge=4, le=MAX_EMBED_DIM)
    depth: int = Field(ge=1, le=MAX_DEPTH)
    num_heads: int = Field(ge=1, le=128)
    decoder_embed_dim: int = Field(ge=4, le=MAX_EMBED_DIM)
    decoder_depth: int = Field(ge=1, le=MAX_DEPTH)
    decoder_num_heads: int = Field(ge=1, le=128)
    mlp_ratio: float = Field(default=4.0, gt=0, le=16)


class SpecDoc(BaseModel):
    """The schema of ``spec.json`` (mirrors :class:`a2mae.models.downstream.ModelSpec`)."""

    model_config = ConfigDict(extra="forbid", strict=False)

    task: str = Field(min_length=1, max_length=64, description="A registered task (a2mae.tasks).")
    classes: list[str] = Field(min_length=1, max_length=MAX_CLASSES)
    multilabel: bool
    sensor: str = Field(min_length=1, max_length=64)
    bands: list[str] = Field(min_length=1, max_length=MAX_BANDS)
    size: list[int] = Field(min_length=2, max_length=2)
    gsd_m: float | None = Field(gt=0, le=1e5)
    mean: list[float]
    std: list[float]
    protocol: Literal["linear_probe", "full"]
    decoder_channels: int = Field(ge=1, le=2048)
    ignore_index: int = Field(ge=0, le=65535)
    encoder_source: str = Field(max_length=4096)
    encoder_config: dict[str, Any]
    sensor_entries: dict[str, Any] = Field(default_factory=dict)
    scale: float | None = Field(default=None, gt=0, le=1e6)
    offset: float | None = Field(default=None, ge=-1e6, le=1e6)


def _first_error(err: ValidationError) -> str:
    e = err.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or "(top level)"
    return f"{where}: {e['msg']}"


def validate_spec_doc(doc: Any, where: str) -> dict[str, Any]:
    """Check types, bounds and consistency of a parsed ``spec.json``.

    Args:
        doc: The parsed JSON.
        where: The file (for messages).

    Returns:
        The validated document (plain dict, ready for ``ModelSpec.from_dict``).

    Raises:
        RegistryError: One line naming the file and the offending key.
    """
    from a2mae.models.config import A2MAEConfig

    try:
        spec = SpecDoc.model_validate(doc)
        EncoderConfigBounds.model_validate(spec.encoder_config)
        A2MAEConfig.model_validate(spec.encoder_config)
    except ValidationError as err:
        raise RegistryError(
            f"{where}: invalid model spec ({_first_error(err)}); re-register the model"
        ) from None
    task = tasks.find(spec.task)
    if task is None:
        raise RegistryError(
            f"{where}: invalid model spec (task: unknown task {spec.task!r}, known: "
            f"{', '.join(tasks.names())}); re-register the model"
        )
    wrong = task.check_spec(spec.classes, spec.multilabel)
    if wrong is not None:
        raise RegistryError(f"{where}: invalid model spec ({wrong}); re-register the model")
    n = len(spec.bands)
    if len(spec.mean) != n or len(spec.std) != n:
        raise RegistryError(f"{where}: {n} bands but {len(spec.mean)} means and {len(spec.std)} stds")
    if not all(math.isfinite(v) for v in (*spec.mean, *spec.std)) or min(spec.std) <= 0:
        raise RegistryError(f"{where}: mean/std must be finite and std > 0")
    patch = int(spec.encoder_config["patch_size"])
    if any(s < patch or s > MAX_CHIP or s % patch for s in spec.size):
        raise RegistryError(
            f"{where}: size {spec.size} must be multiples of the patch size {patch} up to {MAX_CHIP}"
        )
    return spec.model_dump()


def weight_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes stored in a ``.safetensors`` file, from its header (no tensor is read).

    Raises:
        RegistryError: Not a readable safetensors file.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise RegistryError(f"{weights}: not a readable .safetensors file ({err})") from None


def check_against_weights(spec: Any, weights: Path, where: str) -> None:
    """Build the model on the ``meta`` device and compare its tensor shapes with the weights file.

    Raises:
        RegistryError: A tensor is missing, extra, or of another shape than the weights hold.
    """
    import torch

    from a2mae.models.downstream import build_encoder

    stored = weight_shapes(weights)
    with torch.device("meta"):
        model = tasks.get(spec.task).build_model(build_encoder(spec), spec)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    odd = sorted(k for k in set(expected) & set(stored) if expected[k] != stored[k])
    if missing or extra or odd:
        what = (
            f"missing {missing[:3]}"
            if missing
            else f"unexpected {extra[:3]}"
            if extra
            else f"{odd[0]} is {list(stored[odd[0]])} in the weights but {list(expected[odd[0]])} in the spec"
        )
        raise RegistryError(f"{where}: spec.json does not match the weights ({what}); re-register the model")


def read_spec(folder: Path) -> Any:
    """Read, validate and check ``spec.json`` against ``weights.safetensors`` in ``folder``.

    Returns:
        The :class:`~a2mae.models.downstream.ModelSpec` (nothing allocated yet).

    Raises:
        RegistryError: Files missing, invalid JSON, bad values, or a spec that does not fit the weights.
    """
    from a2mae.models.downstream import ModelSpec

    spec_p, w_p = folder / "spec.json", folder / "weights.safetensors"
    if not spec_p.is_file() or not w_p.is_file():
        raise RegistryError(f"{folder}: no spec.json/weights.safetensors; not an a2mae fine-tuned model")
    if spec_p.stat().st_size > 1 << 20:
        raise RegistryError(f"{spec_p}: larger than 1 MiB; not an a2mae model spec")
    try:
        doc = json.loads(spec_p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RegistryError(f"{spec_p}: not valid JSON ({err}); re-register the model") from None
    spec = ModelSpec.from_dict(validate_spec_doc(doc, str(spec_p)))
    check_against_weights(spec, w_p, str(spec_p))
    return spec
