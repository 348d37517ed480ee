"""MLflow plumbing of the downstream stage: tracking URI, lineage tags, pip requirements.

Thin layer over the project-wide helpers of :mod:`a2mae.tracking.mlflow` (tracking-URI resolution,
git lineage, the pinned requirements of logged models), plus what only this stage needs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from a2mae.config import Params, params_to_flat
from a2mae.errors import A2maeError


class RegistryError(A2maeError, ValueError):
    """A model, version or alias of the registry is missing or unusable; the message names it."""


def tracking_uri(params: Params) -> str:
    """``$MLFLOW_TRACKING_URI``, else ``registry.tracking_uri`` (a relative SQLite path made absolute)."""
    from a2mae.tracking.mlflow import resolve_tracking_uri

    return resolve_tracking_uri(params.registry.tracking_uri)


def configure(params: Params) -> str:
    """Point the MLflow client (tracking and registry) at :func:`tracking_uri`; return it."""
    import mlflow

    uri = tracking_uri(params)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def client(params: Params) -> Any:
    """An ``MlflowClient`` on the configured URI."""
    from mlflow.tracking import MlflowClient

    uri = configure(params)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def pip_requirements() -> list[str]:
    """Explicit requirements of a logged model (those of the encoder model: no inference, torch pinned).

    The model also carries the ``a2mae`` sources as ``code``, so it loads where a2mae is not installed.
    """
    from a2mae.tracking.mlflow import PIP_REQUIREMENTS

    return list(PIP_REQUIREMENTS)


def code_paths() -> list[str]:
    """The ``a2mae`` package folder, logged with a model as its code."""
    import a2mae

    return [str(Path(a2mae.__file__).resolve().parent)]


def params_hash(params: Params) -> str:
    """sha256 (first 16 hex) of the resolved parameters."""
    blob = json.dumps(params_to_flat(params), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def lineage_tags(params: Params, **extra: Any) -> dict[str, str]:
    """Tags tying a run to its code and parameters; ``extra`` keys are added as ``a2mae.<key>``."""
    from a2mae import __version__
    from a2mae.tracking.mlflow import git_commit

    commit, dirty = git_commit()
    tags = {
        "a2mae.version": __version__,
        "a2mae.params_hash": params_hash(params),
        "a2mae.git_commit": commit or "unknown",
        "a2mae.git_dirty": str(dirty).lower(),
    }
    if commit:
        tags["mlflow.source.git.commit"] = commit
    lock = Path("dvc.lock")
    if lock.is_file():
        tags["a2mae.dvc_lock_md5"] = hashlib.md5(lock.read_bytes()).hexdigest()
    tags.update({f"a2mae.{k}": str(v) for k, v in extra.items() if v is not None})
    return tags


@contextlib.contextmanager
def temp_dir() -> Iterator[Path]:
    """A temporary folder removed afterwards (for artifacts staged before logging)."""
    with tempfile.TemporaryDirectory(prefix="a2mae-") as d:
        yield Path(d)
