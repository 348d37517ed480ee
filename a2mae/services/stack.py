"""The whole local stack: S3 store, MLflow, Prefect server, Ray head and the deployments' server.

``a2mae services up`` starts what is not running yet, in dependency order, each waited on with its
health check; ``down`` stops them in reverse order; ``status`` reports each one. All state lives
under ``params.infra.home`` (default ``.a2mae/``)::

    .a2mae/
      seaweedfs/   weed data, s3.json (credentials), security/ (JWT keys, gRPC certificates),
                   seaweedfs.log, seaweedfs.pid
      mlflow/      mlflow.db (SQLite backend), auth/ (basic auth), mlflow.log, mlflow.pid
                   (artifacts: s3://a2mae-mlflow)
      prefect/     home/ (PREFECT_HOME: SQLite database, results), auth, prefect.log, prefect.pid
      ray/         tmp/ (Ray sessions), auth_token, ray.log, ray.pid
      flows/       flows.log, flows.pid, flows.ready
      model/       model.log, model.pid (the champion's scoring server, only with --serve-model)
      workspace/   the git + DVC repository the deployments work in (cloned from the checkout)
      stac/        pg/ (the STAC API's PostgreSQL cluster), pg.json (mode 0600), stac.log, stac.pid
                   (only with infra.stac: a local STAC API for `a2mae collect`, docs/collect.md)
      stack.json   endpoints and ports of the last ``up``
      env          the clients' variables (``set -a; . .a2mae/env; set +a``), mode 0600

Credentials are made once per stack, mode 0600, and never printed. Every service binds
``params.infra.host`` (127.0.0.1); another address is refused unless ``infra.allow_remote`` is set, and
then every service asks for credentials (``infra.auth`` turns on MLflow's and Prefect's on loopback too;
the Ray token and the S3 keys are always required). ``up`` is idempotent: a healthy service is left
alone, a dead one (stale pid file) is started again.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from a2mae.config import DATA_ROOTS_ENV, Params
from a2mae.errors import A2maeError
from a2mae.services.base import Service, ServiceError, is_loopback
from a2mae.services.daemon import launch, marked_processes, running_pid, stop_marked, terminate
from a2mae.services.flows import FlowServer
from a2mae.services.mlflow import MlflowServer
from a2mae.services.model_server import NO_PICKLE, ModelServer
from a2mae.services.prefect import PrefectServer
from a2mae.services.ray import RayHead
from a2mae.services.s3 import SeaweedFS
from a2mae.services.stac import StacServer

#: Where a service's progress lines go (e.g. ``typer.echo``).
Echo = Callable[[str], object]
#: Client variables that hold secrets: kept in the 0600 env file, never printed.
SECRET_VARS = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "PREFECT_API_AUTH_STRING",
)
#: Start order (``down`` uses the reverse).
SERVICES = ("s3", "mlflow", "prefect", "ray", "flows", "model")
#: Services started together: MLflow needs its S3 bucket, the deployments and the model server MLflow.
WAVES = (("s3", "prefect", "ray"), ("mlflow",), ("flows", "model"))
#: Started only when asked for (``infra.stac``, or ``--only stac``), stopped by ``down`` when running.
OPTIONAL = ("stac",)
#: Services started on request (``up --serve-model``, ``infra.stac``): stopped is fine.
ON_REQUEST = frozenset({"model", *OPTIONAL})


@dataclass(frozen=True)
class ServiceStatus:
    """One line of ``a2mae services status``."""

    name: str
    running: bool
    healthy: bool
    pid: int | None
    url: str
    log: str

    @property
    def ok(self) -> bool:
        """Healthy, or the model server, which is started on request, not running."""
        return self.healthy or (self.name in ON_REQUEST and not self.running)


class Stack:
    """The services of ``infra/`` for one project folder.

    Args:
        params: Parameters (the ``infra`` section).
        project_dir: The user's checkout: the services' workspace (``<infra.home>/workspace``, where
            the flows run and commit each snapshot version) is cloned from it and takes its
            ``params.yaml``; also where a relative ``infra.home`` is resolved.
        overrides: ``section.key=value`` items passed to the deployments' default parameters.
        serve_model: Model URI for the scoring server (``models:/a2mae-<task>@champion``); None: the
            server is not started (``down`` and ``status`` still see one started earlier).
    """

    def __init__(
        self,
        params: Params,
        project_dir: str | os.PathLike[str] = ".",
        overrides: Sequence[str] = (),
        serve_model: str | None = None,
    ):
        self.params = params
        self.infra = params.infra
        self.project_dir = Path(project_dir).absolute()
        home = Path(self.infra.home)
        self.home = home if home.is_absolute() else self.project_dir / home
        self.overrides = list(overrides)
        host = self.infra.host
        auth = self.infra.auth or self.infra.allow_remote
        self.s3 = SeaweedFS(self.home / "seaweedfs", host=host, s3_port=self.infra.s3_port)
        self.s3.ports = {"s3": self.infra.s3_port}  # known without starting (for health checks)
        self.mlflow = MlflowServer(
            self.home / "mlflow",
            host=host,
            port=self.infra.mlflow_port,
            artifacts=self._artifacts(),
            s3_env=self.s3.env(),
            auth=auth,
        )
        self.prefect = PrefectServer(
            self.home / "prefect", host=host, port=self.infra.prefect_port, auth=auth
        )
        self.ray = RayHead(
            self.home / "ray",
            host=host,
            port=self.infra.ray_port,
            num_cpus=self.infra.ray_num_cpus,
            dashboard=self.infra.ray_dashboard,
        )
        venv = Path(self.infra.stac_venv)
        self.stac = StacServer(
            self.home / "stac",
            host=host,
            port=self.infra.stac_port,
            venv=venv if venv.is_absolute() else self.project_dir / venv,
        )
        self.flows = FlowServer(
            self.home / "flows",
            project_dir=self.workspace,
            api_url=self.prefect.api_url,
            api_auth=self.prefect.auth_string,
            env={
                **self.client_env(include_prefect=False),
                DATA_ROOTS_ENV: os.pathsep.join(self.data_roots()),
            },
            overrides=[f"predict.output={self._predict_output()}", *self.overrides],
            code_dir=self.project_dir,
        )
        self.model = ModelServer(
            self.home / "model",
            serve_model or "",
            host=host if is_loopback(host) else "127.0.0.1",  # no authentication of its own
            port=params.predict.serve_port,
            env=self.client_env(include_prefect=False),
        )

    # ------------------------------------------------------------------------------------- config
    def _artifacts(self) -> str:
        dest = self.infra.mlflow_artifacts
        if "://" in dest or Path(dest).is_absolute():
            return dest
        return str(self.home / dest)

    @property
    def workspace(self) -> Path:
        """The git + DVC repository the deployments work in (cloned from ``project_dir``)."""
        return self.home / "workspace"

    def data_roots(self) -> list[str]:
        """Folders the deployments may read and write: the workspace and ``infra.data_roots``."""
        extra = [Path(r).expanduser() for r in self.infra.data_roots]
        return [str(self.workspace), *(str(r if r.is_absolute() else self.project_dir / r) for r in extra)]

    def prepare_workspace(self) -> Path:
        """Clone (once) and refresh the deployments' workspace; see :func:`a2mae.dvc.services_workspace`.

        Raises:
            ServiceError: The checkout is not a git work tree, or git/DVC failed (one line).
        """
        from a2mae.dvc import DvcError, services_workspace

        endpoint = f"http://{self.infra.host}:{self.infra.s3_port}"
        try:
            services_workspace(self.project_dir, self.workspace, self.infra.dvc_remote, endpoint)
        except DvcError as err:
            raise ServiceError(f"flows: workspace {self.workspace}: {err}") from None
        return self.workspace

    def _predict_output(self) -> str:
        # With the stack's S3 store running, the predict flow writes there unless told otherwise.
        out = self.params.predict.output
        return out if "://" in out else "s3://a2mae-predict/runs"

    def service(self, name: str) -> Service:
        """The service called ``name`` (one of :data:`SERVICES`).

        Raises:
            A2maeError: Unknown name.
        """
        if name not in SERVICES + OPTIONAL:
            raise A2maeError(f"unknown service {name!r} (known: {', '.join(SERVICES + OPTIONAL)})")
        services: dict[str, Service] = {
            "s3": self.s3,
            "mlflow": self.mlflow,
            "prefect": self.prefect,
            "ray": self.ray,
            "flows": self.flows,
            "model": self.model,
            "stac": self.stac,
        }
        return services[name]

    def client_env(self, include_prefect: bool = True) -> dict[str, str]:
        """Variables that point clients (flows, CLI, tests, ``dvc``) at the stack."""
        env = {**self.s3.env(), **self.mlflow.client_env(), **self.ray.client_env()}
        env["A2MAE_INFRA_HOME"] = str(self.home)
        env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # no progress bars in flow-run logs
        env.update(NO_PICKLE)  # MLflow clients never unpickle a model
        if include_prefect:
            env.update(self.prefect.client_env())
        return env

    def check_host(self) -> None:
        """Refuse an ``infra.host`` beyond loopback unless ``infra.allow_remote`` opts in.

        Raises:
            A2maeError: Not loopback and no opt-in (one line).
        """
        host = self.infra.host
        if not is_loopback(host) and not self.infra.allow_remote:
            raise A2maeError(
                f"infra.host={host} is not a loopback address: the services would be reachable from other "
                "machines; set infra.allow_remote=true to opt in (every service then requires credentials) "
                "or use infra.host=127.0.0.1"
            )

    def _url(self, name: str) -> str:
        return {
            "s3": f"http://{self.infra.host}:{self.infra.s3_port}",
            "mlflow": self.mlflow.url,
            "prefect": self.prefect.url,
            "ray": self.ray.address,
            "flows": f"{self.prefect.url}/deployments",
            "model": self.model.url,
            "stac": self.stac.url,
        }[name]

    def names(self) -> tuple[str, ...]:
        """The services of this stack: :data:`SERVICES`, and the STAC API when enabled or running."""
        stac = self.infra.stac or running_pid(self.stac) is not None
        return SERVICES + (OPTIONAL if stac else ())

    # ---------------------------------------------------------------------------------- lifecycle
    def up(self, only: Sequence[str] = (), echo: Echo | None = None) -> list[ServiceStatus]:
        """Start every service that is not healthy yet, in order; write ``stack.json`` and ``env``.

        Args:
            only: Names to start (their dependencies must already run); empty: all.
            echo: Called with one line per service (progress).

        Returns:
            The status after starting.

        Raises:
            ServiceError: A service did not become healthy (the message names its log).
        """
        for n in only:
            self.service(n)  # validates the name
        self.check_host()
        self.home.mkdir(parents=True, exist_ok=True)
        with self._lock(echo):
            return self._up(only, echo)

    def _lock(self, echo: Echo | None) -> contextlib.AbstractContextManager[Path]:
        """One ``up`` or ``down`` of this home at a time; a second one waits, saying for whom."""
        from a2mae.io.lock import LockBusy, describe_owner, lock_path, read_owner, writer_lock

        target = self.home / "stack"
        wait = max(600.0, 6 * self.infra.start_timeout_s)
        try:
            with writer_lock(target, 0, setting="infra.start_timeout_s", command=_command()):
                pass
        except LockBusy:
            owner = describe_owner(read_owner(lock_path(target)))
            _say(echo, f"waiting for {owner} to finish with {self.home}")
        return writer_lock(target, wait, setting="infra.start_timeout_s", command=_command())

    def _up(self, only: Sequence[str], echo: Echo | None) -> list[ServiceStatus]:
        for wave in WAVES:
            names = [n for n in wave if (not only or n in only) and (n != "model" or self.model.model_uri)]
            if len(names) == 1:
                self._up_one(names[0], echo)
            elif names:
                with ThreadPoolExecutor(len(names)) as pool:
                    for fut in [pool.submit(self._up_one, n, echo) for n in names]:
                        fut.result()
        if "stac" in only or (not only and self.infra.stac):
            self._up_stac(echo)
        self._write_state()
        return self.status()

    def _up_one(self, name: str, echo: Echo | None) -> None:
        svc = self.service(name)
        if running_pid(svc) is not None and svc.is_healthy():
            _say(echo, f"{name:8s} already running ({self._url(name)})")
            return
        if running_pid(svc) is not None:
            terminate(svc)  # alive but not answering: start it again
        if name == "flows":
            self._forget_dead_runs(echo)
            self.prepare_workspace()
        else:
            self._stop_untracked(svc, echo)
        launch(svc, None, self.infra.start_timeout_s, cwd=self.workspace if name == "flows" else None)
        if name == "s3":
            for bucket in self.infra.buckets:
                self.s3.create_bucket(bucket)
        _say(echo, f"{name:8s} started ({self._url(name)}); log {svc.log_path}")

    def _up_stac(self, echo: Echo | None) -> None:
        """Install what the STAC API needs when it is missing (scripts/bootstrap-stac.sh), then start it."""
        import subprocess

        script = self.project_dir / "scripts" / "bootstrap-stac.sh"
        if not (self.stac.venv / "bin" / "python").is_file() and script.is_file():
            _say(echo, f"stac     installing PostgreSQL/PostGIS and {self.stac.venv.name} ({script.name})")
            done = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                last = (done.stderr.strip() or "no output").splitlines()[-1]
                raise ServiceError(f"stac: {script} failed: {last}")
        self._up_one("stac", echo)

    def _stop_untracked(self, svc: Service, echo: Echo | None) -> None:
        """Stop processes this home started for ``svc`` that its pid file no longer names."""
        found = stop_marked(svc.state_dir)
        if found:
            _say(echo, f"{svc.name:8s} stopped {len(found)} untracked process(es) of {svc.state_dir}")

    def _forget_dead_runs(self, echo: Echo | None) -> None:
        """Before the deployments' server starts: its earlier runs whose process is gone end CRASHED.

        The runner that executed them is not running; a flow-run process it left behind still reports
        its own states, so runs are only marked while no such process lives. The runner itself, if it
        survived untracked, is stopped first (two runners would run each flow run twice).
        """
        for pid, _ in marked_processes(self.flows.state_dir).items():
            if "flows.serve" in _cmdline(pid):
                stop_marked_pid(pid)
        if marked_processes(self.flows.state_dir):
            return
        crashed = self.prefect.crash_orphaned_runs(
            "the deployments' server stopped while this run was active (its process is gone)"
        )
        if crashed:
            names = ", ".join(crashed)
            _say(echo, f"flows    {len(crashed)} run(s) left by a stopped server marked CRASHED: {names}")

    def down(self, echo: Echo | None = None) -> list[str]:
        """Stop every running service, in reverse order, and every process this home started.

        Flow runs the deployments' server was running end CRASHED (their concurrency slots are
        released) before the Prefect server stops. Processes of the home's services that no pid file
        names (lost in a race, or children left behind) are found by their environment and stopped.

        Returns:
            The names of the services that were running.
        """
        with self._lock(echo):
            return self._down(echo)

    def _down(self, echo: Echo | None) -> list[str]:
        stopped = []
        for name in reversed(SERVICES + OPTIONAL):
            svc = self.service(name)
            if name == "stac":  # the API, then its PostgreSQL cluster
                was_running = running_pid(svc) is not None
                svc.stop()
            else:
                was_running = terminate(svc)
            untracked = stop_marked(svc.state_dir)
            if was_running or untracked:
                stopped.append(name)
                more = f" (and {len(untracked)} untracked process(es))" if untracked else ""
                _say(echo, f"{name:8s} stopped{more}")
            if name == "flows":
                crashed = self.prefect.crash_orphaned_runs(
                    "stopped by `a2mae services down` while this run was active"
                )
                if crashed:
                    _say(echo, f"flows    {len(crashed)} active run(s) marked CRASHED: {', '.join(crashed)}")
        return stopped

    def status(self) -> list[ServiceStatus]:
        """Each service: running (pid file and live process), healthy, pid, address, log."""
        out = []
        for name in self.names():
            svc = self.service(name)
            pid = running_pid(svc)
            out.append(
                ServiceStatus(
                    name=name,
                    running=pid is not None,
                    healthy=pid is not None and svc.is_healthy(),
                    pid=pid,
                    url=self._url(name),
                    log=str(svc.log_path),
                )
            )
        return out

    def _write_state(self) -> None:
        env = self.client_env()
        state = {
            "project_dir": str(self.project_dir),
            "workspace": str(self.workspace),
            "services": {s.name: asdict(s) for s in self.status()},
            "s3_ports": self.s3.ports,
        }
        _write_private(self.home / "stack.json", json.dumps(state, indent=2) + "\n")
        lines = [f"{k}={_shell_quote(v)}" for k, v in sorted(env.items())]
        header = "# written by `a2mae services up`; load with: set -a; . .a2mae/env; set +a\n"
        _write_private(self.home / "env", header + "\n".join(lines) + "\n")

    @property
    def env_path(self) -> Path:
        """The clients' variables written by :meth:`up`."""
        return self.home / "env"


def _command() -> str:
    import sys

    return " ".join(sys.argv)[:300]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def stop_marked_pid(pid: int, timeout: float = 20.0) -> None:
    """Stop one process (SIGTERM, then SIGKILL)."""
    import signal
    import time

    from a2mae.services.daemon import pid_alive

    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not pid_alive(pid):
            return


def _say(echo: Echo | None, line: str) -> None:
    if echo is not None:
        echo(line)


def _shell_quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


__all__ = ["OPTIONAL", "SECRET_VARS", "SERVICES", "ServiceError", "ServiceStatus", "Stack"]
