"""The MLflow tracking server: SQLite backend store, artifacts proxied to S3 (or a local folder).

``mlflow server --backend-store-uri sqlite:///<state_dir>/mlflow.db --artifacts-destination
s3://BUCKET --workers 1`` with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` (without it the server runs a
job runner and seven huey consumers, ~2.2 GB). Clients log artifacts *through* the server
(``mlflow-artifacts:/``), so only the server needs the S3 credentials. The artifact bucket must exist
before the server starts (the stack creates it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from a2mae.services.base import ServiceError
from a2mae.services.daemon import DetachedService
from a2mae.services.http import http_get, tcp_open


class MlflowServer(DetachedService):
    """``mlflow server`` on ``host:port``.

    Args:
        state_dir: Folder of the SQLite database, the log and the pid file.
        host: Interface to bind (loopback by default).
        port: TCP port.
        artifacts: ``s3://bucket/prefix`` or a local folder (default: ``<state_dir>/artifacts``).
        s3_env: ``AWS_*``/``MLFLOW_S3_ENDPOINT_URL`` variables of the S3 store (for ``s3://`` artifacts).
    """

    name = "mlflow"

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = 5000,
        artifacts: str | None = None,
        s3_env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(state_dir, host)
        self.port = port
        self.artifacts = artifacts or str(self.state_dir / "artifacts")
        self.s3_env = dict(s3_env or {})

    @property
    def url(self) -> str:
        """Tracking URI of clients (``MLFLOW_TRACKING_URI``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def backend_uri(self) -> str:
        """SQLite backend store of runs, models and the registry."""
        return f"sqlite:///{self.state_dir / 'mlflow.db'}"

    def prepare(self) -> None:
        """Refuse a port that another process holds."""
        if tcp_open(self.host, self.port):  # something answers there (TIME_WAIT leftovers do not count)
            raise ServiceError(
                f"mlflow: port {self.port} on {self.host} is in use by another process; stop it or set "
                "infra.mlflow_port"
            )

    def environment(self) -> dict[str, str]:
        """No job runner; S3 settings for the artifact proxy."""
        return {
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
            **self.s3_env,
        }

    def command(self) -> list[str]:
        """``python -m mlflow server ...`` with one worker."""
        return [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--backend-store-uri",
            self.backend_uri,
            "--artifacts-destination",
            self.artifacts,
            "--workers",
            "1",
        ]

    def is_healthy(self) -> bool:
        """``GET /health`` answers 200."""
        got = http_get(f"{self.url}/health")
        return got is not None and got[0] == 200

    def client_env(self) -> dict[str, str]:
        """Variables that point MLflow clients at this server."""
        return {"MLFLOW_TRACKING_URI": self.url}
