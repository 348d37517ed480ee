"""Log, register and load fine-tuned models.

Format (``finetune.serialization``):

* ``pickle`` (default) -- ``mlflow.pytorch.log_model(..., serialization_format="pickle")`` so that
  ``mlflow.pytorch.load_model`` returns the :class:`~a2mae.models.downstream.DownstreamModel` itself. The
  ``a2mae`` sources are logged as the model's ``code`` (as for the encoder), so it loads where a2mae
  is not installed; requirements are the explicit pins of :mod:`a2mae.registry.encoder`.
* ``pt2`` (``torch.export``, MLflow's default) cannot trace the A²-MAE encoder: its token layout is
  built with data-dependent Python control flow, so export fails with a clear error.
* Whatever the format, the model folder also holds ``extra_files/spec.json`` and
  ``extra_files/weights.safetensors``: :func:`load_model` (``safe=True``, the default, used by
  ``a2mae evaluate``) rebuilds the model from them **without unpickling anything**.

The signature is one tensor ``[-1, C, H, W]`` float32 (``[-1, 2, C, H, W]`` for change detection) in
the training data's file units; sensor, bands, GSD and normalisation are fixed in ``spec.json``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from a2mae.models.downstream import DownstreamModel, ModelSpec, build_encoder
from a2mae.registry.encoder import code_paths, pip_requirements
from a2mae.registry.errors import RegistryError
from a2mae.tracking.client import temp_dir

SPEC_FILE = "spec.json"
WEIGHTS_FILE = "weights.safetensors"
MODEL_NAME = "model"


@dataclass(frozen=True)
class LoggedVersion:
    """A registered fine-tuned model version.

    Attributes:
        name: Registered model name.
        version: Version number.
        model_uri: ``models:/<name>/<version>``.
        run_id: Run that logged it.
    """

    name: str
    version: int
    model_uri: str
    run_id: str


def _state_dict(model: DownstreamModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def write_artifacts(model: DownstreamModel, folder: Path) -> list[Path]:
    """Write ``spec.json`` and ``weights.safetensors`` (the pickle-free form) into ``folder``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    spec_p, w_p = folder / SPEC_FILE, folder / WEIGHTS_FILE
    spec_p.write_text(json.dumps(model.spec.to_dict(), indent=1))
    save_file(_state_dict(model), str(w_p))
    return [spec_p, w_p]


def rebuild(folder: Path) -> DownstreamModel:
    """Rebuild a model from ``spec.json`` + ``weights.safetensors`` (no pickle).

    Raises:
        RegistryError: Files missing or weights not matching the spec.
    """
    from safetensors.torch import load_file

    spec_p, w_p = folder / SPEC_FILE, folder / WEIGHTS_FILE
    if not spec_p.is_file() or not w_p.is_file():
        raise RegistryError(f"{folder}: no {SPEC_FILE}/{WEIGHTS_FILE}; not an a2mae fine-tuned model")
    spec = ModelSpec.from_dict(json.loads(spec_p.read_text()))
    model = DownstreamModel(build_encoder(spec), spec)
    missing, unexpected = model.load_state_dict(load_file(str(w_p)), strict=False)
    if missing or unexpected:
        raise RegistryError(
            f"{w_p}: weights do not match {SPEC_FILE} (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.eval()


def input_example(model: DownstreamModel, batch: int = 2) -> np.ndarray:
    """A small input example in file units (the per-band mean), shaped like the training chips."""
    s = model.spec
    c, (h, w) = len(s.bands), s.size
    x = np.broadcast_to(np.asarray(s.mean, dtype=np.float32)[:, None, None], (c, h, w))
    x = np.broadcast_to(x, (batch, 2, c, h, w) if s.task == "change_detection" else (batch, c, h, w))
    return np.ascontiguousarray(x)


def log_model(
    model: DownstreamModel,
    registered_name: str | None,
    serialization: str = "pickle",
    example: np.ndarray | None = None,
) -> Any:
    """Log (and optionally register) a fine-tuned model in the active run.

    Args:
        model: The model (eval mode is set).
        registered_name: Registry name; None logs without registering.
        serialization: ``pickle`` or ``pt2`` (see the module docstring).
        example: Input example (default: :func:`input_example`).

    Returns:
        MLflow's ``ModelInfo`` (``registered_model_version`` set when registered).

    Raises:
        RegistryError: ``pt2`` requested but the model cannot be exported.
    """
    import mlflow
    from mlflow.models import infer_signature

    model = model.eval()
    x = input_example(model) if example is None else example
    with torch.no_grad():
        y = model(torch.from_numpy(np.asarray(x))).numpy()
    signature = infer_signature(x, y)
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)  # the pickle caution is documented above
    # A failed torch.export prints the whole traced graph on stderr; the error below says it in one line.
    mute = contextlib.redirect_stderr(io.StringIO()) if serialization == "pt2" else contextlib.nullcontext()
    with temp_dir() as d:
        extra = [str(p) for p in write_artifacts(model, d)]
        try:
            with mute:
                return mlflow.pytorch.log_model(
                    model,
                    name=MODEL_NAME,
                    signature=signature,
                    input_example=x,
                    pip_requirements=pip_requirements(),
                    code_paths=code_paths(),
                    extra_files=extra,
                    serialization_format=serialization,
                    registered_model_name=registered_name,
                    await_registration_for=0,
                )
        except Exception as err:
            if serialization == "pt2":
                raise RegistryError(
                    f"finetune.serialization=pt2: torch.export cannot trace this model "
                    f"({type(err).__name__}); use pickle (docs/registry.md)"
                ) from None
            raise


def load_model(model_uri: str, safe: bool = True) -> DownstreamModel:
    """Load a fine-tuned model from MLflow.

    Args:
        model_uri: ``models:/<name>/<version>``, ``models:/<name>@<alias>``, ``runs:/...`` or a path.
        safe: Rebuild from ``spec.json`` + safetensors (no unpickling); False uses
            ``mlflow.pytorch.load_model``.

    Returns:
        The model in eval mode.

    Raises:
        RegistryError: The URI does not resolve to an a2mae fine-tuned model.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        if not safe:
            return mlflow.pytorch.load_model(model_uri).eval()
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{model_uri.rstrip('/')}/extra_files"))
    except MlflowException as err:
        raise RegistryError(f"{model_uri}: cannot load ({err.message.splitlines()[0]})") from None
    return rebuild(local)
