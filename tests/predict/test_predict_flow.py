"""The predict flow: deployments and triggers, and a run with its artifacts (embedded Prefect)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_predict_deployments_follow_promotion_and_new_imagery(tmp_path):
    from flows.params import PredictParams
    from flows.predict import PROMOTED_EVENT
    from flows.serve import build_deployments
    from flows.watch import EVENT

    ws = tmp_path / "ws"
    ws.mkdir()
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    doc["predict"]["aoi"] = ["data/samples/sentinel2_l2a_T29RKH_20200219"]
    (ws / "params.yaml").write_text(yaml.safe_dump(doc))
    deps = {
        d.name: d
        for d in build_deployments(ws, ["predict.window=128"])
        if d.entrypoint.startswith("flows.predict")
    }
    assert set(deps) == {"predict", "on-promotion", "on-new-scene"}
    (promo,) = deps["on-promotion"].triggers
    assert promo.expect == {PROMOTED_EVENT}
    assert promo.parameters["params"]["model"] == "{{ event.payload.model_uri }}"
    assert promo.parameters["params"]["sources"] == doc["predict"]["aoi"]
    (scene,) = deps["on-new-scene"].triggers
    assert scene.expect == {EVENT} and scene.parameters["params"]["new_scene"] == "{{ event.payload.uri }}"
    form = PredictParams.model_validate(deps["predict"].parameters["params"])
    assert form.window == 128 and form.resolve().predict.window == 128


def test_run_folder_is_new_per_run():
    from datetime import UTC, datetime

    from flows.predict import run_folder

    t = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert (
        run_folder("s3://b/maps/", "models:/a2mae-segmentation/3", t)
        == "s3://b/maps/20260102T030405Z-a2mae-segmentation-3"
    )
    assert run_folder("out", "models:/a2mae-segmentation@champion", t).endswith("a2mae-segmentation-champion")


def test_predict_flow_runs_and_links_its_outputs(prefect_harness, tmp_path, mlflow_tmp):
    import mlflow
    from prefect.client.orchestration import get_client

    from a2mae.registry.downstream import log_model
    from a2mae.testing.models import tiny_downstream
    from flows.params import PredictParams
    from flows.predict import predict_flow

    bands = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"]
    with mlflow.start_run():
        log_model(tiny_downstream("segmentation", bands=bands, k=2), "a2mae-segmentation")
    scene = str(REPO / "data" / "samples" / "sentinel2_l2a_T29RKH_20200219")
    params = PredictParams(
        project_dir=str(tmp_path), sources=[scene], model="models:/a2mae-segmentation/1",
        output=str(tmp_path / "maps"), window=256, overlap=64, batch_size=4,
        overrides=[f"registry.tracking_uri={mlflow_tmp}"],
    )  # fmt: skip
    state = predict_flow(params, return_state=True)
    report = state.result()
    (run_dir,) = (tmp_path / "maps").iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["model"]["model_version"] == "1" and report["outputs"][0]["files"][0].endswith(
        "classmap.tif"
    )
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts()
    mine = {a.key: a for a in arts if a.flow_run_id == state.state_details.flow_run_id}
    links = [k for k in mine if k.endswith("-classmap")]
    assert len(links) == 1 and (run_dir / report["outputs"][0]["files"][0]).as_uri() in mine[links[0]].data
    md = mine["predict-summary"]
    assert "data:image/png;base64," in md.data


def test_predict_flow_without_scenes_does_nothing(prefect_harness, tmp_path):
    from flows.params import PredictParams
    from flows.predict import predict_flow

    assert predict_flow(PredictParams(project_dir=str(tmp_path), sources=[])) == {"skipped": True}


def test_a_new_scene_before_any_champion_is_skipped_not_failed(prefect_harness, tmp_path, mlflow_tmp):
    """The new-imagery trigger may fire before a model of the predict task was ever promoted."""
    from flows.params import PredictParams
    from flows.predict import predict_flow

    scene = str(REPO / "data" / "samples" / "sentinel2_l2a_T29RKH_20200219")
    params = PredictParams(
        project_dir=str(tmp_path), new_scene=scene, model="models:/a2mae-segmentation@champion",
        output=str(tmp_path / "maps"), overrides=[f"registry.tracking_uri={mlflow_tmp}"],
    )  # fmt: skip
    state = predict_flow(params, return_state=True)
    assert state.is_completed() and state.result() == {"skipped": True}
    assert not (tmp_path / "maps").exists()


def test_a_missing_champion_is_not_registered_and_resolving_it_says_so(tmp_path, mlflow_tmp):
    import pytest

    from a2mae.predict.errors import ModelNotFound
    from a2mae.predict.model import is_registered, resolve_model

    uri = "models:/a2mae-segmentation@champion"
    assert not is_registered(uri, mlflow_tmp)
    with pytest.raises(ModelNotFound, match="not in the model registry"):
        resolve_model(uri, mlflow_tmp, tmp_path)
