"""MLflow runs of a training: one run per run name (resumed by tag), step-exact metric logging from rank 0.

* **One MLflow run per training run name.** The driver looks the run up by the tag ``a2mae.run_key``
  (``<storage path>/<run name>``) and creates it only when none exists, so starting a run again with the
  same name (after a crash, a kill or a finished run) continues the same MLflow run.
* **Rank 0 only** logs (:class:`StepLogger`); other workers never talk to the tracking server.
* **No duplicated or missing steps.** Metrics are logged with ``step = global optimiser step``. On a
  restart training replays the steps after its last checkpoint; :class:`StepLogger` first reads the
  highest step already logged for each key and skips those, so the history stays one continuous series.
  Metrics and figures are sent by one background thread, in order, so what reached the server is always
  a prefix, and the training step never waits for the tracking server.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from a2mae.tracking.client import TrackingError, ensure_experiment, mlflow_uris
from a2mae.tracking.context import NOTE_TAG, context_tags

RUN_KEY_TAG = "a2mae.run_key"
RUN_NAME_TAG = "a2mae.run_name"
_PARAM_BATCH = 100


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
        for key in (NOTE_TAG, *context_tags()):  # the description and links of the latest start
            if key in tags:
                client.set_tag(run_id, key, tags[key])
        return run_id, True
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else ensure_experiment(client, tracking_uri, experiment)
    run = client.create_run(
        exp_id, run_name=run_name, tags={**tags, RUN_KEY_TAG: run_key, RUN_NAME_TAG: run_name}
    )
    items = [Param(k, json.dumps(v) if isinstance(v, list | dict) else str(v)) for k, v in params.items()]
    for i in range(0, len(items), _PARAM_BATCH):
        client.log_batch(run.info.run_id, params=items[i : i + _PARAM_BATCH])
    client.log_batch(run.info.run_id, tags=[RunTag("a2mae.resumed", "false")])
    return run.info.run_id, False


def activate_experiment_of(client: Any, run_id: str) -> None:
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


@dataclass
class _Figure:
    figure: Any
    artifact_file: str


def _stop_active_run_quietly() -> None:
    """Forget MLflow's active run without a request (its system-metrics thread stopped first)."""
    from mlflow.tracking import fluent

    stack = fluent._active_run_stack.get()  # this thread's active runs (a thread-local list)
    monitors = fluent.run_id_to_system_metrics_monitor
    for run in list(stack):
        monitor = monitors.pop(run.info.run_id, None)
        if monitor is not None:
            with contextlib.suppress(Exception):
                monitor.finish()
    stack.clear()


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
        self.tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri)
        self._restore = contextlib.ExitStack()  # the MLflow URIs, put back by close()
        self._restore.enter_context(mlflow_uris(tracking_uri))
        activate_experiment_of(self._client, run_id)
        self._run = mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics)
        self.logged_until = self._last_steps()
        self._queue: queue.Queue[_Item | _Figure | None] = queue.Queue()
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
            batch: list[Metric] = []
            for it in items:
                if isinstance(it, _Item):
                    ts = int(time.time() * 1000)
                    batch.extend(Metric(k, float(v), ts, it.step) for k, v in it.metrics.items())
            try:
                for i in range(0, len(batch), 900):
                    self._client.log_batch(self.run_id, metrics=batch[i : i + 900], synchronous=True)
                for it in items:
                    if isinstance(it, _Figure):  # rendered and uploaded here, off the training step
                        self._client.log_figure(self.run_id, it.figure, it.artifact_file)
            except Exception as err:  # keep training; surface the error on flush/close
                self._error = err
            for _ in items:
                self._queue.task_done()

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Queue ``metrics`` at ``step``, leaving out keys already logged at this step or later.

        Raises:
            TrackingError: An earlier batch could not be logged (the tracking server stopped
                answering): the run stops at this step instead of training on unrecorded.
        """
        if self._error is not None:
            raise TrackingError(self._failure()) from None
        fresh = {k: float(v) for k, v in metrics.items() if step > self.logged_until.get(k, -1)}
        if fresh:
            self._queue.put(_Item(step, fresh))

    def flush(self) -> None:
        """Wait until every queued metric reached the tracking store."""
        self._queue.join()
        if self._error is not None:
            raise TrackingError(self._failure()) from None

    def _failure(self) -> str:
        """One line: the store that stopped answering, why (shortened), and how to go on."""
        reason = " ".join(str(getattr(self._error, "message", None) or self._error).split())
        if any(w in reason for w in ("Max retries exceeded", "Connection refused", "NewConnectionError")):
            reason = "the tracking server does not answer"
        return (
            f"logging metrics to run {self.run_id} at {self.tracking_uri} failed ({reason[:200]}); the run "
            "stopped at its last checkpoint: start it again with the same name once the tracking store "
            "answers"
        )

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Queue a matplotlib figure (object API, Agg) to be saved as a PNG artifact of the run.

        The figure is rendered and uploaded by the logger's thread, after the metrics queued before it.
        """
        self._queue.put(_Figure(figure, artifact_file))

    def close(self, failed: bool = False) -> None:
        """Flush and end the run (FINISHED, or FAILED when ``failed``)."""
        import mlflow

        self._queue.put(None)
        self._thread.join(timeout=5 if self._error is not None else 120)
        try:
            if self._error is None:
                try:
                    mlflow.end_run(status="FAILED" if failed else "FINISHED")
                except Exception as err:  # the store stopped answering at the very end
                    self._error = err
            if self._error is not None:  # no (more) requests: stop the run's threads (system metrics)
                with contextlib.suppress(Exception):
                    _stop_active_run_quietly()
                if not failed:  # a failing run's own error is the one to tell
                    raise TrackingError(self._failure()) from None
        finally:
            self._restore.close()
