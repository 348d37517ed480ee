"""Flows under a temporary Prefect API: parameter forms, content-keyed caching, the retrain pipeline
(embedded mode), the watcher's settling logic and the deployments of the serve process."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from a2mae.config import ConfigError, Params, load_params
from flows.params import (
    SAMPLE_SCENES,
    FinetuneParams,
    FlowParams,
    IngestParams,
    PretrainParams,
    RetrainParams,
    TileParams,
    WatchParams,
    _config_field,
)
from tests.conftest import TINY_PIPELINE

REPO = Path(__file__).resolve().parents[2]
FORMS = (IngestParams, TileParams, PretrainParams, FinetuneParams, RetrainParams, WatchParams)


# ------------------------------------------------------------------------------------------ forms
@pytest.mark.parametrize("form", FORMS)
def test_forms_mirror_params_yaml(form):
    defaults = load_params()
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    instance = form()
    keys = instance.params_keys()
    assert keys, f"{form.__name__} mirrors no params.yaml key"
    for name, key in keys.items():
        value = doc
        for part in key.split("."):
            value = value[part]
        got = getattr(instance, name)
        assert got == value or got == getattr(defaults, key.split(".")[0]).model_dump()[key.split(".")[1]]
        # the form's type accepts what the config model accepts (same Literal choices)
        cfg = _config_field(key).annotation
        if typing.get_origin(cfg) is typing.Literal:
            assert typing.get_args(form.model_fields[name].annotation) == typing.get_args(cfg)
    schema = form.model_json_schema()
    for name, prop in schema["properties"].items():
        assert prop.get("description"), f"{form.__name__}.{name} has no description for the UI"
        assert prop.get("type") != "object", f"{form.__name__}.{name}: nested objects render badly"


def test_form_bounds_come_from_the_config_models():
    with pytest.raises(ValueError, match="multiple of 8"):
        TileParams(chip_size=7)
    with pytest.raises(ValueError, match="greater than 0"):
        PretrainParams(mask_ratio=0)


def test_flow_parameter_schema_is_a_usable_form():
    from prefect.utilities.callables import parameter_schema

    from flows.retrain import retrain

    schema = parameter_schema(retrain).model_dump_for_openapi()
    assert list(schema["properties"]) == ["params"]
    form = schema["definitions"]["RetrainParams"]
    assert form["properties"]["chip_size"]["default"] == load_params().tile.chip_size
    assert schema["properties"]["params"]["default"]["sources"] == list(SAMPLE_SCENES)


def test_resolve_layers_workspace_fields_and_overrides(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    doc["tile"]["grid_m"] = 1234.0
    doc["pretrain"]["epochs"] = 9
    (ws / "params.yaml").write_text(yaml.safe_dump(doc))
    base = load_params(ws / "params.yaml")
    form = TileParams.from_params(base, project_dir=str(ws), overrides=["tile.max_images_per_set=3"])
    p = form.resolve()
    assert isinstance(p, Params)
    assert p.tile.grid_m == 1234.0  # the workspace's value reached the form
    assert p.pretrain.epochs == 9  # keys not on the form come from the workspace's params.yaml
    assert p.tile.max_images_per_set == 3  # free overrides apply last
    assert p.tile.snapshot == str(ws / "data" / "stssd")  # relative paths anchored at the workspace
    assert p.registry.tracking_uri == f"sqlite:///{ws / 'mlruns.db'}"
    edited = TileParams.from_params(base, project_dir=str(ws), chip_size=64).resolve()
    assert edited.tile.chip_size == 64  # a form field wins over params.yaml
    round_trip = PretrainParams.from_params(base, project_dir=str(ws), overrides=form.as_overrides())
    assert round_trip.resolve().tile.grid_m == 1234.0
    with pytest.raises(ConfigError, match=r"override 'tile\.nope=1': unknown key tile\.nope"):
        TileParams(project_dir=str(ws), overrides=["tile.nope=1"]).resolve()


def test_every_field_of_flowparams_subclasses_is_flat():
    for form in FORMS:
        assert issubclass(form, FlowParams)
        for name, info in form.model_fields.items():
            assert not (isinstance(info.annotation, type) and issubclass(info.annotation, FlowParams)), name


# ---------------------------------------------------------------------------------------- watcher
@settings(max_examples=60, deadline=None)
@given(
    polls=st.lists(
        st.dictionaries(st.sampled_from(["a", "b", "c"]), st.sampled_from(["f1", "f2"]), max_size=3),
        min_size=1,
        max_size=8,
    ),
    settle=st.integers(0, 2),
)
def test_watch_plan_reports_each_settled_version_once(polls, settle):
    from flows.watch import plan

    state = {"reported": {}, "settling": {}}
    reported: list[tuple[str, str]] = []
    history: dict[str, list[str]] = {}
    for listing in polls:
        for source, fp in listing.items():
            history.setdefault(source, []).append(fp)
        due, state = plan(listing, state, settle)
        state = json.loads(json.dumps(state))  # what the JSON state file round-trips
        for source in due:
            fp = listing[source]
            # reported only after settle+1 consecutive sightings of the same fingerprint
            assert history[source][-(settle + 1) :] == [fp] * (settle + 1)
            assert (source, fp) not in reported[-1:]
            reported.append((source, fp))
        for source, fp in state["reported"].items():
            assert (source, fp) in reported
    seen_pairs = list(reported)
    for i, pair in enumerate(seen_pairs):  # a version is reported again only after a change
        later = [p for p in seen_pairs[i + 1 :] if p[0] == pair[0]]
        assert not later or later[0] != pair


# ------------------------------------------------------------------------------ flows and caching
def _task_state(flow_run_id, task: str, timeout: float = 20.0) -> str:
    """Final state name of a flow run's task (task runs reach the API asynchronously: poll)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}))
            states = {r.name.rsplit("-", 1)[0]: r.state for r in runs if r.state is not None}
            state = states.get(task)
            if (state is not None and state.is_final()) or time.monotonic() > deadline:
                return state.name if state is not None else "missing"
            time.sleep(0.2)


def _workspace(tmp_path: Path, synthetic_scenes) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copytree(synthetic_scenes[0], ws / "scenes")
    (ws / "params.yaml").write_text((REPO / "params.yaml").read_text())
    return ws


def test_ingest_and_tile_flows_cache_on_content_not_paths(prefect_harness, tmp_path, synthetic_scenes):
    from flows.ingest import ingest_flow
    from flows.tile import tile_flow

    ws = _workspace(tmp_path, synthetic_scenes)
    form = IngestParams(project_dir=str(ws), sources=["scenes"], overrides=["data.workers=1"])
    first = ingest_flow(form, return_state=True)
    assert first.is_completed() and len(first.result()["added"]) == len(synthetic_scenes[1])
    ingest_flow(form)  # the catalog changed in between: a miss, nothing new read
    third = ingest_flow(form, return_state=True)
    assert _task_state(third.state_details.flow_run_id, "ingest-scenes") == "Cached"

    # same path, new bytes: the listing fingerprint (size, mtime) changes, so the cache misses
    band = next((ws / "scenes").rglob("*B04*"))
    band.write_bytes(band.read_bytes() + b"\0")
    fourth = ingest_flow(form, return_state=True)
    assert _task_state(fourth.state_details.flow_run_id, "ingest-scenes") == "Completed"

    tile_form = TileParams.from_params(load_params(ws / "params.yaml"), project_dir=str(ws), workers=1)
    made = tile_flow(tile_form)
    assert made["counts"]["sets"] > 0 and (ws / "data" / "stssd" / "snapshot.json").is_file()
    again = tile_flow(tile_form, return_state=True)
    assert _task_state(again.state_details.flow_run_id, "tile-snapshot") == "Cached"
    shutil.rmtree(ws / "data" / "stssd")  # the output vanished: the cache must not be trusted
    rebuilt = tile_flow(tile_form, return_state=True)
    assert _task_state(rebuilt.state_details.flow_run_id, "tile-snapshot") == "Completed"
    assert rebuilt.result()["snapshot_id"] == made["snapshot_id"]  # deterministic content


def _git_workspace(tmp_path: Path, synthetic_scenes) -> Path:
    from flows.demo import make_workspace

    ws = make_workspace(tmp_path / "ws")
    shutil.copytree(synthetic_scenes[0], ws / "data" / "incoming")
    return ws


def test_retrain_flow_end_to_end_embedded(prefect_harness, tmp_path, synthetic_scenes):
    """ingest -> tile -> DVC snapshot -> pretrain -> finetune -> evaluate -> promote, in-process."""
    from mlflow.tracking import MlflowClient

    from a2mae.dvc import DvcWorkspace
    from flows.retrain import retrain
    from flows.version import DVC_TAG

    ws = _git_workspace(tmp_path, synthetic_scenes)
    form = RetrainParams(
        project_dir=str(ws),
        sources=["data/incoming"],
        num_workers=0,
        git_commit=True,
        overrides=[*TINY_PIPELINE, "data.workers=1"],
    )
    out = retrain(form)
    snap = out["snapshot"]
    assert snap["tracked"] and snap["md5"].endswith(".dir") and snap["git_commit"]
    dvc = DvcWorkspace(ws)
    assert dvc.status_clean() and dvc.out_hash("data/stssd") == snap["md5"]
    assert (ws / ".a2mae" / "dvc-remote").is_dir()  # pushed to the local default remote
    log = subprocess.run(["git", "log", "--format=%s", "-1"], cwd=ws, capture_output=True, text=True).stdout
    assert "STSSD snapshot data/stssd" in log
    ev = out["evaluate"]
    assert ev["decision"] == "first_champion" and ev["promoted"]

    client = MlflowClient(f"sqlite:///{ws / 'mlruns.db'}")
    for run_id in (out["pretrain"]["run_id"], out["finetune"]["run_id"], ev["run_id"]):
        assert client.get_run(run_id).data.tags[DVC_TAG] == snap["md5"]
    encoder = client.get_model_version_by_alias("a2mae-encoder", "champion")
    assert str(encoder.version) == out["pretrain"]["version"] and encoder.tags[DVC_TAG] == snap["md5"]
    model = client.get_model_version_by_alias(out["finetune"]["model"], "champion")
    assert str(model.version) == str(out["finetune"]["version"])

    again = retrain(form)  # same data: the champion was trained on this snapshot
    assert again["skipped"] and again["snapshot"]["md5"] == snap["md5"]
    assert again["snapshot"]["git_commit"] is None  # nothing new to commit


def test_retrain_reports_a_bad_parameter_in_one_line(prefect_harness, tmp_path):
    from flows.retrain import retrain

    state = retrain(
        RetrainParams(project_dir=str(tmp_path), overrides=["tile.chip_size=7"]), return_state=True
    )
    assert state.is_failed()
    with pytest.raises(ConfigError, match=r"tile\.chip_size: Input should be a multiple of 8"):
        state.result()


# ------------------------------------------------------------------------------------- deployments
def test_serve_builds_every_deployment_from_the_workspace(tmp_path):
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    from flows.serve import build_deployments
    from flows.watch import EVENT

    ws = tmp_path / "ws"
    ws.mkdir()
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    doc["infra"]["retrain_cron"] = "15 4 * * 2"
    (ws / "params.yaml").write_text(yaml.safe_dump(doc))
    deps = {d.name: d for d in build_deployments(ws, ["infra.watch_interval_s=42", "pretrain.epochs=3"])}
    assert set(deps) == {
        "pipeline",
        "scheduled",
        "on-new-imagery",
        "watcher",
        "ingest",
        "tile",
        "pretrain",
        "finetune",
        "evaluate",
        "promote",
        "predict",
        "on-promotion",
        "on-new-scene",
    }
    assert deps["scheduled"].schedules[0].schedule.cron == "15 4 * * 2"
    assert deps["watcher"].schedules[0].schedule.interval.total_seconds() == 42
    assert deps["pipeline"].parameters["params"]["epochs"] == 3
    assert deps["pipeline"].parameters["params"]["project_dir"] == str(ws.resolve())
    assert deps["pipeline"].concurrency_limit == 1
    assert deps["pipeline"].concurrency_options.collision_strategy == ConcurrencyLimitStrategy.ENQUEUE
    (trigger,) = deps["on-new-imagery"].triggers
    assert trigger.expect == {EVENT}
    assert trigger.parameters["params"]["new_scene"] == "{{ event.payload.uri }}"
    assert doc["infra"]["watch_uri"] in trigger.parameters["params"]["sources"]
    forms = {
        "pipeline": RetrainParams,
        "scheduled": RetrainParams,
        "watcher": WatchParams,
        "ingest": IngestParams,
        "tile": TileParams,
        "pretrain": PretrainParams,
        "finetune": FinetuneParams,
    }
    for d in deps.values():
        assert d.entrypoint.startswith("flows.")  # importable module paths, any working directory
        if d.name in forms:  # the default parameters are valid forms
            assert forms[d.name].model_validate(d.parameters["params"]).resolve().pretrain.epochs == 3
