"""The Prefect server (API, UI, scheduler, event triggers) on SQLite, as a local service.

Started with ``prefect server start`` from the running Python's environment (through
``infra/prefect_server.py`` in a checkout: it fixes the scheduler under SQLAlchemy 2.1); its database and
settings live in ``<state_dir>/home`` (``PREFECT_HOME``). The UI is told the API address it must
call (``PREFECT_UI_API_URL``), otherwise it would look for ``127.0.0.1:4200`` whatever the port.
Telemetry is off. This module talks HTTP only: the library imports no Prefect.

Foreign web pages are kept out: ``PREFECT_SERVER_CORS_ALLOWED_ORIGINS`` lists only the server's own
origins (Prefect's default is ``*``), and the launcher refuses any request whose ``Origin`` is not one of
them or whose ``Host`` is not the server's (CORS alone lets a page's simple POST through; the ``Host``
check stops DNS rebinding). With ``auth`` the API also requires ``PREFECT_SERVER_API_AUTH_STRING``
(``a2mae:<random>``, kept in ``<state_dir>/auth``, mode 0600); clients send it as
``PREFECT_API_AUTH_STRING`` and the UI asks for it once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from a2mae.services.base import ServiceError, is_loopback, is_wildcard
from a2mae.services.daemon import DetachedService
from a2mae.services.http import http_json, http_post_json, tcp_open
from a2mae.services.reach import CLIENT_TIMEOUTS
from a2mae.services.secrets import read_or_create

#: Flow-run states in which a run holds its process (and its deployment's concurrency slot).
ACTIVE_STATES = ("PENDING", "RUNNING", "CANCELLING")
#: Concurrency leases kept on disk (under ``PREFECT_HOME``): a restarted server still knows every slot
#: holder, and its repossessor frees the slots of holders that stopped renewing (a killed flow run).
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"

#: Environment for every Prefect process of the stack: no telemetry, no update checks.
PREFECT_QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_CLI_PROMPT": "false",
}


class PrefectServer(DetachedService):
    """``prefect server start`` on ``host:port`` with its home under ``state_dir``.

    Args:
        state_dir: Folder of the home, the log, the pid file and the auth string.
        host: Interface to bind (loopback by default).
        port: TCP port of the API and the UI.
        auth: Require the auth string from every client (the UI asks for it).
    """

    name = "prefect"

    def __init__(
        self, state_dir: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 4200, auth: bool = False
    ) -> None:
        super().__init__(state_dir, host)
        self.port = port
        self.auth = auth

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

    @property
    def auth_string(self) -> str | None:
        """``user:password`` that clients must send (None without ``auth``); created on first use."""
        if not self.auth:
            return None
        return "a2mae:" + read_or_create(self.state_dir / "auth")

    @property
    def origins(self) -> list[str]:
        """Web origins allowed to call the API: the server's own (both loopback names on loopback)."""
        names = [self.host]
        if is_loopback(self.host):
            names += ["127.0.0.1", "localhost"]
        return [f"http://{h}:{self.port}" for h in dict.fromkeys(names)]

    def prepare(self) -> None:
        """Create the home folder; refuse a port that another process holds."""
        self.home.mkdir(parents=True, exist_ok=True)
        if tcp_open(self.host, self.port):  # something answers there (TIME_WAIT leftovers do not count)
            raise ServiceError(
                f"prefect: port {self.port} on {self.host} is in use by another process; stop it or set "
                "infra.prefect_port"
            )

    def environment(self) -> dict[str, str]:
        """Variables the server process needs: home, UI address, own origins only, the auth string."""
        env = {
            **PREFECT_QUIET_ENV,
            "PREFECT_HOME": str(self.home),
            "PREFECT_UI_API_URL": self.api_url,
            "PREFECT_SERVER_API_HOST": self.host,
            "PREFECT_SERVER_API_PORT": str(self.port),
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_SERVER_CORS_ALLOWED_ORIGINS": ",".join(self.origins),
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": LEASE_STORAGE,
        }
        if not is_wildcard(self.host):  # read by infra/prefect_server.py (Host header check)
            env["A2MAE_PREFECT_ALLOWED_HOSTS"] = ",".join(o.split("://", 1)[1] for o in self.origins)
        if self.auth_string:
            env["PREFECT_SERVER_API_AUTH_STRING"] = self.auth_string
        return env

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
        """Variables that point Prefect clients (flows, workers, the CLI) at this server, short timeouts."""
        env = {
            **PREFECT_QUIET_ENV,
            "PREFECT_API_URL": self.api_url,
            "PREFECT_UI_API_URL": self.api_url,
            **{k: v for k, v in CLIENT_TIMEOUTS.items() if k.startswith("PREFECT_")},
        }
        if self.auth_string:
            env["PREFECT_API_AUTH_STRING"] = self.auth_string
        return env

    # --------------------------------------------------------------------------------- orphaned runs
    def _api(self, path: str, body: Any, method: str = "POST") -> Any:
        return http_post_json(f"{self.api_url}{path}", body, auth=self.auth_string, method=method)

    def _active_runs(self) -> list[dict[str, Any]]:
        flt = {"flow_runs": {"state": {"type": {"any_": list(ACTIVE_STATES)}}}, "limit": 200}
        got = self._api("/flow_runs/filter", flt)
        return got if isinstance(got, list) else []

    def _parent_run(self, run: dict[str, Any]) -> str | None:
        task_run = run.get("parent_task_run_id")
        if not task_run:
            return None
        got = http_json(f"{self.api_url}/task_runs/{task_run}", auth=self.auth_string)
        return str(got["flow_run_id"]) if isinstance(got, dict) and got.get("flow_run_id") else None

    def orphaned_runs(self) -> list[dict[str, Any]]:
        """Active flow runs of the deployments, and active sub-flow runs of runs that are not active.

        Called when the deployments' server is not running: no process runs them any more. Flow runs
        a client started itself (no deployment, no parent) are not included.
        """
        runs = self._active_runs()
        active = {str(r["id"]) for r in runs}
        orphans = {str(r["id"]): r for r in runs if r.get("deployment_id")}
        parents = {str(r["id"]): self._parent_run(r) for r in runs if r.get("parent_task_run_id")}
        changed = True
        while changed:
            changed = False
            for run in runs:
                rid, parent = str(run["id"]), parents.get(str(run["id"]))
                if rid not in orphans and parent and (parent in orphans or parent not in active):
                    orphans[rid] = run
                    changed = True
        return list(orphans.values())

    def crash_orphaned_runs(self, reason: str) -> list[str]:
        """Mark :meth:`orphaned_runs` (and their active task runs) CRASHED, releasing their slots.

        The transition runs Prefect's orchestration rules, which release the deployment concurrency
        slot a run held (the pipeline deployments run one at a time: a run left RUNNING would make
        every later run wait for good).

        Args:
            reason: The state message (why the process is gone).

        Returns:
            The names of the flow runs marked CRASHED (empty when the server does not answer).
        """
        if not self.is_healthy():
            return []
        orphans = self.orphaned_runs()
        if not orphans:
            return []
        state = {"type": "CRASHED", "name": "Crashed", "message": reason}
        ids = [str(r["id"]) for r in orphans]
        flt = {
            "flow_runs": {"id": {"any_": ids}},
            "task_runs": {"state": {"type": {"any_": list(ACTIVE_STATES)}}},
            "limit": 200,
        }
        tasks = self._api("/task_runs/filter", flt)
        for task_run in tasks if isinstance(tasks, list) else []:
            self._api(f"/task_runs/{task_run['id']}/set_state", {"state": state, "force": True})
        done = []
        for run in orphans:
            got = self._api(f"/flow_runs/{run['id']}/set_state", {"state": state, "force": True})
            if isinstance(got, dict) and got.get("status") == "ACCEPT":
                done.append(str(run.get("name") or run["id"]))
        return done
