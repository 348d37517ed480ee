"""The pre-trained encoder as an MLflow model: log and register it, load it back.

The encoder is logged as a ``python_function`` model with a loader module
(:mod:`a2mae.registry.encoder_pyfunc`, imported from the installed ``a2mae`` package: the logged model
carries no code) and data = the safetensors checkpoint + JSON (no pickled Python objects), explicit
``pip_requirements``, and registered as a new version. ``mlflow.pyfunc.load_model`` of it runs no code
from the model store.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

from a2mae.tracking.client import mlflow_uris
from a2mae.tracking.runs import activate_experiment_of

REGISTERED_VERSION_TAG = "a2mae.registered_version"
REGISTERED_STEP_TAG = "a2mae.registered_step"
MODEL_URI_TAG = "a2mae.encoder_model_uri"

PIP_REQUIREMENTS = (
    "torch==2.13.0",
    "timm>=1.0.31,<1.1",
    "safetensors>=0.8",
    "einops>=0.8",
    "numpy>=2.4",
    "pydantic>=2.14,<3",
    "pyyaml>=6",
    "mlflow==3.17.2",
)


def log_encoder(
    tracking_uri: str,
    run_id: str,
    model_file: str | os.PathLike[str],
    *,
    registered_name: str | None,
    metadata: Mapping[str, Any],
    step: int,
) -> tuple[str, str | None]:
    """Log a model checkpoint as the run's ``encoder`` MLflow model and register it.

    The logged model holds: ``data/model.safetensors`` (the :mod:`a2mae.checkpoint` file: weights, and in
    its JSON header the model config, sensor registry entries and normalisation statistics) and
    explicit pip requirements (see docs/pretrain.md). No code is logged (the loader module is a2mae's
    own, so loading needs a2mae installed) and nothing is pickled.

    Args:
        tracking_uri: Resolved tracking URI.
        run_id: Run to log into.
        model_file: A file written by :func:`a2mae.checkpoint.save_checkpoint`.
        registered_name: Registered model name (``registry.encoder_model``); None: do not register.
        metadata: JSON-serialisable metadata stored in the MLmodel file (snapshot id, sensors, ...).
        step: Optimiser step of the weights.

    Returns:
        ``(model_uri, registered version or None)``.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    with mlflow_uris(tracking_uri):
        activate_experiment_of(MlflowClient(tracking_uri), run_id)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="encoder",
                loader_module="a2mae.registry.encoder_pyfunc",
                data_path=str(model_file),
                pip_requirements=list(PIP_REQUIREMENTS),
                metadata=dict(metadata),
                registered_model_name=registered_name,
                step=step,
            )
            version = info.registered_model_version
            tags = {REGISTERED_STEP_TAG: str(step), MODEL_URI_TAG: info.model_uri}
            if version is not None:
                tags[REGISTERED_VERSION_TAG] = str(version)
            mlflow.set_tags(tags)
    return info.model_uri, (str(version) if version is not None else None)


def load_encoder(model_uri: str, tracking_uri: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Load a logged or registered encoder (``models:/a2mae-encoder/3``) as an a2mae model.

    Downloads the model's files and rebuilds the model with :func:`a2mae.checkpoint.load_checkpoint`
    (for serving, ``mlflow.pyfunc.load_model(uri).predict(...)`` works too).

    Returns:
        ``(model, meta)`` as :func:`a2mae.checkpoint.load_checkpoint` returns them.
    """
    import mlflow.artifacts

    from a2mae.checkpoint import load_checkpoint
    from a2mae.registry.encoder_pyfunc import checkpoint_file

    with mlflow_uris(tracking_uri) if tracking_uri else contextlib.nullcontext():
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri)
    return load_checkpoint(checkpoint_file(local))


def pip_requirements() -> list[str]:
    """Explicit requirements of a logged model (those of the encoder model: no inference, torch pinned).

    The model carries no code: its loader module is imported from the installed ``a2mae`` package.
    """
    return list(PIP_REQUIREMENTS)
