"""Evaluation flow: challenger vs champion on the same frozen split, with the gated alias move.

Calls :func:`a2mae.evaluate.run.evaluate_version`, the function behind ``a2mae evaluate``. A
table artifact compares the two versions; links point at the MLflow evaluation run and the model.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.common import link_mlflow, markdown, mlflow_links, mlflow_version_path, params_from, stage, table
from flows.params import EvaluateParams
from flows.pretrain import link_run


@task(name="evaluate", retries=1, retry_delay_seconds=[5], cache_policy=NO_CACHE)
def evaluate_task(
    doc: dict[str, Any], model: str, version: int, data: str | None, promote: bool
) -> dict[str, Any]:
    """Score challenger and champion; move the alias when the gate passes."""
    from a2mae.evaluate.run import evaluate_version

    with mlflow_links():
        e = evaluate_version(params_from(doc), model, version, data=data, promote=promote)
    return {
        "model": e.name,
        "challenger": e.challenger,
        "champion": e.champion,
        "metric": e.metric,
        "challenger_score": e.challenger_score,
        "champion_score": e.champion_score,
        "margin": e.margin,
        "decision": e.decision,
        "promoted": bool(e.promoted) and promote,
        "split": e.split,
        "split_hash": e.split_hash,
        "run_id": e.run_id,
        "challenger_metrics": e.challenger_metrics,
        "champion_metrics": e.champion_metrics,
    }


def report(doc: dict[str, Any], e: dict[str, Any]) -> None:
    """Artifacts of an evaluation: metrics side by side, the decision, links to MLflow.

    Adds the evaluation run's ``experiment_id`` to ``e``.
    """
    from a2mae.tracking.client import tracking_uri

    names = sorted(set(e["challenger_metrics"]) | set(e["champion_metrics"]))
    rows = [
        {
            "metric": k,
            f"challenger v{e['challenger']}": e["challenger_metrics"].get(k),
            f"champion {('v' + e['champion']) if e['champion'] else '(none)'}": e["champion_metrics"].get(k),
        }
        for k in names
    ]
    table("evaluate-metrics", rows, f"{e['model']}: challenger vs champion on {e['split']}")
    champ = "none" if e["champion_score"] is None else f"{e['champion_score']:.4f}"
    markdown(
        "evaluate-decision",
        f"### {e['model']} v{e['challenger']}: **{e['decision']}**\n\n"
        f"{e['metric']} {e['challenger_score']:.4f} vs champion {champ} (margin {e['margin']}) on split "
        f"`{e['split']}` (hash `{e['split_hash'][:12]}`).",
        description=f"Promotion decision for {e['model']}",
    )
    uri = tracking_uri(params_from(doc).registry)
    link_mlflow(
        "evaluate-model",
        uri,
        mlflow_version_path(e["model"], e["challenger"]),
        f"{e['model']} v{e['challenger']}",
    )
    if e["run_id"]:
        run = link_run(uri, e["run_id"], "evaluate-run", f"Evaluation run of {e['model']} v{e['challenger']}")
        e["experiment_id"] = run.info.experiment_id


@flow(name="evaluate", log_prints=True)
def evaluate_flow(params: EvaluateParams) -> dict[str, Any]:
    """Evaluate a challenger version against the champion and promote it when it wins by the margin.

    Args:
        params: Registered model, challenger version, dataset and promotion settings.

    Returns:
        Scores of both versions, the decision and the MLflow evaluation run.
    """
    p = params.resolve()
    doc = p.model_dump(mode="json")
    data = params.path(params.data) if params.data else None
    e = evaluate_task(doc, params.model, params.version, data, params.promote)
    report(doc, e)
    champ = "none" if e["champion_score"] is None else f"v{e['champion']} {e['champion_score']:.4f}"
    stage(
        "evaluate",
        f"{e['model']} v{e['challenger']} {e['metric']} {e['challenger_score']:.4f} vs champion {champ}: "
        f"{e['decision']}",
    )
    return e
