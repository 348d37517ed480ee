"""``a2mae pretrain``: a real (in-process) run, and one-line errors with exit code 2."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from a2mae.cli import main


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)


def _sets(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("a2mae: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_pretrain_prints_run_id_and_registered_version(pretrain_snapshot, tiny_pretrain_overrides, capsys):
    import mlflow

    # A long-lived process may point MLflow's globals elsewhere; the run must not use (or change) them.
    before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_registry_uri("sqlite:////nonexistent/elsewhere.db")
    args = ["pretrain", "--snapshot", str(pretrain_snapshot), "--name", "cli-run"]
    rc = main([*args, *_sets([*tiny_pretrain_overrides, "pretrain.max_steps=2"])])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert re.search(r"^mlflow run id: [0-9a-f]{32}$", out, re.M), out
    assert "registered: a2mae-encoder version 1" in out
    assert "run cli-run: 2/2 steps" in out
    ckpt = re.search(r"^checkpoint: (.+)$", out, re.M).group(1)
    assert Path(ckpt, "model.safetensors").is_file()
    assert mlflow.get_registry_uri() == "sqlite:////nonexistent/elsewhere.db"
    mlflow.set_tracking_uri(before[0])
    mlflow.set_registry_uri(before[1])


def test_missing_or_bad_snapshot_is_one_line(tmp_path: Path, capsys):
    assert main(["pretrain", "--snapshot", str(tmp_path / "nope")]) == 2
    assert "no such snapshot folder" in _one_line_error(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["pretrain", "--snapshot", str(tmp_path / "empty")]) == 2
    assert "not a snapshot" in _one_line_error(capsys)


def test_unreachable_tracking_server_is_one_line(
    pretrain_snapshot, tiny_pretrain_overrides, monkeypatch, capsys
):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    rc = main(["pretrain", "--snapshot", str(pretrain_snapshot), *_sets(tiny_pretrain_overrides)])
    assert rc == 2
    assert f"http://127.0.0.1:{port} is unreachable" in _one_line_error(capsys)


def test_bad_parameter_is_one_line(pretrain_snapshot, capsys):
    rc = main(["pretrain", "--snapshot", str(pretrain_snapshot), "--set", "pretrain.accum_steps=0"])
    assert rc == 2
    assert "pretrain.accum_steps" in _one_line_error(capsys)
