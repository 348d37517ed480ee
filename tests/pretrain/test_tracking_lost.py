"""The tracking server lost during pre-training (issue 21): the run stops at its next step with one line
naming the store, instead of training on unrecorded and ending in pages of tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from a2mae.tracking.client import TrackingError


def test_a_failed_batch_stops_the_next_step_and_close_does_not_mask_the_error(mlflow_tmp, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from a2mae.tracking.runs import StepLogger

    run_id = MlflowClient().create_run("0").info.run_id
    logger = StepLogger(os.environ["MLFLOW_TRACKING_URI"], run_id, system_metrics=False)

    def refused(*a, **k):
        raise MlflowException(
            "API request to http://127.0.0.1:9/x failed with exception Max retries exceeded"
        )

    monkeypatch.setattr(logger._client, "log_batch", refused)
    logger.log(1, {"train/loss": 1.0})
    logger._queue.join()  # the logger's thread tried and failed
    with pytest.raises(TrackingError) as err:
        logger.log(2, {"train/loss": 0.5})
    msg = str(err.value)
    assert "\n" not in msg and "the tracking server does not answer" in msg and "same name" in msg
    logger.close(failed=True)  # no request, no exception: the run's own error is the one told


@pytest.mark.slow
def test_mlflow_killed_during_pretrain_is_one_line(tmp_path, pretrain_snapshot, tiny_pretrain_overrides):
    from mlflow.tracking import MlflowClient

    from a2mae.services.base import free_port_pair
    from a2mae.services.mlflow import MlflowServer

    server = MlflowServer(tmp_path / "mlflow", port=free_port_pair(low=20000, high=30000)).start(timeout=300)
    sets = [o for o in tiny_pretrain_overrides if not o.startswith("registry.tracking_uri=")]
    sets += ["pretrain.max_steps=2000", "pretrain.log_every_steps=1"]
    cmd = [sys.executable, "-m", "a2mae", "pretrain", "--snapshot", str(pretrain_snapshot), "--name", "lost"]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": server.url,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }
    proc = subprocess.Popen(
        [*cmd, *(a for s in sets for a in ("--set", s))],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = MlflowClient(server.url)
        for _ in range(600):  # until the run logged its first steps
            runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
            if runs and runs[0].data.metrics.get("train/loss") is not None:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.5)
        server.stop()
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("a2mae: error: logging metrics to run ") and "does not answer" in lines[0]
