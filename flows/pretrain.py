"""Pre-training flow: A²-MAE on a snapshot with Ray Train, tracked in MLflow, encoder registered.

Calls :func:`a2mae.pretrain.run.run_pretrain`, the function behind ``a2mae pretrain``, from one
ordinary task (the flow process is the Ray driver; no Ray task runner). The task holds a slot of the
global concurrency limit ``infra.accelerator_limit`` so two trainings never share one machine's
accelerator. With ``from_champion`` the run starts from the weights of the encoder registered as
``@champion`` (downloaded once by the driver; the workers build the model from the local copy).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency

from flows.common import (
    ensure_concurrency_limit,
    link_mlflow,
    log,
    mlflow_links,
    mlflow_run_path,
    mlflow_ui_url,
    params_from,
    snapshot_id,
    stage,
    table,
)
from flows.params import PretrainParams


@task(name="champion-encoder", retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE)
def fetch_champion(doc: dict[str, Any], dest: str) -> dict[str, str] | None:
    """Download the ``@champion`` encoder's checkpoint; None when there is no champion yet."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from a2mae.registry import aliases
    from a2mae.registry.encoder_pyfunc import checkpoint_file
    from a2mae.registry.errors import RegistryError
    from a2mae.tracking.client import client, tracking_uri

    p = params_from(doc)
    name, alias = p.registry.encoder_model, p.registry.champion_alias
    try:
        mv = aliases.current(client(p.registry), name, alias)
    except (MlflowException, RegistryError):  # no registered encoder yet
        return None
    if mv is None:
        return None
    mlflow.set_tracking_uri(tracking_uri(p.registry))
    local = mlflow.artifacts.download_artifacts(f"models:/{name}/{mv.version}", dst_path=dest)
    return {"version": str(mv.version), "checkpoint": str(checkpoint_file(local))}


@task(name="pretrain", cache_policy=NO_CACHE)
def pretrain_task(snapshot: str, doc: dict[str, Any], run_name: str, init_from: str | None) -> dict[str, Any]:
    """Train (or resume) the run under the accelerator limit; returns MLflow ids and the version."""
    from a2mae.pretrain.run import progress_bar, run_pretrain

    p = params_from(doc)
    ensure_concurrency_limit(p.infra.accelerator_limit, p.infra.accelerator_slots)
    bar = create_progress_artifact(0.0, description=f"pre-training {run_name}")
    assert isinstance(bar, UUID)  # called outside an event loop: the artifact's id, not a coroutine
    shown = [0.0]

    def on_progress(info: dict[str, Any]) -> None:
        total, step = info.get("total") or 0, info.get("step") or 0
        pct = round(100.0 * step / total, 1) if total else 0.0
        if pct >= shown[0] + 5 or pct >= 100:
            shown[0] = pct
            with contextlib.suppress(Exception):  # progress display must never fail a training
                update_progress_artifact(bar, pct)

    from a2mae.pretrain.init import InitFromCheckpoint

    model_fn = InitFromCheckpoint(init_from) if init_from else None
    with (
        concurrency(p.infra.accelerator_limit, occupy=1),
        mlflow_links(),
        progress_bar(also=on_progress) as progress,  # the command's bar (the demo), and the artifact
    ):
        result = run_pretrain(p, snapshot, name=run_name, progress=progress, model_fn=model_fn)
    update_progress_artifact(bar, 100.0)
    return {
        "run_name": result.run_name,
        "run_id": result.run_id,
        "resumed": result.resumed,
        "steps": result.global_step,
        "total_steps": result.total_steps,
        "model_uri": result.model_uri,
        "version": result.registered_version,
        "seconds": round(result.seconds, 1),
    }


def link_run(uri: str, run_id: str, key: str, title: str) -> Any:
    """A link artifact to an MLflow run's page (in its own experiment); returns the run."""
    from mlflow.tracking import MlflowClient

    run = MlflowClient(uri).get_run(run_id)
    link_mlflow(key, uri, mlflow_run_path(run.info.experiment_id, run_id), title)
    return run


def run_summary(doc: dict[str, Any], run_id: str, key: str, title: str) -> dict[str, Any]:
    """Link the MLflow run and table its final metrics.

    Returns:
        The run's final ``metrics``, its ``experiment_id`` and its ``url`` (None without an MLflow UI URL).
    """
    from a2mae.tracking.client import tracking_uri

    uri = tracking_uri(params_from(doc).registry)
    run = link_run(uri, run_id, f"{key}-run", title)
    metrics = dict(run.data.metrics)
    table(f"{key}-metrics", [{"metric": k, "value": v} for k, v in sorted(metrics.items())], title)
    base = mlflow_ui_url(uri)
    path = mlflow_run_path(run.info.experiment_id, run_id)
    return {
        "metrics": metrics,
        "experiment_id": run.info.experiment_id,
        "url": f"{base}/{path}" if base else None,
    }


_DEFAULT = PretrainParams()


@flow(name="pretrain", log_prints=True)
def pretrain_flow(params: PretrainParams = _DEFAULT) -> dict[str, Any]:
    """Pre-train A²-MAE on an STSSD snapshot and register the encoder.

    Args:
        params: Snapshot, model and training settings (defaults from params.yaml).

    Returns:
        MLflow run id, registered encoder version and training summary.
    """
    p = params.resolve()
    doc = p.model_dump(mode="json")
    snapshot = p.tile.snapshot
    ident = snapshot_id(snapshot) or "unknown"
    init, start = None, "scratch"
    if params.from_champion:
        found = fetch_champion(doc, str(Path(p.pretrain.storage_path) / "champion-init"))
        if found:
            init, start = found["checkpoint"], f"v{found['version']}"
    run_name = params.run_name or f"{p.pretrain.run_name}-{ident[:12]}-from-{start}"
    log(f"pretrain: run {run_name} on snapshot {ident} (start: {start})")
    result = pretrain_task(snapshot, doc, run_name, init)
    result["start"] = start
    summary = run_summary(doc, result["run_id"], "pretrain", f"Pre-training run {run_name}")
    result.update(metrics=summary["metrics"], experiment_id=summary["experiment_id"], url=summary["url"])
    loss = summary["metrics"].get("train/loss")
    shown = f", loss {loss:.4f}" if loss is not None else ""
    stage(
        "pretrain",
        f"{p.registry.encoder_model} v{result['version']} after {result['steps']} steps{shown} "
        f"(run {run_name})",
    )
    return result
