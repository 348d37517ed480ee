"""MLflow tracking helpers: URI resolution, reachability, lineage, runs that resume, step-exact metrics."""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from a2mae.sensors import get_registry
from a2mae.tracking.client import TrackingError, check_tracking_uri, resolve_tracking_uri
from a2mae.tracking.figures import display_channels, reconstruction_figure
from a2mae.tracking.lineage import dvc_hash, git_commit, snapshot_tags
from a2mae.tracking.runs import StepLogger, find_or_create_run


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tracking_uri_resolution(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri("sqlite:///mlruns.db", env={}) == f"sqlite:///{tmp_path}/mlruns.db"
    assert resolve_tracking_uri("sqlite:////abs/m.db", env={}) == "sqlite:////abs/m.db"
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}
    assert resolve_tracking_uri("sqlite:///mlruns.db", env=env) == "http://127.0.0.1:5000"
    with pytest.raises(TrackingError, match="sqlite:///"):
        resolve_tracking_uri("mlruns", env={})


def test_unreachable_tracking_server_is_one_clear_line(tmp_path: Path):
    uri = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(TrackingError) as err:
        check_tracking_uri(uri, timeout_s=2)
    msg = str(err.value)
    assert "\n" not in msg and uri in msg and "unreachable" in msg
    check_tracking_uri(f"sqlite:///{tmp_path}/sub/m.db")  # creates the folder
    assert (tmp_path / "sub").is_dir()


def test_dvc_hash_from_a_dvc_file_and_from_dvc_lock(tmp_path: Path):
    snap = tmp_path / "data" / "snap"
    snap.mkdir(parents=True)
    assert dvc_hash(snap) is None
    (tmp_path / "data" / "snap.dvc").write_text("outs:\n- md5: 0123abcd.dir\n  path: snap\n")
    assert dvc_hash(snap) == "0123abcd.dir"
    (tmp_path / "data" / "snap.dvc").unlink()
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  tile:\n    cmd: a2mae tile\n    outs:\n"
        "    - path: data/snap\n      md5: feedbeef.dir\n"
    )
    assert dvc_hash(snap) == "feedbeef.dir"
    assert dvc_hash("s3://bucket/snap") is None


def test_lineage_tags_name_the_code_commit(tmp_path: Path):
    commit, _dirty = git_commit()
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    assert commit == head.stdout.strip()
    assert git_commit(tmp_path) == (None, False)  # not a work tree
    tags = snapshot_tags(str(tmp_path), "abc")
    assert tags["a2mae.snapshot_id"] == "abc" and tags["a2mae.git_commit"] == commit
    assert tags["a2mae.snapshot_dvc_hash"] == "none"


def test_runs_resume_by_key_and_metrics_are_logged_once_per_step(tmp_path: Path, empty_mlflow_db):
    shutil.copyfile(empty_mlflow_db, tmp_path / "m.db")
    uri = f"sqlite:///{tmp_path}/m.db"
    rid, resumed = find_or_create_run(uri, "exp", "store/run-a", "run-a", {"a.b": 1, "c": [1, 2]}, {"t": "x"})
    assert not resumed
    again, resumed = find_or_create_run(uri, "exp", "store/run-a", "run-a", {"a.b": 2}, {})
    assert (again, resumed) == (rid, True)
    other, resumed = find_or_create_run(uri, "exp", "store/run-b", "run-b", {}, {})
    assert other != rid and not resumed
    client = MlflowClient(uri)
    assert client.get_run(rid).data.params == {"a.b": "1", "c": "[1, 2]"}

    log = StepLogger(uri, rid, system_metrics=False)
    for step in range(1, 6):
        log.log(step, {"train/loss": 1.0 / step, "train/lr": 0.1})
    log.close(failed=True)  # a crash after step 5
    assert client.get_run(rid).info.status == "FAILED"

    log = StepLogger(uri, rid, system_metrics=False)  # the restart replays steps 3.. from a checkpoint
    assert log.logged_until == {"train/loss": 5, "train/lr": 5}
    for step in range(3, 9):
        log.log(step, {"train/loss": 1.0 / step, "train/lr": 0.2, "train/new": 1.0})
    log.flush()
    log.close()
    assert client.get_run(rid).info.status == "FINISHED"
    hist = client.get_metric_history(rid, "train/loss")
    assert [m.step for m in hist] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [m.value for m in client.get_metric_history(rid, "train/lr")] == [0.1] * 5 + [0.2] * 3
    assert [m.step for m in client.get_metric_history(rid, "train/new")] == [3, 4, 5, 6, 7, 8]


def test_reconstruction_figure_is_a_png_with_true_colour_for_s2():
    reg = get_registry()
    bands = ("B02", "B03", "B04", "B08")
    assert display_channels("S2", bands, reg) == [2, 1, 0]  # red, green, blue
    assert display_channels("S2", ("B11", "B12"), reg) == [0]  # no visible bands: first band in grey
    t = torch.rand(4, 16, 16)
    fig = reconstruction_figure("S2", [(bands, t, t * 0, t + 0.1)] * 2, reg, title="S2 at step 7")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes) == 6


def test_artifacts_of_a_sqlite_store_live_beside_it_not_in_the_working_folder(tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from a2mae.tracking.client import ensure_experiment, mlflow_uris

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    client = MlflowClient(uri)
    exp_id = ensure_experiment(client, uri, "exp")
    assert ensure_experiment(client, uri, "exp") == exp_id  # found, not created twice
    with mlflow_uris(uri), mlflow.start_run(experiment_id=exp_id):
        mlflow.log_text("hello", "note.txt")
    assert list(elsewhere.iterdir()) == []
    assert list((tmp_path / "store" / "mlartifacts").rglob("note.txt"))
