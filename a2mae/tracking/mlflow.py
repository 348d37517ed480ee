"""MLflow tracking for pre-training: URI, runs that resume, step-exact metrics, lineage and the encoder.

Design:

* **One MLflow run per training run name.** The driver looks the run up by the tag ``a2mae.run_key``
  (``<storage path>/<run name>``) and creates it only when none exists, so starting a run again with the
  same name (after a crash, a kill or a finished run) continues the same MLflow run.
* **Rank 0 only** logs (:class:`StepLogger`); other workers never talk to the tracking server.
* **No duplicated or missing steps.** Metrics are logged with ``step = global optimiser step``. On a
  restart training replays the steps after its last checkpoint; :class:`StepLogger` first reads the
  highest step already logged for each key and skips those, so the history stays one continuous series.
  Metrics are sent by one background thread, in order, so what reached the server is always a prefix.
* **Lineage tags:** git commit of the code, snapshot id, and the snapshot's DVC hash when it is
  DVC-tracked (a ``<snapshot>.dvc`` file or an output of ``dvc.lock``).
* **The encoder** is logged as a ``python_function`` model with a loader module
  (:mod:`a2mae.tracking.encoder_pyfunc`) and data = the safetensors checkpoint + JSON (no pickled
  Python objects), explicit ``pip_requirements``, and registered as a new version.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from a2mae.errors import A2maeError

RUN_KEY_TAG = "a2mae.run_key"
RUN_NAME_TAG = "a2mae.run_name"
REGISTERED_VERSION_TAG = "a2mae.registered_version"
REGISTERED_STEP_TAG = "a2mae.registered_step"
MODEL_URI_TAG = "a2mae.encoder_model_uri"
_PARAM_BATCH = 100


class TrackingError(A2maeError):
    """The tracking server or store cannot be used (unreachable, bad URI)."""


# ------------------------------------------------------------------------------------------------ URI
def resolve_tracking_uri(configured: str, env: Mapping[str, str] | None = None) -> str:
    """The tracking URI to use: ``$MLFLOW_TRACKING_URI`` wins over ``registry.tracking_uri``.

    A relative SQLite path (``sqlite:///mlruns.db``) is made absolute against the current directory, so
    Ray workers (which run in other directories) write to the same file.

    Args:
        configured: ``registry.tracking_uri`` of the parameters.
        env: Environment (default: ``os.environ``).

    Raises:
        TrackingError: The URI is a bare path (the file store is deprecated in MLflow 3).
    """
    env = os.environ if env is None else env
    uri = (env.get("MLFLOW_TRACKING_URI") or configured).strip()
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///") :]
        if not path.startswith("/"):
            uri = "sqlite:///" + str(Path(path).resolve())
        return uri
    if "://" not in uri and not uri.startswith("databricks"):
        raise TrackingError(
            f"tracking URI {uri!r}: use sqlite:///path/to/mlflow.db or http(s)://host:port "
            "(registry.tracking_uri or MLFLOW_TRACKING_URI)"
        )
    return uri


@contextlib.contextmanager
def mlflow_uris(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking and registry URIs at ``tracking_uri``; restore them after.

    MLflow's fluent API (``start_run``, ``log_model(registered_model_name=...)``, ``models:/`` URIs) reads
    process globals, and ``mlflow.set_tracking_uri`` / ``set_registry_uri`` / ``set_experiment`` also
    write the environment variables ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI`` /
    ``MLFLOW_EXPERIMENT_ID``. A long-lived process (a Prefect worker, a test session) may use other
    stores, so the globals are put back as they were (unset stays unset: an explicitly set registry URI
    would make every later ``MlflowClient(uri)`` use it instead of ``uri``), and so are the variables.
    The registry is the tracking store itself (one URI: ``registry.tracking_uri``).
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID")
    env_before = {k: os.environ.get(k) for k in names}
    raw_before = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = raw_before
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_tracking_uri(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast with one line when the tracking store cannot be reached.

    Args:
        uri: A resolved tracking URI.
        timeout_s: HTTP timeout.

    Raises:
        TrackingError: The HTTP server does not answer ``/health``, or the SQLite folder is not writable.
    """
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                if resp.status != 200:
                    raise TrackingError(f"tracking server {uri}: /health answered {resp.status}")
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise TrackingError(
                f"tracking server {uri} is unreachable ({reason}); start it (docs/pretrain.md) "
                "or set registry.tracking_uri / MLFLOW_TRACKING_URI"
            ) from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///") :]).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrackingError(f"tracking store {uri}: cannot create {folder} ({err.strerror})") from None
        if not os.access(folder, os.W_OK):
            raise TrackingError(f"tracking store {uri}: folder {folder} is not writable")


# -------------------------------------------------------------------------------------------- lineage
def git_commit(path: str | os.PathLike[str] | None = None) -> tuple[str | None, bool]:
    """``(commit, dirty)`` of the git work tree holding ``path`` (default: the a2mae sources)."""
    where = Path(path) if path is not None else Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None, False
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return head.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, False


def _dvc_out_hash(out: Mapping[str, Any]) -> str | None:
    for key in ("md5", "etag", "checksum"):
        if out.get(key):
            return str(out[key])
    return None


def dvc_hash(snapshot: str | os.PathLike[str]) -> str | None:
    """The DVC hash of a local snapshot folder, or None when DVC does not track it.

    Looks for ``<snapshot>.dvc`` (``dvc add``), then for an output of a stage in the ``dvc.lock`` of an
    enclosing DVC project (``dvc repro``).
    """
    s = str(snapshot)
    if "://" in s:
        return None
    snap = Path(s).resolve()
    dvc_file = snap.with_name(snap.name + ".dvc")
    try:
        if dvc_file.is_file():
            doc = yaml.safe_load(dvc_file.read_text()) or {}
            for out in doc.get("outs", []):
                if (dvc_file.parent / out.get("path", "")).resolve() == snap:
                    return _dvc_out_hash(out)
        for parent in snap.parents:
            lock = parent / "dvc.lock"
            if lock.is_file():
                doc = yaml.safe_load(lock.read_text()) or {}
                for stage in (doc.get("stages") or {}).values():
                    wdir = parent / stage.get("wdir", ".")
                    for out in stage.get("outs", []):
                        if (wdir / out.get("path", "")).resolve() == snap:
                            return _dvc_out_hash(out)
            if (parent / ".dvc").is_dir():
                break
    except (OSError, yaml.YAMLError, AttributeError, TypeError):
        return None
    return None


def lineage_tags(snapshot: str, snapshot_id: str | None) -> dict[str, str]:
    """Tags that tie a run to its code and data."""
    commit, dirty = git_commit()
    tags = {
        "a2mae.snapshot": snapshot,
        "a2mae.snapshot_id": snapshot_id or "unknown",
        "a2mae.snapshot_dvc_hash": dvc_hash(snapshot) or "none",
        "a2mae.git_commit": commit or "unknown",
        "a2mae.git_dirty": str(dirty).lower(),
    }
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


# ----------------------------------------------------------------------------------------------- runs
def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def find_run(tracking_uri: str, experiment: str, run_key: str) -> str | None:
    """The id of the newest run of ``experiment`` tagged with ``run_key``, or None."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{RUN_KEY_TAG}` = '{_escape(run_key)}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def find_or_create_run(
    tracking_uri: str,
    experiment: str,
    run_key: str,
    run_name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
) -> tuple[str, bool]:
    """Return the run of ``run_key``, creating it (with params and tags) when there is none.

    Args:
        tracking_uri: Resolved tracking URI.
        experiment: Experiment name (created when missing).
        run_key: Identity of the training run (storage path + run name).
        run_name: Display name.
        params: Flat parameters, logged once at creation.
        tags: Tags, set at creation and refreshed on resume.

    Returns:
        ``(run_id, resumed)``.
    """
    from mlflow.entities import Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    run_id = find_run(tracking_uri, experiment, run_key)
    if run_id is not None:
        client.set_tag(run_id, "a2mae.resumed", "true")
        for key in ("a2mae.git_commit", "a2mae.git_dirty"):
            if key in tags:
                client.set_tag(run_id, key + "_latest", tags[key])
        return run_id, True
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
    run = client.create_run(
        exp_id, run_name=run_name, tags={**tags, RUN_KEY_TAG: run_key, RUN_NAME_TAG: run_name}
    )
    items = [Param(k, json.dumps(v) if isinstance(v, list | dict) else str(v)) for k, v in params.items()]
    for i in range(0, len(items), _PARAM_BATCH):
        client.log_batch(run.info.run_id, params=items[i : i + _PARAM_BATCH])
    client.log_batch(run.info.run_id, tags=[RunTag("a2mae.resumed", "false")])
    return run.info.run_id, False


def _activate_experiment_of(client: Any, run_id: str) -> None:
    """Make the run's experiment MLflow's active one, so re-opening the run works in any process.

    ``mlflow.start_run(run_id=...)`` refuses a run of another experiment than the process's active one,
    which a long-lived process (a Prefect serve process, a test session) may have set for another stage.
    """
    import mlflow

    mlflow.set_experiment(experiment_id=client.get_run(run_id).info.experiment_id)


# ---------------------------------------------------------------------------------------- step logger
@dataclass
class _Item:
    step: int
    metrics: dict[str, float]


class StepLogger:
    """Rank-0 metric logger of one run: ordered, asynchronous, skipping steps already logged.

    Args:
        tracking_uri: Resolved tracking URI.
        run_id: The run (it is re-opened as RUNNING).
        system_metrics: Also sample CPU / memory / GPU with MLflow's system metrics monitor.
    """

    def __init__(self, tracking_uri: str, run_id: str, system_metrics: bool = True) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        self.run_id = run_id
        self._client = MlflowClient(tracking_uri)
        self._restore = contextlib.ExitStack()  # the MLflow URIs, put back by close()
        self._restore.enter_context(mlflow_uris(tracking_uri))
        _activate_experiment_of(self._client, run_id)
        self._run = mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics)
        self.logged_until = self._last_steps()
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._worker, name="a2mae-mlflow-logger", daemon=True)
        self._thread.start()

    def _last_steps(self) -> dict[str, int]:
        """Highest step already logged per metric (system metrics keep their own counter)."""
        run = self._client.get_run(self.run_id)
        latest = getattr(run.data, "_metric_objs", None)  # the latest value of each key, with its step
        if latest is not None:
            return {m.key: m.step for m in latest if not m.key.startswith("system/")}
        out = {}
        for key in run.data.metrics:
            if not key.startswith("system/"):
                hist = self._client.get_metric_history(self.run_id, key)
                out[key] = max((m.step for m in hist), default=-1)
        return out

    def _worker(self) -> None:
        from mlflow.entities import Metric

        stop = False
        while not stop:
            items = [self._queue.get()]
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(it is None for it in items)
            batch = []
            for it in items:
                if it is None:
                    continue
                ts = int(__import__("time").time() * 1000)
                batch.extend(Metric(k, float(v), ts, it.step) for k, v in it.metrics.items())
            try:
                for i in range(0, len(batch), 900):
                    self._client.log_batch(self.run_id, metrics=batch[i : i + 900], synchronous=True)
            except Exception as err:  # keep training; surface the error on flush/close
                self._error = err
            for _ in items:
                self._queue.task_done()

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Queue ``metrics`` at ``step``, leaving out keys already logged at this step or later."""
        fresh = {k: float(v) for k, v in metrics.items() if step > self.logged_until.get(k, -1)}
        if fresh:
            self._queue.put(_Item(step, fresh))

    def flush(self) -> None:
        """Wait until every queued metric reached the tracking store."""
        self._queue.join()
        if self._error is not None:
            err, self._error = self._error, None
            raise TrackingError(f"logging metrics to run {self.run_id} failed: {err}") from None

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Save a matplotlib figure as a PNG artifact of the run."""
        self._client.log_figure(self.run_id, figure, artifact_file)

    def close(self, failed: bool = False) -> None:
        """Flush and end the run (FINISHED, or FAILED when ``failed``)."""
        import mlflow

        self._queue.put(None)
        self._thread.join(timeout=120)
        try:
            mlflow.end_run(status="FAILED" if failed else "FINISHED")
        finally:
            self._restore.close()


# -------------------------------------------------------------------------------------------- encoder
PIP_REQUIREMENTS = (
    "torch==2.13.0",
    "timm>=1.0.31,<1.1",
    "safetensors>=0.8",
    "einops>=0.8",
    "numpy>=2.4",
    "pydantic>=2.14,<3",
    "pyyaml>=6",
    "mlflow==3.17.2",
)


def log_encoder(
    tracking_uri: str,
    run_id: str,
    model_file: str | os.PathLike[str],
    *,
    registered_name: str | None,
    metadata: Mapping[str, Any],
    step: int,
) -> tuple[str, str | None]:
    """Log a model checkpoint as the run's ``encoder`` MLflow model and register it.

    The logged model holds: ``data/model.safetensors`` (the :mod:`a2mae.checkpoint` file: weights, and in
    its JSON header the model config, sensor registry entries and normalisation statistics), the
    ``a2mae`` package sources as ``code`` (so it loads where a2mae is not installed) and explicit pip
    requirements (see docs/pretrain.md). Nothing is pickled.

    Args:
        tracking_uri: Resolved tracking URI.
        run_id: Run to log into.
        model_file: A file written by :func:`a2mae.checkpoint.save_checkpoint`.
        registered_name: Registered model name (``registry.encoder_model``); None: do not register.
        metadata: JSON-serialisable metadata stored in the MLmodel file (snapshot id, sensors, ...).
        step: Optimiser step of the weights.

    Returns:
        ``(model_uri, registered version or None)``.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    import a2mae

    with mlflow_uris(tracking_uri), tempfile.TemporaryDirectory(prefix="a2mae-code-") as tmp:
        package = Path(tmp) / "a2mae"  # the sources only (no caches)
        source = Path(a2mae.__file__).resolve().parent
        shutil.copytree(source, package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        _activate_experiment_of(MlflowClient(tracking_uri), run_id)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="encoder",
                loader_module="a2mae.tracking.encoder_pyfunc",
                data_path=str(model_file),
                code_paths=[str(package)],
                pip_requirements=list(PIP_REQUIREMENTS),
                metadata=dict(metadata),
                registered_model_name=registered_name,
                step=step,
            )
            version = info.registered_model_version
            tags = {REGISTERED_STEP_TAG: str(step), MODEL_URI_TAG: info.model_uri}
            if version is not None:
                tags[REGISTERED_VERSION_TAG] = str(version)
            mlflow.set_tags(tags)
    return info.model_uri, (str(version) if version is not None else None)


def load_encoder(model_uri: str, tracking_uri: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Load a logged or registered encoder (``models:/a2mae-encoder/3``) as an a2mae model.

    Downloads the model's files and rebuilds the model with :func:`a2mae.checkpoint.load_checkpoint`
    (for serving, ``mlflow.pyfunc.load_model(uri).predict(...)`` works too).

    Returns:
        ``(model, meta)`` as :func:`a2mae.checkpoint.load_checkpoint` returns them.
    """
    import mlflow.artifacts

    from a2mae.checkpoint import load_checkpoint
    from a2mae.tracking.encoder_pyfunc import checkpoint_file

    with mlflow_uris(tracking_uri) if tracking_uri else contextlib.nullcontext():
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri)
    return load_checkpoint(checkpoint_file(local))
