"""Log, register and load fine-tuned models, in a form that loads without unpickling.

A fine-tuned model is logged as an MLflow ``python_function`` model (``name="model"``) whose
``loader_module`` is :mod:`a2mae.registry.downstream_pyfunc`, a module of the installed ``a2mae``
package, and whose data folder holds only ``spec.json`` and ``weights.safetensors``
(``finetune.serialization: safetensors``, the only format). The model carries **no code**
(``code_paths`` is not used) and no pickle: ``mlflow.pyfunc.load_model(uri)``, ``mlflow models serve``
and :func:`load_model` read JSON and safetensors only, and ``spec.json`` is validated (types, bounds,
shapes against the weights' header) before anything is allocated (:mod:`a2mae.registry.spec`).

The signature is one tensor ``[-1, C, H, W]`` float32 (``[-1, 2, C, H, W]`` for change detection) in
the training data's file units; sensor, bands, GSD and normalisation are fixed in ``spec.json``.

Versions registered by earlier a2mae releases (``mlflow.pytorch`` pickles with
``extra_files/spec.json`` + ``extra_files/weights.safetensors`` beside them) still load through
:func:`load_model`, from those two files only; a model without them is refused in one line.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from a2mae import tasks
from a2mae.models.downstream import DownstreamModel
from a2mae.registry.encoder import pip_requirements
from a2mae.registry.errors import RegistryError
from a2mae.tracking.client import temp_dir

SPEC_FILE = "spec.json"
WEIGHTS_FILE = "weights.safetensors"
MODEL_NAME = "model"
LOADER_MODULE = "a2mae.registry.downstream_pyfunc"
#: The only serialisation offered (``finetune.serialization``).
SERIALIZATIONS = ("safetensors",)
_EARLIER = (
    "{uri}: registered by an earlier a2mae without spec.json/weights.safetensors; loading it would need "
    "unpickling, which a2mae refuses: fine-tune and register it again"
)


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
    """Rebuild a model from ``spec.json`` + ``weights.safetensors`` (validated first; no pickle).

    Raises:
        RegistryError: Files missing, an invalid spec, or weights not matching it.
    """
    from a2mae.registry.downstream_pyfunc import rebuild as _rebuild

    return _rebuild(folder)


def input_example(model: DownstreamModel, batch: int = 2) -> np.ndarray:
    """A small input example in file units (the per-band mean), shaped like the training chips."""
    s = model.spec
    c, (h, w) = len(s.bands), s.size
    x = np.broadcast_to(np.asarray(s.mean, dtype=np.float32)[:, None, None], (c, h, w))
    x = np.broadcast_to(x, (batch, *tasks.get(s.task).input_shape(c, h, w)))
    return np.ascontiguousarray(x)


def log_model(
    model: DownstreamModel,
    registered_name: str | None,
    serialization: str = "safetensors",
    example: np.ndarray | None = None,
) -> Any:
    """Log (and optionally register) a fine-tuned model in the active run.

    Args:
        model: The model (eval mode is set).
        registered_name: Registry name; None logs without registering.
        serialization: ``safetensors`` (the only format; see the module docstring).
        example: Input example (default: :func:`input_example`).

    Returns:
        MLflow's ``ModelInfo`` (``registered_model_version`` set when registered).

    Raises:
        RegistryError: Another serialisation was asked for.
    """
    import mlflow
    from mlflow.models import infer_signature

    if serialization not in SERIALIZATIONS:
        raise RegistryError(
            f"finetune.serialization={serialization}: only 'safetensors' is offered (pickles run code "
            "at load, and torch.export cannot trace A²-MAE); see docs/registry.md"
        )
    model = model.eval()
    x = input_example(model) if example is None else example
    with torch.no_grad():
        y = model(torch.from_numpy(np.asarray(x))).numpy()
    signature = infer_signature(x, y)
    logging.getLogger("mlflow.models.model").setLevel(logging.ERROR)
    with temp_dir() as d:
        data = d / "a2mae"  # MLflow keeps it as data/a2mae/{spec.json, weights.safetensors}
        write_artifacts(model, data)
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            loader_module=LOADER_MODULE,
            data_path=str(data),
            signature=signature,
            input_example=x,
            pip_requirements=pip_requirements(),
            metadata={"a2mae_task": model.spec.task, "a2mae_format": "safetensors"},
            registered_model_name=registered_name,
            await_registration_for=0,
        )


def model_files(model_uri: str) -> Path:
    """Download the pickle-free files of a fine-tuned model; returns the folder holding them.

    Reads the model's ``MLmodel`` file first and then downloads only the folder with ``spec.json``
    and ``weights.safetensors``: the pyfunc data folder (this release) or ``extra_files`` (models
    logged by earlier releases with ``mlflow.pytorch``; their pickle is never downloaded or read).

    Raises:
        RegistryError: The URI cannot be reached, or the model has no pickle-free form.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from a2mae.io.yamlsafe import load_text

    base = model_uri.rstrip("/")
    sub = None
    try:
        mlmodel = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{base}/MLmodel"))
        conf = load_text(mlmodel.read_text(), f"{model_uri}: MLmodel") or {}  # untrusted: bounded YAML
        flavors = conf.get("flavors") or {}
        pyfunc = flavors.get("python_function") or {}
        if pyfunc.get("loader_module") == LOADER_MODULE:
            sub = str(pyfunc.get("data", "data"))
        elif "pytorch" in flavors:
            sub = "extra_files"
        else:
            raise RegistryError(f"{model_uri}: not an a2mae fine-tuned model (no {LOADER_MODULE} loader)")
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{base}/{sub}"))
    except MlflowException as err:
        if sub == "extra_files":
            raise RegistryError(_EARLIER.format(uri=model_uri)) from None
        msg = " ".join(str(err.message).split())[:200]
        raise RegistryError(f"{model_uri}: cannot load ({msg})") from None
    except OSError as err:
        raise RegistryError(f"{model_uri}: cannot reach the model store ({err})") from None
    if not (local / SPEC_FILE).is_file():
        raise RegistryError(_EARLIER.format(uri=model_uri))
    return local


def load_model(model_uri: str) -> DownstreamModel:
    """Load a fine-tuned model from MLflow, without unpickling anything.

    Args:
        model_uri: ``models:/<name>/<version>``, ``models:/<name>@<alias>``, ``runs:/...`` or a path.

    Returns:
        The model in eval mode.

    Raises:
        RegistryError: The URI does not resolve to an a2mae fine-tuned model, or its spec is invalid.
    """
    return rebuild(model_files(model_uri))


def copy_model_files(model_uri: str, dest: Path) -> Path:
    """Copy the pickle-free files of a model into ``dest`` (for workers that load it themselves)."""
    src = model_files(model_uri)
    dest.mkdir(parents=True, exist_ok=True)
    for name in (SPEC_FILE, WEIGHTS_FILE):
        shutil.copyfile(src / name, dest / name)
    return dest
