"""The champion's HTTP scoring server: MLflow's model serving of a registered fine-tuned model.

``mlflow models serve -m models:/a2mae-<task>@champion --env-manager local`` on
``infra.host:predict.serve_port``: MLflow's scoring server (``POST /invocations`` with
``{"inputs": [[[[...]]]]}``, one chip tensor ``[N, C, H, W]`` in file units as in the model's
signature; ``GET /ping``). The model loads through its ``loader_module`` from the installed a2mae
package (:mod:`a2mae.registry.downstream_pyfunc`): JSON and safetensors only, nothing unpickled
(``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` is set for the server too). Started by
``a2mae services up --serve-model URI`` (docs/predict.md).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from a2mae.services.base import ServiceError
from a2mae.services.daemon import DetachedService
from a2mae.services.http import http_get, tcp_open

#: Set for the services and their clients: MLflow refuses to unpickle anything.
NO_PICKLE = {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}


class ModelServer(DetachedService):
    """``mlflow models serve`` of one model URI.

    Args:
        state_dir: Folder of the log and the pid file.
        model_uri: ``models:/a2mae-<task>@champion`` (or a version).
        host: Interface to bind (loopback).
        port: TCP port.
        env: Client variables (``MLFLOW_TRACKING_URI``, S3 settings for the artifacts).
    """

    name = "model"

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        model_uri: str,
        host: str = "127.0.0.1",
        port: int = 5001,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(state_dir, host)
        self.model_uri = model_uri
        self.port = port
        self.env = dict(env or {})

    @property
    def url(self) -> str:
        """Base URL (``/invocations``, ``/ping``)."""
        return f"http://{self.host}:{self.port}"

    def prepare(self) -> None:
        """Refuse a port that another process holds."""
        if tcp_open(self.host, self.port):
            raise ServiceError(
                f"model: port {self.port} on {self.host} is in use by another process; stop it or set "
                "predict.serve_port"
            )

    def environment(self) -> dict[str, str]:
        """The clients' variables, no pickles; this Python's scripts first on PATH (MLflow runs uvicorn)."""
        path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
        return {**self.env, **NO_PICKLE, "PATH": path}

    def command(self) -> list[str]:
        """``python -m mlflow models serve -m URI --env-manager local -h HOST -p PORT``."""
        return [
            sys.executable, "-m", "mlflow", "models", "serve", "-m", self.model_uri, "--env-manager", "local",
            "-h", self.host, "-p", str(self.port), "--workers", "1",
        ]  # fmt: skip

    def is_healthy(self) -> bool:
        """``GET /ping`` answers 200 (the model is loaded)."""
        got = http_get(f"{self.url}/ping")
        return got is not None and got[0] == 200
