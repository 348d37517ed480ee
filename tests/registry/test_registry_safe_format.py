"""Fine-tuned models and the encoder load without unpickling; spec.json is validated before allocation."""

from __future__ import annotations

import json
import pickle
import resource
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from a2mae.registry.downstream import load_model, log_model, rebuild, write_artifacts
from a2mae.registry.errors import RegistryError
from a2mae.registry.spec import read_spec
from a2mae.testing.models import tiny_downstream, tiny_encoder


@pytest.fixture
def no_unpickling(monkeypatch):
    """Every unpickling route raises (pickle, torch.load, cloudpickle)."""

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")


def _files(uri: str) -> list[str]:
    local = Path(mlflow.artifacts.download_artifacts(uri))
    return sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())


def test_fine_tuned_model_is_a_pickle_free_pyfunc_without_code(mlflow_tmp, no_unpickling):
    net = tiny_downstream("segmentation", k=3)
    with mlflow.start_run():
        log_model(net, "a2mae-segmentation")
    uri = "models:/a2mae-segmentation/1"
    files = _files(uri)
    assert "data/a2mae/spec.json" in files and "data/a2mae/weights.safetensors" in files
    assert not [f for f in files if f.startswith("code/") or f.endswith((".pkl", ".pth", ".pt", ".pt2"))]
    loaded = mlflow.pyfunc.load_model(uri)  # the docs' route: loader_module of the installed a2mae
    x = np.random.default_rng(0).uniform(0, 3000, (2, len(net.spec.bands), 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(loaded.predict(x), want)
    np.testing.assert_array_equal(load_model(uri)(torch.from_numpy(x)).detach().numpy(), want)
    sig = mlflow.models.get_model_info(uri).signature.inputs.to_dict()[0]["tensor-spec"]
    assert list(sig["shape"]) == [-1, len(net.spec.bands), 32, 32]


def test_encoder_is_logged_without_code(mlflow_tmp, tmp_path, no_unpickling):
    from a2mae.checkpoint import save_checkpoint
    from a2mae.registry.encoder import log_encoder

    ckpt = save_checkpoint(tmp_path / "e.safetensors", tiny_encoder(), norm_stats={})
    with mlflow.start_run() as run:
        pass
    log_encoder(mlflow_tmp, run.info.run_id, ckpt, registered_name="a2mae-encoder", metadata={}, step=1)
    files = _files("models:/a2mae-encoder/1")
    assert not [f for f in files if f.startswith("code/")] and any(f.endswith(".safetensors") for f in files)
    assert mlflow.pyfunc.load_model("models:/a2mae-encoder/1") is not None


def test_models_of_earlier_releases_load_from_their_safetensors_only(mlflow_tmp, tmp_path, no_unpickling):
    """Earlier releases logged an mlflow.pytorch pickle with extra_files/spec.json + weights beside it."""
    net = tiny_downstream("classification", k=2)
    staged = write_artifacts(net, tmp_path / "extra")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "model.pth").write_bytes(b"\x80\x04 pretend pickle: never read")
    mlmodel = (
        "flavors:\n  pytorch: {model_data: data, pytorch_version: 2.13.0}\n"
        "  python_function: {loader_module: mlflow.pytorch}\n"
    )
    with mlflow.start_run() as run:
        mlflow.log_text(mlmodel, "model/MLmodel")
        mlflow.log_artifact(str(tmp_path / "data" / "model.pth"), "model/data")
        for p in staged:
            mlflow.log_artifact(str(p), "model/extra_files")
        mlflow.log_text(mlmodel, "bare/MLmodel")
    old = load_model(f"runs:/{run.info.run_id}/model")
    x = torch.rand(1, len(net.spec.bands), 32, 32) * 3000
    with torch.no_grad():
        assert torch.equal(old(x), net(x))
    with pytest.raises(RegistryError, match=r"earlier a2mae .* would need unpickling") as err:
        load_model(f"runs:/{run.info.run_id}/bare")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"encoder_config": {"embed_dim": 1_000_000}}, "embed_dim"),  # would allocate ~TBs
        ({"encoder_config": {"embed_dim": 64, "num_heads": 2}}, "does not match the weights"),
        ({"decoder_channels": 10**9}, "decoder_channels"),
        ({"size": "large"}, "size"),
        ({"mean": [0.0]}, "bands but 1 means"),
        ({"classes": []}, "classes"),
        ({"std": "zeros"}, "std > 0"),
    ],
)
def test_edited_spec_is_refused_before_anything_is_allocated(tmp_path, edit, message):
    net = tiny_downstream("segmentation", k=3)
    write_artifacts(net, tmp_path)
    doc = json.loads((tmp_path / "spec.json").read_text())
    for k, v in edit.items():
        doc[k] = {**doc[k], **v} if isinstance(v, dict) else [0.0] * len(doc["bands"]) if v == "zeros" else v
    (tmp_path / "spec.json").write_text(json.dumps(doc))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(RegistryError, match=message) as err:
        rebuild(tmp_path)
    assert "\n" not in str(err.value) and "spec.json" in str(err.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing big


def test_corrupt_spec_and_weights_give_one_line(tmp_path):
    net = tiny_downstream("segmentation", k=3)
    write_artifacts(net, tmp_path)
    shutil.copy(tmp_path / "spec.json", tmp_path / "good.json")
    (tmp_path / "spec.json").write_text("{not json")
    with pytest.raises(RegistryError, match="not valid JSON"):
        read_spec(tmp_path)
    shutil.copy(tmp_path / "good.json", tmp_path / "spec.json")
    (tmp_path / "weights.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(RegistryError, match=r"not a readable \.safetensors"):
        read_spec(tmp_path)
