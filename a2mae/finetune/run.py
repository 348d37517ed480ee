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
import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from a2mae import tasks
from a2mae.config import Params
from a2mae.console import progress as progress_bar
from a2mae.finetune import engine
from a2mae.finetune.encoder import SCRATCH, EncoderHandle, load_encoder
from a2mae.finetune.report import comparison_markdown
from a2mae.io.atomic import atomic_path
from a2mae.models import A2MAE
from a2mae.models.downstream import DownstreamModel, ModelSpec, strip_decoder
from a2mae.registry.downstream import LoggedVersion, log_model
from a2mae.tasks.base import Metrics, open_dataset
from a2mae.tasks.chips import DatasetError, EmptySplitError
from a2mae.tasks.data import DatasetInfo, DownstreamDataset
from a2mae.tracking.context import description_tags

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
    tasks.get(task)  # UnknownTaskError: one line listing the known tasks
    chosen = data if data is not None else params.finetune.datasets.get(task)
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
    """Per-band ``(mean, std)`` of the inputs: the encoder's pre-training statistics or the train split's.

    Raises:
        DatasetError: ``finetune.normalization=encoder`` and a pre-trained encoder lacks these bands.
    """
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
        return tasks.get(info.task).build_model(strip_decoder(copy.deepcopy(enc)), spec)


@contextlib.contextmanager
def _progress(total: int, label: str, enabled: bool) -> Iterator[Callable[[int, float], None]]:
    """A progress bar over ``total`` steps yielding ``on_step(step, loss)`` (a no-op when not enabled)."""
    with progress_bar(label, total, "steps", enabled=enabled) as bar:
        yield lambda step, loss: bar.update(step, extra=f"loss {loss:.4f}")


def _flat_tags(prefix: str, d: dict[str, Any]) -> dict[str, str]:
    """The scalar entries of ``d`` as ``<prefix><key>`` tags (values cut to 500 characters)."""
    return {f"{prefix}{k}": str(v)[:500] for k, v in d.items() if isinstance(v, str | int | float | bool)}


def _write_figures(scored: Metrics, classes: list[str], title: str, folder: Path) -> list[Path]:
    """Write the split's figures (confusion matrix, or multi-label PR curves and counts) under ``folder``."""
    paths = []
    for name, png in scored.figures(classes, title).items():
        path = folder / name
        with atomic_path(path) as tmp:
            tmp.write_bytes(png)
        paths.append(path)
    return paths


@dataclass
class _Arm:
    """One fine-tuning arm, ready to train (see :func:`_prepare_arm`).

    Attributes:
        model: Encoder copy + new head.
        handle: The encoder it was copied from.
        splits: Train, val and evaluation splits.
        train_ds: The train split, cached in memory after the first epoch.
        steps: Optimiser steps of the budget.
        label: ``<protocol>/<pretrained|scratch>``, for run names and progress bars.
        fields: The outcome's fields known before training (task, kind, protocol, encoder, metric,
            split, split hash, data).
    """

    model: DownstreamModel
    handle: EncoderHandle
    splits: Splits
    train_ds: engine.CachedDataset
    steps: int
    label: str
    fields: dict[str, Any]


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
    arm = _prepare_arm(params, task, data, encoder, protocol, handle)
    show = progress is not False  # the current output decides (a terminal, or the demo)
    train_and_score = functools.partial(
        _train_and_score, params, arm.model, arm.train_ds, arm.splits, arm.steps
    )
    if not track:
        with _progress(arm.steps, _bar_label(arm.label), show) as on_step:
            log, test, val, _ = train_and_score(on_step)
        return _outcome(arm.fields, arm.fields["metric"], test, val, log, arm.model)
    return _tracked(
        params,
        arm.model,
        arm.handle,
        arm.splits,
        arm.fields,
        arm.steps,
        arm.label,
        show,
        train_and_score,
        register,
        run_name,
        nested,
    )


def _prepare_arm(
    params: Params,
    task: str | None,
    data: str | Path | None,
    encoder: str | None,
    protocol: str | None,
    handle: EncoderHandle | None,
) -> _Arm:
    """Open the splits, load the encoder (unless given), build the model and fix the step budget.

    Raises:
        DatasetError: Bad dataset, or chips that do not fit the encoder. EncoderError: Bad encoder URI.
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
    t = tasks.get(task)
    kind = t.metric_kind(splits.info.multilabel)
    fields: dict[str, Any] = {
        "task": task,
        "kind": kind,
        "protocol": protocol,
        "encoder": handle.source,
        "pretrained": handle.pretrained,
        "metric": t.primary_metric(params.evaluate.primary_metric, splits.info.multilabel),
        "split": splits.eval.split,
        "split_hash": splits.eval.content_hash(),
        "data": str(root.resolve()),
    }
    label = f"{protocol}/{'pretrained' if handle.pretrained else 'scratch'}"
    return _Arm(model, handle, splits, train_ds, steps, label, fields)


def _train_and_score(
    params: Params,
    model: DownstreamModel,
    train_ds: engine.CachedDataset,
    splits: Splits,
    steps: int,
    on_step: Callable[[int, float], None],
) -> tuple[engine.TrainLog, dict, dict | None, Any]:
    """Train ``model`` for ``steps`` optimiser steps, then score it on val (if any) and the eval split.

    Returns:
        ``(training log, eval-split metrics, val metrics or None, the eval split's task metrics)`` (its
        ``figures()``: confusion matrix or precision-recall curves).
    """
    ft = params.finetune
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
    test, scored = engine.score(model, splits.eval, bs)
    return log, test, val, scored


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
    """Train and score an arm inside an MLflow run of ``finetune.experiment``; log and register its model.

    Args:
        params: Parameters.
        model: The arm's model (trained in place by ``train_and_score``).
        handle: The encoder it was copied from.
        splits: The arm's splits.
        kw: The outcome's fields known before training (see :class:`_Arm`).
        steps: Optimiser steps.
        arm: ``<protocol>/<pretrained|scratch>``.
        show: Show a progress bar.
        train_and_score: ``train_and_score(on_step) -> (log, test, val, confusion)``.
        register: Register the model as a new ``evaluate.challenger_alias`` version.
        run_name: MLflow run name (default ``<task>-<protocol>-<pretrained|scratch>``).
        nested: Open the run nested in the active one.

    Returns:
        The outcome, with the run id and the registered version (None when not registered).
    """
    import mlflow

    from a2mae.tracking.client import client, use_experiment

    task, metric = kw["task"], kw["metric"]
    use_experiment(params, params.finetune.experiment)
    tags = _run_tags(params, handle, kw)
    name = registered_name(params, task)
    with mlflow.start_run(
        run_name=run_name or f"{task}-{arm.replace('/', '-')}", nested=nested, tags=tags
    ) as run:
        _log_run_params(params, handle, splits, kw, steps)
        with _progress(steps, _bar_label(arm), show) as on_step:
            log, test, val, scored = train_and_score(on_step)
        c = client(params)
        _log_scores(c, run.info.run_id, kw["split"], log, test, val)
        out_dir = Path(params.finetune.output) / task / run.info.run_id
        title = f"{task} {arm} on {kw['split']}"
        for png in _write_figures(scored, list(model.spec.classes), title, out_dir):
            mlflow.log_artifact(str(png))
        info = log_model(model, name if register else None, params.finetune.serialization)
        version = None
        if register:
            version = _register_challenger(c, params, name, info, handle, kw, test[metric], run.info.run_id)
    return _outcome(kw, metric, test, val, log, model, run_id=run.info.run_id, version=version)


def _run_tags(params: Params, handle: EncoderHandle, kw: dict[str, Any]) -> dict[str, str]:
    """Lineage tags of a fine-tuning run: code, params, encoder (and its checkpoint), data and split."""
    from a2mae.tracking.lineage import lineage_tags

    tags = lineage_tags(
        params,
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


def _log_run_params(
    params: Params, handle: EncoderHandle, splits: Splits, kw: dict[str, Any], steps: int
) -> None:
    """Log the arm's budget, optimiser settings and dataset shape as MLflow params of the active run."""
    import mlflow

    ft = params.finetune
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
            "normalization": ft.normalization,
            "classes": len(splits.info.classes),
            "multilabel": splits.info.multilabel,
            "bands": ",".join(splits.info.bands),
            "chip_size": "x".join(map(str, splits.info.size)),
            "train_samples": len(splits.train),
            "eval_samples": len(splits.eval),
        }
    )


def _log_scores(
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


def _register_challenger(
    c: Any,
    params: Params,
    name: str,
    info: Any,
    handle: EncoderHandle,
    kw: dict[str, Any],
    score: float,
    run_id: str,
) -> LoggedVersion:
    """Tag the newly registered version with its training evidence and point the challenger alias at it.

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
    c.set_registered_model_alias(name, params.evaluate.challenger_alias, v)
    return LoggedVersion(name, int(v), f"models:/{name}/{v}", run_id)


def open_parent_run(
    stack: contextlib.ExitStack, params: Params, run_name: str, description: str = "", **lineage: Any
) -> Any:
    """Start a parent MLflow run in ``finetune.experiment``, closed when ``stack`` closes.

    Comparisons and ablations nest their fine-tuning arms in it and log their report to it.

    Args:
        stack: Exit stack that ends the run.
        params: Parameters (tracking store, experiment, lineage).
        run_name: The run's name.
        description: What the run holds (markdown; the run page's description).
        **lineage: Extra lineage tags (``a2mae.<key>``), e.g. ``stage`` and ``task``.

    Returns:
        The active MLflow run.
    """
    import mlflow

    from a2mae.tracking.client import use_experiment
    from a2mae.tracking.lineage import lineage_tags

    use_experiment(params, params.finetune.experiment)
    tags = {**lineage_tags(params, **lineage), **description_tags(description or run_name)}
    return stack.enter_context(mlflow.start_run(run_name=run_name, tags=tags))


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
    parent = None
    with contextlib.ExitStack() as stack:
        if track:
            parent = open_parent_run(
                stack,
                params,
                f"{task}-compare-scratch",
                f"Pre-trained encoder `{uri}` against a randomly initialised one on {task}, same budget "
                f"and seed, protocols {', '.join(ft.compare_protocols)}: the arms are nested runs, the "
                "comparison is `report.md`.",
                stage="compare_scratch",
                task=task,
                encoder=uri,
            )
        runs = _compare_arms(params, task, root, pre, scr, register, track, progress)
        report, path = _write_comparison(params, runs, pre, uri, task)
        if parent is not None:
            _log_comparison(path, runs)
    return Comparison(runs, report, path, parent.info.run_id if parent is not None else None)


def _compare_arms(
    params: Params,
    task: str,
    root: Path,
    pre: EncoderHandle,
    scr: EncoderHandle,
    register: bool,
    track: bool,
    progress: bool | None,
) -> list[FinetuneOutcome]:
    """Fine-tune the pre-trained and the scratch encoder with every protocol, pre-trained first.

    Only the pre-trained arm of ``finetune.protocol`` may be registered: the scratch baseline and the
    other protocols are evidence, never challengers.
    """
    ft = params.finetune
    runs: list[FinetuneOutcome] = []
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
    return runs


def _write_comparison(
    params: Params, runs: list[FinetuneOutcome], pre: EncoderHandle, uri: str, task: str
) -> tuple[str, Path]:
    """Write ``<finetune.output>/<task>/report.md`` (atomically): the arms' scores and what was held equal.

    Returns:
        ``(report markdown, its path)``.
    """
    ft = params.finetune
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
    return report, path


def _log_comparison(path: Path, runs: list[FinetuneOutcome]) -> None:
    """Log the report and each arm's primary score (``<protocol>_<pretrained|scratch>_<metric>``)."""
    import mlflow

    mlflow.log_artifact(str(path))
    for r in runs:
        arm = f"{r.protocol}_{'pretrained' if r.pretrained else 'scratch'}"
        mlflow.log_metric(f"{arm}_{r.metric}", r.score)


def _bar_label(arm: str) -> str:
    """Progress bar label of an arm: ``linear_probe/pretrained`` -> ``ft pretrained`` (fits 80 columns)."""
    return f"ft {arm.rsplit('/', 1)[-1]}"
