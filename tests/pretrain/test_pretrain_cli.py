"""``a2mae pretrain``: a real (in-process) run, and one-line errors with exit code 2."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
import torch

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


def test_resuming_a_run_as_another_model_is_one_line_and_leaves_its_run_as_it_was(
    pretrain_snapshot, tiny_pretrain_overrides, capsys
):
    """Issue 21: the same name with another variant printed 203 lines of size mismatches and left the
    MLflow run FINISHED as if the attempt had worked."""
    from mlflow.tracking import MlflowClient

    args = ["pretrain", "--snapshot", str(pretrain_snapshot), "--name", "same-name"]
    assert main([*args, *_sets([*tiny_pretrain_overrides, "pretrain.max_steps=1"])]) == 0
    run_id = re.search(r"^mlflow run id: ([0-9a-f]{32})$", capsys.readouterr().out, re.M).group(1)
    wider = [o for o in tiny_pretrain_overrides if not o.startswith("pretrain.model_overrides=")]
    wider.append(
        "pretrain.model_overrides={depth: 1, embed_dim: 64, num_heads: 2, decoder_embed_dim: 32, "
        "decoder_depth: 1, decoder_num_heads: 2}"
    )
    rc = main([*args, *_sets([*wider, "pretrain.max_steps=2"])])
    err = _one_line_error(capsys)
    assert rc == 2 and "'same-name' cannot continue" in err and "--name" in err
    store = next(
        o.split("=", 1)[1] for o in tiny_pretrain_overrides if o.startswith("registry.tracking_uri=")
    )
    run = MlflowClient(store).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags.get("a2mae.resumed") != "true"  # untouched


def test_a_checkpoint_of_another_model_is_one_line_where_it_is_loaded(tmp_path):
    from safetensors.torch import save_file

    from a2mae.pretrain.state import CheckpointMismatch, load_model_weights

    small, wide = torch.nn.Linear(3, 2), torch.nn.Linear(5, 2)
    save_file(small.state_dict(), str(tmp_path / "m.safetensors"))
    with pytest.raises(CheckpointMismatch) as err:
        load_model_weights(tmp_path / "m.safetensors", wide)
    msg = str(err.value)
    assert "\n" not in msg and "holds another model" in msg and "weight" in msg
