"""Fine-tuning runs: one arm (:func:`finetune`), or pre-trained vs scratch (:func:`compare_scratch`).

A run opens the dataset (train, optional val, and the frozen evaluation split ``evaluate.split``) the
way its task lays it out (:mod:`a2mae.tasks`), loads the encoder, trains the head (linear probe) or
everything (full fine-tuning) and scores the splits; :mod:`a2mae.finetune.tracking` logs it to MLflow
and registers the model. The entry points read the parameters once (:class:`FinetuneStage`); every step
below them takes its own section.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from a2mae import tasks
from a2mae.config import FinetuneConfig, Params
from a2mae.finetune import engine
from a2mae.finetune.encoder import SCRATCH, EncoderHandle
from a2mae.finetune.normalise import input_norm, normalization_used
from a2mae.finetune.report import comparison_markdown
from a2mae.finetune.stage import Arm, FinetuneOutcome, FinetuneStage, Splits, outcome
from a2mae.finetune.tracking import (
    TrainAndScore,
    bar_label,
    log_comparison,
    open_parent_run,
    step_progress,
    tracked_arm,
)
from a2mae.io.atomic import atomic_path
from a2mae.models import A2MAE
from a2mae.models.downstream import DownstreamModel, ModelSpec, strip_decoder
from a2mae.tasks.base import Metrics, open_dataset
from a2mae.tasks.chips import DatasetError, EmptySplitError

__all__ = [
    "Comparison",
    "FinetuneOutcome",
    "FinetuneStage",
    "Splits",
    "build_model",
    "compare_scratch",
    "finetune",
    "normalization_used",
    "open_parent_run",
    "open_splits",
    "resolve_data",
    "scratch_like",
]


def resolve_data(datasets: Mapping[str, str | None], task: str, data: str | Path | None) -> Path:
    """The dataset folder: ``data`` or ``finetune.datasets.<task>`` (``datasets``).

    Raises:
        DatasetError: Unknown task, or neither is set.
    """
    tasks.get(task)  # UnknownTaskError: one line listing the known tasks
    chosen = data if data is not None else datasets.get(task)
    if chosen is None:
        raise DatasetError(
            f"no dataset for {task}: pass --data FOLDER or set finetune.datasets.{task} "
            "(layouts: docs/finetune.md)"
        )
    return Path(chosen)


def open_splits(cfg: FinetuneConfig, eval_split: str, task: str, root: Path) -> Splits:
    """Open train, val (optional) and the evaluation split ``eval_split``, checking they agree.

    Raises:
        DatasetError: Empty train or evaluation split, or any malformed file.
    """
    kw: dict[str, Any] = {
        "sensor": cfg.sensor,
        "bands": cfg.bands,
        "label_mode": cfg.label_mode,
        "ignore_index": cfg.ignore_index,
    }
    train = open_dataset(task, root, "train", **kw)
    try:
        val = open_dataset(task, root, "val", **kw)
    except EmptySplitError:
        val = None
    ev = open_dataset(task, root, eval_split, **kw)
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


def build_model(
    cfg: FinetuneConfig, handle: EncoderHandle, splits: Splits, protocol: str, train: Any
) -> DownstreamModel:
    """Encoder copy + the task's new head, seeded with ``finetune.seed`` (``cfg``).

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
    mean, std = input_norm(cfg.normalization, handle, info, train)
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
        decoder_channels=cfg.decoder_channels,
        ignore_index=info.ignore_index,
        encoder_source=handle.source,
        encoder_config=enc.config.model_dump(mode="json"),
        sensor_entries=enc.sensor_entries,
        **_training_units(enc.sensor_entries, info.sensor),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return tasks.get(info.task).build_model(strip_decoder(copy.deepcopy(enc)), spec)


def _training_units(sensor_entries: dict[str, Any], sensor: str) -> dict[str, float]:
    """``{scale, offset}`` of the training chips: those of the sensor's first (reference) product.

    Fine-tuning datasets hold pixels in their sensor's reference units (Sentinel-2: reflectance x
    10,000; docs/finetune.md); ``a2mae predict`` maps every other product of the sensor to them.
    """
    products = (sensor_entries.get(sensor) or {}).get("products") or {}
    first = next(iter(products.values()), None)
    if not isinstance(first, dict) or "scale" not in first:
        return {}
    return {"scale": float(first["scale"]), "offset": float(first.get("offset", 0.0))}


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
        params: Parameters (``finetune``, ``evaluate``, ``registry``; ``model`` for a scratch encoder).
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
    stage = FinetuneStage.of(params)
    return run_arm(stage, task, data, encoder, protocol, handle, register, track, run_name, nested, progress)


def run_arm(
    stage: FinetuneStage,
    task: str | None,
    data: str | Path | None,
    encoder: str | None,
    protocol: str | None,
    handle: EncoderHandle | None,
    register: bool,
    track: bool,
    run_name: str | None,
    nested: bool,
    progress: bool | None,
) -> FinetuneOutcome:
    """:func:`finetune` on a stage (the arguments are those of :func:`finetune`)."""
    arm = _prepare_arm(stage, task, data, encoder, protocol, handle)
    show = progress is not False  # the current output decides (a terminal, or the demo)
    train_and_score: TrainAndScore = functools.partial(
        _train_and_score, stage, arm.model, arm.train_ds, arm.splits, arm.steps
    )
    if not track:
        with step_progress(arm.steps, bar_label(arm.label), show) as on_step:
            log, test, val, _ = train_and_score(on_step)
        return outcome(arm.fields, arm.fields["metric"], test, val, log, arm.model)
    return tracked_arm(stage, arm, show, train_and_score, register, run_name, nested)


def _prepare_arm(
    stage: FinetuneStage,
    task: str | None,
    data: str | Path | None,
    encoder: str | None,
    protocol: str | None,
    handle: EncoderHandle | None,
) -> Arm:
    """Open the splits, load the encoder (unless given), build the model and fix the step budget.

    Raises:
        DatasetError: Bad dataset, or chips that do not fit the encoder. EncoderError: Bad encoder URI.
    """
    ft = stage.cfg
    task = task or ft.task
    protocol = protocol or ft.protocol
    root = resolve_data(ft.datasets, task, data)
    splits = open_splits(ft, stage.evaluate.split, task, root)
    if handle is None:
        handle = stage.load_encoder(encoder or ft.encoder)
    train_ds = engine.CachedDataset(splits.train)
    model = build_model(ft, handle, splits, protocol, train_ds)
    steps = engine.budget(len(train_ds), ft.batch_size, ft.epochs, ft.max_steps)
    t = tasks.get(task)
    kind = t.metric_kind(splits.info.multilabel)
    fields: dict[str, Any] = {
        "task": task,
        "kind": kind,
        "protocol": protocol,
        "encoder": handle.source,
        "pretrained": handle.pretrained,
        "metric": t.primary_metric(stage.evaluate.primary_metric, splits.info.multilabel),
        "split": splits.eval.split,
        "split_hash": splits.eval.content_hash(),
        "data": str(root.resolve()),
    }
    label = f"{protocol}/{'pretrained' if handle.pretrained else 'scratch'}"
    return Arm(model, handle, splits, train_ds, steps, label, fields)


def _train_and_score(
    stage: FinetuneStage,
    model: DownstreamModel,
    train_ds: engine.CachedDataset,
    splits: Splits,
    steps: int,
    on_step: Callable[[int, float], None],
) -> tuple[engine.TrainLog, dict[str, float], dict[str, float] | None, Metrics]:
    """Train ``model`` for ``steps`` optimiser steps, then score it on val (if any) and the eval split.

    Returns:
        ``(training log, eval-split metrics, val metrics or None, the eval split's task metrics)`` (their
        ``figures()``: confusion matrix or precision-recall curves).
    """
    ft = stage.cfg
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
    bs = stage.evaluate.batch_size
    val = engine.score(model, splits.val, bs)[0] if splits.val is not None else None
    test, scored = engine.score(model, splits.eval, bs)
    return log, test, val, scored


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

    stage = FinetuneStage.of(params)
    ft = stage.cfg
    task = task or ft.task
    uri = encoder or ft.encoder
    if uri.strip() == SCRATCH:
        raise EncoderError(
            "--compare-scratch needs a pre-trained encoder (finetune.encoder / --encoder is scratch)"
        )
    root = resolve_data(ft.datasets, task, data)
    pre = stage.load_encoder(uri)
    scr = scratch_like(pre, ft.seed)
    parent = None
    with contextlib.ExitStack() as stack:
        if track:
            parent = open_parent_run(
                stack,
                stage,
                f"{task}-compare-scratch",
                f"Pre-trained encoder `{uri}` against a randomly initialised one on {task}, same budget "
                f"and seed, protocols {', '.join(ft.compare_protocols)}: the arms are nested runs, the "
                "comparison is `report.md`.",
                stage="compare_scratch",
                task=task,
                encoder=uri,
            )
        runs = _compare_arms(stage, task, root, pre, scr, register, track, progress)
        report, path = _write_comparison(ft, runs, pre, uri, task)
        if parent is not None:
            log_comparison(path, runs)
    return Comparison(runs, report, path, parent.info.run_id if parent is not None else None)


def _compare_arms(
    stage: FinetuneStage,
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
    ft = stage.cfg
    runs: list[FinetuneOutcome] = []
    for protocol in ft.compare_protocols:
        for h in (pre, scr):
            reg = register and track and h is pre and protocol == ft.protocol
            runs.append(run_arm(stage, task, root, None, protocol, h, reg, track, None, track, progress))
    return runs


def _write_comparison(
    ft: FinetuneConfig, runs: list[FinetuneOutcome], pre: EncoderHandle, uri: str, task: str
) -> tuple[str, Path]:
    """Write ``<finetune.output>/<task>/report.md`` (atomically): the arms' scores and what was held equal.

    Returns:
        ``(report markdown, its path)``.
    """
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
