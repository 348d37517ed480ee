"""MLflow client plumbing: which tracking store, pointing the process at it, failing fast when it is down.

The registry is the tracking store itself (one URI: ``$MLFLOW_TRACKING_URI``, else
``registry.tracking_uri``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from a2mae.config import RegistryConfig
from a2mae.errors import A2maeError


class TrackingError(A2maeError):
    """The tracking server or store cannot be used (unreachable, bad URI)."""


def resolve_tracking_uri(configured: str, env: Mapping[str, str] | None = None) -> str:
    """The tracking URI to use: ``$MLFLOW_TRACKING_URI`` wins over ``registry.tracking_uri``.

    A relative SQLite path (``sqlite:///mlruns.db``) is made absolute against the current directory, so
    Ray workers (which run in other directories) write to the same file.

    Args:
        configured: ``registry.tracking_uri`` of the parameters.
        env: Environment (default: ``os.environ``).

    Raises:
        TrackingError: The URI is a bare path (the file store is deprecated in MLflow 3).
    """
    env = os.environ if env is None else env
    uri = (env.get("MLFLOW_TRACKING_URI") or configured).strip()
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///") :]
        if not path.startswith("/"):
            uri = "sqlite:///" + str(Path(path).resolve())
        return uri
    if "://" not in uri and not uri.startswith("databricks"):
        raise TrackingError(
            f"tracking URI {uri!r}: use sqlite:///path/to/mlflow.db or http(s)://host:port "
            "(registry.tracking_uri or MLFLOW_TRACKING_URI)"
        )
    return uri


@contextlib.contextmanager
def mlflow_uris(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking and registry URIs at ``tracking_uri``; restore them after.

    MLflow's fluent API (``start_run``, ``log_model(registered_model_name=...)``, ``models:/`` URIs) reads
    process globals, and ``mlflow.set_tracking_uri`` / ``set_registry_uri`` / ``set_experiment`` also
    write the environment variables ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI`` /
    ``MLFLOW_EXPERIMENT_ID``. A long-lived process (a Prefect worker, a test session) may use other
    stores, so the globals are put back as they were (unset stays unset: an explicitly set registry URI
    would make every later ``MlflowClient(uri)`` use it instead of ``uri``), and so are the variables.
    The registry is the tracking store itself (one URI: ``registry.tracking_uri``).
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID")
    env_before = {k: os.environ.get(k) for k in names}
    raw_before = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = raw_before
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_tracking_uri(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast with one line when the tracking store cannot be reached or refuses the client.

    An HTTP server must answer ``/health`` within ``timeout_s`` (a stopped one fails at once, instead of
    MLflow's minutes of retries) and accept the client's credentials (``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD``, needed when the server runs its basic-auth app).

    Args:
        uri: A resolved tracking URI.
        timeout_s: HTTP timeout.

    Raises:
        TrackingError: The server does not answer, is unhealthy or refuses the credentials, or the SQLite
            folder is not writable.
    """
    if uri.startswith(("http://", "https://")):
        _check_server(uri.rstrip("/"), timeout_s)
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///") :]).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrackingError(f"tracking store {uri}: cannot create {folder} ({err.strerror})") from None
        if not os.access(folder, os.W_OK):
            raise TrackingError(f"tracking store {uri}: folder {folder} is not writable")


def _check_server(uri: str, timeout_s: float) -> None:
    """``/health`` answers 200 and an authenticated read is allowed (see :func:`check_tracking_uri`)."""
    from a2mae.services.reach import ServiceUnreachable, require_http

    service, setting = "MLflow tracking server", "MLFLOW_TRACKING_URI / registry.tracking_uri"
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    auth = f"{user}:{password}" if user and password else None
    try:
        status = require_http(service, f"{uri}/health", setting, timeout_s)
        if status != 200:
            raise TrackingError(f"{service} at {uri}: /health answered {status}; see the server's log")
        probe = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
        status = require_http(service, probe, setting, timeout_s, auth=auth)
    except ServiceUnreachable as err:
        raise TrackingError(str(err)) from None
    if status in (401, 403):
        raise TrackingError(
            f"{service} at {uri} refused the client ({status}: "
            f"{'wrong' if auth else 'no'} credentials); set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (for the local services: set -a; . .a2mae/env; set +a)"
        )


def tracking_uri(cfg: RegistryConfig) -> str:
    """``$MLFLOW_TRACKING_URI``, else ``registry.tracking_uri`` (a relative SQLite path made absolute)."""
    return resolve_tracking_uri(cfg.tracking_uri)


def configure(cfg: RegistryConfig) -> str:
    """Point the MLflow client (tracking and registry) at :func:`tracking_uri`; return it.

    Raises:
        TrackingError: The store cannot be reached (one line; see :func:`check_tracking_uri`).
    """
    import mlflow

    uri = tracking_uri(cfg)
    check_tracking_uri(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def client(cfg: RegistryConfig) -> Any:
    """An ``MlflowClient`` on the configured URI (the ``registry`` section)."""
    from mlflow.tracking import MlflowClient

    uri = configure(cfg)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def artifact_root(uri: str) -> str | None:
    """Where runs of a SQLite store keep their artifacts: ``mlartifacts/`` beside the database.

    MLflow's own default for a SQL store is ``./mlruns`` in whatever folder the process runs in, so
    every command run from another folder would leave an ``mlruns/`` there. Servers (``http://``)
    choose their own artifact store: None.
    """
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    return None


def ensure_experiment(client: Any, uri: str, name: str) -> str:
    """The id of experiment ``name``, created (artifacts beside a SQLite store) when missing."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    from mlflow.exceptions import MlflowException

    root = artifact_root(uri)
    location = f"{root}/{name}" if root else None
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException:
        exp = client.get_experiment_by_name(name)  # another process created it meanwhile
        if exp is None:
            raise
        return str(exp.experiment_id)


def use_experiment(cfg: RegistryConfig, name: str) -> str:
    """Point MLflow at the configured store and make ``name`` the active experiment; returns its id."""
    import mlflow

    uri = configure(cfg)
    exp_id = ensure_experiment(client(cfg), uri, name)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


@contextlib.contextmanager
def temp_dir() -> Iterator[Path]:
    """A temporary folder removed afterwards (for artifacts staged before logging)."""
    with tempfile.TemporaryDirectory(prefix="a2mae-") as d:
        yield Path(d)
