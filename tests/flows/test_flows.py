"""Flows under a temporary Prefect API: parameter forms, content-keyed caching, the retrain pipeline
(embedded mode), the watcher's settling logic and the deployments of the serve process."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import types
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from a2mae.config import ConfigError, Params, load_params
from flows.params import (
    SAMPLE_SCENES,
    BenchmarkParams,
    CollectParams,
    FinetuneParams,
    FlowParams,
    IngestParams,
    PretrainParams,
    PromoteParams,
    RetrainParams,
    Section,
    TileParams,
    WatchParams,
    _config_field,
)
from tests.conftest import TINY_PIPELINE

REPO = Path(__file__).resolve().parents[2]
FORMS = (CollectParams, IngestParams, TileParams, PretrainParams, FinetuneParams, RetrainParams, WatchParams)


# ------------------------------------------------------------------------------------------ forms
def _leaves(schema: dict) -> dict[str, dict]:
    """``{field path: property}`` of a form's JSON schema, sections resolved (one level)."""
    defs = schema.get("$defs", {})
    out = {}
    for name, prop in schema["properties"].items():
        ref = prop.get("$ref", "")
        if ref:
            section = defs[ref.rsplit("/", 1)[1]]
            assert section.get("description"), f"section {name} has no description"
            for sub, sub_prop in section["properties"].items():
                assert "$ref" not in sub_prop, f"{name}.{sub}: sections nest one level only"
                out[f"{name}.{sub}"] = sub_prop
        else:
            out[name] = prop
    return out


@pytest.mark.parametrize("form", FORMS)
def test_forms_mirror_params_yaml(form):
    defaults = load_params()
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    instance = form()
    mirrors = form.mirrors()
    assert mirrors, f"{form.__name__} mirrors no params.yaml key"
    for m in mirrors:
        value = doc
        for part in m.key.split("."):
            value = value[part]
        got = m.to_params(instance.get(m.path))
        assert got == value or got == getattr(defaults, m.key.split(".")[0]).model_dump()[m.key.split(".")[1]]
        # the form's type accepts what the config model accepts (same Literal choices)
        cfg = _config_field(m.key).annotation
        field = _field(form, m.path)
        if typing.get_origin(cfg) is typing.Literal:
            assert typing.get_args(field.annotation) == typing.get_args(cfg)
        if m.none_as is not None:  # a nullable number (string) is a plain number (string) on the form
            assert typing.get_origin(cfg) in (typing.Union, types.UnionType)
            assert field.annotation is (str if m.none_as == "" else int)
    for path, prop in _leaves(form.model_json_schema()).items():
        desc = prop.get("description", "")
        assert desc and not desc.startswith("params.yaml"), f"{form.__name__}.{path}: no real description"
        assert prop.get("type") != "object", f"{form.__name__}.{path}: free-form dicts render badly"
        assert "anyOf" not in prop, f"{form.__name__}.{path}: a type toggle instead of an input box"


def _field(form, path):
    model = form
    for part in path[:-1]:
        model = model.model_fields[part].annotation
    return model.model_fields[path[-1]]


def test_fixed_sets_of_values_are_dropdowns():
    from a2mae.models.variants import list_models

    leaves = _leaves(RetrainParams.model_json_schema())
    assert sorted(leaves["pretrain.model_name"]["enum"]) == list_models()
    assert leaves["pretrain.model_name"]["enum"][0] == "a2mae_vit_nano_p8_t96"  # smallest first
    assert leaves["version.dvc_remote"]["enum"] == ["local", "s3"]
    assert leaves["finetune.task"]["enum"] == ["classification", "segmentation", "change_detection"]
    promote = _leaves(PromoteParams.model_json_schema())
    assert "a2mae-segmentation" in promote["model"]["enum"] and "a2mae-encoder" in promote["model"]["enum"]
    assert promote["model"]["default"] == "a2mae-classification"
    assert promote["version"]["default"] == 0 and "challenger" in promote["version"]["description"]
    assert PromoteParams.model_json_schema()["required"] == ["reason"]
    with pytest.raises(ValueError, match="Input should be"):
        RetrainParams(pretrain={"model_name": "resnet50"})


def test_the_pipeline_form_is_grouped_by_stage():
    schema = RetrainParams.model_json_schema()
    sections = [n for n, prop in schema["properties"].items() if "$ref" in prop]
    assert sections == ["ingest", "tile", "version", "pretrain", "finetune", "evaluate"]
    titles = [schema["properties"][n]["title"] for n in sections]
    assert all(t[0].isdigit() for t in titles)  # numbered in pipeline order
    assert list(schema["properties"])[-2:] == ["project_dir", "overrides"]  # the workspace last
    ungrouped = [n for n in _leaves(schema) if "." not in n]
    assert ungrouped == ["force", "project_dir", "overrides"]


def test_nullable_numbers_use_zero_for_null(tmp_path):
    form = RetrainParams(project_dir=str(tmp_path))
    assert form.pretrain.max_steps == 0 and form.finetune.max_steps == 0  # params.yaml: null
    p = form.resolve()
    assert p.pretrain.max_steps is None and p.finetune.max_steps is None
    assert "pretrain.max_steps=null" in form.as_overrides()
    capped = RetrainParams(project_dir=str(tmp_path), pretrain={"max_steps": 7})
    assert capped.resolve().pretrain.max_steps == 7
    back = RetrainParams.from_params(capped.resolve())
    assert back.pretrain.max_steps == 7 and back.finetune.max_steps == 0
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        PretrainParams(max_steps=-1)


def test_form_bounds_come_from_the_config_models():
    with pytest.raises(ValueError, match="multiple of 8"):
        TileParams(chip_size=7)
    with pytest.raises(ValueError, match="greater than 0"):
        PretrainParams(mask_ratio=0)
    with pytest.raises(ValueError, match="multiple of 8"):
        RetrainParams(tile={"chip_size": 7})


def test_flow_parameter_schema_is_a_usable_form():
    from prefect.utilities.callables import parameter_schema

    from flows.retrain import retrain

    schema = parameter_schema(retrain).model_dump_for_openapi()
    assert list(schema["properties"]) == ["params"]
    tile = schema["definitions"]["RetrainTile"]
    assert tile["properties"]["chip_size"]["default"] == load_params().tile.chip_size
    assert schema["properties"]["params"]["default"]["ingest"]["sources"] == list(SAMPLE_SCENES)


def test_from_params_updates_sections_and_keeps_the_rest(tmp_path):
    base = load_params(None, ["pretrain.epochs=4", "tile.chip_size=64"])
    form = RetrainParams.from_params(base, project_dir=str(tmp_path), pretrain={"num_workers": 0})
    assert form.pretrain.num_workers == 0 and form.pretrain.epochs == 4 and form.tile.chip_size == 64
    assert form.version.git_commit and form.version.dvc_remote == load_params().infra.dvc_remote
    p = form.resolve()
    assert p.pretrain.epochs == 4 and p.pretrain.num_workers == 0 and p.tile.chip_size == 64


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


def test_forms_are_flowparams_with_sections_one_level_deep():
    for form in FORMS:
        assert issubclass(form, FlowParams)
        for name, info in form.model_fields.items():
            ann = info.annotation
            assert not (isinstance(ann, type) and issubclass(ann, FlowParams)), name
            if isinstance(ann, type) and issubclass(ann, Section):
                for sub, sub_info in ann.model_fields.items():
                    sub_ann = sub_info.annotation
                    assert not (isinstance(sub_ann, type) and issubclass(sub_ann, BaseModel)), (name, sub)


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


def test_watcher_tells_each_scene_state_and_skips_ingested_ones(
    prefect_harness, tmp_path, synthetic_scenes, monkeypatch
):
    import flows.watch as watch
    from a2mae.ingest.run import ingest

    sent: list[tuple[str, str, dict]] = []
    monkeypatch.setattr(
        watch, "emit_event", lambda event, resource, payload: sent.append((event, payload["uri"], payload))
    )
    ws = tmp_path / "ws"
    (ws / "incoming").mkdir(parents=True)
    (ws / "params.yaml").write_text((REPO / "params.yaml").read_text())
    l8 = sorted((synthetic_scenes[0] / "L8").iterdir())
    known, new = ws / "incoming" / l8[0].name, ws / "incoming" / l8[1].name
    shutil.copytree(l8[0], known)
    shutil.copytree(l8[1], new)
    form = WatchParams(project_dir=str(ws), uri="incoming", overrides=["data.workers=1"])
    ingest([str(l8[0])], ws / "data" / "catalog.parquet", form.resolve(), progress=False)  # same files

    first = watch.watch_scenes(form)  # both seen for the first time: settling, nothing announced
    assert first["new"] == [] and len(first["settling"]) == 2
    assert [e for e, _uri, _p in sent] == [watch.SETTLING_EVENT] * 2
    assert all(p["listings_to_wait"] == 1 for *_, p in sent)
    sent.clear()
    second = watch.watch_scenes(form)  # unchanged: announced, except the one the catalog holds
    assert [Path(s).name for s in second["new"]] == [new.name]
    assert [Path(s).name for s in second["known"]] == [known.name]
    by_event = {e: (uri, p) for e, uri, p in sent}
    assert set(by_event) == {watch.EVENT, watch.KNOWN_EVENT}
    assert by_event[watch.KNOWN_EVENT][1]["scene_id"].startswith("L8_")
    sent.clear()
    third = watch.watch_scenes(form)
    assert third["new"] == third["known"] == third["settling"] == [] and sent == []


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
        ingest={"sources": ["data/incoming"]},
        pretrain={"num_workers": 0},
        version={"dvc_remote": "local"},  # no S3 store here; git_commit is on by default
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
def test_serve_builds_every_deployment_from_the_workspace(tmp_path, monkeypatch):
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    from flows.serve import build_deployments
    from flows.watch import EVENT

    ws = tmp_path / "ws"
    ws.mkdir()
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    doc["infra"]["retrain_cron"] = "15 4 * * 2"
    (ws / "params.yaml").write_text(yaml.safe_dump(doc))
    sets = ["infra.watch_interval_s=42", "pretrain.epochs=3", "pretrain.max_steps=4", "tile.workers=1"]
    deps = {d.name: d for d in build_deployments(ws, sets)}
    assert set(deps) == {
        "pipeline",
        "scheduled",
        "on-new-imagery",
        "watcher",
        "collect",
        "ingest",
        "tile",
        "pretrain",
        "finetune",
        "evaluate",
        "benchmark",
        "promote",
        "predict",
        "on-promotion",
        "on-new-scene",
    }
    form = BenchmarkParams.model_validate(deps["benchmark"].parameters["params"])
    assert form.data == "data/samples/segmentation" and form.resolve().benchmark.dense_labels == "pixel"
    assert deps["scheduled"].schedules[0].schedule.cron == "15 4 * * 2"
    assert deps["watcher"].schedules[0].schedule.interval.total_seconds() == 42
    assert deps["pipeline"].parameters["params"]["pretrain"]["epochs"] == 3
    # keys on the form are in its fields only: an edit of the field is what the run uses; the others
    # apply under the form through the serve process's environment, and the Overrides field stays empty
    for d in deps.values():
        assert d.parameters.get("params", {}).get("overrides", []) == [], d.name
    from flows.params import DEPLOYMENT_SETS_ENV
    from flows.serve import deployment_sets

    monkeypatch.setenv(DEPLOYMENT_SETS_ENV, json.dumps(deployment_sets(sets)))
    edited = RetrainParams.model_validate(deps["pipeline"].parameters["params"])
    edited.pretrain.max_steps = 9
    assert edited.resolve().pretrain.max_steps == 9 and edited.resolve().tile.workers == 1
    assert deps["pipeline"].parameters["params"]["project_dir"] == str(ws.resolve())
    assert deps["pipeline"].concurrency_limit == 1
    assert deps["pipeline"].concurrency_options.collision_strategy == ConcurrencyLimitStrategy.ENQUEUE
    (trigger,) = deps["on-new-imagery"].triggers
    assert trigger.expect == {EVENT}
    assert trigger.parameters["params"]["ingest"]["new_scene"] == "{{ event.payload.uri }}"
    assert doc["infra"]["watch_uri"] in trigger.parameters["params"]["ingest"]["sources"]
    assert deps["pipeline"].parameters["params"]["ingest"]["new_scene"] == ""  # the template stays there
    assert deps["pipeline"].parameters["params"]["version"] == {"dvc_remote": "s3", "git_commit": True}
    assert not trigger.parameters["params"]["ingest"]["collect"]
    assert not deps["watcher"].parameters["params"]["stac"]
    stac = {d.name: d for d in build_deployments(ws, ["infra.watch_stac=true"])}
    (trigger,) = stac["on-new-imagery"].triggers  # new STAC items: the retrain collects them first
    assert trigger.parameters["params"]["ingest"]["collect"] and stac["watcher"].parameters["params"]["stac"]
    assert trigger.match.root["prefect.resource.id"] == "a2mae.stac.*"  # not the predict trigger's scenes
    assert doc["infra"]["watch_uri"] not in trigger.parameters["params"]["ingest"]["sources"]
    forms = {
        "collect": CollectParams,
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


def test_deployment_forms_show_defaults_as_values_not_optional(tmp_path):
    """The Prefect UI labels a field that is not required "(Optional)": every field of a deployment's
    form is required (the run form starts from the deployment's parameters, which hold them all)."""
    from flows.serve import build_deployments

    for d in build_deployments(tmp_path, ["predict.output=s3://a2mae-predict/runs"]):
        schema = d._parameter_openapi_schema.model_dump_for_openapi()
        assert schema.get("required") == list(schema["properties"]), d.name
        for name, definition in schema.get("definitions", {}).items():
            if "properties" in definition:
                assert definition["required"] == list(definition["properties"]), (d.name, name)
        if d.name == "predict":
            assert d.parameters["params"]["output"] == "s3://a2mae-predict/runs"  # a default, in its field
