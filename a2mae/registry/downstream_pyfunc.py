"""MLflow ``python_function`` loader of a fine-tuned a2mae model (``loader_module`` of its MLmodel file).

MLflow imports this module **from the installed a2mae package** (the logged model carries no code) and
calls :func:`_load_pyfunc` with the model's ``data`` folder: ``spec.json`` (validated before anything
is allocated, :mod:`a2mae.registry.spec`) and ``weights.safetensors``. Nothing is unpickled, so
``mlflow.pyfunc.load_model("models:/a2mae-<task>@champion")`` and ``mlflow models serve`` run no code
from the model store.

``predict`` takes the signature's tensor: ``[N, C, H, W]`` float32 pixels in the training data's file
units (``[N, 2, C, H, W]`` before/after for change detection; a list or a JSON-decoded nested list
works too) and returns the logits ``[N, K]`` or ``[N, K, H, W]`` as float32 numpy.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from a2mae.models.downstream import DownstreamModel


def rebuild(folder: str | Path) -> DownstreamModel:
    """The :class:`~a2mae.models.downstream.DownstreamModel` of a data folder, in eval mode (no pickle).

    Raises:
        RegistryError: Missing files, an invalid spec, or weights that do not fit it.
    """
    from safetensors.torch import load_file

    from a2mae import tasks
    from a2mae.models.downstream import build_encoder
    from a2mae.registry.spec import read_spec

    folder = Path(folder)
    spec = read_spec(folder)  # validated against the weights' header before allocating
    model = tasks.get(spec.task).build_model(build_encoder(spec), spec)
    model.load_state_dict(load_file(str(folder / "weights.safetensors")), strict=True)
    return model.eval()


class DownstreamPyfunc:
    """The loaded model; ``predict`` returns logits (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.model = rebuild(path)

    def get_raw_model(self) -> Any:
        """The underlying :class:`~a2mae.models.downstream.DownstreamModel`."""
        return self.model

    @torch.no_grad()
    def predict(self, data: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        """Logits of the input pixels (``[N, K]`` or ``[N, K, H, W]`` float32)."""
        if isinstance(data, dict):
            data = data.get("pixels", next(iter(data.values())))
        x = torch.as_tensor(np.asarray(data, dtype=np.float32))
        logits: np.ndarray = self.model(x).float().cpu().numpy()
        return logits


def _load_pyfunc(path: str) -> DownstreamPyfunc:
    """MLflow entry point: ``path`` is the model's data folder."""
    return DownstreamPyfunc(path)
