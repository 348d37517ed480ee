"""The MLflow tracking server: SQLite backend store, artifacts proxied to S3 (or a local folder).

``mlflow server --backend-store-uri sqlite:///<state_dir>/mlflow.db --artifacts-destination
s3://BUCKET --workers 1`` with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` (without it the server runs a
job runner and seven huey consumers, ~2.2 GB). Clients log artifacts *through* the server
(``mlflow-artifacts:/``), so only the server needs the S3 credentials. The artifact bucket must exist
before the server starts (the stack creates it).

The server answers only requests for its own address (``--allowed-hosts``: no DNS rebinding) and never
unpickles (``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``). With ``auth`` it runs MLflow's basic-auth
app: user ``admin`` with a random password, the Flask secret key and the users' database under
``<state_dir>/auth/`` (mode 0600, made once); clients send ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD``, the UI asks for them. The admin password is read from the file at each
start, but MLflow only sets it when it creates the users' database: to change it, remove the whole
``auth/`` folder (or use MLflow's update-password API).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from a2mae.services.base import ServiceError, is_loopback
from a2mae.services.daemon import DetachedService
from a2mae.services.http import http_get, tcp_open
from a2mae.services.reach import CLIENT_TIMEOUTS
from a2mae.services.secrets import read_or_create, write_private

#: The admin user of the basic-auth app.
ADMIN = "admin"


class MlflowServer(DetachedService):
    """``mlflow server`` on ``host:port``.

    Args:
        state_dir: Folder of the SQLite database, the log and the pid file.
        host: Interface to bind (loopback by default).
        port: TCP port.
        artifacts: ``s3://bucket/prefix`` or a local folder (default: ``<state_dir>/artifacts``).
        s3_env: ``AWS_*``/``MLFLOW_S3_ENDPOINT_URL`` variables of the S3 store (for ``s3://`` artifacts).
        auth: Run the basic-auth app (every request but ``/health`` needs the admin's credentials).
    """

    name = "mlflow"
    #: The server's own credentials come from its state folder only.
    scrubbed_env = ("MLFLOW_AUTH_", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_TRACKING_")

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = 5000,
        artifacts: str | None = None,
        s3_env: Mapping[str, str] | None = None,
        auth: bool = False,
    ) -> None:
        super().__init__(state_dir, host)
        self.port = port
        self.artifacts = artifacts or str(self.state_dir / "artifacts")
        self.s3_env = dict(s3_env or {})
        self.auth = auth

    @property
    def url(self) -> str:
        """Tracking URI of clients (``MLFLOW_TRACKING_URI``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def backend_uri(self) -> str:
        """SQLite backend store of runs, models and the registry."""
        return f"sqlite:///{self.state_dir / 'mlflow.db'}"

    @property
    def auth_dir(self) -> Path:
        """The basic-auth app's files: config, users' database, admin password, Flask key."""
        return self.state_dir / "auth"

    @property
    def password(self) -> str | None:
        """The admin's password (None without ``auth``); created on first use."""
        return read_or_create(self.auth_dir / "admin_password") if self.auth else None

    def prepare(self) -> None:
        """Refuse a port that another process holds; write the basic-auth config."""
        if tcp_open(self.host, self.port):  # something answers there (TIME_WAIT leftovers do not count)
            raise ServiceError(
                f"mlflow: port {self.port} on {self.host} is in use by another process; stop it or set "
                "infra.mlflow_port"
            )
        if self.auth:
            ini = (
                "[mlflow]\n"
                "default_permission = NO_PERMISSIONS\n"
                f"database_uri = sqlite:///{self.auth_dir / 'users.db'}\n"
                f"admin_username = {ADMIN}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            )
            write_private(self.auth_dir / "basic_auth.ini", ini)

    def environment(self) -> dict[str, str]:
        """No job runner, no unpickling; S3 settings for the artifact proxy; the basic-auth secrets."""
        env = {
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
            **self.s3_env,
        }
        if self.auth:
            env.update(
                MLFLOW_AUTH_CONFIG_PATH=str(self.auth_dir / "basic_auth.ini"),
                MLFLOW_AUTH_ADMIN_PASSWORD=str(self.password),
                MLFLOW_FLASK_SERVER_SECRET_KEY=read_or_create(self.auth_dir / "flask_secret_key"),
            )
        return env

    @property
    def allowed_hosts(self) -> list[str]:
        """``Host`` values the server answers (its address; both loopback names on loopback)."""
        names = [self.host, "127.0.0.1", "localhost"] if is_loopback(self.host) else [self.host]
        return [f"{h}:{self.port}" for h in dict.fromkeys(names)]

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
            "--allowed-hosts",
            ",".join(self.allowed_hosts),
            *(["--app-name", "basic-auth"] if self.auth else []),
        ]

    def is_healthy(self) -> bool:
        """``GET /health`` answers 200."""
        got = http_get(f"{self.url}/health")
        return got is not None and got[0] == 200

    def client_env(self) -> dict[str, str]:
        """Variables that point MLflow clients at this server: address, short timeouts, credentials."""
        env = {"MLFLOW_TRACKING_URI": self.url}
        env.update({k: v for k, v in CLIENT_TIMEOUTS.items() if k.startswith("MLFLOW_")})
        if self.auth:
            env.update(MLFLOW_TRACKING_USERNAME=ADMIN, MLFLOW_TRACKING_PASSWORD=str(self.password))
        return env
