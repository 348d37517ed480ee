"""MLflow bookkeeping of fine-tuning: arm runs, the challenger version, parent runs of comparisons.

An arm's run holds its tags, params, scores, figures and model; comparisons and ablations nest their
arms in a parent run.

A tracked arm logs parameters, lineage tags (code, params, encoder version and run, data path and split
hash), the train loss per step, the metrics, the figures of its evaluation split and the model; with
``register`` the model becomes a new version of ``<finetune.model_prefix><task>`` with the
``evaluate.challenger_alias`` alias and its training evidence as version tags.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from a2mae.console import progress as progress_bar
from a2mae.finetune import engine
from a2mae.finetune.encoder import EncoderHandle
from a2mae.finetune.normalise import normalization_used
from a2mae.finetune.stage import Arm, FinetuneOutcome, FinetuneStage, Splits, outcome
from a2mae.io.atomic import atomic_path
from a2mae.registry.downstream import LoggedVersion, log_model
from a2mae.tasks.base import Metrics
from a2mae.tracking.context import description_tags

VERSION_TAGS = "a2mae."
#: ``train_and_score(on_step) -> (training log, eval-split metrics, val metrics or None, eval metrics)``.
TrainAndScore = Callable[
    [Callable[[int, float], None]], tuple[engine.TrainLog, dict[str, float], dict[str, float] | None, Metrics]
]


@contextlib.contextmanager
def step_progress(total: int, label: str, enabled: bool) -> Iterator[Callable[[int, float], None]]:
    """A progress bar over ``total`` steps yielding ``on_step(step, loss)`` (a no-op when not enabled)."""
    with progress_bar(label, total, "steps", enabled=enabled) as bar:
        # `step` counts from 0: after the last one the bar reads total/total, not (total - 1)/total
        yield lambda step, loss: bar.update(step + 1, extra=f"loss {loss:.4f}")


def bar_label(arm: str) -> str:
    """Progress bar label of an arm: ``linear_probe/pretrained`` -> ``ft pretrained`` (fits 80 columns)."""
    return f"ft {arm.rsplit('/', 1)[-1]}"


def _flat_tags(prefix: str, d: dict[str, Any]) -> dict[str, str]:
    """The scalar entries of ``d`` as ``<prefix><key>`` tags (values cut to 500 characters)."""
    return {f"{prefix}{k}": str(v)[:500] for k, v in d.items() if isinstance(v, str | int | float | bool)}


def write_figures(scored: Metrics, classes: list[str], title: str, folder: Path) -> list[Path]:
    """Write the split's figures (confusion matrix, or multi-label PR curves and counts) under ``folder``."""
    paths = []
    for name, png in scored.figures(classes, title).items():
        path = folder / name
        with atomic_path(path) as tmp:
            tmp.write_bytes(png)
        paths.append(path)
    return paths


def tracked_arm(
    stage: FinetuneStage,
    arm: Arm,
    show: bool,
    train_and_score: TrainAndScore,
    register: bool,
    run_name: str | None,
    nested: bool,
) -> FinetuneOutcome:
    """Train and score an arm inside an MLflow run of ``finetune.experiment``; log and register its model.

    Args:
        stage: Sections and collaborators of fine-tuning.
        arm: The arm (its model is trained in place by ``train_and_score``).
        show: Show a progress bar.
        train_and_score: ``train_and_score(on_step) -> (log, test, val, eval metrics)``.
        register: Register the model as a new ``evaluate.challenger_alias`` version.
        run_name: MLflow run name (default ``<task>-<protocol>-<pretrained|scratch>``).
        nested: Open the run nested in the active one.

    Returns:
        The outcome, with the run id and the registered version (None when not registered).
    """
    import mlflow

    from a2mae.tracking.client import client, use_experiment

    kw, model, handle = arm.fields, arm.model, arm.handle
    task, metric = kw["task"], kw["metric"]
    use_experiment(stage.registry, stage.cfg.experiment)
    tags = run_tags(stage, handle, kw)
    name = stage.registered_name(task)
    with mlflow.start_run(
        run_name=run_name or f"{task}-{arm.label.replace('/', '-')}", nested=nested, tags=tags
    ) as run:
        log_run_params(stage, handle, arm.splits, kw, arm.steps)
        with step_progress(arm.steps, bar_label(arm.label), show) as on_step:
            log, test, val, scored = train_and_score(on_step)
        c = client(stage.registry)
        log_scores(c, run.info.run_id, kw["split"], log, test, val)
        out_dir = Path(stage.cfg.output) / task / run.info.run_id
        title = f"{task} {arm.label} on {kw['split']}"
        for png in write_figures(scored, list(model.spec.classes), title, out_dir):
            mlflow.log_artifact(str(png))
        info = log_model(model, name if register else None, stage.cfg.serialization)
        version = None
        if register:
            alias = stage.evaluate.challenger_alias
            version = register_challenger(c, alias, name, info, handle, kw, test[metric], run.info.run_id)
    return outcome(kw, metric, test, val, log, model, run_id=run.info.run_id, version=version)


def run_tags(stage: FinetuneStage, handle: EncoderHandle, kw: dict[str, Any]) -> dict[str, str]:
    """Lineage tags of a fine-tuning run: code, params, encoder (and its checkpoint), data and split."""
    tags = stage.lineage(
        stage="finetune",
        task=kw["task"],
        protocol=kw["protocol"],
        encoder=handle.source,
        pretrained=handle.pretrained,
        data=kw["data"],
        eval_split=kw["split"],
        split_hash=kw["split_hash"],
        **{f"encoder_{k}": v for k, v in handle.info.items() if isinstance(v, str)},
    )
    tags.update(_flat_tags("a2mae.encoder_checkpoint.", handle.info.get("checkpoint", {})))
    tags.update(
        description_tags(
            f"Fine-tuning of {kw['task']} ({kw['protocol'].replace('_', ' ')}) on `{kw['data']}`, from "
            f"{'the pre-trained encoder' if handle.pretrained else 'a randomly initialised encoder'} "
            f"`{handle.source}`.",
            f"scored on the `{kw['split']}` split (hash `{str(kw['split_hash'])[:12]}`) by `{kw['metric']}`",
            "artifacts: the confusion matrix (single-label, dense tasks) or per-class precision-recall "
            "curves and confusion counts (multi-label), the model",
        )
    )
    return tags


def log_run_params(
    stage: FinetuneStage, handle: EncoderHandle, splits: Splits, kw: dict[str, Any], steps: int
) -> None:
    """Log the arm's budget, optimiser settings and dataset shape as MLflow params of the active run."""
    import mlflow

    ft = stage.cfg
    mlflow.log_params(
        {
            "task": kw["task"],
            "protocol": kw["protocol"],
            "encoder": handle.source,
            "data": kw["data"],
            "steps": steps,
            "batch_size": ft.batch_size,
            "lr": ft.lr,
            "layer_decay": ft.layer_decay,
            "weight_decay": ft.weight_decay,
            "seed": ft.seed,
            "normalization": normalization_used(ft.normalization, handle, splits.info),
            "classes": len(splits.info.classes),
            "multilabel": splits.info.multilabel,
            "bands": ",".join(splits.info.bands),
            "chip_size": "x".join(map(str, splits.info.size)),
            "train_samples": len(splits.train),
            "eval_samples": len(splits.eval),
        }
    )


def log_scores(
    c: Any,
    run_id: str,
    split: str,
    log: engine.TrainLog,
    test: dict[str, float],
    val: dict[str, float] | None,
) -> None:
    """Log the train loss per step, the eval-split and val metrics, and the training time.

    The loss history goes in batches of 900 (``log_batch`` takes at most 1000 metrics); non-finite
    values are left out everywhere (MLflow stores them, but charts and comparisons break on them).
    """
    import mlflow
    from mlflow.entities import Metric

    ts = int(mlflow.utils.time.get_current_time_millis())
    losses = [Metric("train_loss", v, ts, i) for i, v in enumerate(log.losses) if math.isfinite(v)]
    for i in range(0, len(losses), 900):
        c.log_batch(run_id, metrics=losses[i : i + 900])
    mlflow.log_metrics({f"{split}_{k}": v for k, v in test.items() if math.isfinite(v)})
    if val:
        mlflow.log_metrics({f"val_{k}": v for k, v in val.items() if math.isfinite(v)})
    mlflow.log_metric("train_seconds", log.seconds)


def register_challenger(
    c: Any,
    alias: str,
    name: str,
    info: Any,
    handle: EncoderHandle,
    kw: dict[str, Any],
    score: float,
    run_id: str,
) -> LoggedVersion:
    """Tag the newly registered version with its training evidence and point ``alias`` (the challenger) at it.

    The evidence (metric, score, data, split hash, protocol, encoder, run) is what
    :func:`a2mae.evaluate.run.evaluate_version` later reads to re-score the version on the same split.
    """
    v = str(info.registered_model_version)
    evidence = {
        "task": kw["task"],
        "metric_kind": kw["kind"],
        "primary_metric": kw["metric"],
        "primary_score": repr(score),
        "data": kw["data"],
        "eval_split": kw["split"],
        "split_hash": kw["split_hash"],
        "protocol": kw["protocol"],
        "encoder": handle.source,
        "run_id": run_id,
    }
    for k, val_ in evidence.items():
        c.set_model_version_tag(name, v, f"{VERSION_TAGS}{k}", str(val_))
    c.set_registered_model_alias(name, alias, v)
    return LoggedVersion(name, int(v), f"models:/{name}/{v}", run_id)


def open_parent_run(
    stack: contextlib.ExitStack[Any],
    stage: FinetuneStage,
    run_name: str,
    description: str = "",
    /,
    **lineage: Any,
) -> Any:
    """Start a parent MLflow run in ``finetune.experiment``, closed when ``stack`` closes.

    Comparisons and ablations nest their fine-tuning arms in it and log their report to it.

    Args:
        stack: Exit stack that ends the run.
        stage: Sections and collaborators of fine-tuning (tracking store, experiment, lineage); the
            arguments are positional, so that ``stage`` may also be a lineage tag.
        run_name: The run's name.
        description: What the run holds (markdown; the run page's description).
        **lineage: Extra lineage tags (``a2mae.<key>``), e.g. ``stage`` and ``task``.

    Returns:
        The active MLflow run.
    """
    import mlflow

    from a2mae.tracking.client import use_experiment

    use_experiment(stage.registry, stage.cfg.experiment)
    tags = {**stage.lineage(**lineage), **description_tags(description or run_name)}
    return stack.enter_context(mlflow.start_run(run_name=run_name, tags=tags))


def log_comparison(path: Path, runs: list[FinetuneOutcome]) -> None:
    """Log the report and each arm's primary score (``<protocol>_<pretrained|scratch>_<metric>``)."""
    import mlflow

    mlflow.log_artifact(str(path))
    for r in runs:
        arm = f"{r.protocol}_{'pretrained' if r.pretrained else 'scratch'}"
        mlflow.log_metric(f"{arm}_{r.metric}", r.score)
