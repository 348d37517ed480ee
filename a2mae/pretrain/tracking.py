"""MLflow bookkeeping of pre-training: the run's description, its end, and the exported encoder.

The driver (:mod:`a2mae.pretrain.run`) finds or creates the run of ``(storage path, run name)``; the
loop's rank 0 logs the step metrics (:class:`a2mae.tracking.runs.StepLogger`); this module describes the
run, records how it ended and logs (and registers) the final checkpoint as the ``encoder`` model.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from a2mae.config import ModelConfig, PretrainConfig
from a2mae.pretrain.state import MODEL_FILE, TrainState


def description(
    pt: PretrainConfig, m: ModelConfig, snapshot: str, snapshot_id: str | None, name: str
) -> dict[str, str]:
    """The run's description (and the caller's context tags): model, data, budget, where it trains."""
    from a2mae.tracking.context import description_tags

    budget = f"{pt.max_steps} optimiser steps" if pt.max_steps else f"{pt.epochs} epochs"
    where = f"{pt.num_workers} Ray Train worker(s)" if pt.num_workers else "in-process (no Ray)"
    return description_tags(
        f"A²-MAE pre-training of `{m.name}` on the STSSD snapshot `{snapshot_id or 'unknown'}` "
        f"(run `{name}`; starting it again with this name resumes it).",
        f"data: `{snapshot}`",
        f"budget: {budget}, batch {pt.batch_size} sets per worker, {where}",
        f"masking: {m.masking}, mask ratio {m.mask_ratio}, geographic encoding "
        f"{'on' if m.geo_encoding else 'off'}",
        f"artifacts: reconstruction figures (`reconstructions/`: first step, every "
        f"{pt.log_images_every_steps} steps, last step), the encoder model",
    )


def end_run(tracking_uri: str, run_id: str, status: str) -> None:
    """Mark the MLflow run ended with ``status`` if still RUNNING (best effort: its error is what matters).

    A resumed run is RUNNING again from the driver's ``_open_run`` on, so its failure is recorded too.
    """
    import mlflow.tracking

    from a2mae.tracking.client import check_tracking_uri

    with contextlib.suppress(Exception):
        check_tracking_uri(tracking_uri, timeout_s=2.0)  # gone: no minutes of retries
        client = mlflow.tracking.MlflowClient(tracking_uri)
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status)


def finish_run(tracking_uri: str, run_id: str, state: TrainState) -> None:
    """Record how many attempts the run took and mark the MLflow run ``FINISHED``."""
    import mlflow.tracking

    client = mlflow.tracking.MlflowClient(tracking_uri)
    client.set_tag(run_id, "a2mae.attempts", str(len(state.attempts)))
    client.set_terminated(run_id, "FINISHED")


def export_encoder(
    encoder_model: str, tracking_uri: str, run_id: str, ckpt_dir: Path, step: int, register: bool
) -> tuple[str | None, str | None]:
    """Log (and register) the checkpoint's model as ``encoder_model``, unless this step's is logged already.

    Returns:
        ``(model_uri, registered version)``; for an already logged step, the ones recorded then.
    """
    import mlflow.tracking

    from a2mae.checkpoint import read_checkpoint_meta
    from a2mae.registry.encoder import MODEL_URI_TAG, REGISTERED_STEP_TAG, REGISTERED_VERSION_TAG, log_encoder

    if not register:
        return None, None
    tags = mlflow.tracking.MlflowClient(tracking_uri).get_run(run_id).data.tags
    if tags.get(REGISTERED_STEP_TAG) == str(step):
        return tags.get(MODEL_URI_TAG), tags.get(REGISTERED_VERSION_TAG)
    model_file = ckpt_dir / MODEL_FILE
    doc = read_checkpoint_meta(model_file)
    meta = {
        "a2mae_run_id": run_id,
        "global_step": step,
        "variant": doc.get("variant"),
        "config": doc.get("config"),
        "sensors": sorted(doc.get("sensors") or {}),
        "snapshot_id": doc.get("extra", {}).get("snapshot_id"),
    }
    return log_encoder(
        tracking_uri,
        run_id,
        model_file,
        registered_name=encoder_model,
        metadata=meta,
        step=step,
    )
