"""A Ray head node on loopback (``ray start --head --block``) for training and tiling drivers.

``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray single-node and loopback-only (without it the GCS,
raylet and workers listen on every interface and the node IP is the machine's external address).
Every port Ray would otherwise take at a fixed default (client server 10001, dashboard agent 52365)
is moved to a free one, so a developer's ``ray.init()`` and this head never collide. ``--block`` keeps
the CLI in the foreground as the parent of all Ray processes; stopping its process group stops the
node (``ray stop`` is never used: it kills every Ray process of the user).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from a2mae.services.base import ServiceError, free_port_pair
from a2mae.services.daemon import DetachedService
from a2mae.services.http import tcp_open

#: Environment for every Ray process of the stack (loopback only, no usage stats, no auth token).
RAY_LOCAL_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
}
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
        dashboard: Start the dashboard on a free loopback port (the state API some Ray Train
            messages want; ~0.9 GB more memory).
    """

    name = "ray"

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

    @property
    def address(self) -> str:
        """``RAY_ADDRESS`` of drivers."""
        return f"{self.host}:{self.port}"

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

    def environment(self) -> dict[str, str]:
        """Loopback-only, no usage stats; stop at once on SIGTERM (no 30 s node drain)."""
        return {**RAY_LOCAL_ENV, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}

    def command(self) -> list[str]:
        """``ray start --head --block`` with every fixed-default port moved to a free one."""
        ports = []
        while len(ports) < 3:
            port = free_port_pair(offset=1, host=self.host, low=_OWN_PORTS[0], high=_OWN_PORTS[1])
            if port not in ports and port + 1 not in ports and port != self.port:
                ports.append(port)
        cmd = [
            ray_binary(),
            "start",
            "--head",
            "--block",
            "--disable-usage-stats",
            f"--node-ip-address={self.host}",
            f"--port={self.port}",
            f"--temp-dir={self.temp_dir}",
            f"--ray-client-server-port={ports[0]}",
            f"--dashboard-agent-listen-port={ports[1]}",
            f"--dashboard-port={ports[2]}",
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
        """Variables that make ``ray.init()`` in drivers join this node."""
        return {**RAY_LOCAL_ENV, "RAY_ADDRESS": self.address}
