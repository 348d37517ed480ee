"""Benchmark flow: encoders against baselines on labelled data (the function behind ``a2mae benchmark``).

Calls :func:`a2mae.benchmark.run.run_benchmark` under the accelerator limit; the report, the paired
differences and a link to the MLflow run become artifacts of the flow run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency

from flows.common import ensure_concurrency_limit, markdown, mlflow_links, params_from, stage
from flows.params import BenchmarkParams


@task(name="benchmark", cache_policy=NO_CACHE)
def benchmark_task(doc: dict[str, Any], data: str, out: str) -> dict[str, Any]:
    """Run the benchmark; returns where it wrote and the resolution per metric."""
    from a2mae.benchmark.run import run_benchmark
    from a2mae.benchmark.stage import BenchmarkStage
    from a2mae.finetune.stage import FinetuneStage
    from a2mae.pretrain.run import PretrainStage

    p = params_from(doc)
    ensure_concurrency_limit(p.infra.accelerator_limit, p.infra.accelerator_slots)
    with concurrency(p.infra.accelerator_limit, occupy=1), mlflow_links():
        stage = BenchmarkStage(p.benchmark, FinetuneStage.of(p), PretrainStage.of(p))
        res = run_benchmark(stage, data, out, show=False)
    return {
        "out": str(res.out),
        "files": {k: str(v) for k, v in res.files.items()},
        "run_id": res.run_id,
        "layout": res.data.layout,
        "kind": res.data.kind,
        "resolution": res.resolution,
        "report": res.files["report"].read_text(),
    }


@flow(name="benchmark", log_prints=True)
def benchmark_flow(params: BenchmarkParams) -> dict[str, Any]:
    """Benchmark encoders against baselines and report intervals and paired differences.

    Args:
        params: Data, encoders, baselines, protocols, fractions, seeds (defaults from params.yaml).

    Returns:
        Output files, MLflow run id and the resolution per metric.
    """
    p = params.resolve()
    doc = p.model_dump(mode="json")
    data = params.path(params.data)
    out = params.path(params.out) if params.out else str(Path(p.benchmark.output) / Path(data).name)
    result = benchmark_task(doc, data, out)
    markdown("benchmark-report", result["report"], description=f"Benchmark of {Path(data).name}")
    stage("benchmark", f"{result['layout']} ({result['kind']}): report {result['files']['report']}")
    return result
