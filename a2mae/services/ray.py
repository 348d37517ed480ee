"""A Ray head node on loopback (``ray start --head --block``) for training and tiling drivers.

``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray single-node and loopback-only (without it the GCS,
raylet and workers listen on every interface and the node IP is the machine's external address).
Token authentication is on (``RAY_AUTH_MODE=token``): the token is made once in
``<state_dir>/auth_token`` (mode 0600; Ray's own ``ray get-auth-token --generate`` writes a
world-readable ``~/.ray/auth_token``) and clients get its path (``RAY_AUTH_TOKEN_PATH``); a driver, a
``ray status`` or a dashboard request without it is refused.
Every port Ray would otherwise take at a fixed default (client server 10001, dashboard 8265, dashboard
agent 52365, the metrics ports 44217 and 44227) is moved to a free one, so a developer's ``ray.init()``
and this head never collide. The workers get the cluster's address (``RAY_ADDRESS``, and the dashboard's
as ``RAY_API_SERVER_ADDRESS``): Ray Train's placement-group cleaner queries the state API every second
and otherwise logs warnings or dies with "Found multiple active Ray instances". ``--block`` keeps the
CLI in the foreground as the parent of all Ray processes; stopping its process group stops the node
(``ray stop`` is never used: it kills every Ray process of the user).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from a2mae.services.base import ServiceError, free_port_pair, is_loopback
from a2mae.services.daemon import DetachedService
from a2mae.services.http import tcp_open
from a2mae.services.ray_driver import LOOPBACK_ENV, STATE_API_VAR
from a2mae.services.secrets import read_or_create

#: Ports of the head besides the GCS, each moved off its fixed default.
_PORTS = ("client_server", "agent", "dashboard", "metrics_export", "autoscaler_metric", "dashboard_metric")
#: Ray gives workers ports 10002-19999 and refuses any other component there; ours go above.
WORKER_PORTS = (10002, 19999)
_OWN_PORTS = (20000, 32000)
# Unix sockets live under the temp dir; their paths must stay below ~107 bytes.
_MAX_TEMP_DIR = 40  # + "/session_<date>_<time>_<us>_<pid>/sockets/plasma_store" (~63 bytes)


def ray_binary() -> str:
    """The ``ray`` CLI of the running Python's environment.

    Raises:
        ServiceError: Ray is not installed.
    """
    here = Path(sys.executable).parent / "ray"
    if here.is_file():
        return str(here)
    found = shutil.which("ray")
    if found:
        return found
    raise ServiceError("ray: the 'ray' command is not installed; run scripts/bootstrap.sh")


class RayHead(DetachedService):
    """A single-node Ray cluster whose GCS listens on ``host:port``.

    Args:
        state_dir: Folder of the log, the pid file and (when its path is short) Ray's temp dir.
        host: Node IP (loopback).
        port: GCS port (``RAY_ADDRESS=host:port`` for drivers).
        num_cpus: CPUs offered to tasks (None: all cores).
        dashboard: Start the dashboard on a free loopback port (the state API that Ray Train's
            placement-group cleaner needs; ~0.9 GB more RSS, ~0.2 GB more PSS).
    """

    name = "ray"
    #: A token in the caller's environment would win over the head's token file.
    scrubbed_env = ("RAY_AUTH_TOKEN", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = 6379,
        num_cpus: int | None = None,
        dashboard: bool = False,
    ) -> None:
        super().__init__(state_dir, host)
        self.port = port
        self.num_cpus = num_cpus
        self.dashboard = dashboard
        self.ports: dict[str, int] = {}

    @property
    def address(self) -> str:
        """``RAY_ADDRESS`` of drivers."""
        return f"{self.host}:{self.port}"

    @property
    def token_path(self) -> Path:
        """The cluster's token (``RAY_AUTH_TOKEN_PATH``), mode 0600."""
        return self.state_dir / "auth_token"

    @property
    def temp_dir(self) -> Path:
        """Ray's session folder root: under the state folder, or a short path in /tmp if that is too long."""
        own = self.state_dir / "tmp"
        if len(str(own)) <= _MAX_TEMP_DIR:
            return own
        return Path(tempfile.gettempdir()) / f"a2mae-ray-{self.port}"

    def prepare(self) -> None:
        """Refuse a GCS port that another process holds; create the temp dir."""
        if tcp_open(self.host, self.port):  # something answers there (TIME_WAIT leftovers do not count)
            raise ServiceError(
                f"ray: port {self.port} on {self.host} is in use by another process; stop it or set "
                "infra.ray_port"
            )
        if WORKER_PORTS[0] <= self.port <= WORKER_PORTS[1]:
            raise ServiceError(
                f"ray: port {self.port} is inside Ray's worker port range "
                f"{WORKER_PORTS[0]}-{WORKER_PORTS[1]}; choose another infra.ray_port"
            )
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        read_or_create(self.token_path)
        picked: list[int] = []
        while len(picked) < len(_PORTS):
            port = free_port_pair(offset=1, host=self.host, low=_OWN_PORTS[0], high=_OWN_PORTS[1])
            if port not in picked and port + 1 not in picked and port != self.port:
                picked.append(port)
        self.ports = dict(zip(_PORTS, picked, strict=True))

    def _auth_env(self) -> dict[str, str]:
        env = {**LOOPBACK_ENV} if is_loopback(self.host) else {"RAY_USAGE_STATS_ENABLED": "0"}
        return {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path)}

    def environment(self) -> dict[str, str]:
        """Loopback only, token auth, the cluster's addresses for the workers, moved metrics ports.

        Also: stop at once on SIGTERM (no 30 s node drain).
        """
        env = {
            **self._auth_env(),
            "RAY_ADDRESS": self.address,
            STATE_API_VAR: "1" if self.dashboard else "0",
            "AUTOSCALER_METRIC_PORT": str(self.ports["autoscaler_metric"]),
            "DASHBOARD_METRIC_PORT": str(self.ports["dashboard_metric"]),
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        }
        if self.dashboard:
            env["RAY_API_SERVER_ADDRESS"] = f"http://{self.host}:{self.ports['dashboard']}"
        return env

    def command(self) -> list[str]:
        """``ray start --head --block`` with every fixed-default port moved to a free one."""
        ports = self.ports
        cmd = [
            ray_binary(),
            "start",
            "--head",
            "--block",
            "--disable-usage-stats",
            f"--node-ip-address={self.host}",
            f"--port={self.port}",
            f"--temp-dir={self.temp_dir}",
            f"--ray-client-server-port={ports['client_server']}",
            f"--dashboard-agent-listen-port={ports['agent']}",
            f"--dashboard-port={ports['dashboard']}",
            f"--metrics-export-port={ports['metrics_export']}",
            f"--include-dashboard={'true' if self.dashboard else 'false'}",
            f"--dashboard-host={self.host}",
        ]
        if self.num_cpus is not None:
            cmd.append(f"--num-cpus={self.num_cpus}")
        return cmd

    def is_healthy(self) -> bool:
        """The GCS accepts connections and ``ray start`` reported the node as started."""
        if not tcp_open(self.host, self.port):
            return False
        try:
            log = self.log_path.read_text(errors="replace")
        except OSError:
            return False
        return "Ray runtime started" in log[log.rfind("\n=== ") :]

    def client_env(self) -> dict[str, str]:
        """Variables that make ``ray.init()`` in drivers join this node (address, token, loopback)."""
        return {**self._auth_env(), "RAY_ADDRESS": self.address}
