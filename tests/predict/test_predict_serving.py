"""The champion served over HTTP by MLflow's scoring server answers with the library's own prediction."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

REPO = Path(__file__).resolve().parents[2]
CHIPS = REPO / "data" / "samples" / "segmentation" / "test" / "images"


@pytest.mark.slow
def test_served_champion_returns_the_library_prediction(tmp_path, mlflow_tmp):
    import mlflow

    from a2mae.registry.downstream import load_model, log_model
    from a2mae.services.base import free_port_pair
    from a2mae.services.model_server import ModelServer
    from a2mae.testing.models import tiny_downstream

    bands = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"]
    with mlflow.start_run():
        log_model(tiny_downstream("segmentation", bands=bands, k=3, size=64), "a2mae-segmentation")
    mlflow.MlflowClient().set_registered_model_alias("a2mae-segmentation", "champion", "1")
    chip_path = sorted(CHIPS.glob("*.tif"))[0]
    with rasterio.open(chip_path) as ds:
        chip = ds.read().astype(np.float32)[None]  # a real chip: [1, 10, 64, 64] DN
    uri = "models:/a2mae-segmentation@champion"
    env = {"MLFLOW_TRACKING_URI": mlflow_tmp}
    server = ModelServer(tmp_path / "model", uri, port=free_port_pair(), env=env)
    server.start(timeout=180)
    try:
        body = json.dumps({"inputs": chip.tolist()}).encode()
        req = urllib.request.Request(
            f"{server.url}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=60) as resp:
            got = np.asarray(json.loads(resp.read())["predictions"], dtype=np.float32)
    finally:
        server.stop()
    with torch.no_grad():
        want = load_model(uri)(torch.from_numpy(chip)).numpy()
    assert got.shape == want.shape == (1, 3, 64, 64)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert "MLFLOW_ALLOW_PICKLE_DESERIALIZATION" in server.environment()
