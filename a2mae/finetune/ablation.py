"""Pre-training ablation: pre-train each variant with a tiny budget, fine-tune each identically, tabulate.

Variants come from ``finetune.ablation.variants`` (masking policy ``aligned`` / ``independent`` /
``complementary`` and geographic encoding on / off). Each one is pre-trained in this process with
:func:`a2mae.pretrain.run.run_pretrain` (``pretrain.num_workers=0``, ``pretrain.max_steps =
finetune.ablation.pretrain_steps``, same seed and snapshot for all), under a run name derived from the
variant and the parameters, so re-running an unchanged ablation reuses the finished pre-training runs.
Every encoder then goes through :func:`a2mae.finetune.run.finetune` for each protocol of
``finetune.compare_protocols`` with the same budget and seed; ``ablation.md`` holds the table.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from a2mae.config import FinetuneConfig, Params, PretrainConfig, validate_params
from a2mae.finetune.encoder import EncoderHandle
from a2mae.finetune.errors import AblationError as AblationError  # re-exported
from a2mae.finetune.report import ablation_markdown
from a2mae.finetune.run import FinetuneOutcome, FinetuneStage, resolve_data, run_arm
from a2mae.finetune.tracking import open_parent_run
from a2mae.io.atomic import atomic_path
from a2mae.normstats import NormStats
from a2mae.pretrain.run import PretrainStage

#: ``pretrain(snapshot, name) -> (encoder, last loss)``: one variant's pre-training (see :func:`_pretrain`).
PretrainFn = Callable[[str, str], tuple[EncoderHandle, float | None]]


@dataclass
class AblationResult:
    """Rows of the table (one per variant), the report and where it was written."""

    rows: list[dict[str, Any]]
    outcomes: list[FinetuneOutcome]
    report: str
    report_path: Path
    run_id: str | None


def variant_params(params: Params, name: str, masking: str, geo: bool) -> tuple[Params, str]:
    """Parameters of one variant's pre-training and its run name (stable for unchanged parameters)."""
    doc = params.model_dump(mode="json")
    doc["model"].update(masking=masking, geo_encoding=geo)
    doc["pretrain"].update(num_workers=0, max_steps=params.finetune.ablation.pretrain_steps)
    key = json.dumps({"model": doc["model"], "pretrain": doc["pretrain"]}, sort_keys=True)
    run_name = f"ablation-{name}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    doc["pretrain"]["run_name"] = run_name
    return validate_params(doc, f"ablation variant {name}"), run_name


def _pretrain(stage: PretrainStage, snapshot: str, run_name: str) -> tuple[EncoderHandle, float | None]:
    """Pre-train one variant (its stage: :func:`variant_params`) here, or reuse its finished run.

    Returns:
        The encoder and the last pre-training loss (from progress, else the run's ``loss`` metric when
        the finished run was reused).
    """
    from a2mae.checkpoint import load_checkpoint
    from a2mae.pretrain.run import run_stage
    from a2mae.pretrain.state import MODEL_FILE

    last: dict[str, Any] = {}

    def progress(d: dict[str, Any]) -> None:
        if d.get("loss") is not None:
            last["loss"] = float(d["loss"])

    import mlflow

    from a2mae.tracking.client import use_experiment

    # its in-process loop resumes runs through the fluent API
    use_experiment(stage.registry, stage.pretrain.experiment)
    res = run_stage(stage, snapshot, name=run_name, progress=progress, register=False)
    model, meta = load_checkpoint(Path(res.checkpoint) / MODEL_FILE)
    info = {
        "pretrain_run_id": res.run_id,
        "pretrain_steps": str(res.global_step),
        "checkpoint": dict(meta.get("extra") or {}),
    }
    loss = last.get("loss")
    if loss is None:
        import mlflow.tracking

        from a2mae.tracking.client import tracking_uri

        loss = (
            mlflow.tracking.MlflowClient(tracking_uri(stage.registry))
            .get_run(res.run_id)
            .data.metrics.get("loss")
        )
    stats = NormStats.from_doc(meta.get("norm_stats"), f"ablation:{run_name}")
    return EncoderHandle(model, f"ablation:{run_name}", stats, info), loss


def ablate(
    params: Params,
    *,
    snapshot: str | None = None,
    task: str | None = None,
    data: str | Path | None = None,
    only: list[str] | None = None,
    track: bool = True,
    progress: bool | None = None,
) -> AblationResult:
    """Run the ablation and write ``<finetune.output>/<task>/ablation.md``.

    Args:
        params: Parameters.
        snapshot: STSSD snapshot to pre-train on (default ``tile.snapshot``).
        task: Downstream task (default ``finetune.task``).
        data: Downstream dataset (default ``finetune.datasets.<task>``).
        only: Names of the variants to run (default: all).
        track: Log to MLflow (pre-training always tracks its own runs).
        progress: Progress bars.

    Returns:
        The table rows, fine-tuning outcomes and report.

    Raises:
        AblationError: Unknown variant name.
    """
    stage = FinetuneStage.of(params)
    task = task or params.finetune.task
    root = resolve_data(params.finetune.datasets, task, data)
    snapshot = snapshot or params.tile.snapshot
    variants = _select_variants(params.finetune.ablation.variants, only)
    # Pre-train every variant first: the in-process pre-training opens its own MLflow runs.
    runs = [(v, *variant_params(params, v.name, v.masking, v.geo_encoding)) for v in variants]
    encoders = _pretrain_variants([(v, PretrainStage.of(pv), name) for v, pv, name in runs], snapshot)
    rows: list[dict[str, Any]] = []
    outcomes: list[FinetuneOutcome] = []
    parent = None
    with contextlib.ExitStack() as stack:
        if track:
            parent = open_parent_run(
                stack,
                stage,
                f"{task}-ablation",
                f"Ablation on {task}: the pre-training variants "
                f"{', '.join(v.name for v in variants)} (masking, geographic encoding), each pre-trained "
                f"briefly on `{snapshot}` and fine-tuned identically; the arms are nested runs, the table "
                "is `ablation.md`.",
                stage="ablation",
                task=task,
                snapshot=snapshot,
            )
        for v, handle, loss in encoders:
            row, arms = _finetune_variant(stage, v, handle, loss, task, root, track, progress)
            rows.append(row)
            outcomes.extend(arms)
        report, path = _write_report(
            params.finetune,
            params.pretrain,
            params.model.name,
            rows,
            outcomes,
            (task, root, snapshot),
            parent is not None,
        )
    return AblationResult(rows, outcomes, report, path, parent.info.run_id if parent is not None else None)


def _select_variants(variants: list[Any], only: list[str] | None) -> list[Any]:
    """The variants named in ``only`` (all of them when ``only`` is empty), in configured order.

    Raises:
        AblationError: A name in ``only`` is not a configured variant.
    """
    if not only:
        return variants
    known = {v.name for v in variants}
    unknown = [n for n in only if n not in known]
    if unknown:
        raise AblationError(f"ablation: unknown variant {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return [v for v in variants if v.name in only]


def _pretrain_variants(
    runs: list[tuple[Any, PretrainStage, str]], snapshot: str
) -> list[tuple[Any, EncoderHandle, float | None]]:
    """Pre-train (or reuse the finished run of) every variant: ``(variant, its stage, its run name)``.

    Returns:
        ``(variant, encoder, last pre-training loss)`` per variant, in order.
    """
    return [(v, *_pretrain(stage, snapshot, name)) for v, stage, name in runs]


def _finetune_variant(
    stage: FinetuneStage,
    v: Any,
    handle: EncoderHandle,
    loss: float | None,
    task: str,
    root: Path,
    track: bool,
    progress: bool | None,
) -> tuple[dict[str, Any], list[FinetuneOutcome]]:
    """Fine-tune one variant's encoder with every protocol of ``finetune.compare_protocols``.

    Every arm has the same budget and seed (those of ``finetune``), nested in the parent run when
    tracked, and is never registered: the variants are experiments, not challengers.

    Returns:
        The variant's table row (pre-training loss and run, one score per protocol, the metric name)
        and the arms' outcomes.
    """
    row: dict[str, Any] = {
        "variant": v.name,
        "masking": v.masking,
        "geo_encoding": v.geo_encoding,
        "pretrain_loss": loss,
        "pretrain_run_id": handle.info.get("pretrain_run_id"),
    }
    outcomes = []
    for protocol in stage.cfg.compare_protocols:
        run_name = f"{task}-{v.name}-{protocol}"
        o = run_arm(stage, task, root, None, protocol, handle, False, track, run_name, track, progress)
        outcomes.append(o)
        row[protocol] = o.score
        row["metric"] = o.metric
    return row, outcomes


def _write_report(
    ft: FinetuneConfig,
    pt: PretrainConfig,
    model_name: str,
    rows: list[dict[str, Any]],
    outcomes: list[FinetuneOutcome],
    where: tuple[str, Path, str],
    log_artifact: bool,
) -> tuple[str, Path]:
    """Write ``<finetune.output>/<task>/ablation.md`` (atomically) and log it to the active run.

    The header records both budgets and seeds, so the table says what was held equal.

    Returns:
        ``(report markdown, its path)``.
    """
    task, root, snapshot = where
    metric = rows[0].get("metric", "score") if rows else "score"
    ft_steps = outcomes[0].steps if outcomes else 0
    context = {
        "task": task,
        "data": str(root),
        "snapshot": snapshot,
        "metric": metric,
        "protocols": list(ft.compare_protocols),
        "pre-training budget": f"{ft.ablation.pretrain_steps} steps, batch {pt.batch_size}, seed {pt.seed}",
        "fine-tuning budget": f"{ft_steps} steps, batch {ft.batch_size}, seed {ft.seed}",
        "encoder variant": model_name,
    }
    report = ablation_markdown(rows, context)
    path = Path(ft.output) / task / "ablation.md"
    with atomic_path(path) as tmp:
        tmp.write_text(report)
    if log_artifact:
        import mlflow

        mlflow.log_artifact(str(path))
    return report, path
