"""A²-MAE checkpoints: weights in one ``.safetensors`` file, everything else as JSON in its header.

The header metadata (``__metadata__``, string to string) holds one key, ``a2mae``, whose value is a JSON
document with the variant name, the full model config, the sensor registry entries the model was built
for, the normalisation statistics of the data it was trained on, the a2mae version and free ``extra``
data (step, dataset lineage, ...). Loading rebuilds the model from that document and the tensors only:
nothing is unpickled, and the local sensor registry is not needed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from pydantic import ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from a2mae import __version__
from a2mae.errors import A2maeError
from a2mae.io.atomic import atomic_path
from a2mae.models.a2mae import A2MAE
from a2mae.models.config import A2MAEConfig
from a2mae.sensors.registry import SensorRegistry, SensorRegistryError

FORMAT = "a2mae-checkpoint"
FORMAT_VERSION = 1
META_KEY = "a2mae"


class _StatsDoc(Protocol):
    """What :class:`a2mae.normstats.NormStats` offers a checkpoint (it imports this module, not back)."""

    def to_doc(self) -> dict[str, Any]: ...


class CheckpointError(A2maeError, ValueError):
    """A checkpoint file is missing, unreadable, or not an a2mae checkpoint."""


def save_checkpoint(
    path: str | os.PathLike[str],
    model: A2MAE,
    *,
    norm_stats: _StatsDoc | Mapping[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` to ``path`` (a ``.safetensors`` file), atomically.

    Args:
        path: Target file; ``.safetensors`` is appended when missing.
        model: The model (any device; tensors are copied to CPU).
        norm_stats: Normalisation statistics of the training data: a :class:`~a2mae.normstats.NormStats`
            or its JSON document (the snapshot's ``stats.json``), read back with
            :func:`a2mae.normstats.load_stats`.
        extra: Further JSON-serialisable metadata (training step, dataset md5, git sha, ...).

    Returns:
        The written path.

    Raises:
        CheckpointError: ``norm_stats`` or ``extra`` is not JSON-serialisable.
    """
    target = Path(path)
    if target.suffix != ".safetensors":
        target = target.with_name(target.name + ".safetensors")
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "a2mae_version": __version__,
        "variant": model.config.name,
        "config": model.config.model_dump(mode="json"),
        "sensors": model.sensor_entries,
        "norm_stats": dict(norm_stats) if isinstance(norm_stats, Mapping) else norm_stats.to_doc(),
        "extra": extra or {},
    }
    try:
        meta = json.dumps(doc, allow_nan=False)  # key order matters: token-group order
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{target}: checkpoint metadata is not JSON-serialisable ({err})") from None
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: meta})
    return target


def read_checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON metadata of a checkpoint, without loading its tensors.

    Raises:
        CheckpointError: Missing file, not safetensors, or not an a2mae checkpoint.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{p}: not a readable .safetensors file ({err})") from None
    if raw is None:
        raise CheckpointError(f"{p}: no '{META_KEY}' metadata; not an a2mae checkpoint")
    try:
        doc: dict[str, Any] = json.loads(raw)
    except json.JSONDecodeError:
        raise CheckpointError(f"{p}: corrupt '{META_KEY}' metadata (invalid JSON)") from None
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not an a2mae checkpoint (format {doc.get('format')!r})")
    if doc.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{p}: checkpoint format {doc['format_version']} is newer than this a2mae reads "
            f"({FORMAT_VERSION}); upgrade a2mae"
        )
    return doc


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[A2MAE, dict[str, Any]]:
    """Rebuild a model from a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: The ``.safetensors`` file.
        map_location: Device for the weights.

    Returns:
        ``(model in eval mode, metadata)``; metadata holds ``variant``, ``config``, ``sensors``,
        ``norm_stats``, ``extra`` and ``a2mae_version``.

    Raises:
        CheckpointError: Unreadable file, bad metadata, or weights that do not match the config.
    """
    p = Path(path)
    doc = read_checkpoint_meta(p)
    try:
        config = A2MAEConfig.model_validate(doc["config"])
        registry = SensorRegistry.from_dict(doc["sensors"], source=f"{p}:sensors")
    except (KeyError, ValidationError, SensorRegistryError) as err:
        raise CheckpointError(f"{p}: invalid model config or sensors in the metadata ({err})") from None
    with torch.device("meta"):
        model = A2MAE(config, registry=registry)
    state: dict[str, torch.Tensor] = {}
    with safe_open(str(p), framework="pt", device=str(map_location)) as f:
        for key in f.keys():  # noqa: SIM118  (safe_open is not a mapping)
            state[key] = f.get_tensor(key)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"{p}: weights do not match the {config.name} config ({what})")
    model.load_state_dict(state, assign=True)
    _rebuild_buffers(model, map_location)
    model.eval()
    return model, doc


def _rebuild_buffers(model: A2MAE, device: str | torch.device) -> None:
    """Re-create non-persistent buffers (built on the meta device) on ``device``."""
    for mod in (model.meta_embed, model.decoder_meta_embed):
        mod.key_type = torch.tensor(model.vocab.key_type, dtype=torch.long, device=device)
