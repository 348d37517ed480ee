"""The per-worker training loop: the same code in this process and in every Ray Train worker.

``train_loop_per_worker(config)`` is what :class:`ray.train.torch.TorchTrainer` runs; :func:`run_worker`
is the loop itself, given a :class:`~a2mae.pretrain.context.WorkerContext`. ``config`` is a plain dict
(see :func:`make_loop_config`) so that it travels to Ray workers:

* ``params`` -- the resolved parameters (``Params.model_dump(mode="json")``);
* ``snapshot`` -- the STSSD snapshot (local folder or ``s3://``);
* ``tracking`` -- ``{"uri", "run_id"}`` of the MLflow run, or None (no tracking);
* ``progress`` -- a callable or a Ray actor handle receiving progress dicts (rank 0), or None;
* ``model_fn`` / ``dataset_fn`` -- optional factories replacing ``create_model_from_params`` /
  ``StssdDataset`` (tests and benchmarks).

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
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from a2mae.config import Params
from a2mae.executor import start_method
from a2mae.pretrain.context import LocalContext, WorkerContext
from a2mae.pretrain.engine import Engine, StepResult
from a2mae.pretrain.optim import build_optimizer, scaled_lr
from a2mae.pretrain.schedule import CosineSchedule
from a2mae.pretrain.sharding import steps_per_epoch, worker_batches
from a2mae.pretrain.state import TrainState, load_training_checkpoint, save_training_checkpoint
from a2mae.types import collate_sets

log = logging.getLogger(__name__)


def make_loop_config(
    params: Params,
    snapshot: str,
    *,
    tracking: dict[str, str] | None = None,
    progress: Any = None,
    model_fn: Callable[[Params], torch.nn.Module] | None = None,
    dataset_fn: Callable[[str, Params], Any] | None = None,
) -> dict[str, Any]:
    """The ``train_loop_config`` of a run (see the module docstring)."""
    return {
        "params": params.model_dump(mode="json"),
        "snapshot": snapshot,
        "tracking": tracking,
        "progress": progress,
        "model_fn": model_fn,
        "dataset_fn": dataset_fn,
    }


# ---------------------------------------------------------------------------------------- factories
def build_model(
    params: Params, model_fn: Callable[[Params], torch.nn.Module] | None = None
) -> torch.nn.Module:
    """The model of the run: ``model_fn(params)`` or the registered variant with the overrides."""
    if model_fn is not None:
        return model_fn(params)
    from a2mae.models import create_model_from_params
    from a2mae.sensors import get_registry

    return create_model_from_params(
        params.model, registry=get_registry(params.data.sensor_files), **params.pretrain.model_overrides
    )


def build_dataset(
    snapshot: str, params: Params, dataset_fn: Callable[[str, Params], Any] | None = None
) -> Any:
    """The training split of the snapshot: ``dataset_fn(snapshot, params)`` or ``StssdDataset``."""
    if dataset_fn is not None:
        return dataset_fn(snapshot, params)
    from a2mae.io.storage import S3Settings
    from a2mae.stssd.dataset import StssdDataset

    return StssdDataset(snapshot, split="train", s3=S3Settings.from_params(params))


def _send_progress(progress: Any, info: dict[str, Any]) -> None:
    if progress is None:
        return
    update = getattr(progress, "update", None)
    if update is not None and hasattr(update, "remote"):
        update.remote(info)  # Ray actor: fire and forget
    else:
        progress(info)


def _groups(batches: Iterator[Any], size: int) -> Iterator[list[Any]]:
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

    def __init__(self, config: dict[str, Any], params: Params, rank: int) -> None:
        self.logger = None
        self.params = params
        tracking = config.get("tracking")
        if rank == 0 and tracking:
            from a2mae.tracking.runs import StepLogger

            self.logger = StepLogger(tracking["uri"], tracking["run_id"], params.pretrain.system_metrics)
        self._t0 = time.perf_counter()
        self._sets = 0
        self._images = 0

    def step(self, res: StepResult, state: TrainState, epoch_frac: float) -> dict[str, float]:
        self._sets += res.num_sets
        self._images += res.num_images
        metrics: dict[str, float] = {}
        every = self.params.pretrain.log_every_steps
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
        if self.logger is None or res.last is None or not hasattr(model, "reconstruct"):
            return
        from a2mae.tracking.figures import figures_per_sensor

        batch, out = res.last
        triples = model.reconstruct(batch, out)
        for sensor, fig in figures_per_sensor(batch.images, triples, sensors_registry, res.step).items():
            self.logger.log_figure(fig, f"reconstructions/step_{res.step:08d}_{sensor}.png")

    def flush(self) -> None:
        if self.logger is not None:
            self.logger.flush()

    def close(self, failed: bool) -> None:
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
    ids = getattr(model, "sensor_ids", None)
    return list(ids) if ids else list(registry.ids)


def run_worker(ctx: WorkerContext, config: dict[str, Any]) -> dict[str, Any]:
    """Train until the run's last step, resuming from the newest checkpoint.

    Args:
        ctx: Where it runs (rank, world size, device, checkpoints).
        config: See :func:`make_loop_config`.

    Returns:
        A summary (``global_step``, ``total_steps``, ``attempts``, last ``loss``); under Ray the same
        values are attached to the last reported checkpoint.
    """
    from a2mae.sensors import get_registry

    params = Params.model_validate(config["params"])
    pt = params.pretrain
    rank, world = ctx.rank, ctx.world_size
    registry = get_registry(params.data.sensor_files)

    dataset = build_dataset(config["snapshot"], params, config.get("dataset_fn"))
    n = len(dataset)
    torch.manual_seed(pt.seed)  # same initial weights on every worker (and rank 0 broadcasts them too)
    model = build_model(params, config.get("model_fn")).to(ctx.device)
    spe = steps_per_epoch(n, world, pt.batch_size, pt.accum_steps)
    total = pt.max_steps if pt.max_steps is not None else pt.epochs * spe
    peak_lr = scaled_lr(pt.blr, pt.batch_size * pt.accum_steps * world)
    optimizer = build_optimizer(model, peak_lr, pt.weight_decay)
    schedule = CosineSchedule.from_fraction(peak_lr, total, pt.warmup_fraction, pt.min_lr)

    state = TrainState(total_steps=total, world_size=world)
    with ctx.latest_checkpoint() as ckpt:
        if ckpt is not None:
            state = load_training_checkpoint(ckpt, model=model, optimizer=optimizer)
    if state.world_size != world and state.epoch_step > 0:
        # The epoch's shares were dealt for another world size: continue with the next epoch.
        state.epoch, state.epoch_step = state.epoch + 1, 0
    state.total_steps, state.world_size = total, world
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

    engine = Engine(
        model=model,
        optimizer=optimizer,
        lr_at=schedule,
        sensors=_unwrap_sensors(model, registry),
        device=ctx.device,
        grad_clip=pt.grad_clip,
        bf16=pt.bf16,
        max_nonfinite_steps=pt.max_nonfinite_steps,
        seed=pt.seed,
        rank=rank,
        world_size=world,
        nonfinite_total=state.nonfinite_total,
    )
    engine.broadcast_parameters()
    tracker = _Tracker(config, params, rank)
    progress = config.get("progress") if rank == 0 else None
    norm_stats = getattr(dataset, "stats", None)
    snapshot_id = (getattr(dataset, "info", None) or {}).get("snapshot_id")
    _send_progress(
        progress,
        {
            "event": "start",
            "step": state.global_step,
            "total": total,
            "epoch": state.epoch,
            "threads": torch.get_num_threads(),
        },
    )

    last_loss = float("nan")
    failed = True
    try:
        while state.global_step < total:
            batches = worker_batches(
                n, rank=rank, world_size=world, batch_size=pt.batch_size, seed=pt.seed, epoch=state.epoch
            )
            remaining = batches[state.epoch_step * pt.accum_steps :]
            loader = DataLoader(
                dataset,
                batch_sampler=remaining,
                collate_fn=collate_sets,
                num_workers=pt.loader_workers,
                multiprocessing_context=start_method() if pt.loader_workers else None,
                pin_memory=ctx.device.type == "cuda",
                persistent_workers=False,
            )
            epoch_steps = math.ceil(len(batches) / pt.accum_steps)
            for group in _groups(iter(loader), pt.accum_steps):
                step = state.global_step + 1
                want_images = rank == 0 and step % pt.log_images_every_steps == 0
                res = engine.step(group, step, keep_last=want_images)
                state.global_step = step
                state.epoch_step += 1
                state.nonfinite_total = engine.nonfinite_total
                if not res.skipped:
                    last_loss = res.loss
                metrics = tracker.step(res, state, state.epoch + state.epoch_step / epoch_steps)
                if want_images:
                    tracker.figures(model, res, registry)
                if step % pt.checkpoint_every_steps == 0 or step == total:
                    _checkpoint(ctx, model, optimizer, state, norm_stats, snapshot_id, last_loss)
                # After the checkpoint: progress at step s means every checkpoint <= s is persisted.
                _send_progress(
                    progress,
                    {
                        "event": "step",
                        "step": step,
                        "time": time.time(),
                        "cpu_time": time.process_time(),
                        "total": total,
                        "epoch": state.epoch,
                        "loss": res.loss,
                        "sets_per_s": metrics.get("train/sets_per_s"),
                    },
                )
                if step >= total:
                    break
            if state.global_step < total or state.epoch_step >= epoch_steps:
                state.epoch, state.epoch_step = state.epoch + 1, 0
        failed = False
    finally:
        tracker.close(failed=failed)
    _send_progress(progress, {"event": "end", "step": state.global_step, "total": total, "loss": last_loss})
    return {
        "global_step": state.global_step,
        "total_steps": total,
        "attempts": state.attempts,
        "loss": last_loss,
    }


def _checkpoint(
    ctx: WorkerContext,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    norm_stats: Any,
    snapshot_id: str | None,
    loss: float,
) -> None:
    metrics = {"global_step": state.global_step, "epoch": state.epoch, "loss": loss}
    if ctx.rank != 0:
        ctx.report(metrics, None, state.global_step)
        return
    with tempfile.TemporaryDirectory(prefix="a2mae-ckpt-") as tmp:
        save_training_checkpoint(
            Path(tmp),
            model=model,
            optimizer=optimizer,
            state=state,
            norm_stats=norm_stats,
            model_extra={"global_step": state.global_step, "snapshot_id": snapshot_id},
        )
        ctx.report(metrics, Path(tmp), state.global_step)
