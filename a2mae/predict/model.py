"""The model applied by ``a2mae predict``: a fine-tuned ``a2mae-<task>`` version or the encoder.

:func:`resolve_model` turns a model URI into a :class:`PredictModel`: what the model needs (sensor,
bands, units, patch size), what it produces (``segmentation``, ``change_detection``,
``classification`` or ``embeddings``) and where it came from (registered name, version, run id). The
weights are fetched once into a local folder, pickle-free (``spec.json`` + ``weights.safetensors``, or
the encoder's safetensors checkpoint); every worker process builds its own copy from there
(:meth:`PredictModel.build`, cached per process).

:meth:`PredictModel.infer` is the one forward step of every task: ``pixels [N, C, H, W]`` float32 in
the model's units plus per-window metadata in, a :class:`Outputs` out (probabilities ``[N, K, H, W]``
for dense tasks, ``[N, K]`` for classification, pooled ``[N, D]`` and token maps ``[N, D, h, w]`` for
embeddings).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from a2mae import tasks
from a2mae.errors import A2maeError
from a2mae.normstats import NormStats, NormStatsError
from a2mae.predict.errors import ModelNotFound, PredictError
from a2mae.types import ImageMeta, ImageSample

#: The ``task`` of the encoder applied as is (no downstream task: its outputs are embeddings).
EMBEDDINGS = "embeddings"
_ENCODER_LOADER = "a2mae.registry.encoder_pyfunc"


@dataclass
class Outputs:
    """What one forward step produced (numpy, float32)."""

    probs: np.ndarray | None = None
    pooled: np.ndarray | None = None
    maps: np.ndarray | None = None


@dataclass
class PredictModel:
    """A model ready to be applied to windows of scenes.

    Attributes:
        task: ``segmentation``, ``change_detection``, ``classification`` or ``embeddings``.
        sensor: Sensor id of the inputs.
        bands: Band ids in channel order.
        classes: Class names (empty for embeddings).
        multilabel: Multi-label classification (sigmoid scores).
        patch_size: Encoder patch size (window sides must be multiples of it).
        units: ``dn`` (file units, fine-tuned models) or ``reflectance`` (x 10000, the encoder).
        norm: For the encoder: per-band ``(mean, std)`` of its pre-training data.
        name: Registered model name (or the URI when not registered).
        version: Registered version ("" when not registered).
        run_id: MLflow run that logged it ("" when unknown).
        uri: The URI it was loaded from.
        files: Local folder (fine-tuned) or checkpoint file (encoder) the workers build it from.
        module: An in-memory model (tests and benchmarks); used instead of ``files``.
        scale: Fine-tuned models: the units of their training pixels (``reflectance = pixel * scale +
            offset``); a scene of another product of the sensor is mapped to them. None: file units
            as they are (in-memory models).
        offset: See ``scale``.
    """

    task: str
    sensor: str
    bands: tuple[str, ...]
    classes: tuple[str, ...]
    multilabel: bool
    patch_size: int
    units: str
    norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    name: str = ""
    version: str = ""
    run_id: str = ""
    uri: str = ""
    files: str | None = None
    module: Any = field(default=None, repr=False)
    scale: float | None = None
    offset: float = 0.0

    @property
    def downstream(self) -> tasks.Task | None:
        """The task object of a fine-tuned model; None for the encoder (embeddings)."""
        return tasks.find(self.task)

    @property
    def paired(self) -> bool:
        """Inputs are (before, after) scene pairs."""
        t = self.downstream
        return t is not None and t.paired

    @property
    def dense(self) -> bool:
        """A per-pixel map (blended windows); else per-chip rows."""
        t = self.downstream
        return t is not None and t.dense

    def provenance(self) -> dict[str, str]:
        """``{model_name, model_version, run_id, model_uri}`` recorded with every output."""
        return {
            "model_name": self.name,
            "model_version": self.version,
            "run_id": self.run_id,
            "model_uri": self.uri,
        }

    def build(self) -> Any:
        """The torch module (built once per process from :attr:`files`; eval mode, no grad)."""
        if self.module is not None:
            return self.module
        key = (self.files or "", self.task)
        hit = _BUILT.get(key)
        if hit is None:
            if self.downstream is None:
                from a2mae.checkpoint import load_checkpoint

                hit, _ = load_checkpoint(self.files)  # type: ignore[arg-type]
            else:
                from a2mae.registry.downstream import rebuild

                hit = rebuild(Path(self.files))  # type: ignore[arg-type]
            hit.eval()
            if torch.cuda.is_available():  # a GPU actor or worker: the model lives there
                hit = hit.cuda()
            _BUILT.clear()  # one model per worker process
            _BUILT[key] = hit
        return hit

    @torch.no_grad()
    def infer(self, pixels: np.ndarray, metas: Sequence[Sequence[ImageMeta]], dense: bool = False) -> Outputs:
        """One forward step.

        Args:
            pixels: ``[N, C, H, W]`` (``[N, 2, C, H, W]`` for change detection) float32 in :attr:`units`.
            metas: Per window, the metadata of its image(s).
            dense: Embeddings: also return the last token map ``[N, D, H/p, W/p]``.

        Returns:
            The outputs of the task.
        """
        module = self.build()
        device = next((q.device for q in module.parameters()), torch.device("cpu"))
        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(device)
        task = self.downstream
        if task is None:
            mean, std = (
                torch.tensor(v, dtype=torch.float32, device=device).reshape(-1, 1, 1)
                for v in self.norm or ((0.0,), (1.0,))
            )
            samples = [
                ImageSample((px - mean) / std.clamp(min=1e-6), m[0]) for px, m in zip(x, metas, strict=True)
            ]
            feats = module.forward_features(samples)
            maps = feats.maps[-1].float().cpu().numpy() if dense else None
            return Outputs(pooled=feats.pooled.float().cpu().numpy(), maps=maps)
        logits = module(x, [tuple(m) for m in metas]).float()
        return Outputs(probs=task.scores(logits, self.multilabel).cpu().numpy())


#: Models built in this process (one at a time).
_BUILT: dict[tuple[str, str], Any] = {}


def from_module(module: Any, name: str = "test-model", version: str = "0", run_id: str = "") -> PredictModel:
    """A :class:`PredictModel` around an in-memory fine-tuned model, for tests and benchmarks.

    The module needs a ``spec`` attribute like :class:`~a2mae.models.downstream.ModelSpec`.
    """
    s = module.spec
    patch = getattr(getattr(getattr(module, "encoder", None), "config", None), "patch_size", 1)
    return PredictModel(
        task=s.task,
        sensor=s.sensor,
        bands=tuple(s.bands),
        classes=tuple(s.classes),
        multilabel=bool(s.multilabel),
        patch_size=int(patch),
        units="dn",
        name=name,
        version=version,
        run_id=run_id,
        uri=f"memory:{name}",
        module=module.eval(),
    )


_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/]+))?/?$")
#: Schemes a model is given by: the registry (``models:/``) or a logged run's artifacts (``runs:/``).
MODEL_SCHEMES = ("models:/", "runs:/")


def check_model_uri(uri: str) -> None:
    """Refuse what is not a model URI (an HTTP address, a path) before anything is fetched.

    Raises:
        PredictError: Another scheme (one line saying which URIs are accepted).
    """
    if not uri.startswith(MODEL_SCHEMES):
        raise PredictError(
            f"--model {uri}: not a model URI; give models:/NAME@ALIAS (e.g. "
            "models:/a2mae-segmentation@champion), models:/NAME/VERSION or runs:/RUN_ID/PATH (the tracking "
            "server is MLFLOW_TRACKING_URI)"
        )


def missing_store(tracking_uri: str) -> str | None:
    """The SQLite file of a ``sqlite:///`` tracking URI when it does not exist (None otherwise).

    Reading from a missing store would create an empty one in its place (``mlruns.db`` in the current
    folder, by default): readers check this first.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = Path(tracking_uri[len("sqlite:///") :])
    return None if path.is_file() else str(path)


def _not_registered(uri: str, registry: str, why: str) -> ModelNotFound:
    return ModelNotFound(
        f"{uri}: not in the model registry {registry} ({why}); check the name, version or alias, or point "
        "MLFLOW_TRACKING_URI (registry.tracking_uri) at the registry that holds it"
    )


def _registry_info(uri: str) -> tuple[str, str, str]:
    """``(name, version, run_id)`` of a ``models:/`` URI (the URI itself and blanks otherwise)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    m = _MODELS_URI.match(uri)
    if m is None:
        run = re.match(r"^runs:/([0-9a-f]+)/", uri)
        return uri, "", run.group(1) if run else ""
    c = MlflowClient()
    name = m.group("name")
    try:
        if m.group("version"):
            mv = c.get_model_version(name, m.group("version"))
        elif m.group("alias"):
            mv = c.get_model_version_by_alias(name, m.group("alias"))
        else:
            raise PredictError(f"{uri}: give a version or an alias (models:/{name}@champion)")
    except MlflowException as err:
        import mlflow

        msg = " ".join(str(err.message).split())[:160]
        raise _not_registered(uri, mlflow.get_registry_uri(), msg) from None
    return name, str(mv.version), str(mv.run_id or "")


def _loader(uri: str) -> str:
    """The ``loader_module`` of a logged model's MLmodel file ("" when it has none)."""
    import mlflow

    from a2mae.io.yamlsafe import load_text

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{uri.rstrip('/')}/MLmodel"))
    conf = load_text(local.read_text(), f"{uri}: MLmodel") or {}  # untrusted: bounded YAML
    return str(((conf.get("flavors") or {}).get("python_function") or {}).get("loader_module") or "")


def is_registered(uri: str, tracking_uri: str) -> bool:
    """Whether a ``models:/`` URI names a registered version now (other URIs: True).

    Raises:
        A2maeError: The tracking server cannot be reached (one line).
    """
    from a2mae.tracking.client import check_tracking_uri, mlflow_uris

    if missing_store(tracking_uri):
        return False
    check_tracking_uri(tracking_uri)
    with mlflow_uris(tracking_uri):
        try:
            _registry_info(uri)
        except ModelNotFound:
            return False
    return True


def resolve_model(uri: str, tracking_uri: str, workdir: Path) -> PredictModel:
    """Resolve a model URI, fetch its pickle-free files into ``workdir`` and describe it.

    Args:
        uri: ``models:/a2mae-<task>@champion``, ``models:/NAME/VERSION``, ``runs:/...`` or the encoder
            (``models:/a2mae-encoder@champion``: embeddings).
        tracking_uri: MLflow tracking (and registry) URI.
        workdir: Local folder for the model files.

    Returns:
        The model description (its weights are built lazily, in each worker).

    Raises:
        PredictError: The store cannot be reached, or the URI names no usable model (one line).
    """
    from mlflow.exceptions import MlflowException

    from a2mae.tracking.client import check_tracking_uri, mlflow_uris

    check_model_uri(uri)
    store = missing_store(tracking_uri)
    if store:
        raise _not_registered(uri, tracking_uri, f"no such store: {store} does not exist")
    try:
        check_tracking_uri(tracking_uri)
        with mlflow_uris(tracking_uri):
            name, version, run_id = _registry_info(uri)
            if _loader(uri) == _ENCODER_LOADER:
                return _encoder_model(uri, workdir, name, version, run_id)
            return _downstream_model(uri, workdir, name, version, run_id)
    except PredictError:
        raise
    except MlflowException as err:
        msg = " ".join(str(err.message).split())[:200]
        raise PredictError(
            f"{uri}: cannot be reached ({msg}); check --model and MLFLOW_TRACKING_URI"
        ) from None
    except A2maeError as err:
        raise PredictError(f"--model {uri}: {err}") from None
    except (OSError, ValueError) as err:  # ValueError: MLflow's parsing of a URI it cannot use
        msg = " ".join(str(err).split())[:200]
        raise PredictError(
            f"{uri}: cannot be reached ({msg}); check --model and MLFLOW_TRACKING_URI"
        ) from None


def _downstream_model(uri: str, workdir: Path, name: str, version: str, run_id: str) -> PredictModel:
    from a2mae.registry.downstream import copy_model_files
    from a2mae.registry.spec import read_spec

    folder = copy_model_files(uri, workdir / "model")
    spec = read_spec(folder)  # validated before any worker allocates the model
    patch = int(spec.encoder_config.get("patch_size", 1))
    units = (
        {"scale": spec.scale, "offset": spec.offset or 0.0}
        if spec.scale is not None
        else _reference_units(spec.sensor_entries, spec.sensor)  # fine-tuned before units were recorded
    )
    return PredictModel(
        task=spec.task,
        sensor=spec.sensor,
        bands=tuple(spec.bands),
        classes=tuple(spec.classes),
        multilabel=bool(spec.multilabel),
        patch_size=patch,
        units="dn",
        name=name,
        version=version,
        run_id=run_id,
        uri=uri,
        files=str(folder),
        **units,
    )


def _reference_units(sensor_entries: dict[str, Any], sensor: str) -> dict[str, Any]:
    """``{scale, offset}`` of the sensor's first product (what fine-tuning assumes); empty when unknown."""
    products = (sensor_entries.get(sensor) or {}).get("products") or {}
    first = next(iter(products.values()), None)
    if not isinstance(first, dict) or "scale" not in first:
        return {}
    return {"scale": float(first["scale"]), "offset": float(first.get("offset", 0.0))}


def _encoder_model(uri: str, workdir: Path, name: str, version: str, run_id: str) -> PredictModel:
    import shutil

    import mlflow

    from a2mae.checkpoint import read_checkpoint_meta
    from a2mae.registry.encoder_pyfunc import checkpoint_file

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    ckpt = workdir / "model" / "encoder.safetensors"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint_file(local), ckpt)
    meta = read_checkpoint_meta(ckpt)
    return PredictModel(
        task=EMBEDDINGS,
        sensor="",  # any sensor of the encoder's registry; the scene's own bands are used
        bands=(),
        classes=(),
        multilabel=False,
        patch_size=int(meta["config"]["patch_size"]),
        units="reflectance",
        name=name,
        version=version,
        run_id=run_id,
        uri=uri,
        files=str(ckpt),
        module=None,
    )


def encoder_norm(
    model: PredictModel, sensor: str, bands: Sequence[str]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band ``(mean, std)`` of the encoder's pre-training data for ``bands`` of ``sensor``.

    Raises:
        PredictError: The encoder has no statistics for some of the bands (they are named).
    """
    try:  # the encoder reads reflectance x 10000 (read_batch); the statistics are reflectance
        return encoder_stats(model).mean_std(sensor, bands, unit=1e-4, source=f"{model.uri}: the encoder")
    except NormStatsError as err:
        raise PredictError(str(err)) from None


def encoder_stats(model: PredictModel) -> NormStats:
    """The pre-training statistics stored in the encoder's checkpoint (any stored form).

    Raises:
        PredictError: The stored statistics cannot be read.
    """
    from a2mae.checkpoint import read_checkpoint_meta

    try:
        return NormStats.from_doc(read_checkpoint_meta(model.files).get("norm_stats"), model.uri)  # type: ignore[arg-type]
    except NormStatsError as err:
        raise PredictError(str(err)) from None
