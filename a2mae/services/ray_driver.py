"""How the project's drivers (tiling, pre-training) start or join Ray: loopback only, token, fail fast.

A Ray the project starts in-process (:func:`start_local`) is single-node and binds 127.0.0.1 only
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``; without it the GCS, raylet, workers and agents listen on
every interface), requires a token (``RAY_AUTH_MODE=token``) kept in a private 0600 file for the life
of the Ray, moves the ports Ray takes at fixed defaults (dashboard, metrics) to free ones, and tells its
workers where the state API is (``RAY_API_SERVER_ADDRESS``): Ray Train's placement-group cleaner asks it
about the controller every second, and without an explicit address it logs "Failed to query Ray Train
Controller actor state" or dies with "Found multiple active Ray instances" when another Ray runs on
the machine.

Joining a cluster (:func:`join`) first checks in seconds that a Ray GCS answers at the address and
accepts this client's token (``ray.init`` itself retries for minutes and then fails with a generic
``ConnectionError``); a loopback address gets the loopback setting the driver needs too (without it
the driver rewrites the address to the machine's external IP and hangs).
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from a2mae.services.base import ServiceError, is_loopback
from a2mae.services.reach import ServiceUnreachable, require_tcp, split_host_port, unreachable

#: Single node, every listener on loopback, no usage stats (head, drivers and workers alike).
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
#: Set to "0" in a Ray's environment when it has no dashboard (hence no state API): see
#: :func:`quiet_without_state_api`.
STATE_API_VAR = "A2MAE_RAY_STATE_API"
#: The workers' setup hook (importable by name on every worker of the project's Rays).
SETUP_HOOK = "a2mae.services.ray_driver.quiet_without_state_api"
_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"


class RayAccessError(ServiceError):
    """Ray cannot be started, or the cluster at an address does not answer or refuses this client."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def quiet_without_state_api() -> None:
    """Worker setup hook: silence Ray Train's placement-group cleaner where no state API exists.

    The cleaner can only work through the dashboard's state API; on a Ray started without a dashboard
    (``pretrain.ray_dashboard=false``, ``infra.ray_dashboard=false``) it would log a warning every
    second of every training. Where the dashboard runs, nothing is changed.
    """
    if os.environ.get(STATE_API_VAR) == "0":
        import logging

        logging.getLogger(_CLEANER_LOGGER).setLevel(logging.ERROR)


# ------------------------------------------------------------------------------------ process state
def apply_env(env: Mapping[str, str]) -> dict[str, str | None]:
    """Set Ray variables in this process and make an already imported Ray see them.

    Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` at import and caches ``RAY_AUTH_MODE`` and the
    token in its config; both are refreshed here.

    Returns:
        The previous values (None: unset), for :func:`restore_env`.
    """
    import sys

    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _refresh_ray()
    constants: Any = sys.modules.get("ray._private.ray_constants")
    if constants is not None and "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" in env:
        constants.ENABLE_RAY_CLUSTER = env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] != "0"
    return before


def restore_env(before: Mapping[str, str | None], applied: Mapping[str, str | None] | None = None) -> None:
    """Undo :func:`apply_env`.

    Args:
        before: What :func:`apply_env` returned (the values it replaced; None: unset).
        applied: The values it set: a variable changed since by someone else is left as it is now.
    """
    for key, value in before.items():
        if applied is not None and key in applied and os.environ.get(key) != applied[key]:
            continue
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _refresh_ray()


def _refresh_ray() -> None:
    import sys

    if "ray._raylet" not in sys.modules:
        return  # read fresh at import
    try:
        # the stub ray ships for its compiled _raylet module omits these two classes
        from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - another Ray version
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


# ------------------------------------------------------------------------------------------- local
class LocalRay:
    """Settings of one in-process Ray: its private token file, dashboard port and environment.

    Attributes:
        token_dir: Private folder (0700) of the token file; removed by :meth:`close`.
        dashboard: Whether the dashboard (and the state API) runs.
        dashboard_port: Its port (reserved even without the dashboard: the workers' state API address).
        env: Variables set in this process while the Ray runs.
    """

    def __init__(self, dashboard: bool) -> None:
        self.token_dir = Path(tempfile.mkdtemp(prefix="a2mae-ray-"))
        token = self.token_dir / "auth_token"
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        self.dashboard = dashboard
        self.dashboard_port = free_port()
        self.env = {
            **LOOPBACK_ENV,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token),
            "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{self.dashboard_port}",
            "AUTOSCALER_METRIC_PORT": str(free_port()),
            "DASHBOARD_METRIC_PORT": str(free_port()),
            STATE_API_VAR: "1" if dashboard else "0",
        }
        self._before: dict[str, str | None] = {}

    def open(self) -> LocalRay:
        """Set :attr:`env` in this process (``RAY_AUTH_TOKEN`` would win over the file: it is unset)."""
        self._before = apply_env(self.env)
        self._before.setdefault("RAY_AUTH_TOKEN", os.environ.pop("RAY_AUTH_TOKEN", None))
        return self

    def close(self) -> None:
        """Restore the environment and remove the token (after ``ray.shutdown()``)."""
        if self._before:
            restore_env(self._before, {**self.env, "RAY_AUTH_TOKEN": None})
            self._before = {}
        shutil.rmtree(self.token_dir, ignore_errors=True)


#: The Ray started with ``keep=True`` (its settings stay in this process's environment while it runs).
_KEPT: list[LocalRay] = []


def _release_kept() -> None:
    """Forget the settings of a kept Ray that was shut down since (before starting or joining another)."""
    import ray

    while _KEPT and not ray.is_initialized():
        _KEPT.pop().close()


def start_local(num_cpus: int, dashboard: bool = False, keep: bool = False, **init_kwargs: Any) -> LocalRay:
    """``ray.init()`` of a new single-node Ray in this process, loopback only, with a private token.

    Args:
        num_cpus: CPUs the Ray offers.
        dashboard: Start the dashboard on 127.0.0.1 (Ray Train's state API; ~0.9 GB more memory).
        keep: The Ray may live until this process exits (its settings stay in the environment until
            another Ray is started or joined after a ``ray.shutdown()``, its token is removed at exit at
            the latest); otherwise call :meth:`LocalRay.close` after ``ray.shutdown()``.
        init_kwargs: More ``ray.init`` arguments.

    Returns:
        The Ray's settings.

    Raises:
        RayAccessError: Ray did not start (one line).
    """
    import ray

    _release_kept()
    local = LocalRay(dashboard).open()
    runtime_env = {"worker_process_setup_hook": SETUP_HOOK, **init_kwargs.pop("runtime_env", {})}
    try:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=dashboard,
            dashboard_host="127.0.0.1",
            dashboard_port=local.dashboard_port,
            _metrics_export_port=free_port(),
            runtime_env=runtime_env,
            **init_kwargs,
        )
    except (ConnectionError, RuntimeError, ValueError) as err:
        local.close()
        raise RayAccessError(f"cannot start a local Ray ({_first_line(err)})") from None
    if keep:
        _KEPT.append(local)
        atexit.register(shutil.rmtree, local.token_dir, True)
    return local


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


# -------------------------------------------------------------------------------------------- join
def client_token() -> str | None:
    """The token this process sends: ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def check_gcs(address: str, setting: str, timeout: float = 3.0) -> None:
    """Fail in seconds, with one line, unless a Ray GCS answers at ``address`` and accepts this client.

    A TCP connection, then one small gRPC call (``GetClusterId``) sent with this process's token when
    ``RAY_AUTH_MODE=token``. ``ray://`` addresses (Ray Client) get the TCP check only; ``auto`` none.

    Args:
        address: ``host:port`` of the GCS, ``ray://host:port`` or ``auto``.
        setting: Parameter or variable that holds the address (named in the message).
        timeout: Seconds for each step.

    Raises:
        RayAccessError: Nothing answers, it is not a Ray GCS, or it refuses the token.
    """
    if address in ("auto", "local"):
        return
    service = "Ray cluster"
    try:
        require_tcp(service, address, setting, timeout)
    except ServiceUnreachable as err:
        raise RayAccessError(str(err)) from None
    if address.startswith("ray://"):
        return
    import grpc

    auth = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
    token = client_token() if auth else None
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    with grpc.insecure_channel(address) as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/ray.rpc.NodeInfoGcsService/GetClusterId"
        )
        try:
            call(b"", timeout=timeout, metadata=metadata)
        except grpc.RpcError as err:
            _raise_rpc(err, address, setting, timeout, auth, token is not None)


def _raise_rpc(err: Any, address: str, setting: str, timeout: float, auth: bool, has_token: bool) -> None:
    import grpc

    code = err.code()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        why = "a wrong token" if has_token else ("no token found" if auth else "RAY_AUTH_MODE is not token")
        raise RayAccessError(
            f"Ray cluster at {address} requires its token ({why}); set RAY_AUTH_MODE=token and "
            "RAY_AUTH_TOKEN_PATH to the cluster's token file (local services: set -a; . .a2mae/env; set +a)"
        ) from None
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        reason = f"no answer within {timeout:g} s"
        raise RayAccessError(str(unreachable("Ray cluster", address, reason, setting)))
    if code == grpc.StatusCode.UNAVAILABLE:
        raise RayAccessError(str(unreachable("Ray cluster", address, "not a Ray GCS", setting)))
    raise RayAccessError(
        f"Ray cluster at {address} does not answer as a Ray {_version()} GCS ({code.name}); check {setting}"
    )


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("ray")
    except Exception:  # pragma: no cover
        return ""


#: Variables of the workers of a joined cluster: MLflow prints no run links on their stdout.
QUIET_WORKER_ENV = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


def join(address: str, setting: str, **init_kwargs: Any) -> None:
    """``ray.init(address=...)`` after :func:`check_gcs`; a loopback address gets the loopback setting.

    Args:
        address: The cluster (``host:port``, ``ray://host:port`` or ``auto``).
        setting: Parameter or variable that holds the address (named in messages).
        init_kwargs: More ``ray.init`` arguments.

    Raises:
        RayAccessError: Unreachable, refused, or ``ray.init`` failed (one line).
    """
    import ray

    _release_kept()
    check_gcs(address, setting)
    host = split_host_port(address)[0] if ":" in address else ""
    if host and is_loopback(host):
        apply_env({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})  # else the driver dials the external IP
    runtime_env = {"worker_process_setup_hook": SETUP_HOOK, **init_kwargs.pop("runtime_env", {})}
    # the workers' lines reach the driver's log: no MLflow "View run" links there (the caller links runs)
    runtime_env["env_vars"] = {**QUIET_WORKER_ENV, **runtime_env.get("env_vars", {})}
    init_kwargs.setdefault("logging_level", logging.WARNING)  # "Connected to Ray cluster" (in colour)
    try:
        ray.init(address=address, runtime_env=runtime_env, **init_kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise RayAccessError(
            f"cannot join the Ray cluster at {address} ({_first_line(err)}); check {setting}"
        ) from None
