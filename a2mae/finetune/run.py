"""Tracked fine-tuning runs: one arm (:func:`finetune`), or pre-trained vs scratch (:func:`compare_scratch`).

A run opens the dataset (train, optional val, and the frozen evaluation split ``evaluate.split``),
loads the encoder, trains the head (linear probe) or everything (full fine-tuning), scores the splits,
and logs to MLflow: parameters, lineage tags (code, params, encoder version and run, data path and split
hash), the train loss per step, the metrics, the confusion-matrix image, and the model. With
``register=True`` the model becomes a new version of ``<finetune.model_prefix><task>`` with the
``evaluate.challenger_alias`` alias and its training evidence as version tags.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from a2mae.config import Params
from a2mae.finetune import engine
from a2mae.finetune.chips import DatasetError, EmptySplitError
from a2mae.finetune.datasets import TASKS, DatasetInfo, DownstreamDataset, open_dataset
from a2mae.finetune.encoder import SCRATCH, EncoderHandle, load_encoder
from a2mae.finetune.metrics import confusion_png, metric_kind
from a2mae.finetune.report import comparison_markdown
from a2mae.io.atomic import atomic_path
from a2mae.models import A2MAE
from a2mae.models.downstream import DownstreamModel, ModelSpec, strip_decoder
from a2mae.registry.downstream import LoggedVersion, log_model

VERSION_TAGS = "a2mae."


@dataclass
class FinetuneOutcome:
    """Result of one fine-tuning arm.

    Attributes:
        task: The task.
        kind: Metric kind (``single_label``, ``multi_label``, ``segmentation``, ``change_detection``).
        protocol: ``linear_probe`` or ``full``.
        encoder: Encoder source (``models:/...``, a path, or ``scratch``).
        pretrained: False for a scratch encoder.
        metric: Primary metric name.
        score: Primary metric on the evaluation split.
        metrics: All metrics on the evaluation split.
        val_metrics: Metrics on ``val`` (None when the dataset has no val split).
        split: Evaluation split name.
        split_hash: Content hash of the evaluation split.
        data: Dataset folder.
        steps: Optimiser steps.
        final_loss: Train loss of the last step.
        seconds: Training wall time.
        run_id: MLflow run (None when not tracked).
        version: Registered version (None when not registered).
        model: The fine-tuned model.
    """

    task: str
    kind: str
    protocol: str
    encoder: str
    pretrained: bool
    metric: str
    score: float
    metrics: dict[str, float]
    val_metrics: dict[str, float] | None
    split: str
    split_hash: str
    data: str
    steps: int
    final_loss: float
    seconds: float
    run_id: str | None = None
    version: LoggedVersion | None = None
    model: DownstreamModel | None = field(default=None, repr=False)


@dataclass
class Splits:
    """The splits of a fine-tuning run."""

    train: DownstreamDataset
    val: DownstreamDataset | None
    eval: DownstreamDataset

    @property
    def info(self) -> DatasetInfo:
        """Dataset description (from the train split)."""
        return self.train.info


def _outcome(
    kw: dict[str, Any],
    metric: str,
    test: dict[str, float],
    val: dict[str, float],
    log: Any,
    model: Any,
    **more: Any,
) -> FinetuneOutcome:
    """The outcome of one fine-tuning arm from its scores and training log."""
    return FinetuneOutcome(
        **kw,
        score=test[metric],
        metrics=test,
        val_metrics=val,
        steps=log.steps,
        final_loss=log.losses[-1] if log.losses else math.nan,
        seconds=log.seconds,
        model=model,
        **more,
    )


def registered_name(params: Params, task: str) -> str:
    """Registry name of a task's fine-tuned models, e.g. ``a2mae-change-detection``."""
    return f"{params.finetune.model_prefix}{task.replace('_', '-')}"


def resolve_data(params: Params, task: str, data: str | Path | None) -> Path:
    """The dataset folder: ``data`` or ``finetune.datasets.<task>``.

    Raises:
        DatasetError: Neither is set.
    """
    if task not in TASKS:
        raise DatasetError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
    chosen = data if data is not None else getattr(params.finetune.datasets, task)
    if chosen is None:
        raise DatasetError(
            f"no dataset for {task}: pass --data FOLDER or set finetune.datasets.{task} "
            "(layouts: docs/finetune.md)"
        )
    return Path(chosen)


def open_splits(params: Params, task: str, root: Path) -> Splits:
    """Open train, val (optional) and the evaluation split, checking they agree.

    Raises:
        DatasetError: Empty train or evaluation split, or any malformed file.
    """
    ft = params.finetune
    kw: dict[str, Any] = {
        "sensor": ft.sensor,
        "bands": ft.bands,
        "label_mode": ft.label_mode,
        "ignore_index": ft.ignore_index,
    }
    train = open_dataset(task, root, "train", **kw)
    try:
        val = open_dataset(task, root, "val", **kw)
    except EmptySplitError:
        val = None
    ev = open_dataset(task, root, params.evaluate.split, **kw)
    for other in (val, ev):
        if other is not None and (other.info.bands, other.info.classes) != (
            train.info.bands,
            train.info.classes,
        ):
            raise DatasetError(
                f"{root}: split {other.split!r} has other bands or classes than the train split"
            )
    return Splits(train, val, ev)


def scratch_like(handle: EncoderHandle, seed: int) -> EncoderHandle:
    """A randomly initialised encoder with the same architecture and sensors as ``handle``."""
    from a2mae.sensors.registry import SensorRegistry

    reg = SensorRegistry.from_dict(handle.model.sensor_entries)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = A2MAE(handle.model.config.model_copy(), registry=reg)
    return EncoderHandle(model, SCRATCH)


def _normalisation(
    params: Params, handle: EncoderHandle, info: DatasetInfo, train: Any
) -> tuple[list[float], list[float]]:
    if params.finetune.normalization == "encoder":
        stats = handle.norm_stats.get(info.sensor, {})
        if all(b in stats for b in info.bands):
            return [float(stats[b]["mean"]) for b in info.bands], [float(stats[b]["std"]) for b in info.bands]
        if handle.pretrained:
            raise DatasetError(
                f"finetune.normalization=encoder: the encoder has no statistics for {info.sensor} bands "
                f"{list(info.bands)}; use finetune.normalization=dataset"
            )
    return engine.norm_stats(train)


def build_model(
    params: Params, handle: EncoderHandle, splits: Splits, protocol: str, train: Any
) -> DownstreamModel:
    """Encoder copy + new head, seeded with ``finetune.seed``.

    Raises:
        DatasetError: The chips do not fit the encoder (sensor, patch size).
    """
    info = splits.info
    enc = handle.model
    p = enc.config.patch_size
    if info.size[0] % p or info.size[1] % p:
        raise DatasetError(
            f"{splits.train.root}: chips are {info.size[0]}x{info.size[1]} px, not a multiple of the "
            f"encoder's patch size {p}; crop or pad them"
        )
    if info.sensor not in enc.sensor_ids:
        raise DatasetError(
            f"{splits.train.root}: sensor {info.sensor} unknown to the encoder ({', '.join(enc.sensor_ids)})"
        )
    mean, std = _normalisation(params, handle, info, train)
    ft = params.finetune
    spec = ModelSpec(
        task=info.task,
        classes=list(info.classes),
        multilabel=info.multilabel,
        sensor=info.sensor,
        bands=list(info.bands),
        size=list(info.size),
        gsd_m=info.gsd_m,
        mean=mean,
        std=std,
        protocol=protocol,
        decoder_channels=ft.decoder_channels,
        ignore_index=info.ignore_index,
        encoder_source=handle.source,
        encoder_config=enc.config.model_dump(mode="json"),
        sensor_entries=enc.sensor_entries,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ft.seed)
        return DownstreamModel(strip_decoder(copy.deepcopy(enc)), spec)


@contextlib.contextmanager
def _progress(total: int, label: str, enabled: bool) -> Iterator[Callable[[int, float], None]]:
    if not enabled:
        yield lambda step, loss: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        transient=True,
    ) as prog:
        t = prog.add_task(label, total=total, loss="-")
        yield lambda step, loss: prog.update(t, advance=1, loss=f"{loss:.4f}")


def _flat_tags(prefix: str, d: dict[str, Any]) -> dict[str, str]:
    return {f"{prefix}{k}": str(v)[:500] for k, v in d.items() if isinstance(v, str | int | float | bool)}


def _log_confusion(
    cm: np.ndarray | None, classes: list[str], title: str, folder: Path, name: str
) -> Path | None:
    if cm is None:
        return None
    path = folder / name
    with atomic_path(path) as tmp:
        tmp.write_bytes(confusion_png(cm, classes, title))
    return path


def finetune(
    params: Params,
    *,
    task: str | None = None,
    data: str | Path | None = None,
    encoder: str | None = None,
    protocol: str | None = None,
    handle: EncoderHandle | None = None,
    register: bool = True,
    track: bool = True,
    run_name: str | None = None,
    nested: bool = False,
    progress: bool | None = None,
) -> FinetuneOutcome:
    """Fine-tune one arm, score it, and (optionally) track and register it.

    Args:
        params: Parameters (``finetune``, ``evaluate``, ``registry``, ``model`` sections).
        task: Task (default ``finetune.task``).
        data: Dataset folder (default ``finetune.datasets.<task>``).
        encoder: Encoder URI (default ``finetune.encoder``); ignored when ``handle`` is given.
        protocol: ``linear_probe`` or ``full`` (default ``finetune.protocol``).
        handle: An already loaded encoder (it is copied, never modified).
        register: Register the model as a new version (needs ``track``).
        track: Log to MLflow.
        run_name: MLflow run name.
        nested: Open the MLflow run nested in the active one.
        progress: Show a progress bar (default: when stderr is a terminal).

    Returns:
        The outcome (with the model).

    Raises:
        DatasetError: Bad dataset. EncoderError: Bad encoder URI.
    """
    ft = params.finetune
    task = task or ft.task
    protocol = protocol or ft.protocol
    root = resolve_data(params, task, data)
    splits = open_splits(params, task, root)
    if handle is None:
        handle = load_encoder(encoder or ft.encoder, params)
    train_ds = engine.CachedDataset(splits.train)
    model = build_model(params, handle, splits, protocol, train_ds)
    steps = engine.budget(len(train_ds), ft.batch_size, ft.epochs, ft.max_steps)
    kind = metric_kind(task, splits.info.multilabel)
    metric = getattr(params.evaluate.primary_metric, kind)
    split_hash = splits.eval.content_hash()
    arm = f"{protocol}/{'pretrained' if handle.pretrained else 'scratch'}"
    show = sys.stderr.isatty() if progress is None else progress

    def _train_and_score(
        on_step: Callable[[int, float], None],
    ) -> tuple[engine.TrainLog, dict, dict | None, Any]:
        log = engine.train(
            model,
            train_ds,
            steps=steps,
            batch_size=ft.batch_size,
            lr=ft.lr,
            weight_decay=ft.weight_decay,
            layer_decay=ft.layer_decay,
            warmup_fraction=ft.warmup_fraction,
            seed=ft.seed,
            on_step=on_step,
        )
        bs = params.evaluate.batch_size
        val = engine.score(model, splits.val, bs)[0] if splits.val is not None else None
        test, cm = engine.score(model, splits.eval, bs)
        return log, test, val, cm

    outcome_kw: dict[str, Any] = {
        "task": task,
        "kind": kind,
        "protocol": protocol,
        "encoder": handle.source,
        "pretrained": handle.pretrained,
        "metric": metric,
        "split": splits.eval.split,
        "split_hash": split_hash,
        "data": str(root.resolve()),
    }
    if not track:
        with _progress(steps, f"fine-tune {task} {arm}", show) as on_step:
            log, test, val, _ = _train_and_score(on_step)
        return _outcome(outcome_kw, metric, test, val, log, model)
    return _tracked(
        params,
        model,
        handle,
        splits,
        outcome_kw,
        steps,
        arm,
        show,
        _train_and_score,
        register,
        run_name,
        nested,
    )


def _tracked(
    params: Params,
    model: DownstreamModel,
    handle: EncoderHandle,
    splits: Splits,
    kw: dict[str, Any],
    steps: int,
    arm: str,
    show: bool,
    train_and_score: Callable[..., Any],
    register: bool,
    run_name: str | None,
    nested: bool,
) -> FinetuneOutcome:
    import mlflow
    from mlflow.entities import Metric

    from a2mae.tracking.client import client, configure
    from a2mae.tracking.lineage import lineage_tags

    ft = params.finetune
    task, metric = kw["task"], kw["metric"]
    configure(params)
    mlflow.set_experiment(ft.experiment)
    tags = lineage_tags(
        params,
        stage="finetune",
        task=task,
        protocol=kw["protocol"],
        encoder=handle.source,
        pretrained=handle.pretrained,
        data=kw["data"],
        eval_split=kw["split"],
        split_hash=kw["split_hash"],
        **{f"encoder_{k}": v for k, v in handle.info.items() if isinstance(v, str)},
    )
    tags.update(_flat_tags("a2mae.encoder_checkpoint.", handle.info.get("checkpoint", {})))
    name = registered_name(params, task)
    with mlflow.start_run(
        run_name=run_name or f"{task}-{arm.replace('/', '-')}", nested=nested, tags=tags
    ) as run:
        mlflow.log_params(
            {
                "task": task,
                "protocol": kw["protocol"],
                "encoder": handle.source,
                "data": kw["data"],
                "steps": steps,
                "batch_size": ft.batch_size,
                "lr": ft.lr,
                "layer_decay": ft.layer_decay,
                "weight_decay": ft.weight_decay,
                "seed": ft.seed,
                "normalization": ft.normalization,
                "classes": len(splits.info.classes),
                "multilabel": splits.info.multilabel,
                "bands": ",".join(splits.info.bands),
                "chip_size": "x".join(map(str, splits.info.size)),
                "train_samples": len(splits.train),
                "eval_samples": len(splits.eval),
            }
        )
        with _progress(steps, f"fine-tune {task} {arm}", show) as on_step:
            log, test, val, cm = train_and_score(on_step)
        c = client(params)
        ts = int(mlflow.utils.time.get_current_time_millis())
        losses = [Metric("train_loss", v, ts, i) for i, v in enumerate(log.losses) if math.isfinite(v)]
        for i in range(0, len(losses), 900):
            c.log_batch(run.info.run_id, metrics=losses[i : i + 900])
        mlflow.log_metrics({f"{kw['split']}_{k}": v for k, v in test.items() if math.isfinite(v)})
        if val:
            mlflow.log_metrics({f"val_{k}": v for k, v in val.items() if math.isfinite(v)})
        mlflow.log_metric("train_seconds", log.seconds)
        out_dir = Path(ft.output) / task / run.info.run_id
        png = _log_confusion(
            cm, list(model.spec.classes), f"{task} {arm} on {kw['split']}", out_dir, "confusion.png"
        )
        if png is not None:
            mlflow.log_artifact(str(png))
        info = log_model(model, name if register else None, ft.serialization)
        version = None
        if register:
            v = str(info.registered_model_version)
            evidence = {
                "task": task,
                "metric_kind": kw["kind"],
                "primary_metric": metric,
                "primary_score": repr(test[metric]),
                "data": kw["data"],
                "eval_split": kw["split"],
                "split_hash": kw["split_hash"],
                "protocol": kw["protocol"],
                "encoder": handle.source,
                "run_id": run.info.run_id,
            }
            for k, val_ in evidence.items():
                c.set_model_version_tag(name, v, f"{VERSION_TAGS}{k}", str(val_))
            c.set_registered_model_alias(name, params.evaluate.challenger_alias, v)
            version = LoggedVersion(name, int(v), f"models:/{name}/{v}", run.info.run_id)
    return _outcome(kw, metric, test, val, log, model, run_id=run.info.run_id, version=version)


@dataclass
class Comparison:
    """Result of :func:`compare_scratch`."""

    outcomes: list[FinetuneOutcome]
    report: str
    report_path: Path
    run_id: str | None


def compare_scratch(
    params: Params,
    *,
    task: str | None = None,
    data: str | Path | None = None,
    encoder: str | None = None,
    register: bool = True,
    track: bool = True,
    progress: bool | None = None,
) -> Comparison:
    """Fine-tune from the pre-trained encoder and from scratch (same architecture, budget and seed).

    Runs every protocol of ``finetune.compare_protocols`` for both encoders, writes ``report.md`` under
    ``finetune.output/<task>/`` and logs it to a parent MLflow run. With ``register``, only the
    pre-trained arm of ``finetune.protocol`` (when compared) is registered as a challenger.

    Raises:
        EncoderError: The encoder is ``scratch`` (nothing to compare).
    """
    from a2mae.finetune.encoder import EncoderError

    ft = params.finetune
    task = task or ft.task
    uri = encoder or ft.encoder
    if uri.strip() == SCRATCH:
        raise EncoderError(
            "--compare-scratch needs a pre-trained encoder (finetune.encoder / --encoder is scratch)"
        )
    root = resolve_data(params, task, data)
    pre = load_encoder(uri, params)
    scr = scratch_like(pre, ft.seed)
    runs: list[FinetuneOutcome] = []
    parent = None
    with contextlib.ExitStack() as stack:
        if track:
            import mlflow

            from a2mae.tracking.client import configure
            from a2mae.tracking.lineage import lineage_tags

            configure(params)
            mlflow.set_experiment(ft.experiment)
            parent = stack.enter_context(
                mlflow.start_run(
                    run_name=f"{task}-compare-scratch",
                    tags=lineage_tags(params, stage="compare_scratch", task=task, encoder=uri),
                )
            )
        for protocol in ft.compare_protocols:
            for h in (pre, scr):
                reg = register and track and h is pre and protocol == ft.protocol
                runs.append(
                    finetune(
                        params,
                        task=task,
                        data=root,
                        protocol=protocol,
                        handle=h,
                        register=reg,
                        track=track,
                        nested=track,
                        progress=progress,
                    )
                )
        o, cfg = runs[0], pre.model.config
        context = {
            "task": task,
            "data": o.data,
            "split": o.split,
            "split hash": f"`{o.split_hash[:16]}`",
            "encoder": f"`{uri}`",
            "encoder architecture": f"{cfg.name} (D={cfg.embed_dim}, depth={cfg.depth})",
            "budget": f"{o.steps} steps, batch {ft.batch_size}, lr {ft.lr}, layer decay {ft.layer_decay}",
            "seed": ft.seed,
            "normalization": ft.normalization,
        }
        report = comparison_markdown(runs, context)
        path = Path(ft.output) / task / "report.md"
        with atomic_path(path) as tmp:
            tmp.write_text(report)
        if parent is not None:
            import mlflow

            mlflow.log_artifact(str(path))
            for r in runs:
                arm = f"{r.protocol}_{'pretrained' if r.pretrained else 'scratch'}"
                mlflow.log_metric(f"{arm}_{r.metric}", r.score)
    return Comparison(runs, report, path, parent.info.run_id if parent is not None else None)
