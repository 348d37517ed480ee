"""Fine-tuning flow: train a downstream head (or the whole model) on an encoder and register it.

Calls :func:`a2mae.finetune.run.finetune`, the function behind ``a2mae finetune``, under the
accelerator limit. The new version gets the challenger alias; evaluation decides on the champion.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency

from flows.common import ensure_concurrency_limit, mlflow_links, params_from, stage
from flows.params import FinetuneParams
from flows.pretrain import run_summary


@task(name="finetune", cache_policy=NO_CACHE)
def finetune_task(doc: dict[str, Any], encoder: str, data: str | None) -> dict[str, Any]:
    """Fine-tune one arm, score it on the frozen split, register it; returns ids and scores."""
    from a2mae.finetune.run import finetune

    p = params_from(doc)
    ensure_concurrency_limit(p.infra.accelerator_limit, p.infra.accelerator_slots)
    with concurrency(p.infra.accelerator_limit, occupy=1), mlflow_links():
        out = finetune(p, encoder=encoder, data=data, register=True, track=True)
    return {
        "task": out.task,
        "protocol": out.protocol,
        "encoder": out.encoder,
        "metric": out.metric,
        "score": out.score,
        "metrics": out.metrics,
        "split": out.split,
        "split_hash": out.split_hash,
        "data": out.data,
        "steps": out.steps,
        "run_id": out.run_id,
        "model": out.version.name if out.version else None,
        "version": out.version.version if out.version else None,
    }


_DEFAULT = FinetuneParams()


@flow(name="finetune", log_prints=True)
def finetune_flow(params: FinetuneParams = _DEFAULT) -> dict[str, Any]:
    """Fine-tune an encoder on a downstream task and register the model as a challenger.

    Args:
        params: Encoder, task, protocol, dataset and budget (defaults from params.yaml).

    Returns:
        Registered model name and version, primary metric and score, MLflow run id.
    """
    p = params.resolve()
    doc = p.model_dump(mode="json")
    doc["finetune"]["task"], doc["finetune"]["protocol"] = params.task, params.protocol
    data = params.path(params.data) if params.data else None
    result = finetune_task(doc, params.encoder, data)
    summary = run_summary(
        doc, result["run_id"], "finetune", f"Fine-tuning {result['task']} ({result['protocol']})"
    )
    result.update(experiment_id=summary["experiment_id"], url=summary["url"])
    stage(
        "finetune",
        f"{result['model']} v{result['version']}: {result['metric']} {result['score']:.4f} on the "
        f"{result['split']} split",
    )
    return result
