"""Serve the deployments: ``python -m flows.serve --project-dir DIR [--set section.key=value ...]``.

One long-running process registers every deployment with the Prefect server (``PREFECT_API_URL``)
and runs their flow runs as subprocesses on this machine: static infrastructure, the simplest choice
on one machine (no work pool or worker to keep in sync; a Kubernetes work pool replaces it when one
machine is outgrown, see docs/orchestration.md). ``a2mae services up`` starts it with the others.

Deployments (``flow/deployment``):

* ``retrain/pipeline`` -- the whole pipeline on demand (the form of the UI's "Run" button);
* ``retrain/scheduled`` -- the same on ``infra.retrain_cron`` (``infra.timezone``);
* ``retrain/on-new-imagery`` -- started by an ``a2mae.scene.arrived`` event (``infra.retrain_after_s``
  later), ingesting the watched prefix too;
* ``watch-scenes/watcher`` -- lists ``infra.watch_uri`` every ``infra.watch_interval_s`` seconds (with
  ``infra.watch_stac``: searches the STAC API of ``collect`` for new items over its locations);
* ``predict/on-promotion`` -- started by ``a2mae.model.promoted`` (a retrain promoted a new champion):
  applies the promoted version to ``predict.aoi``;
* ``predict/on-new-scene`` -- started by ``a2mae.scene.arrived``: applies ``predict.model`` to the
  new scene; ``predict/predict`` -- the same on demand;
* ``collect/collect``, ``ingest/ingest``, ``tile/tile``, ``pretrain/pretrain``, ``finetune/finetune``,
  ``evaluate/evaluate``, ``promote/promote`` -- each stage on demand (``promote`` is the manual
  promotion form).

Default parameters come from the workspace's ``params.yaml`` plus ``--set`` items (a key shown on a
form goes into its field only, so an edit of the field is what the run uses). Under ``a2mae services
up`` the workspace is the services' own git + DVC repository (``<infra.home>/workspace``). Each retrain
deployment runs one flow run at a time (later ones wait); training tasks also hold the global
concurrency limit ``infra.accelerator_limit`` so two trainings never share one accelerator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.types.entrypoint import EntrypointType

from a2mae.config import Params, load_params
from a2mae.services.flows import (
    PIPELINE_DEPLOYMENT,
    PREDICT_DEPLOYMENT,
    PREDICT_IMAGERY_DEPLOYMENT,
    PREDICT_PROMOTION_DEPLOYMENT,
    SCHEDULED_DEPLOYMENT,
    TRIGGERED_DEPLOYMENT,
    WATCHER_DEPLOYMENT,
)
from flows.benchmark import benchmark_flow
from flows.collect import collect_flow
from flows.common import ensure_concurrency_limit
from flows.evaluate import evaluate_flow
from flows.finetune import finetune_flow
from flows.ingest import ingest_flow
from flows.params import (
    DEPLOYMENT_SETS_ENV,
    BenchmarkParams,
    CollectParams,
    FinetuneParams,
    IngestParams,
    PredictParams,
    PretrainParams,
    RetrainParams,
    TileParams,
    WatchParams,
)
from flows.predict import PROMOTED_EVENT, predict_flow
from flows.pretrain import pretrain_flow
from flows.promote import promote_flow
from flows.retrain import retrain
from flows.tile import tile_flow
from flows.watch import EVENT, RESOURCE_PREFIX, STAC_RESOURCE_PREFIX, watch_scenes

_SERVICE_KEYS = (
    "infra.home=",
    "infra.host=",
    "infra.prefect_port=",
    "infra.mlflow_port=",
    "infra.s3_port=",
    "infra.ray_",  # every Ray setting of the head (port, dashboard, ...)
    "infra.start_timeout_s=",
    "infra.buckets=",
    "infra.mlflow_artifacts=",
)


def deployment_sets(sets: list[str]) -> list[str]:
    """The ``--set`` items the flow runs apply under their forms (not the services' own settings)."""
    return [s for s in sets if not s.startswith(_SERVICE_KEYS)]


def _name(full: str) -> str:
    return full.split("/", 1)[1]


def workspace_params(project_dir: Path, overrides: list[str]) -> Params:
    """The workspace's params.yaml (or the defaults) with ``overrides`` applied."""
    own = project_dir / "params.yaml"
    return load_params(own if own.is_file() else None, overrides)


def build_deployments(project_dir: str | Path, overrides: list[str] | None = None) -> list[RunnerDeployment]:
    """Every deployment of the project, with default parameters from the workspace.

    Args:
        project_dir: The workspace (params.yaml, dvc.yaml).
        overrides: ``section.key=value`` items for the default parameters.

    Returns:
        The deployments, ready for :func:`prefect.serve` (or ``.apply()``).
    """
    ws = Path(project_dir).expanduser().resolve()
    sets = list(overrides or [])
    p = workspace_params(ws, sets)
    mod = EntrypointType.MODULE_PATH
    serial = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)

    def form(model: Any, **values: Any) -> dict[str, Any]:
        # A key on the form shows its value in its field; the others take effect through the serve
        # process's DEPLOYMENT_SETS_ENV (a layer under the form): `overrides` stays the user's own.
        made = model.from_params(p, project_dir=str(ws), **values)
        return {"params": made.model_dump(mode="json")}

    retrain_params = form(RetrainParams)
    watched = copy.deepcopy(retrain_params["params"])
    if p.infra.watch_stac:  # new STAC items: the triggered retrain gathers them with `collect` first
        watched["ingest"]["collect"] = True
    else:
        watched["ingest"]["sources"] = [*watched["ingest"]["sources"], p.infra.watch_uri]
    templated = copy.deepcopy(watched)
    templated["ingest"]["new_scene"] = "{{ event.payload.uri }}"
    trigger = DeploymentEventTrigger(
        name="retrain on new imagery",
        expect={EVENT},
        match={"prefect.resource.id": f"{STAC_RESOURCE_PREFIX if p.infra.watch_stac else RESOURCE_PREFIX}*"},
        parameters={"params": templated},
        schedule_after=timedelta(seconds=p.infra.retrain_after_s),
    )
    tags = ["a2mae"]
    made = [
        *predict_deployments(form(PredictParams), serial, tags, mod),
        retrain.to_deployment(
            _name(PIPELINE_DEPLOYMENT),
            parameters=retrain_params,
            concurrency_limit=serial,
            tags=tags,
            entrypoint_type=mod,
        ),
        retrain.to_deployment(
            _name(SCHEDULED_DEPLOYMENT),
            schedules=[CronSchedule(cron=p.infra.retrain_cron, timezone=p.infra.timezone)],
            parameters=retrain_params,
            concurrency_limit=serial,
            tags=tags,
            entrypoint_type=mod,
        ),
        retrain.to_deployment(
            _name(TRIGGERED_DEPLOYMENT),
            triggers=[trigger],
            parameters={"params": watched},
            concurrency_limit=serial,
            tags=tags,
            entrypoint_type=mod,
        ),
        watch_scenes.to_deployment(
            _name(WATCHER_DEPLOYMENT),
            interval=timedelta(seconds=p.infra.watch_interval_s),
            parameters=form(WatchParams),
            concurrency_limit=ConcurrencyLimitConfig(
                limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
            ),
            tags=tags,
            entrypoint_type=mod,
        ),
        collect_flow.to_deployment("collect", parameters=form(CollectParams), tags=tags, entrypoint_type=mod),
        ingest_flow.to_deployment("ingest", parameters=form(IngestParams), tags=tags, entrypoint_type=mod),
        tile_flow.to_deployment("tile", parameters=form(TileParams), tags=tags, entrypoint_type=mod),
        pretrain_flow.to_deployment(
            "pretrain", parameters=form(PretrainParams), tags=tags, entrypoint_type=mod
        ),
        finetune_flow.to_deployment(
            "finetune", parameters=form(FinetuneParams), tags=tags, entrypoint_type=mod
        ),
        evaluate_flow.to_deployment("evaluate", tags=tags, entrypoint_type=mod),
        benchmark_flow.to_deployment(
            "benchmark",
            parameters=form(BenchmarkParams, data="data/samples/segmentation"),
            tags=tags,
            entrypoint_type=mod,
        ),
        promote_flow.to_deployment("promote", tags=tags, entrypoint_type=mod),
    ]
    return [defaults_as_defaults(_made(d)) for d in made]


def defaults_as_defaults(deployment: RunnerDeployment) -> RunnerDeployment:
    """Every field of the deployment's form counts as given, so the UI shows its default as its value.

    The Prefect UI labels each field that is not ``required`` "(Optional)", which on a form whose every
    field has a default (params.yaml's, or the deployment's) reads as "no value". The run form starts
    from the deployment's parameters, which hold every field, so requiring them all changes nothing
    else; a run started through the API gives the whole ``params`` object (its defaults are those of
    ``read_deployment_by_name(...).parameters``).
    """
    schema = deployment._parameter_openapi_schema
    schema.required = list(schema.properties)
    for definition in schema.definitions.values():
        if isinstance(definition, dict) and "properties" in definition:
            definition["required"] = list(definition["properties"])
    return deployment


def _made(made: object) -> RunnerDeployment:
    """What `Flow.to_deployment` returns outside an event loop (typed as maybe a coroutine)."""
    if not isinstance(made, RunnerDeployment):
        raise TypeError(f"expected a RunnerDeployment, got {type(made).__name__}")
    return made


def predict_deployments(
    form: dict[str, Any], serial: ConcurrencyLimitConfig, tags: list[str], mod: EntrypointType
) -> list[RunnerDeployment]:
    """The predict deployments: on demand, on a promotion, on new imagery."""
    on_promotion = DeploymentEventTrigger(
        name="predict on a new champion",
        expect={PROMOTED_EVENT},
        match={"prefect.resource.id": "mlflow.model.*"},
        parameters={"params": {**form["params"], "model": "{{ event.payload.model_uri }}"}},
    )
    on_imagery = DeploymentEventTrigger(
        name="predict on new imagery",
        expect={EVENT},
        match={"prefect.resource.id": f"{RESOURCE_PREFIX}*"},
        parameters={"params": {**form["params"], "new_scene": "{{ event.payload.uri }}"}},
    )
    made = [
        predict_flow.to_deployment(
            _name(PREDICT_DEPLOYMENT), parameters=form, tags=tags, entrypoint_type=mod
        ),
        predict_flow.to_deployment(
            _name(PREDICT_PROMOTION_DEPLOYMENT),
            triggers=[on_promotion],
            parameters=form,
            concurrency_limit=serial,
            tags=tags,
            entrypoint_type=mod,
        ),
        predict_flow.to_deployment(
            _name(PREDICT_IMAGERY_DEPLOYMENT),
            triggers=[on_imagery],
            parameters=form,
            concurrency_limit=serial,
            tags=tags,
            entrypoint_type=mod,
        ),
    ]
    return [_made(d) for d in made]


def _require_api() -> None:
    """Exit with one line when ``PREFECT_API_URL`` does not answer or refuses the auth string."""
    from a2mae.errors import A2maeError, safe_line
    from a2mae.services.reach import check_prefect_api

    api = os.environ.get("PREFECT_API_URL")
    if not api:
        return
    try:
        check_prefect_api(api, os.environ.get("PREFECT_API_AUTH_STRING"))
    except A2maeError as err:
        sys.exit(f"flows.serve: error: {safe_line(str(err))}")


def main(argv: list[str] | None = None) -> None:
    """Register the deployments, write the ready file, then serve until stopped."""
    from prefect.runner import Runner

    ap = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.splitlines()[0])
    ap.add_argument("--project-dir", default=".", help="Workspace with params.yaml and dvc.yaml.")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="section.key=value (repeatable).")
    ap.add_argument("--ready-file", default=None, help="Written once every deployment is registered.")
    ap.add_argument("--poll-seconds", type=float, default=5.0, help="How often to look for scheduled runs.")
    args = ap.parse_args(argv)
    _require_api()

    # the flow runs (children of this process) read the --set items under their forms' fields
    os.environ[DEPLOYMENT_SETS_ENV] = json.dumps(deployment_sets(args.sets))
    deployments = build_deployments(args.project_dir, args.sets)
    p = workspace_params(Path(args.project_dir).resolve(), args.sets)
    ensure_concurrency_limit(p.infra.accelerator_limit, p.infra.accelerator_slots)
    runner = Runner(name="a2mae", query_seconds=args.poll_seconds, pause_on_shutdown=False)
    for d in deployments:
        runner.add_deployment(d)
    if args.ready_file:
        Path(args.ready_file).write_text("ready\n")
    print(f"serving {len(deployments)} deployments for {Path(args.project_dir).resolve()}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(runner.start())


if __name__ == "__main__":
    main()
