"""The operator's first hour with ``a2mae predict`` (issue 21), through the CLI: a bad scene is refused
before any model is fetched, a URI that is no model URI is one line, "not in the model registry" names
the registry searched, and a missing local store is not created (no empty ``mlruns.db`` left behind)."""

from __future__ import annotations

import os

from a2mae.cli import main
from a2mae.samples import sample_path

S2_REAL = sample_path("s2_l2a")


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_a_bad_scene_is_refused_before_the_model_is_looked_at(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens: a model lookup fails
    missing = tmp_path / "no-such-scene.tif"
    rc = main(["predict", str(missing), "--model", "models:/m/1", "--out", str(tmp_path / "o")])
    err = _err(capsys)
    assert rc == 2 and str(missing) in err and "127.0.0.1:9" not in err


def test_an_address_is_not_a_model_uri(tmp_path, capsys, mlflow_tmp):
    rc = main(["predict", str(S2_REAL), "--model", "http://127.0.0.1:9/x", "--out", str(tmp_path / "o")])
    err = _err(capsys)
    assert rc == 2 and "--model http://127.0.0.1:9/x: not a model URI" in err and "models:/" in err


def test_not_in_the_registry_names_the_registry(tmp_path, capsys, mlflow_tmp):
    rc = main(["predict", str(S2_REAL), "--model", "models:/nope@champion", "--out", str(tmp_path / "o")])
    err = _err(capsys)
    store = os.environ["MLFLOW_TRACKING_URI"]
    assert rc == 2 and f"not in the model registry {store}" in err


def test_a_missing_local_store_is_named_and_not_created(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # registry.tracking_uri: sqlite:///mlruns.db, relative to here
    rc = main(["predict", str(S2_REAL), "--out", str(tmp_path / "o")])  # predict.model: the default
    err = _err(capsys)
    assert rc == 2 and f"not in the model registry sqlite:///{tmp_path / 'mlruns.db'}" in err
    assert "does not exist" in err
    assert not (tmp_path / "mlruns.db").exists() and not (tmp_path / "o").exists()
