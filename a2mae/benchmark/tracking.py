"""The MLflow run of a benchmark (experiment ``benchmark.experiment``).

Parameters, each arm's lineage, the data hash, one metric per arm / protocol / fraction / metric
(mean over seeds, and its interval), the paired differences and every output file as artifacts.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from a2mae.benchmark.report import summary
from a2mae.config import params_to_flat

if TYPE_CHECKING:
    from a2mae.benchmark.result import BenchmarkResult
    from a2mae.benchmark.stage import BenchmarkStage

_BAD = re.compile(r"[^A-Za-z0-9_\-./ ]")


def metric_key(arm: str, protocol: str, fraction: float, metric: str, suffix: str = "") -> str:
    """``<arm>/<protocol>/f<fraction>/<metric>[_<suffix>]`` with characters MLflow accepts."""
    key = f"{arm}/{protocol}/f{fraction:g}/{metric}" + (f"_{suffix}" if suffix else "")
    return _BAD.sub("_", key)


def log_run(res: BenchmarkResult, stage: BenchmarkStage) -> str:
    """Log the benchmark as one MLflow run; returns its id.

    MLflow's process-wide URIs and experiment variable are put back afterwards (a long-lived process,
    a Prefect worker or a test session, may use other stores).
    """
    from a2mae.tracking.client import mlflow_uris, tracking_uri

    with mlflow_uris(tracking_uri(stage.registry)):
        return _log_run(res, stage)


def _log_run(res: BenchmarkResult, stage: BenchmarkStage) -> str:
    """The run itself (inside :func:`log_run`)."""
    import mlflow

    from a2mae.tracking.client import use_experiment
    from a2mae.tracking.lineage import lineage_tags

    use_experiment(stage.registry, stage.cfg.experiment)
    data = res.data
    tags = lineage_tags(
        stage.flat,
        data=str(data.root),
        data_hash=data.data_hash(),
        layout=data.layout,
        kind=data.kind,
    )
    for arm in res.arms:
        tags.update({f"a2mae.arm.{arm.name}.{k}": str(v)[:5000] for k, v in arm.lineage.items()})
    with mlflow.start_run(run_name=f"benchmark-{data.root.name}", tags=tags) as run:
        flat = {k: v for k, v in params_to_flat(stage.cfg, "benchmark.").items()}
        flat.update(
            {
                "data": str(data.root),
                "layout": data.layout,
                "chips": len(data.chips),
                "arms": ",".join(a.name for a in res.arms),
            }
        )
        mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})
        metrics: dict[str, float] = {}
        for s in summary(res.rows):
            base = (s["arm"], s["protocol"], s["fraction"], s["metric"])
            metrics[metric_key(*base)] = s["mean"]
            metrics[metric_key(*base, suffix="ci_low")] = s["ci_low"]
            metrics[metric_key(*base, suffix="ci_high")] = s["ci_high"]
        for d in res.diffs:
            metrics[
                metric_key(f"{d['arm']}-minus-{d['baseline']}", d["protocol"], d["fraction"], d["metric"])
            ] = d["mean"]
        for m, x in res.resolution.items():
            metrics[f"resolution/{m}"] = x
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v == v})
        for path in res.files.values():
            mlflow.log_artifact(str(path))
        return str(run.info.run_id)
