"""Predict gives a model its inputs in the units it was trained on (issue 21): a model fine-tuned on
Sentinel-2 L2A (reflectance x 10,000) applied to an ARCSI scene (x 1,000) sees the scene x 10; the
units are recorded when fine-tuning and read back from the registry (older models: the sensor's first
product)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import rasterio

from a2mae.predict.infer import to_model_units
from a2mae.predict.model import from_module
from a2mae.predict.run import predict
from a2mae.samples import sample_path
from a2mae.testing.models import BandThresholdTestModel, spec_for, tiny_downstream

ARCSI = sample_path("s2_arcsi")


def _arcsi_scene() -> Path:
    return sorted(Path(ARCSI).glob("*stdsref.tif"))[0]


def _threshold_model(threshold: float, scale: float | None):
    spec = spec_for("segmentation", ["B04"], ["low", "high"])
    model = from_module(BandThresholdTestModel(spec, 0, threshold), name="l2a-model", version="1")
    return dataclasses.replace(model, scale=scale, offset=0.0)


def test_an_arcsi_scene_reaches_an_l2a_model_in_l2a_units(tmp_path, predict_params):
    from a2mae.predict.scenes import read_sources

    params = predict_params("predict.window=64", "predict.overlap=0")
    (rec,) = read_sources([str(_arcsi_scene())], params.data)
    assert rec.product == "ARCSI" and rec.scale == pytest.approx(1e-3)
    band = next(b for b in rec.band_files if b.band == "B04")
    with rasterio.open(band.uri) as ds:
        values = ds.read(band.index).astype(float)
    valid = values[values > 0]
    threshold = float(valid.max())  # above every ARCSI value (x 1,000), below most of them x 10
    l2a = predict([str(_arcsi_scene())], tmp_path / "l2a", params, model=_threshold_model(threshold, 1e-4))
    raw = predict([str(_arcsi_scene())], tmp_path / "raw", params, model=_threshold_model(threshold, None))

    def high_fraction(out: Path, report) -> float:
        with rasterio.open(out / report.outputs[0]["files"][0]) as ds:
            cls = ds.read(1)
        return float(np.mean(cls[cls != 255] == 1))

    assert high_fraction(tmp_path / "raw", raw) == 0.0  # file units as they are: nothing above
    expected = float(np.mean(valid * 10 > threshold))
    assert high_fraction(tmp_path / "l2a", l2a) == pytest.approx(expected, abs=0.05) and expected > 0.2


def test_units_of_each_kind_of_model():
    m = _threshold_model(1.0, 1e-4)
    vals = np.full((1, 2, 2), 250.0, np.float32)
    np.testing.assert_allclose(to_model_units(vals, 1e-3, 0.0, m), 2500.0)  # ARCSI -> L2A units
    assert to_model_units(vals, 1e-4, 0.0, m) is vals  # same product: untouched
    np.testing.assert_allclose(to_model_units(vals, 2.75e-5, -0.2, dataclasses.replace(m, sensor="L8")),
                               (250 * 2.75e-5 - 0.2) / 1e-4)  # fmt: skip
    assert to_model_units(vals, 1e-3, 0.0, dataclasses.replace(m, scale=None)) is vals  # in-memory models
    enc = dataclasses.replace(m, units="reflectance")
    np.testing.assert_allclose(to_model_units(vals, 1e-3, 0.0, enc), 2500.0)  # the encoder: x 10,000


def test_fine_tuning_records_the_units_and_the_registry_gives_them_back(tmp_path, mlflow_tmp):
    import mlflow

    from a2mae.finetune.run import _training_units
    from a2mae.predict.model import resolve_model
    from a2mae.registry.downstream import log_model

    net = tiny_downstream("segmentation", k=2)
    assert _training_units(net.spec.sensor_entries, "S2") == {"scale": 1e-4, "offset": 0.0}
    old = tiny_downstream("segmentation", k=2)  # a spec without units (fine-tuned before they were kept)
    net.spec.scale, net.spec.offset = 2e-4, 0.0
    with mlflow.start_run():
        log_model(net, "a2mae-segmentation")
    with mlflow.start_run():
        log_model(old, "a2mae-segmentation")
    uri = mlflow.get_tracking_uri()
    recorded = resolve_model("models:/a2mae-segmentation/1", uri, tmp_path / "a")
    legacy = resolve_model("models:/a2mae-segmentation/2", uri, tmp_path / "b")
    assert (recorded.scale, recorded.offset) == (2e-4, 0.0)
    assert (legacy.scale, legacy.offset) == (1e-4, 0.0)  # the sensor's first product (S2 L1C/L2A)
