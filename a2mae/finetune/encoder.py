"""Where the fine-tuned encoder comes from: the registry, a checkpoint file, or scratch.

``load_encoder(uri, registry, scratch)`` accepts:

* ``models:/a2mae-encoder@champion`` / ``models:/a2mae-encoder/3`` (any registered name, alias or
  version) -- the encoder model logged by pre-training (:func:`a2mae.registry.encoder.log_encoder`): its
  a2mae checkpoint is downloaded and rebuilt, nothing unpickled;
* a local ``.safetensors`` checkpoint written by :func:`a2mae.checkpoint.save_checkpoint`;
* ``scratch`` -- a randomly initialised encoder built by ``scratch`` (:func:`scratch_encoder`: the
  ``model`` section of the parameters, seeded with ``finetune.seed``; the baseline of
  ``--compare-scratch``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from a2mae.config import ModelConfig, RegistryConfig
from a2mae.finetune.errors import EncoderError as EncoderError  # re-exported
from a2mae.models import A2MAE, create_model_from_params
from a2mae.normstats import NormStats, NormStatsError
from a2mae.sensors import get_registry

SCRATCH = "scratch"


@dataclass
class EncoderHandle:
    """A loaded encoder and where it came from.

    Attributes:
        model: The A²-MAE model (its decoder is dropped downstream).
        source: The URI it was loaded from (``scratch`` for a fresh one).
        norm_stats: Pre-training normalisation statistics of the encoder (empty for scratch).
        info: Further lineage (checkpoint ``extra``, registry name/version, run id).
    """

    model: A2MAE
    source: str
    norm_stats: NormStats = field(default_factory=lambda: NormStats({}))
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pretrained(self) -> bool:
        """False for a scratch encoder."""
        return self.source != SCRATCH


def _from_checkpoint(path: Path, source: str) -> EncoderHandle:
    from a2mae.checkpoint import load_checkpoint

    model, meta = load_checkpoint(path)
    return EncoderHandle(model, source, _stats(meta, source), {"checkpoint": dict(meta.get("extra") or {})})


def _stats(meta: dict[str, Any], source: str) -> NormStats:
    """The statistics stored with a checkpoint (whole ``stats.json`` documents and older forms)."""
    try:
        return NormStats.from_doc(meta.get("norm_stats"), f"encoder {source}")
    except NormStatsError as err:
        raise EncoderError(str(err)) from None


def _registry_info(uri: str, registry: RegistryConfig) -> dict[str, Any]:
    from a2mae.tracking.client import client

    rest = uri[len("models:/") :]
    c = client(registry)
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            mv = c.get_model_version_by_alias(name, alias)
        elif "/" in rest:
            name, version = rest.split("/", 1)
            mv = c.get_model_version(name, version)
        else:
            return {}
    except Exception:  # resolved again (with a clean error) by the download below
        return {}
    return {"registered_name": mv.name, "registered_version": str(mv.version), "run_id": mv.run_id or ""}


def _from_registry(uri: str, registry: RegistryConfig) -> EncoderHandle:
    from mlflow.exceptions import MlflowException

    from a2mae.checkpoint import CheckpointError
    from a2mae.registry.encoder import load_encoder as load_logged_encoder
    from a2mae.tracking.client import tracking_uri

    info = _registry_info(uri, registry)
    try:
        model, meta = load_logged_encoder(uri, tracking_uri(registry))
    except MlflowException as err:
        raise EncoderError(
            f"encoder {uri}: not found in the registry ({err.message.splitlines()[0]})"
        ) from None
    except CheckpointError as err:
        raise EncoderError(f"encoder {uri}: not an a2mae encoder model ({err})") from None
    return EncoderHandle(model, uri, _stats(meta, uri), {**info, "checkpoint": dict(meta.get("extra") or {})})


def _new_encoder(
    model: ModelConfig, overrides: dict[str, Any], sensor_files: Sequence[str], seed: int
) -> A2MAE:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model_from_params(model, get_registry(list(sensor_files)), **overrides)


def scratch_encoder(
    model: ModelConfig, overrides: dict[str, Any], sensor_files: Sequence[str], seed: int
) -> Callable[[], A2MAE]:
    """What ``scratch`` builds: the ``model`` section's variant, ``pretrain.model_overrides``, seeded.

    The sensors are those of ``data.sensor_files``; ``seed`` is ``finetune.seed``.
    """
    return functools.partial(_new_encoder, model, dict(overrides), tuple(sensor_files), seed)


def load_encoder(uri: str, registry: RegistryConfig, scratch: Callable[[], A2MAE]) -> EncoderHandle:
    """Load the encoder to fine-tune.

    Args:
        uri: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, a ``.safetensors`` checkpoint path, or
            ``scratch``.
        registry: The ``registry`` section (the tracking URI of ``models:/`` URIs).
        scratch: Builds the encoder of ``scratch`` (:func:`scratch_encoder`).

    Returns:
        The encoder handle.

    Raises:
        EncoderError: Unknown registry entry, missing file, or not an a2mae encoder.
    """
    uri = uri.strip()
    if uri == SCRATCH:
        return EncoderHandle(scratch(), SCRATCH)
    if uri.startswith("models:/"):
        return _from_registry(uri, registry)
    path = Path(uri)
    if not path.is_file():
        raise EncoderError(
            f"encoder {uri}: no such checkpoint file (use models:/NAME@ALIAS, models:/NAME/VERSION, a "
            ".safetensors path, or scratch)"
        )
    from a2mae.checkpoint import CheckpointError

    try:
        return _from_checkpoint(path, str(path))
    except CheckpointError as err:
        raise EncoderError(f"encoder {err}") from None
