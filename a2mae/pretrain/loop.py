"""The per-worker training loop: the same code in this process and in every Ray Train worker.

``train_loop_per_worker(config)`` is what :class:`ray.train.torch.TorchTrainer` runs; :func:`run_worker`
is the loop itself, given a :class:`~a2mae.pretrain.context.WorkerContext`. ``config`` is a plain dict
(see :func:`make_loop_config`) so that it travels to Ray workers:

* ``sections`` -- the :class:`LoopSections` of the run (``pretrain``, ``model``, ``data``), sent as
  they are: a worker never rebuilds or re-validates the whole parameters;
* ``snapshot`` -- the STSSD snapshot (local folder or ``s3://``);
* ``tracking`` -- ``{"uri", "run_id"}`` of the MLflow run, or None (no tracking);
* ``progress`` -- a callable or a Ray actor handle receiving progress dicts (rank 0), or None;
* ``model_fn`` / ``dataset_fn`` -- optional factories ``model_fn(sections)`` /
  ``dataset_fn(snapshot, sections)`` replacing ``create_model_from_params`` / ``StssdDataset`` (tests,
  benchmarks, a run that starts from the champion's weights).

Per epoch every worker reads its own share of the image sets (:mod:`a2mae.pretrain.sharding`), through a
``DataLoader``. A checkpoint is written every ``pretrain.checkpoint_every_steps`` optimiser steps and at
the end; on start the loop resumes from the newest complete checkpoint of the run.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from a2mae.config import DataConfig, ModelConfig, PretrainConfig
from a2mae.executor import start_method
from a2mae.pretrain.context import LocalContext, WorkerContext
from a2mae.pretrain.engine import Engine, StepResult
from a2mae.pretrain.optim import build_optimizer, scaled_lr
from a2mae.pretrain.schedule import CosineSchedule
from a2mae.pretrain.sharding import steps_per_epoch, worker_batches
from a2mae.pretrain.state import TrainState, load_training_checkpoint, save_training_checkpoint
from a2mae.types import ImageSetSample, collate_sets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopSections:
    """The sections the training loop reads.

    Attributes:
        pretrain: The ``pretrain`` section (budget, optimiser, logging, checkpoints).
        model: The ``model`` section (variant and objective).
        data: The ``data`` section (sensor files; S3 settings of the snapshot, resolved in the worker).
    """

    pretrain: PretrainConfig
    model: ModelConfig
    data: DataConfig


ModelFn = Callable[[LoopSections], torch.nn.Module]
DatasetFn = Callable[[str, LoopSections], Any]


def make_loop_config(
    sections: LoopSections,
    snapshot: str,
    *,
    tracking: dict[str, str] | None = None,
    progress: Any = None,
    model_fn: ModelFn | None = None,
    dataset_fn: DatasetFn | None = None,
) -> dict[str, Any]:
    """The ``train_loop_config`` of a run (see the module docstring)."""
    return {
        "sections": sections,
        "snapshot": snapshot,
        "tracking": tracking,
        "progress": progress,
        "model_fn": model_fn,
        "dataset_fn": dataset_fn,
    }


# ---------------------------------------------------------------------------------------- factories
def build_model(sections: LoopSections, model_fn: ModelFn | None = None) -> torch.nn.Module:
    """The model of the run: ``model_fn(sections)`` or the registered variant with the overrides."""
    if model_fn is not None:
        return model_fn(sections)
    from a2mae.models import create_model_from_params
    from a2mae.sensors import get_registry

    return create_model_from_params(
        sections.model,
        registry=get_registry(sections.data.sensor_files),
        **sections.pretrain.model_overrides,
    )


def build_dataset(snapshot: str, sections: LoopSections, dataset_fn: DatasetFn | None = None) -> Any:
    """The training split of the snapshot: ``dataset_fn(snapshot, sections)`` or ``StssdDataset``."""
    if dataset_fn is not None:
        return dataset_fn(snapshot, sections)
    from a2mae.stssd.dataset import StssdDataset

    return StssdDataset(snapshot, split="train", s3=sections.data.s3.settings())


def _send_progress(progress: Any, info: dict[str, Any]) -> None:
    """Hand ``info`` to the progress sink: a Ray actor (fire and forget), a callable, or nobody (None)."""
    if progress is None:
        return
    update = getattr(progress, "update", None)
    if update is not None and hasattr(update, "remote"):
        update.remote(info)  # Ray actor: fire and forget
    else:
        progress(info)


def images_at(step: int, total: int, every: int) -> bool:
    """Whether step ``step`` of ``total`` logs reconstruction figures: first, every ``every``-th, last.

    Short runs (fewer steps than ``every``) still get a figure at their start and one at their end;
    ``every`` 0 logs none.
    """
    return every > 0 and (step == 1 or step == total or step % every == 0)


def _groups(batches: Iterator[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` batches (one optimiser step's micro-batches); the last may be short."""
    group: list[Any] = []
    for b in batches:
        group.append(b)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


# ------------------------------------------------------------------------------------------- tracking
class _Tracker:
    """Rank-0 metrics, figures and throughput; a no-op on other ranks or without tracking."""

    def __init__(self, config: dict[str, Any], pretrain: PretrainConfig, rank: int) -> None:
        self.logger = None
        self.every = pretrain.log_every_steps
        tracking = config.get("tracking")
        if rank == 0 and tracking:
            from a2mae.tracking.runs import StepLogger

            self.logger = StepLogger(tracking["uri"], tracking["run_id"], pretrain.system_metrics)
        self._t0 = time.perf_counter()
        self._sets = 0
        self._images = 0

    def step(self, res: StepResult, state: TrainState, epoch_frac: float) -> dict[str, float]:
        """Log the step's metrics every ``log_every_steps`` steps and at the last one.

        Throughput is averaged over the steps since the last logged one; non-finite values are left out.

        Returns:
            The metrics logged (empty for a step that is not logged).
        """
        self._sets += res.num_sets
        self._images += res.num_images
        metrics: dict[str, float] = {}
        every = self.every
        if res.step % every == 0 or res.step == state.total_steps:
            dt = max(time.perf_counter() - self._t0, 1e-9)
            metrics = {
                "train/loss": res.loss,
                "train/lr": res.lr,
                "train/grad_norm": res.grad_norm,
                "train/epoch": epoch_frac,
                "train/sets_per_s": self._sets / dt,
                "train/images_per_s": self._images / dt,
                "train/nonfinite_steps": float(state.nonfinite_total),
            }
            metrics.update({f"train/loss_per_sensor/{s}": v for s, v in res.loss_per_sensor.items()})
            metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
            if self.logger is not None:
                self.logger.log(res.step, metrics)
            self._t0, self._sets, self._images = time.perf_counter(), 0, 0
        return metrics

    def figures(self, model: torch.nn.Module, res: StepResult, sensors_registry: Any) -> None:
        """Log one reconstruction figure per sensor of the step's last micro-batch (when it was kept)."""
        reconstruct = getattr(model, "reconstruct", None)
        if self.logger is None or res.last is None or reconstruct is None:
            return
        from a2mae.tracking.figures import figures_per_sensor

        batch, out = res.last
        triples = reconstruct(batch, out)
        for sensor, fig in figures_per_sensor(batch.images, triples, sensors_registry, res.step).items():
            self.logger.log_figure(fig, f"reconstructions/step_{res.step:08d}_{sensor}.png")

    def flush(self) -> None:
        """Send the buffered metrics now."""
        if self.logger is not None:
            self.logger.flush()

    def close(self, failed: bool) -> None:
        """Flush and end the logger's MLflow run (``FINISHED``, or ``FAILED`` when ``failed``)."""
        if self.logger is not None:
            self.logger.close(failed=failed)


# ----------------------------------------------------------------------------------------------- loop
def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: run the loop in this Ray Train worker."""
    from a2mae.pretrain.context import RayContext

    run_worker(RayContext(), config)


def run_local(config: dict[str, Any], run_dir: str | Path, keep: int) -> dict[str, Any]:
    """Run the loop in this process (no Ray), with checkpoints under ``run_dir``."""
    return run_worker(LocalContext(run_dir, keep), config)


def _unwrap_sensors(model: torch.nn.Module, registry: Any) -> Sequence[str]:
    """The sensors the model knows (those of the registry for a model that does not say)."""
    ids = getattr(model, "sensor_ids", None)
    return list(ids) if ids else list(registry.ids)


@dataclass
class _Setup:
    """What a worker builds before it looks at any checkpoint (see :func:`_set_up`).

    Attributes:
        sections: The run's sections.
        registry: The sensor registry of ``data.sensor_files``.
        dataset: The training split.
        num_sets: Image sets in the training split (``len(dataset)``).
        model: The model, on the worker's device, with the run seed's initial weights.
        optimizer: AdamW at the scaled peak learning rate.
        schedule: Learning rate of a 1-based optimiser step (warm-up, then cosine).
        total: Optimiser steps of the whole run.
    """

    sections: LoopSections
    registry: Any
    dataset: Any
    num_sets: int
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: CosineSchedule
    total: int


@dataclass
class _Run:
    """A started worker: the set-up plus the state that the steps advance.

    Attributes:
        setup: What :func:`_set_up` built.
        state: Where training stands (advanced in place by every step).
        engine: Runs the optimiser steps.
        tracker: Rank-0 metrics and figures.
        progress: Where progress dicts go (rank 0), or None.
        norm_stats: The snapshot's band statistics, stored in every checkpoint.
        snapshot_id: The snapshot's id, stored in every checkpoint.
        last_loss: Loss of the last step that was not skipped (NaN before the first).
    """

    setup: _Setup
    state: TrainState
    engine: Engine
    tracker: _Tracker
    progress: Any
    norm_stats: Any
    snapshot_id: str | None
    last_loss: float = math.nan


def run_worker(ctx: WorkerContext, config: dict[str, Any]) -> dict[str, Any]:
    """Train until the run's last step, resuming from the newest checkpoint.

    Args:
        ctx: Where it runs (rank, world size, device, checkpoints).
        config: See :func:`make_loop_config`.

    Returns:
        A summary (``global_step``, ``total_steps``, ``attempts``, last ``loss``); under Ray the same
        values are attached to the last reported checkpoint.
    """
    setup = _set_up(ctx, config)
    state = _resume_state(ctx, config, setup)
    run = _start(ctx, config, setup, state)
    failed = True
    try:
        while state.global_step < setup.total:
            _train_epoch(ctx, run)
        failed = False
    finally:
        run.tracker.close(failed=failed)
    _send_progress(
        run.progress, {"event": "end", "step": state.global_step, "total": setup.total, "loss": run.last_loss}
    )
    return {
        "global_step": state.global_step,
        "total_steps": setup.total,
        "attempts": state.attempts,
        "loss": run.last_loss,
    }


def _set_up(ctx: WorkerContext, config: dict[str, Any]) -> _Setup:
    """Build the dataset, the model, its optimiser and the learning-rate schedule of the whole run.

    The step budget is ``pretrain.max_steps`` or ``pretrain.epochs`` epochs of
    ``ceil(sets per worker / (batch_size * accum_steps))`` steps; the peak learning rate scales
    ``pretrain.blr`` with the global batch ``batch_size * accum_steps * world_size``.
    """
    from a2mae.sensors import get_registry

    sections: LoopSections = config["sections"]
    pt = sections.pretrain
    registry = get_registry(sections.data.sensor_files)
    dataset = build_dataset(config["snapshot"], sections, config.get("dataset_fn"))
    n = len(dataset)
    torch.manual_seed(pt.seed)  # same initial weights on every worker (and rank 0 broadcasts them too)
    model = build_model(sections, config.get("model_fn")).to(ctx.device)
    spe = steps_per_epoch(n, ctx.world_size, pt.batch_size, pt.accum_steps)
    total = pt.max_steps if pt.max_steps is not None else pt.epochs * spe
    peak_lr = scaled_lr(pt.blr, pt.batch_size * pt.accum_steps * ctx.world_size)
    optimizer = build_optimizer(model, peak_lr, pt.weight_decay)
    schedule = CosineSchedule.from_fraction(peak_lr, total, pt.warmup_fraction, pt.min_lr)
    return _Setup(sections, registry, dataset, n, model, optimizer, schedule, total)


def _resume_state(ctx: WorkerContext, config: dict[str, Any], setup: _Setup) -> TrainState:
    """Load the newest complete checkpoint into the model and optimiser, and record this attempt.

    Without a checkpoint the run starts at step 0. The attempt (start step, world size, nodes) is
    appended to ``TrainState.attempts`` so the checkpoints tell how often the run was restarted.
    """
    world = ctx.world_size
    state = TrainState(total_steps=setup.total, world_size=world)
    with ctx.latest_checkpoint() as ckpt:
        if ckpt is not None:
            state = load_training_checkpoint(ckpt, model=setup.model, optimizer=setup.optimizer)
    if state.world_size != world and state.epoch_step > 0:
        # The epoch's shares were dealt for another world size: continue with the next epoch.
        state.epoch, state.epoch_step = state.epoch + 1, 0
    state.total_steps, state.world_size = setup.total, world
    state.attempts.append(
        {
            "attempt": len(state.attempts) + 1,
            "start_step": state.global_step,
            "world_size": world,
            "nodes": ctx.num_nodes(),
        }
    )
    if config.get("tracking"):
        state.mlflow_run_id = config["tracking"]["run_id"]
    return state


def _start(ctx: WorkerContext, config: dict[str, Any], setup: _Setup, state: TrainState) -> _Run:
    """Build the engine (rank 0's weights broadcast to all), the tracker, and send the ``start`` event."""
    pt = setup.sections.pretrain
    engine = Engine(
        model=setup.model,
        optimizer=setup.optimizer,
        lr_at=setup.schedule,
        sensors=_unwrap_sensors(setup.model, setup.registry),
        device=ctx.device,
        grad_clip=pt.grad_clip,
        bf16=pt.bf16,
        max_nonfinite_steps=pt.max_nonfinite_steps,
        seed=pt.seed,
        rank=ctx.rank,
        world_size=ctx.world_size,
        nonfinite_total=state.nonfinite_total,
    )
    engine.broadcast_parameters()
    run = _Run(
        setup=setup,
        state=state,
        engine=engine,
        tracker=_Tracker(config, setup.sections.pretrain, ctx.rank),
        progress=config.get("progress") if ctx.rank == 0 else None,
        norm_stats=getattr(setup.dataset, "stats", None),
        snapshot_id=(getattr(setup.dataset, "info", None) or {}).get("snapshot_id"),
    )
    _send_progress(
        run.progress,
        {
            "event": "start",
            "step": state.global_step,
            "total": setup.total,
            "epoch": state.epoch,
            "threads": torch.get_num_threads(),
        },
    )
    return run


def _epoch_loader(ctx: WorkerContext, run: _Run) -> tuple[DataLoader[ImageSetSample], int]:
    """This worker's batches of the current epoch not yet trained on, and the epoch's optimiser steps.

    The share of the epoch is dealt by ``(seed, epoch)`` alone, so a resumed run skips exactly the
    ``epoch_step * accum_steps`` batches it trained on before the checkpoint.
    """
    pt, state = run.setup.sections.pretrain, run.state
    batches = worker_batches(
        run.setup.num_sets,
        rank=ctx.rank,
        world_size=ctx.world_size,
        batch_size=pt.batch_size,
        seed=pt.seed,
        epoch=state.epoch,
    )
    remaining = batches[state.epoch_step * pt.accum_steps :]
    loader = DataLoader(
        run.setup.dataset,
        batch_sampler=remaining,
        collate_fn=collate_sets,
        num_workers=pt.loader_workers,
        multiprocessing_context=start_method() if pt.loader_workers else None,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=False,
    )
    return loader, math.ceil(len(batches) / pt.accum_steps)


def _train_epoch(ctx: WorkerContext, run: _Run) -> None:
    """Train on the rest of the current epoch (or up to the run's last step), then move to the next.

    Every ``accum_steps`` batches of the loader make one optimiser step.
    """
    pt, state, total = run.setup.sections.pretrain, run.state, run.setup.total
    loader, epoch_steps = _epoch_loader(ctx, run)
    for group in _groups(iter(loader), pt.accum_steps):
        _train_step(ctx, run, group, epoch_steps)
        if state.global_step >= total:
            break
    if state.global_step < total or state.epoch_step >= epoch_steps:
        state.epoch, state.epoch_step = state.epoch + 1, 0


def _train_step(ctx: WorkerContext, run: _Run, group: list[Any], epoch_steps: int) -> None:
    """One optimiser step over ``group`` (``accum_steps`` micro-batches), then log and checkpoint it."""
    pt, state = run.setup.sections.pretrain, run.state
    step = state.global_step + 1
    want_images = ctx.rank == 0 and images_at(step, run.setup.total, pt.log_images_every_steps)
    res = run.engine.step(group, step, keep_last=want_images)
    state.global_step = step
    state.epoch_step += 1
    state.nonfinite_total = run.engine.nonfinite_total
    if not res.skipped:
        run.last_loss = res.loss
    metrics = run.tracker.step(res, state, state.epoch + state.epoch_step / epoch_steps)
    if want_images:
        run.tracker.figures(run.setup.model, res, run.setup.registry)
    if step % pt.checkpoint_every_steps == 0 or step == run.setup.total:
        _save_checkpoint(ctx, run)
    # After the checkpoint: progress at step s means every checkpoint <= s is persisted.
    _log_step_progress(run, res, metrics)


def _log_step_progress(run: _Run, res: StepResult, metrics: dict[str, float]) -> None:
    """Send the ``step`` progress event (wall and CPU time, loss, throughput when just logged)."""
    _send_progress(
        run.progress,
        {
            "event": "step",
            "step": res.step,
            "time": time.time(),
            "cpu_time": time.process_time(),
            "total": run.setup.total,
            "epoch": run.state.epoch,
            "loss": res.loss,
            "sets_per_s": metrics.get("train/sets_per_s"),
        },
    )


def _save_checkpoint(ctx: WorkerContext, run: _Run) -> None:
    """Report the checkpoint of the current step: rank 0 writes model, optimiser and state.

    Every worker reports (Ray Train needs all ranks at the same steps); only rank 0 passes a folder,
    written in a temporary directory that the context copies to the run's storage.
    """
    state = run.state
    metrics = {"global_step": state.global_step, "epoch": state.epoch, "loss": run.last_loss}
    if ctx.rank != 0:
        ctx.report(metrics, None, state.global_step)
        return
    with tempfile.TemporaryDirectory(prefix="a2mae-ckpt-") as tmp:
        save_training_checkpoint(
            Path(tmp),
            model=run.setup.model,
            optimizer=run.setup.optimizer,
            state=state,
            norm_stats=run.norm_stats,
            model_extra={"global_step": state.global_step, "snapshot_id": run.snapshot_id},
        )
        ctx.report(metrics, Path(tmp), state.global_step)
