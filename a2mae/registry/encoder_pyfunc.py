"""MLflow ``python_function`` loader of a logged A²-MAE encoder (``loader_module`` of the MLmodel file).

MLflow calls :func:`_load_pyfunc` with the model's ``data`` path: the :mod:`a2mae.checkpoint` file
(safetensors weights; model config, sensor entries and normalisation statistics as JSON in its header).
Nothing is unpickled.

``predict`` accepts:

* a :class:`~a2mae.types.SetBatch` or a list of :class:`~a2mae.types.ImageSample` (in-process);
* a dict of plain values (for a REST scoring server): ``pixels`` ``[N, C, H, W]`` (normalised), ``sensor``,
  ``bands`` and optionally ``gsd_m``, ``corners`` ``[N, 4, 2]`` (lat, lon; UL, UR, LR, LL) and
  ``datetime`` (ISO 8601).

It returns the pooled encoder embeddings ``[N, D]`` (float32 numpy), one per image.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch


def checkpoint_file(model_root: str | Path) -> Path:
    """The checkpoint file of a downloaded MLflow model folder (``data/model.safetensors``)."""
    root = Path(model_root)
    if (root / "MLmodel").is_file():
        from a2mae.io.yamlsafe import load_text

        conf = load_text((root / "MLmodel").read_text(), str(root / "MLmodel"))  # bounded YAML
        root = root / conf["flavors"]["python_function"]["data"]
    if root.is_dir():
        found = sorted(root.glob("*.safetensors"))
        if found:
            return found[0]
    return root


def _samples_from_dict(data: dict[str, Any]) -> list[Any]:
    from a2mae.types import ImageMeta, ImageSample

    pixels = torch.as_tensor(np.asarray(data["pixels"], dtype=np.float32))
    if pixels.ndim == 3:
        pixels = pixels[None]
    n = pixels.shape[0]
    corners = data.get("corners")
    when = data.get("datetime")
    out = []
    for i in range(n):
        c = None
        if corners is not None:
            ci = np.asarray(corners, dtype=np.float64).reshape(n, 4, 2)[i]
            c = tuple((float(a), float(b)) for a, b in ci)
        meta = ImageMeta(
            sensor=str(data["sensor"]),
            bands=tuple(data["bands"]),
            gsd_m=float(data["gsd_m"]) if data.get("gsd_m") is not None else None,
            corners=c,
            datetime=datetime.fromisoformat(when) if isinstance(when, str) else None,
        )
        out.append(ImageSample(pixels=pixels[i], meta=meta))
    return out


class EncoderPyfunc:
    """The loaded encoder; ``predict`` returns pooled embeddings."""

    def __init__(self, path: str | Path) -> None:
        from a2mae.checkpoint import load_checkpoint

        self.model, self.meta = load_checkpoint(checkpoint_file(path))
        self.model.eval()

    def get_raw_model(self) -> Any:
        """The underlying torch model (an ``A2MAE``)."""
        return self.model

    @torch.no_grad()
    def predict(self, data: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        """Pooled embeddings ``[N, D]`` of the input images (see the module docstring)."""
        inputs = _samples_from_dict(data) if isinstance(data, dict) else data
        feats = self.model.forward_features(inputs)
        return feats.pooled.float().cpu().numpy()


def _load_pyfunc(path: str) -> EncoderPyfunc:
    """MLflow entry point: ``path`` is the model's data directory."""
    return EncoderPyfunc(path)
