"""The Prefect server (API, UI, scheduler, event triggers) on SQLite, as a local service.

Started with ``prefect server start`` from the running Python's environment (through
``infra/prefect_server.py`` in a checkout: it fixes the scheduler under SQLAlchemy 2.1); its database and
settings live in ``<state_dir>/home`` (``PREFECT_HOME``). The UI is told the API address it must
call (``PREFECT_UI_API_URL``), otherwise it would look for ``127.0.0.1:4200`` whatever the port.
Telemetry is off. This module talks HTTP only: the library imports no Prefect.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from a2mae.services.base import ServiceError
from a2mae.services.daemon import DetachedService
from a2mae.services.http import http_json, tcp_open

#: Environment for every Prefect process of the stack: no telemetry, no update checks.
PREFECT_QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_CLI_PROMPT": "false",
}


class PrefectServer(DetachedService):
    """``prefect server start`` on ``host:port`` with its home under ``state_dir``."""

    name = "prefect"

    def __init__(self, state_dir: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 4200) -> None:
        super().__init__(state_dir, host)
        self.port = port

    @property
    def url(self) -> str:
        """Address of the UI."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """Address of the REST API (``PREFECT_API_URL`` of clients)."""
        return f"{self.url}/api"

    @property
    def home(self) -> Path:
        """``PREFECT_HOME`` of the server (SQLite database, local result storage)."""
        return self.state_dir / "home"

    def prepare(self) -> None:
        """Create the home folder; refuse a port that another process holds."""
        self.home.mkdir(parents=True, exist_ok=True)
        if tcp_open(self.host, self.port):  # something answers there (TIME_WAIT leftovers do not count)
            raise ServiceError(
                f"prefect: port {self.port} on {self.host} is in use by another process; stop it or set "
                "infra.prefect_port"
            )

    def environment(self) -> dict[str, str]:
        """Variables the server process needs."""
        return {
            **PREFECT_QUIET_ENV,
            "PREFECT_HOME": str(self.home),
            "PREFECT_UI_API_URL": self.api_url,
            "PREFECT_SERVER_API_HOST": self.host,
            "PREFECT_SERVER_API_PORT": str(self.port),
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }

    def command(self) -> list[str]:
        """``prefect server start --host H --port P --analytics-off`` (via ``infra/prefect_server.py``)."""
        launcher = Path(__file__).resolve().parents[2] / "infra" / "prefect_server.py"
        entry = [str(launcher)] if launcher.is_file() else ["-m", "prefect"]
        return [
            sys.executable,
            *entry,
            "server",
            "start",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--analytics-off",
        ]

    def is_healthy(self) -> bool:
        """``GET /api/health`` answers ``true``."""
        return http_json(f"{self.api_url}/health") is True

    def client_env(self) -> dict[str, str]:
        """Variables that point Prefect clients (flows, workers, the CLI) at this server."""
        return {**PREFECT_QUIET_ENV, "PREFECT_API_URL": self.api_url, "PREFECT_UI_API_URL": self.api_url}
