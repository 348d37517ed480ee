"""The process that serves the Prefect deployments (``python -m flows.serve``).

It registers the deployments (pipeline, scheduled retraining, new-imagery watcher and trigger, the
stage flows) with the Prefect server and runs their flow runs as subprocesses on this machine (static
infrastructure, no work pool). It is healthy once the pipeline deployment exists on the server. The
library only starts it; the flows themselves live in ``flows/`` (Prefect code stays out of ``a2mae``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from a2mae.services.daemon import DetachedService
from a2mae.services.http import http_get

#: ``flow/deployment`` names shared with ``flows/serve.py``.
PIPELINE_DEPLOYMENT = "retrain/pipeline"
SCHEDULED_DEPLOYMENT = "retrain/scheduled"
TRIGGERED_DEPLOYMENT = "retrain/on-new-imagery"
WATCHER_DEPLOYMENT = "watch-scenes/watcher"
PREDICT_DEPLOYMENT = "predict/predict"
PREDICT_PROMOTION_DEPLOYMENT = "predict/on-promotion"
PREDICT_IMAGERY_DEPLOYMENT = "predict/on-new-scene"


#: A log file, not a terminal: no ANSI colours, no MLflow "View run" lines.
PLAIN_LOG = {
    "PREFECT_LOGGING_COLORS": "false",
    "NO_COLOR": "1",
    "RAY_COLOR_PREFIX": "0",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


class FlowServer(DetachedService):
    """Serves the project's Prefect deployments against ``api_url``.

    Args:
        state_dir: Folder of the log and the pid file.
        project_dir: The DVC/git workspace the flows work in (its ``params.yaml`` gives the defaults).
        api_url: ``PREFECT_API_URL`` of the server.
        api_auth: ``PREFECT_API_AUTH_STRING`` when the server requires one.
        env: Client variables of the other services (MLflow, S3, Ray).
        overrides: ``section.key=value`` items applied to the deployments' default parameters.
        code_dir: Folder holding the ``flows`` package (the checkout; default ``project_dir``).
    """

    name = "flows"

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        project_dir: str | os.PathLike[str],
        api_url: str,
        api_auth: str | None = None,
        env: Mapping[str, str] | None = None,
        overrides: Sequence[str] = (),
        code_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(state_dir)
        self.project_dir = Path(project_dir).absolute()
        self.code_dir = Path(code_dir).absolute() if code_dir is not None else self.project_dir
        self.api_url = api_url
        self.api_auth = api_auth
        self.env = dict(env or {})
        self.overrides = list(overrides)

    @property
    def ready_path(self) -> Path:
        """Written by the serve process once every deployment is registered."""
        return self.state_dir / "flows.ready"

    def prepare(self) -> None:
        """Forget the readiness of an earlier process."""
        self.ready_path.unlink(missing_ok=True)

    def environment(self) -> dict[str, str]:
        """The clients' variables plus ``PREFECT_API_URL``; the ``flows`` package importable.

        Its log (``flows.log``) is a file: no colour codes (Prefect, Ray), and MLflow does not print each
        run's links on its own (the flows link their runs in Prefect artifacts).
        """
        path = os.pathsep.join(p for p in (str(self.code_dir), os.environ.get("PYTHONPATH", "")) if p)
        env = {
            **self.env,
            "PREFECT_API_URL": self.api_url,
            "PYTHONPATH": path,
            **PLAIN_LOG,
            **self.storage_env(),
        }
        if self.api_auth:
            env["PREFECT_API_AUTH_STRING"] = self.api_auth
        return env

    def storage_env(self) -> dict[str, str]:
        """Prefect's home and the flow runs' cached task results under the stack's home, as JSON.

        ``make clean-services`` (which deletes ``infra.home``) removes them with the rest; nothing goes
        to ``~/.prefect``. Cached results expire (:data:`flows.common.CACHE_EXPIRATION`).
        """
        return {
            "PREFECT_HOME": str(self.state_dir / "home"),
            "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(self.state_dir / "results"),
            "PREFECT_RESULTS_DEFAULT_SERIALIZER": "json",
        }

    def command(self) -> list[str]:
        """``python -m flows.serve --project-dir DIR [--set k=v ...]``."""
        cmd = [sys.executable, "-m", "flows.serve", "--project-dir", str(self.project_dir)]
        cmd += ["--ready-file", str(self.ready_path)]
        for item in self.overrides:
            cmd += ["--set", item]
        return cmd

    def is_healthy(self) -> bool:
        """The serve process registered its deployments and the server knows the pipeline."""
        if not self.ready_path.exists():
            return False
        got = http_get(f"{self.api_url}/deployments/name/{PIPELINE_DEPLOYMENT}", auth=self.api_auth)
        return got is not None and got[0] == 200
