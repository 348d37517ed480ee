"""New imagery with the real services and the default timing of params.yaml: a scene dropped into the
watched S3 prefix is reported as settling, then announced, and starts a retrain run by itself (watcher
schedule -> ``a2mae.scene.arrived`` event -> deployment trigger), which finishes; a copy of a scene the
catalog already holds is reported as such and starts nothing. The time from the drop to the retrain's
start is measured (printed and recorded as a test property), not asserted."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.s3]


def _wait(predicate, timeout: float, every: float = 3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(every)
    return predicate()


def test_dropped_scene_shows_its_state_and_starts_a_retrain(services_stack, tmp_path, record_property):
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    from a2mae.config import load_params
    from a2mae.io.storage import S3Settings, put_tree
    from a2mae.services.flows import TRIGGERED_DEPLOYMENT, WATCHER_DEPLOYMENT
    from a2mae.testing.scenes import Place, SceneSpec, make_scenes
    from flows.watch import EVENT, KNOWN_EVENT, RESOURCE_PREFIX, SETTLING_EVENT

    infra = services_stack.stack.params.infra
    defaults = load_params().infra
    timing = ("watch_interval_s", "watch_settle_polls", "retrain_after_s")
    assert [getattr(infra, k) for k in timing] == [getattr(defaults, k) for k in timing]  # the defaults
    watched = infra.watch_uri.rstrip("/")
    folder = tmp_path / "scene"
    make_scenes(folder, [SceneSpec("S2", datetime(2021, 8, 2, 3, 5, tzinfo=UTC), 3600)], Place(seed=11))
    scene_dir = next(p for p in folder.rglob("*.SAFE"))
    target = f"{watched}/{scene_dir.name}"
    copy = f"{watched}/copy/{scene_dir.name}"
    s3 = S3Settings.from_env(environ=services_stack.env)

    with services_stack.prefect_settings(), get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(TRIGGERED_DEPLOYMENT)
        watcher = client.read_deployment_by_name(WATCHER_DEPLOYMENT)
        assert any(
            EVENT in (a.trigger.expect or set())
            for a in client.read_automations_by_name("retrain on new imagery")
        )

        def runs(deployment):
            return client.read_flow_runs(
                deployment_filter=DeploymentFilter(id={"any_": [deployment.id]}),
                sort=FlowRunSort.START_TIME_DESC,
            )

        def events(uri: str) -> list:
            page = client.read_events(
                EventFilter(
                    event=EventNameFilter(prefix=["a2mae.scene."]),
                    resource=EventResourceFilter(id_prefix=[f"{RESOURCE_PREFIX}{uri}"]),
                ),
                limit=50,
            )
            return sorted(page.events, key=lambda e: e.occurred)

        known = {r.id for r in runs(dep)}
        services_stack.set_watcher(active=True)
        try:
            # steady state: the watcher has run on its schedule at least once before the drop
            listed = {r.id for r in runs(watcher) if r.state.is_final()}
            assert _wait(lambda: {r.id for r in runs(watcher) if r.state.is_completed()} - listed, 300)

            put_tree(scene_dir, target, s3)  # the upload
            dropped = datetime.now(UTC)
            triggered = _wait(lambda: [r for r in runs(dep) if r.id not in known], 900)
            assert triggered, "no retrain run was started by the new scene"
            run_id = triggered[-1].id  # the first one the trigger created
            run = _wait(lambda: (r := client.read_flow_run(run_id)).start_time and r, 600)
            seen = events(target)

            # the already-ingested case: the same files under another name start nothing
            done = _wait(lambda: (r := client.read_flow_run(run_id)).state.is_final() and r, 900)
            put_tree(scene_dir, copy, s3)
            copied = _wait(lambda: [e for e in events(copy) if e.event == KNOWN_EVENT], 600)
        finally:
            services_stack.set_watcher(active=False)
        later = [r for r in runs(dep) if r.id not in known and r.id != run_id]
        copy_events = [e.event for e in events(copy)]

    names = [e.event for e in seen]
    assert names[0] == SETTLING_EVENT and EVENT in names, names  # state shown from the first listing on
    arrived = next(e for e in seen if e.event == EVENT)
    assert arrived.payload["uri"].startswith(target)
    start_s = (run.start_time - dropped).total_seconds()
    scheduled_s = (run.expected_start_time - dropped).total_seconds()
    settling_s = (seen[0].occurred - dropped).total_seconds()
    arrived_s = (arrived.occurred - dropped).total_seconds()
    figure = (
        f"drop -> settling event {settling_s:.0f} s, -> arrived {arrived_s:.0f} s, "
        f"-> retrain scheduled {scheduled_s:.0f} s, -> retrain running {start_s:.0f} s "
        f"(watch_interval_s={infra.watch_interval_s}, watch_settle_polls={infra.watch_settle_polls}, "
        f"retrain_after_s={infra.retrain_after_s})"
    )
    print(figure)
    record_property("drop_to_retrain_start_s", round(start_s, 1))
    record_property("new_imagery_timing", figure)

    assert done.state.is_completed(), done.state.message
    params = done.parameters["params"]
    assert params["ingest"]["new_scene"].startswith(target)
    assert params["ingest"]["sources"][-1].rstrip("/") == watched  # it ingests the watched prefix
    assert copied, "the copy of an ingested scene was not reported as already ingested"
    assert copied[0].payload["scene_id"] and copy_events[0] == SETTLING_EVENT and EVENT not in copy_events
    assert not [r for r in later if r.parameters["params"]["ingest"]["new_scene"].startswith(copy)]
