"""A cached task result never stands in for an output that is not there (issue 21): the ingest flow
after its catalog was deleted or replaced, the tile flow after its snapshot was replaced; results are
JSON (no pickle) in the configured result storage and expire."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flows.params import IngestParams
from tests.flows.test_flows import _workspace


def _states(flow_run_id, task: str) -> list[str]:
    """Final state names of a flow run's task runs of ``task``, in start order."""
    import time

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    for _ in range(100):  # task runs reach the API asynchronously
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}))
        mine = sorted(
            (r for r in runs if r.name.rsplit("-", 1)[0] == task), key=lambda r: r.expected_start_time
        )
        if mine and all(r.state is not None and r.state.is_final() for r in mine):
            return [r.state.name for r in mine]
        time.sleep(0.2)
    raise AssertionError(f"no final state for {task}")


def test_ingest_reruns_when_its_catalog_is_gone_or_replaced(prefect_harness, tmp_path, synthetic_scenes):
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

    from flows.ingest import ingest_flow

    ws = _workspace(tmp_path, synthetic_scenes)
    catalog = ws / "data" / "catalog.parquet"
    form = IngestParams(project_dir=str(ws), sources=["scenes"], overrides=["data.workers=1"])
    n = len(synthetic_scenes[1])
    results = tmp_path / "results"
    with temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: results}):
        first = ingest_flow(form)
        assert len(first["added"]) == n and catalog.is_file()
        kept = catalog.read_bytes()

        catalog.unlink()  # the cache key (inputs, absent catalog) is the first run's again
        again = ingest_flow(form, return_state=True)
        assert len(again.result()["added"]) == n and catalog.is_file()  # re-read, not a cached "n added"
        # the cached result was looked at, found to name a catalog that is not there, and recomputed
        assert _states(again.state_details.flow_run_id, "ingest-scenes") == ["Cached", "Completed"]

        same = ingest_flow(form, return_state=True)  # nothing changed: the cache still serves
        assert same.result()["added"] == [] and same.result()["present"] == n

        catalog.write_bytes(kept)  # the same bytes back: still the cached result's catalog
        assert ingest_flow(form)["present"] == n

    stored = [p for p in results.rglob("*") if p.is_file()]
    assert stored, "no cached result was persisted where the settings say"
    for path in stored:
        doc = json.loads(path.read_bytes())  # JSON records, no pickle
        assert doc["metadata"]["serializer"]["type"] == "json"
        assert doc["metadata"]["expiration"] is not None


@pytest.mark.slow
def test_tile_reruns_when_its_snapshot_was_replaced(prefect_harness, tmp_path, synthetic_scenes):
    from a2mae.config import load_params
    from flows.ingest import ingest_flow
    from flows.params import TileParams
    from flows.tile import tile_flow

    ws = _workspace(tmp_path, synthetic_scenes)
    ingest_flow(IngestParams(project_dir=str(ws), sources=["scenes"], overrides=["data.workers=1"]))
    form = TileParams.from_params(load_params(ws / "params.yaml"), project_dir=str(ws), workers=1)
    made = tile_flow(form)
    snap = Path(made["snapshot"])
    other = TileParams.from_params(
        load_params(ws / "params.yaml"), project_dir=str(ws), workers=1, snapshot=str(tmp_path / "other")
    )
    other_made = tile_flow(other.model_copy(update={"chip_size": form.chip_size // 2}))
    assert other_made["snapshot_id"] != made["snapshot_id"]
    shutil.rmtree(snap)
    shutil.copytree(other_made["snapshot"], snap)  # a valid snapshot, but not the one the cache names
    again = tile_flow(form, return_state=True)
    assert _states(again.state_details.flow_run_id, "tile-snapshot")[-1] == "Completed"
    assert again.result()["snapshot_id"] == made["snapshot_id"]
