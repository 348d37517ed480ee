"""The pre-training driver: what ``a2mae pretrain`` and the Prefect flow call.

:func:`run_pretrain`:

1. checks the snapshot and the tracking store (one-line errors);
2. finds or creates the MLflow run of ``(storage path, run name)`` -- starting again with the same name
   continues the same run, with lineage tags (git commit, snapshot id, DVC hash) and the resolved
   parameters as params;
3. trains: in this process when ``pretrain.num_workers`` is 0, else with a Ray Train ``TorchTrainer``
   (:mod:`a2mae.pretrain.ray_train`); either way the loop resumes from the run's newest checkpoint;
4. logs the final model as the run's ``encoder`` MLflow model and registers it as a new version of
   ``registry.encoder_model`` (once per final step: re-running a finished run registers nothing new).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from a2mae.config import (
    DataConfig,
    ModelConfig,
    Params,
    PretrainConfig,
    RegistryConfig,
    S3Config,
    params_to_flat,
)
from a2mae.console import progress as progress_bar_of
from a2mae.pretrain.errors import PretrainError as PretrainError  # re-exported
from a2mae.pretrain.loop import DatasetFn, LoopSections, ModelFn, make_loop_config, run_local
from a2mae.pretrain.ray_train import Storage, build_trainer, init_ray, progress_actor, resolve_storage
from a2mae.pretrain.state import MODEL_FILE, TrainState, read_train_state
from a2mae.pretrain.tracking import description, end_run, export_encoder, finish_run

if TYPE_CHECKING:
    from ray.train import Checkpoint

ProgressFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class PretrainStage:
    """The sections pre-training reads, and the flattened parameters it records.

    Attributes:
        pretrain: The ``pretrain`` section.
        model: The ``model`` section.
        data: The ``data`` section (sensor files, S3 settings).
        registry: The ``registry`` section (tracking URI, encoder model name).
        flat: Every resolved parameter, flattened (:func:`a2mae.config.params_to_flat`): the run's
            MLflow params.
    """

    pretrain: PretrainConfig
    model: ModelConfig
    data: DataConfig
    registry: RegistryConfig
    flat: dict[str, Any]

    @classmethod
    def of(cls, params: Params) -> PretrainStage:
        """The stage of resolved parameters (the one place pre-training reads them whole)."""
        return cls(params.pretrain, params.model, params.data, params.registry, params_to_flat(params))

    @property
    def loop(self) -> LoopSections:
        """What the training loop reads (sent to every worker as it is)."""
        return LoopSections(self.pretrain, self.model, self.data)


@contextlib.contextmanager
def progress_bar(*, enabled: bool = True, also: ProgressFn | None = None) -> Iterator[ProgressFn]:
    """A progress bar of the run's optimiser steps (with the loss); yields the ``progress`` callback.

    Args:
        enabled: Show the bar (the current output still decides: :mod:`a2mae.console`).
        also: Another callback that gets every progress event too (e.g. a Prefect progress artifact).
    """
    with progress_bar_of("pretrain", None, "steps", enabled=enabled) as bar:

        def on_progress(info: dict[str, Any]) -> None:
            if "step" in info:
                loss = info.get("loss")
                shown = f"loss {loss:.4f}" if isinstance(loss, float) and loss == loss else None
                bar.update(info["step"], total=info.get("total"), extra=shown)
            if also is not None:
                also(info)

        yield on_progress


@dataclass
class PretrainResult:
    """Outcome of a run.

    Attributes:
        run_name: Training run name.
        run_id: MLflow run id.
        resumed: The run existed before (it was continued).
        global_step: Optimiser steps completed.
        total_steps: Optimiser steps of the run.
        checkpoint: Location of the final checkpoint.
        model_uri: URI of the logged encoder model.
        registered_version: Registered version of ``registry.encoder_model`` (None when not registered).
        attempts: Starts of the training loop: ``{"attempt", "start_step", "world_size"}``.
        seconds: Wall time.
    """

    run_name: str
    run_id: str
    resumed: bool
    global_step: int
    total_steps: int
    checkpoint: str
    model_uri: str | None
    registered_version: str | None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def snapshot_identity(snapshot: str, s3: S3Config) -> str:
    """The snapshot id from ``snapshot.json``, after checking every file against its digests.

    The whole snapshot is read once (about a second per GB locally), so that a damaged shard, manifest
    or statistics file stops the run here, before an MLflow run is created or a step is taken.

    Raises:
        A2maeError: Missing, not a snapshot, or a damaged file (one line naming it).
    """
    from a2mae.stssd.snapshot import verify_snapshot

    fs = None
    if snapshot.startswith("s3://"):
        from a2mae.io.storage import s3_filesystem

        fs = s3_filesystem(s3.settings())
    elif not Path(snapshot).exists():
        raise PretrainError(f"{snapshot}: no such snapshot folder; build one with `a2mae tile`")
    return str(verify_snapshot(snapshot, fs).get("snapshot_id", "unknown"))


def preflight(
    snapshot: str,
    pt: PretrainConfig,
    data: DataConfig,
    registry: RegistryConfig,
    check_snapshot: bool = True,
) -> tuple[str, str, Storage, str]:
    """Check what a run needs before starting it (one-line errors).

    Args:
        snapshot: STSSD snapshot folder or ``s3://`` prefix.
        pt: The ``pretrain`` section (checkpoint storage).
        data: The ``data`` section (S3 settings).
        registry: The ``registry`` section (tracking store).
        check_snapshot: Verify every file of the snapshot against its digests.

    Returns:
        ``(snapshot URI, snapshot id, checkpoint storage, tracking URI)``.

    Raises:
        A2maeError: Missing or invalid snapshot, bad storage path, unreachable tracking store.
    """
    from a2mae.tracking.client import check_tracking_uri, resolve_tracking_uri

    snapshot = snapshot.rstrip("/") if snapshot.startswith("s3://") else str(Path(snapshot).resolve())
    snapshot_id = snapshot_identity(snapshot, data.s3) if check_snapshot else "custom"
    storage = resolve_storage(pt, data.s3)
    tracking_uri = resolve_tracking_uri(registry.tracking_uri)
    check_tracking_uri(tracking_uri)
    return snapshot, snapshot_id, storage, tracking_uri


def _watch_progress(actor: Any, progress: ProgressFn, stop: threading.Event) -> None:
    """Poll the progress actor every 0.5 s until ``stop`` and pass each new value on to ``progress``."""
    import ray

    last = None
    while not stop.wait(0.5):
        try:
            info = ray.get(actor.latest.remote(), timeout=5)
        except Exception:
            continue
        if info and info != last:
            progress(info)
            last = info


def _fit_ray(
    pt: PretrainConfig, name: str, config: dict[str, Any], storage: Storage, progress: ProgressFn | None
) -> Checkpoint:
    """Run the Ray Train ``TorchTrainer`` (progress relayed from rank 0 through an actor).

    Returns:
        The last reported checkpoint.

    Raises:
        PretrainError: The run failed (one line naming the worker's root error) or ended without a
            checkpoint.
    """
    init_ray(pt)
    actor = progress_actor() if progress is not None else None
    config = {**config, "progress": actor}
    stop = threading.Event()
    watcher = None
    if actor is not None and progress is not None:
        watcher = threading.Thread(target=_watch_progress, args=(actor, progress, stop), daemon=True)
        watcher.start()
    try:
        result = build_trainer(pt, name, config, storage).fit()
    except Exception as err:
        raise PretrainError(f"pre-training run {name!r} failed: {_root_cause(err)}") from err
    finally:
        stop.set()
        if watcher is not None:
            watcher.join(timeout=5)
    if result.error is not None:
        raise PretrainError(f"pre-training run {name!r} failed: {_root_cause(result.error)}")
    if result.checkpoint is None:
        raise PretrainError(f"pre-training run {name!r} finished without a checkpoint")
    checkpoint: Checkpoint = result.checkpoint
    return checkpoint


_ERROR_LINE = re.compile(r"^\s*(?:[\w.]+\.)?(\w+(?:Error|Exception|Interrupt)): (.+)$")


def _root_cause(err: BaseException) -> str:
    """One line naming the innermost error (Ray wraps worker errors with their traceback as text)."""
    seen = err
    while seen.__cause__ is not None:
        seen = seen.__cause__
    lines = str(seen).strip().splitlines()
    for line in reversed(lines):
        m = _ERROR_LINE.match(line)
        if m:
            return f"{m.group(1)}: {m.group(2)}"
    return f"{type(seen).__name__}: {lines[0] if lines else ''}"


@dataclass
class _Opened:
    """The checked inputs of a run and its MLflow run (see :func:`_open_run`).

    Attributes:
        snapshot: The snapshot's URI (absolute folder or ``s3://`` prefix without a trailing slash).
        storage: Where the run's checkpoints live.
        tracking_uri: The MLflow tracking store.
        run_id: The MLflow run of ``(storage path, run name)``.
        resumed: The MLflow run existed before.
    """

    snapshot: str
    storage: Storage
    tracking_uri: str
    run_id: str
    resumed: bool


@dataclass
class _Trained:
    """The final checkpoint of a run and the encoder exported from it.

    Attributes:
        state: The training state stored in the final checkpoint.
        checkpoint: Where the final checkpoint is, for display.
        model_uri: URI of the logged encoder model (None when not registered).
        version: Its registered version (None when not registered).
    """

    state: TrainState
    checkpoint: str
    model_uri: str | None
    version: str | None


def run_pretrain(
    params: Params,
    snapshot: str,
    *,
    name: str | None = None,
    progress: ProgressFn | None = None,
    register: bool = True,
    model_fn: ModelFn | None = None,
    dataset_fn: DatasetFn | None = None,
) -> PretrainResult:
    """Pre-train (or continue pre-training) and register the encoder.

    Args:
        params: Resolved parameters.
        snapshot: STSSD snapshot folder or ``s3://`` prefix.
        name: Run name (default ``pretrain.run_name``); the same name continues the run.
        progress: Called on the driver with progress dicts (``step``, ``total``, ``loss``, ...).
        register: Log and register the encoder at the end.
        model_fn: Model factory replacing the registered variant (tests, benchmarks).
        dataset_fn: Dataset factory replacing ``StssdDataset`` (tests, benchmarks).

    Returns:
        What happened (MLflow run id, registered version, steps, ...).

    Raises:
        A2maeError: Bad snapshot, unreachable tracking store or Ray cluster, or a failed run.
    """
    return run_stage(
        PretrainStage.of(params),
        snapshot,
        name=name,
        progress=progress,
        register=register,
        model_fn=model_fn,
        dataset_fn=dataset_fn,
    )


def run_stage(
    stage: PretrainStage,
    snapshot: str,
    *,
    name: str | None = None,
    progress: ProgressFn | None = None,
    register: bool = True,
    model_fn: ModelFn | None = None,
    dataset_fn: DatasetFn | None = None,
) -> PretrainResult:
    """:func:`run_pretrain` on a stage (the arguments are those of :func:`run_pretrain`)."""
    t0 = time.perf_counter()
    name = name or stage.pretrain.run_name
    opened = _open_run(stage, snapshot, name, check_snapshot=dataset_fn is None)
    config = make_loop_config(
        stage.loop,
        opened.snapshot,
        tracking={"uri": opened.tracking_uri, "run_id": opened.run_id},
        model_fn=model_fn,
        dataset_fn=dataset_fn,
    )
    try:
        if stage.pretrain.num_workers == 0:
            trained = _train_in_process(stage, name, config, opened, progress, register)
        else:
            trained = _train_on_ray(stage, name, config, opened, progress, register)
    except BaseException as err:  # a failed, interrupted or terminated run is never left RUNNING
        end_run(opened.tracking_uri, opened.run_id, "FAILED" if isinstance(err, Exception) else "KILLED")
        raise
    finish_run(opened.tracking_uri, opened.run_id, trained.state)
    state = trained.state
    return PretrainResult(
        run_name=name,
        run_id=opened.run_id,
        resumed=opened.resumed,
        global_step=state.global_step,
        total_steps=state.total_steps,
        checkpoint=trained.checkpoint,
        model_uri=trained.model_uri,
        registered_version=trained.version,
        attempts=state.attempts,
        seconds=time.perf_counter() - t0,
    )


def _open_run(stage: PretrainStage, snapshot: str, name: str, check_snapshot: bool) -> _Opened:
    """Check the inputs (:func:`preflight`) and find or create the MLflow run of the run's storage path.

    The storage path is the run's key, so starting again with the same name continues the same MLflow
    run; the resolved parameters are its params and the snapshot's lineage its tags.
    """
    from a2mae.tracking.lineage import snapshot_tags
    from a2mae.tracking.runs import find_or_create_run

    pt = stage.pretrain
    snapshot, snapshot_id, storage, tracking_uri = preflight(
        snapshot, pt, stage.data, stage.registry, check_snapshot=check_snapshot
    )
    if check_snapshot:  # the registered variant (tests' own model factories are not checked)
        check_resume_fits(stage, storage, name)
    run_id, resumed = find_or_create_run(
        tracking_uri,
        pt.experiment,
        run_key=storage.run_dir(name),
        run_name=name,
        params=stage.flat,
        tags={
            **snapshot_tags(snapshot, snapshot_id),
            "a2mae.storage": storage.run_dir(name),
            **description(pt, stage.model, snapshot, snapshot_id, name),
        },
    )
    if resumed:  # running again: a failure from here on is this run's, not a finished run's
        import mlflow.tracking

        mlflow.tracking.MlflowClient(tracking_uri).update_run(run_id, status="RUNNING")
    return _Opened(snapshot, storage, tracking_uri, run_id, resumed)


def check_resume_fits(stage: PretrainStage, storage: Storage, name: str) -> None:
    """Refuse to continue run ``name`` with a model its newest checkpoint does not fit (one line).

    The run's checkpoints (local storage) hold tensors of the model it was started with; resuming it
    as another variant (or with other ``pretrain.model_overrides``) would fail in every worker with a
    page of size mismatches. The model is built on PyTorch's ``meta`` device (no memory) and its tensor
    shapes compared with the checkpoint's header, before any MLflow run is touched.

    Raises:
        PretrainError: Names the run, its checkpoint and the first differing tensors.
    """
    from a2mae.pretrain.context import LocalContext
    from a2mae.pretrain.state import checkpoint_shapes

    if storage.filesystem is not None:
        return
    found = LocalContext(Path(storage.run_dir(name)), 1).checkpoints()
    if not found:
        return
    ckpt = found[-1][1] / MODEL_FILE
    have = checkpoint_shapes(ckpt)
    try:
        with torch_meta_device():
            from a2mae.pretrain.loop import build_model

            want = {k: tuple(v.shape) for k, v in build_model(stage.loop).state_dict().items()}
    except Exception:  # a model that cannot be built on meta: the loop says what is wrong
        return
    diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
    if not have or not diff:
        return
    shown = ", ".join(f"{k} {have.get(k, 'absent')} vs {want.get(k, 'absent')}" for k in diff[:2])
    raise PretrainError(
        f"pre-training run {name!r} cannot continue as model {stage.model.name!r} with these "
        f"pretrain.model_overrides: its checkpoint {ckpt.parent} holds another model ({len(diff)} tensors "
        f"differ: {shown}); give another run name (--name / pretrain.run_name) or the model settings it "
        "was started with"
    )


@contextlib.contextmanager
def torch_meta_device() -> Iterator[None]:
    """Build modules on PyTorch's ``meta`` device (shapes without memory) while inside."""
    import torch

    with torch.device("meta"):
        yield


def _train_in_process(
    stage: PretrainStage,
    name: str,
    config: dict[str, Any],
    opened: _Opened,
    progress: ProgressFn | None,
    register: bool,
) -> _Trained:
    """Run the loop in this process (``pretrain.num_workers=0``) and export its newest checkpoint.

    Raises:
        PretrainError: The storage path is not local.
    """
    from a2mae.pretrain.context import LocalContext

    pt = stage.pretrain
    run_dir = Path(opened.storage.run_dir(name))
    if opened.storage.filesystem is not None:
        raise PretrainError("pretrain.num_workers=0 (in-process) needs a local pretrain.storage_path")
    run_local({**config, "progress": progress}, run_dir, pt.checkpoints_to_keep)
    ckpt_dir = LocalContext(run_dir, pt.checkpoints_to_keep).checkpoints()[-1][1]
    state = read_train_state(ckpt_dir)
    encoder_model = stage.registry.encoder_model
    model_uri, version = export_encoder(
        encoder_model, opened.tracking_uri, opened.run_id, ckpt_dir, state.global_step, register
    )
    return _Trained(state, str(ckpt_dir), model_uri, version)


def _train_on_ray(
    stage: PretrainStage,
    name: str,
    config: dict[str, Any],
    opened: _Opened,
    progress: ProgressFn | None,
    register: bool,
) -> _Trained:
    """Run the loop with a Ray Train ``TorchTrainer`` and export the checkpoint it ends with.

    Raises:
        PretrainError: The Ray run failed or ended without a checkpoint.
    """
    ckpt = _fit_ray(stage.pretrain, name, config, opened.storage, progress)
    display = opened.storage.display_of(ckpt.path)
    with ckpt.as_directory() as d:
        state = read_train_state(d)
        model_uri, version = export_encoder(
            stage.registry.encoder_model,
            opened.tracking_uri,
            opened.run_id,
            Path(d),
            state.global_step,
            register,
        )
    return _Trained(state, display, model_uri, version)
