"""New imagery with the real services: a scene dropped into the watched S3 prefix starts a retrain run
by itself (watcher schedule -> ``a2mae.scene.arrived`` event -> deployment trigger), which finishes."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.s3]


def test_dropping_a_scene_starts_a_retrain_by_itself(services_stack, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter
    from prefect.client.schemas.sorting import FlowRunSort

    from a2mae.io.storage import S3Settings, put_tree
    from a2mae.services.flows import TRIGGERED_DEPLOYMENT
    from a2mae.testing.scenes import Place, SceneSpec, make_scenes
    from flows.watch import EVENT

    watched = services_stack.stack.params.infra.watch_uri.rstrip("/")
    folder = tmp_path / "scene"
    make_scenes(folder, [SceneSpec("S2", datetime(2021, 8, 2, 3, 5, tzinfo=UTC), 3600)], Place(seed=11))
    scene_dir = next(p for p in folder.rglob("*.SAFE"))
    target = f"{watched}/{scene_dir.name}"

    with services_stack.prefect_settings(), get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(TRIGGERED_DEPLOYMENT)
        assert any(
            EVENT in (a.trigger.expect or set())
            for a in client.read_automations_by_name("retrain on new imagery")
        )

        def runs():
            return client.read_flow_runs(
                deployment_filter=DeploymentFilter(id={"any_": [dep.id]}), sort=FlowRunSort.START_TIME_DESC
            )

        known = {r.id for r in runs()}
        services_stack.set_watcher(active=True)
        try:
            put_tree(scene_dir, target, S3Settings.from_params(None, services_stack.env))  # the upload
            deadline = time.monotonic() + 600
            new, watching = [], True
            while time.monotonic() < deadline:
                new = [r for r in runs() if r.id not in known]
                if new and watching:  # triggered: stop polling, leave the CPU to the retrain
                    services_stack.set_watcher(active=False)
                    watching = False
                if new and all(r.state.is_final() for r in new):
                    break
                time.sleep(3)
        finally:
            services_stack.set_watcher(active=False)
    assert new, "no retrain run was started by the new scene"
    run = new[-1]  # the first one the trigger created
    assert run.state.is_completed(), run.state.message
    assert run.parameters["params"]["new_scene"].startswith(target)
    assert run.parameters["params"]["sources"][-1].rstrip("/") == watched  # it ingests the watched prefix
