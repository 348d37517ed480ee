"""A local service process (S3 store, and later Prefect, MLflow, Ray): start, health wait, stop, logs.

A :class:`Service` owns one child process that it started itself. Its state (data, config, pid file)
lives under ``state_dir`` and its output goes to :attr:`Service.log_path`. Subclasses give the
command line and the health check.
"""

from __future__ import annotations

import abc
import ipaddress
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

from a2mae.errors import A2maeError


class ServiceError(A2maeError):
    """A service cannot start, did not become healthy, or its binary is missing."""


class Service(abc.ABC):
    """A long-running local process with a health check.

    Use as a context manager (``with SeaweedFS(dir) as s3: ...``) or call :meth:`start`/:meth:`stop`.
    """

    #: Short name, used for the log file and messages.
    name: str = "service"
    #: Variables of this process that the service must not inherit (names starting with these).
    scrubbed_env: tuple[str, ...] = ()

    def __init__(self, state_dir: str | os.PathLike[str], host: str = "127.0.0.1") -> None:
        self.state_dir = Path(state_dir).absolute()
        self.host = host
        self._proc: subprocess.Popen[bytes] | None = None

    # -- to implement ------------------------------------------------------------------------------
    @abc.abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the service in the foreground."""

    @abc.abstractmethod
    def is_healthy(self) -> bool:
        """Whether the service answers requests now."""

    def prepare(self) -> None:  # noqa: B027 (optional hook)
        """Write config files before the first start (default: nothing)."""

    def environment(self) -> dict[str, str]:
        """Variables added to the environment of the service process (default: none).

        Called after :meth:`prepare` (ports and credentials are known by then).
        """
        return {}

    def process_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The whole environment of the service process.

        This process's variables less :attr:`scrubbed_env`, plus :meth:`environment` and ``extra``.
        """
        base = {k: v for k, v in os.environ.items() if not k.startswith(self.scrubbed_env)}
        return {**base, **self.environment(), **(extra or {})}

    # -- lifecycle ----------------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        """Where the process's stdout and stderr go."""
        return self.state_dir / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        """File holding the pid of the running process."""
        return self.state_dir / f"{self.name}.pid"

    @property
    def pid(self) -> int | None:
        """Pid of the process this object started (None when not running)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def is_running(self) -> bool:
        """Whether the process this object started is alive."""
        return self.pid is not None

    def start(self, timeout: float = 60.0) -> Self:
        """Start the process and wait until :meth:`is_healthy`.

        Raises:
            ServiceError: The process exits early or is not healthy within ``timeout`` (it is then
                stopped; the message names the log file).
        """
        if self.is_running():
            return self
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        cmd = self.command()
        env = self.process_env()
        with open(self.log_path, "ab") as log:
            try:
                self._proc = subprocess.Popen(
                    cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.state_dir,
                    env=env,
                )
            except OSError as err:
                raise ServiceError(f"{self.name}: cannot run {cmd[0]} ({err.strerror})") from None
        self.pid_path.write_text(str(self._proc.pid))
        try:
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, timeout: float) -> None:
        """Poll :meth:`is_healthy` until it holds.

        Raises:
            ServiceError: The process died or the timeout passed.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise ServiceError(
                    f"{self.name}: exited with code {self._proc.returncode} while starting; "
                    f"see {self.log_path}"
                )
            if self.is_healthy():
                return
            time.sleep(0.2)
        raise ServiceError(f"{self.name}: not healthy after {timeout:g} s; see {self.log_path}")

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the process (SIGTERM, then SIGKILL after ``timeout``) and remove the pid file."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.pid_path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the log (for diagnostics)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# ------------------------------------------------------------------------------------------- hosts
def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``127.0.0.0/8``, ``::1``) or ``localhost``."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    """Whether ``host`` means every interface (``0.0.0.0``, ``::``, empty)."""
    try:
        return not host or ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------- ports
def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``host:port`` can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(preferred: int, host: str = "127.0.0.1", tries: int = 100) -> int:
    """``preferred`` when it is free, else the next free port after it (for hints: a UI beside the services).

    Raises:
        ServiceError: None of the ``tries`` ports is free.
    """
    for port in range(preferred, min(preferred + tries, 65536)):
        if port_is_free(port, host):
            return port
    raise ServiceError(f"no free port in {preferred}..{preferred + tries - 1} on {host}")


def free_port_pair(offset: int = 10000, host: str = "127.0.0.1", low: int = 10000, high: int = 22000) -> int:
    """A port ``p`` such that ``p`` and ``p + offset`` are both free (gRPC ports of SeaweedFS).

    The default range keeps both below Linux's ephemeral range (32768+).

    Raises:
        ServiceError: None found after many tries.
    """
    import random

    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(low, high)
        if port_is_free(port, host) and port_is_free(port + offset, host):
            return port
    raise ServiceError(f"no free port pair in {low}..{high} (+{offset}) on {host}")
