"""With the real services: promoting a model starts the ``predict`` deployment, whose outputs land in
the S3 store (promote flow -> ``a2mae.model.promoted`` -> trigger -> predict flow run)."""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.s3]

SEG_BANDS = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"]


def test_promotion_runs_predict_into_the_s3_store(services_stack, monkeypatch):
    import mlflow
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter

    from a2mae.io.storage import S3Settings, list_files
    from a2mae.registry.downstream import log_model
    from a2mae.services.flows import PREDICT_PROMOTION_DEPLOYMENT
    from a2mae.testing.models import tiny_downstream
    from a2mae.tracking.client import mlflow_uris
    from flows.params import PromoteParams
    from flows.promote import promote_flow

    for key, value in services_stack.env.items():
        monkeypatch.setenv(key, value)
    name = "a2mae-segmentation"
    with mlflow_uris(services_stack.env["MLFLOW_TRACKING_URI"]), mlflow.start_run():
        info = log_model(tiny_downstream("segmentation", bands=SEG_BANDS, k=2), name)
    version = int(info.registered_model_version)
    settings = S3Settings.from_env(environ=services_stack.env)
    with services_stack.prefect_settings(), get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(PREDICT_PROMOTION_DEPLOYMENT)

        def runs():
            return client.read_flow_runs(deployment_filter=DeploymentFilter(id={"any_": [dep.id]}))

        known = {r.id for r in runs()}
        params = PromoteParams(
            project_dir=str(services_stack.workspace),
            model=name,
            version=version,
            reason="e2e: predict follows",
        )
        promote_flow(params)
        deadline, new = time.monotonic() + 900, []
        while time.monotonic() < deadline:
            new = [r for r in runs() if r.id not in known]
            if new and all(r.state.is_final() for r in new):
                break
            time.sleep(3)
    assert new, "the promotion started no predict run"
    run = new[0]
    assert run.state.is_completed(), run.state.message
    assert run.parameters["params"]["model"] == f"models:/{name}/{version}"
    files = [f.uri for f in list_files("s3://a2mae-predict/runs", settings)]
    mine = [u for u in files if f"{name}-{version}/" in u]
    assert any(u.endswith("/manifest.json") for u in mine), files
    assert any(u.endswith("/classmap.tif") for u in mine) and any(u.endswith("/preview.png") for u in mine)
