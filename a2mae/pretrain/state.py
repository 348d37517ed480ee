"""Training checkpoints: model, optimiser and progress, as safetensors + JSON (no pickles).

A checkpoint directory holds::

    model.safetensors      the model, as written by a2mae.checkpoint.save_checkpoint (loadable on its own)
    optimizer.safetensors  AdamW moments and step counters, keyed "state.<param index>.<name>"
    optimizer.json         the optimiser's parameter groups (hyper-parameters; no tensors)
    train_state.json       progress (global step, epoch, position in the epoch, ...) and a manifest

``train_state.json`` lists every other file with its size, so a reader can tell a complete checkpoint
from one whose copy to storage was cut short (:func:`is_complete`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from a2mae.io.atomic import atomic_path
from a2mae.pretrain.errors import CheckpointMismatch as CheckpointMismatch  # re-exported

TRAIN_STATE = "train_state.json"
MODEL_FILE = "model.safetensors"
OPTIM_TENSORS = "optimizer.safetensors"
OPTIM_JSON = "optimizer.json"
FORMAT_VERSION = 1


@dataclass
class TrainState:
    """Where training stands.

    Attributes:
        global_step: Optimiser steps completed.
        epoch: Current 0-based epoch.
        epoch_step: Optimiser steps completed within ``epoch``.
        total_steps: Optimiser steps of the whole run.
        nonfinite_total: Steps skipped for a non-finite loss so far.
        world_size: Workers of the attempt that wrote the checkpoint.
        attempts: One entry per start of the loop: ``{"attempt", "start_step", "world_size"}``.
        mlflow_run_id: The MLflow run the metrics go to.
        extra: Free-form JSON-serialisable details.
    """

    global_step: int = 0
    epoch: int = 0
    epoch_step: int = 0
    total_steps: int = 0
    nonfinite_total: int = 0
    world_size: int = 1
    attempts: list[dict[str, Any]] = field(default_factory=list)
    mlflow_run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ model I/O
def save_model_file(
    path: Path, model: nn.Module, norm_stats: dict[str, Any] | None, extra: dict[str, Any]
) -> None:
    """Write the model with :func:`a2mae.checkpoint.save_checkpoint` (safetensors + JSON header)."""
    from a2mae.checkpoint import save_checkpoint

    save_checkpoint(path, model, norm_stats=norm_stats or {}, extra=extra)  # type: ignore[arg-type]


def checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """``{tensor name: shape}`` of a model file, read from its header (no tensor is loaded)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (OSError, ValueError, RuntimeError):
        return {}


def load_model_weights(path: Path, model: nn.Module) -> None:
    """Load the weights of a model file written by :func:`save_model_file` into ``model`` (same config).

    Raises:
        CheckpointMismatch: The file holds another model (one line instead of PyTorch's page of size
            mismatches).
    """
    state = load_file(str(path), device=str(next(model.parameters()).device))
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        first = lines[1] if len(lines) > 1 else (lines[0] if lines else "")
        raise CheckpointMismatch(
            f"checkpoint {path} holds another model ({len(lines) - 1} differences, e.g. {first[:200]}); "
            "resume with the model settings it was trained with, or start another run"
        ) from None


# -------------------------------------------------------------------------------------- optimiser I/O
def _optimizer_to_files(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    # JSON turns tuples (AdamW's betas) into lists; give the optimiser back what it saved.
    groups = [
        {k: (v if k == "params" or not isinstance(v, list) else tuple(v)) for k, v in g.items()}
        for g in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


# --------------------------------------------------------------------------------------- checkpoints
def save_training_checkpoint(
    directory: str | os.PathLike[str],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    norm_stats: dict[str, Any] | None = None,
    model_extra: dict[str, Any] | None = None,
) -> Path:
    """Write a complete training checkpoint into ``directory`` (created; should be empty).

    Args:
        directory: Local directory.
        model: The (unwrapped) model.
        optimizer: Its optimiser.
        state: Progress to record.
        norm_stats: Normalisation statistics of the snapshot, stored with the model.
        model_extra: Extra JSON metadata stored with the model (snapshot id, step, ...).

    Returns:
        The directory.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_model_file(d / MODEL_FILE, model, norm_stats, dict(model_extra or {}))
    tensors, meta = _optimizer_to_files(optimizer)
    with atomic_path(d / OPTIM_TENSORS) as tmp:
        save_file(tensors, str(tmp))
    with atomic_path(d / OPTIM_JSON) as tmp:
        tmp.write_text(json.dumps(meta))
    files = {
        p.relative_to(d).as_posix(): p.stat().st_size
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.name != TRAIN_STATE
    }
    doc = {"format_version": FORMAT_VERSION, "state": asdict(state), "files": files}
    with atomic_path(d / TRAIN_STATE) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    return d


def read_train_state(directory: str | os.PathLike[str]) -> TrainState:
    """Read the progress recorded in a checkpoint directory."""
    doc = json.loads((Path(directory) / TRAIN_STATE).read_text())
    return TrainState(**doc["state"])


def is_complete(directory: str | os.PathLike[str]) -> bool:
    """True when the checkpoint's manifest is present and every listed file has its recorded size."""
    d = Path(directory)
    try:
        doc = json.loads((d / TRAIN_STATE).read_text())
        return all((d / name).stat().st_size == size for name, size in doc["files"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def load_training_checkpoint(
    directory: str | os.PathLike[str], *, model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> TrainState:
    """Restore model weights (and optimiser state) from a checkpoint directory.

    Args:
        directory: A directory written by :func:`save_training_checkpoint`.
        model: Model to load the weights into (same architecture).
        optimizer: Optimiser to restore, or None.

    Returns:
        The recorded progress.
    """
    d = Path(directory)
    load_model_weights(d / MODEL_FILE, model)
    if optimizer is not None:
        tensors = load_file(str(d / OPTIM_TENSORS))
        meta = json.loads((d / OPTIM_JSON).read_text())
        optimizer.load_state_dict(_optimizer_from_files(tensors, meta))
    return read_train_state(d)
