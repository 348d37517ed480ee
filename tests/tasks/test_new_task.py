"""A new task is one module: ``regression_task.py`` (per-chip regression from a CSV) registers itself,
and is fine-tuned, registered, evaluated and applied to a scene with no change anywhere else."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pyarrow.parquet as pq
import pytest

from a2mae import tasks

HERE = Path(__file__).parent


@pytest.fixture
def regression() -> Iterator[ModuleType]:
    """The task module, imported (it registers ``regression``), forgotten afterwards."""
    spec = importlib.util.spec_from_file_location("regression_task", HERE / "regression_task.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["regression_task"] = module
    spec.loader.exec_module(module)
    yield module
    tasks.unregister("regression")
    sys.modules.pop("regression_task", None)


def _values_dataset(root: Path, size: int = 16) -> Path:
    """Generated S2 chips whose brightness is proportional to their value, with ``values.csv``."""
    from rasterio.transform import from_origin

    from a2mae.finetune.samples import s2_bands, write_chip

    rng = np.random.default_rng(0)
    rows = ["image,value,split"]
    for split, n in (("train", 12), ("val", 2), ("test", 4)):
        for i in range(n):
            value = float(rng.uniform(0, 1))
            data = (1000 + 3000 * value + rng.integers(0, 100, (10, size, size))).astype(np.uint16)
            path = root / "chips" / f"{split}_{i}.tif"
            write_chip(
                path, data, s2_bands(), crs="EPSG:32633", transform=from_origin(4e5 + 1e3 * i, 4.5e6, 10, 10)
            )
            rows.append(f"chips/{split}_{i}.tif,{value!r},{split}")
    (root / "values.csv").write_text("\n".join(rows) + "\n")
    return root


def test_the_registry_derives_the_names_the_cli_and_params_offer(regression):
    from a2mae.config import ConfigError, load_params

    assert tasks.names()[-1] == "regression"
    assert load_params(None, ["finetune.task=regression"]).finetune.task == "regression"
    tasks.unregister("regression")
    with pytest.raises(ConfigError, match=r"finetune\.task 'regression': unknown task"):
        load_params(None, ["finetune.task=regression"])
    tasks.register(regression.TASK)


def test_a_fourth_task_trains_registers_evaluates_and_predicts_end_to_end(
    regression, tmp_path, mlflow_tmp, downstream_params
):
    from a2mae.evaluate.run import evaluate_version
    from a2mae.finetune.run import finetune
    from a2mae.predict.run import predict
    from a2mae.testing.scenes import SceneSpec, make_scenes

    data = _values_dataset(tmp_path / "values")
    params = downstream_params("finetune.max_steps=6", "finetune.protocol=full")
    out = finetune(params, task="regression", data=data, progress=False)
    assert out.task == "regression" and out.metric == "r2" and out.kind == "regression"
    assert set(out.metrics) == {"r2", "rmse", "mae"} and len(out.val_metrics or {}) == 3
    assert out.version is not None and out.version.name == "a2mae-regression"

    ev = evaluate_version(params, out.version.name, str(out.version.version))
    assert ev.decision == "first_champion" and ev.metric == "r2"

    from datetime import UTC, datetime

    (scene,) = make_scenes(tmp_path / "scenes", [SceneSpec("S2", datetime(2020, 6, 15, tzinfo=UTC), 1280)])
    p = downstream_params("predict.window=64", "predict.overlap=0", "predict.workers=1")
    rep = predict([scene.source], tmp_path / "pred", p, model_uri=out.version.model_uri, progress=False)
    assert rep.task == "regression"
    (entry,) = rep.outputs
    assert entry["files"] == [f"{entry['key']}/chips.parquet"]
    table = pq.read_table(tmp_path / "pred" / entry["files"][0])
    values = table.column("value").to_numpy()
    assert len(values) == rep.windows > 0 and np.isfinite(values).all()
    manifest = json.loads((tmp_path / "pred" / "manifest.json").read_text())
    assert manifest["task"] == "regression"


def test_a_spec_of_an_unknown_task_or_with_the_wrong_outputs_is_refused_in_one_line():
    from a2mae.registry.errors import RegistryError
    from a2mae.registry.spec import validate_spec_doc
    from a2mae.testing.models import tiny_encoder

    doc = {
        "task": "regression", "classes": ["value"], "multilabel": False, "sensor": "S2", "bands": ["B02"],
        "size": [16, 16], "gsd_m": 10.0, "mean": [0.0], "std": [1.0], "protocol": "full",
        "decoder_channels": 16, "ignore_index": 255, "encoder_source": "scratch",
        "encoder_config": tiny_encoder().config.model_dump(mode="json"),
    }  # fmt: skip
    with pytest.raises(RegistryError, match="unknown task 'regression'"):
        validate_spec_doc(doc, "spec.json")
    doc["task"] = "change_detection"
    with pytest.raises(RegistryError, match="2 single-label classes"):
        validate_spec_doc(doc, "spec.json")
