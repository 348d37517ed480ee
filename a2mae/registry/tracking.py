"""MLflow plumbing of the downstream stage: tracking URI, lineage tags, pip requirements, log/load.

Kept in one small module so that it can delegate to the project-wide helpers of
``a2mae.tracking`` once those exist for every stage.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata as md
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from a2mae.config import Params, params_to_flat
from a2mae.errors import A2maeError

#: Packages a fine-tuned model needs to load (pinned to the versions of this environment).
_REQUIREMENT_PACKAGES = ("torch", "timm", "numpy", "pydantic", "pyyaml", "safetensors", "a2mae")


class RegistryError(A2maeError, ValueError):
    """A model, version or alias of the registry is missing or unusable; the message names it."""


def tracking_uri(params: Params) -> str:
    """The tracking URI: ``$MLFLOW_TRACKING_URI`` wins over ``registry.tracking_uri``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or params.registry.tracking_uri


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


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def pip_requirements() -> list[str]:
    """Explicit requirements of a logged model (no inference: faster, and keeps torch's CPU pin).

    The ``+cpu`` local label of torch is dropped: install with the project's ``constraints.txt``
    (see docs/install.md) so that pip does not pick a CUDA build.
    """
    out = []
    for pkg in _REQUIREMENT_PACKAGES:
        v = _version(pkg)
        if v:
            out.append(f"{pkg}=={v.split('+')[0]}")
    return out


@functools.lru_cache(maxsize=1)
def _git_sha() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def params_hash(params: Params) -> str:
    """sha256 (first 16 hex) of the resolved parameters."""
    blob = json.dumps(params_to_flat(params), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def lineage_tags(params: Params, **extra: Any) -> dict[str, str]:
    """Tags tying a run to its code, parameters and inputs (``a2mae.*``); ``extra`` keys are added."""
    tags = {
        "a2mae.version": _version("a2mae") or "unknown",
        "a2mae.params_hash": params_hash(params),
    }
    sha = _git_sha()
    if sha:
        tags["a2mae.git_sha"] = sha
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
