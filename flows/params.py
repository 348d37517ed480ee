"""Parameter models of the flows: the forms of the Prefect UI.

Every field that mirrors a ``params.yaml`` key takes its default, bounds and description from there
(``a2mae.config``), so the UI, the CLI and ``dvc repro`` share one schema. Fixed sets of values are
``Literal`` types (dropdowns in the UI): the shared aliases of ``a2mae.config``, the registered model
variants and the registered model names. A nullable number of ``params.yaml`` (``null``: no cap) is a
plain number on a form, with ``0`` standing for ``null``, because the UI offers no input box for an
``int | None`` field. The pipeline's form groups its fields by stage in :class:`Section` models (one
level: the UI renders each as a titled section); no field is a free-form dict.

:meth:`FlowParams.resolve` turns a form into the library's :class:`~a2mae.config.Params`: the
workspace's ``params.yaml`` (with the deployments' ``--set`` items of ``flows.serve``, if any), then the
form's fields, then the free ``overrides`` (``section.key=value``, for keys not on the form). Relative
paths are anchored at the workspace (``project_dir``).

This module imports no torch and no Prefect, so schema generation stays cheap.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

from a2mae import tasks
from a2mae.config import (
    DATA_ROOTS_ENV,
    BenchmarkBaseline,
    BenchmarkFormat,
    BenchmarkProtocol,
    ConfigError,
    DenseLabels,
    DvcRemote,
    Executor,
    FinetuneProtocol,
    MaskingPolicy,
    Params,
    apply_overrides,
    load_params,
    validate_params,
)
from a2mae.models.variants import list_models, model_config

_DEFAULTS = load_params()
_BOUNDS = ("ge", "gt", "le", "lt", "multiple_of", "min_length", "max_length")
#: Params keys that are local paths, anchored at the workspace by :meth:`FlowParams.resolve`.
PATH_KEYS = (
    "data.catalog",
    "tile.snapshot",
    "pretrain.storage_path",
    "finetune.output",
    "predict.output",
    "benchmark.output",
    "benchmark.cache",
    "collect.locations",
)
#: The bundled real scenes (the sources of the ingest stage in dvc.yaml): the single scenes and series,
#: and four OSCD cities (two-date Sentinel-2 L1C pairs: 52 real two-date sets once tiled).
SAMPLE_SCENES = (
    "data/samples/sentinel2_l2a_T29RKH_20200219",
    "data/samples/landsat8_c2l2_p001r062_20201031",
    "data/samples/tanzania_s2_arcsi_T37MEM",
    "data/samples/naip_m4709963se_northdakota",
    "data/samples/oscd_s2_l1c/bordeaux",
    "data/samples/oscd_s2_l1c/valencia",
    "data/samples/oscd_s2_l1c/rio",
    "data/samples/oscd_s2_l1c/bercy",
)


def _by_size(names: list[str]) -> tuple[str, ...]:
    """Variant names, smallest first (width, then depth)."""

    def size(name: str) -> tuple[int, int, str]:
        cfg = model_config(name, _DEFAULTS.model)
        return cfg.embed_dim, cfg.depth, name

    return tuple(sorted(names, key=size))


#: The registered A²-MAE variants (``a2mae models``), smallest first: the model dropdown.
#: Known when the module runs: plain strings to a type checker (as for RegisteredModel).
if TYPE_CHECKING:
    ModelVariant = str
    TaskName = str
else:
    ModelVariant = Literal[_by_size(list_models())]
    #: The registered downstream tasks (:mod:`a2mae.tasks`): the task dropdown.
    TaskName = Literal[tasks.names()]
#: Registered model names a person evaluates or promotes: ``<finetune.model_prefix><task>`` per task,
#: and the encoder.
REGISTERED_MODELS = (
    *(f"{_DEFAULTS.finetune.model_prefix}{task}" for task in tasks.names()),
    _DEFAULTS.registry.encoder_model,
)
if TYPE_CHECKING:
    RegisteredModel = str
else:
    RegisteredModel = Literal[REGISTERED_MODELS]


def _config_field(key: str) -> FieldInfo:
    model: Any = Params
    *parents, leaf = key.split(".")
    for part in parents:
        model = model.model_fields[part].annotation
    field: FieldInfo = model.model_fields[leaf]
    return field


def _lookup(params: BaseModel, key: str) -> Any:
    node: Any = params
    for part in key.split("."):
        node = getattr(node, part)
    return node


def p(key: str, description: str | None = None, *, none_as: int | str | None = None, **extra: Any) -> Any:
    """A form field mirroring the params.yaml ``key``: its default, bounds and description.

    Args:
        key: ``section.key`` of params.yaml.
        description: Replaces the config model's description (the params key is appended anyway).
        none_as: For a nullable number: the form value standing for ``null`` (the field is then a
            plain number, at least ``none_as``; say in ``description`` what ``null`` means); for a
            nullable string, ``""``.
        **extra: More ``Field`` arguments.
    """
    info = _config_field(key)
    bounds = {b: getattr(m, b) for m in info.metadata for b in _BOUNDS if getattr(m, b, None) is not None}
    default = _lookup(_DEFAULTS, key)
    schema_extra: dict[str, Any] = {"params_key": key}
    if isinstance(none_as, int | float):
        bounds = {k: v for k, v in bounds.items() if k not in ("ge", "gt")} | {"ge": none_as}
    if none_as is not None:
        default = none_as if default is None else default
        schema_extra["none_as"] = none_as
    desc = description or info.description
    if not desc:
        raise ValueError(f"params.yaml {key}: give the form field a description (the config model has none)")
    return Field(
        default=default,
        description=f"{desc} [params.yaml {key}]",
        json_schema_extra=schema_extra,
        **{**bounds, **extra},
    )


def _default_project() -> str:
    return os.environ.get("A2MAE_PROJECT_DIR", ".")


@dataclass(frozen=True)
class Mirror:
    """A form field that mirrors a params.yaml key.

    Attributes:
        path: The field's path on the form (``("pretrain", "max_steps")`` inside a section).
        key: The params.yaml key (``pretrain.max_steps``).
        none_as: The form value standing for ``null`` (nullable numbers), else None.
    """

    path: tuple[str, ...]
    key: str
    none_as: Any = None

    def to_params(self, value: Any) -> Any:
        """The params.yaml value of a form value."""
        return None if self.none_as is not None and value == self.none_as else value

    def to_form(self, value: Any) -> Any:
        """The form value of a params.yaml value."""
        return self.none_as if self.none_as is not None and value is None else value


class Section(BaseModel):
    """A group of form fields (one stage); the UI shows it as a titled section."""

    model_config = ConfigDict(extra="forbid")


def _mirrors(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[Mirror]:
    out = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, Section):
            out += _mirrors(ann, (*prefix, name))
            continue
        extra = info.json_schema_extra
        if isinstance(extra, dict) and "params_key" in extra:
            out.append(Mirror((*prefix, name), str(extra["params_key"]), extra.get("none_as")))
    return out


def _set(doc: dict[str, Any], path: tuple[str, ...] | list[str], value: Any) -> None:
    for part in path[:-1]:
        doc = doc.setdefault(part, {})
    doc[path[-1]] = value


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _workspace_fields_last(schema: dict[str, Any]) -> None:
    """Form order: the stage fields first, then the workspace and the free overrides."""
    props = schema.get("properties", {})
    for name in ("project_dir", "overrides"):
        if name in props:
            props[name] = props.pop(name)


class FlowParams(BaseModel):
    """Fields every flow form has: the workspace and extra overrides."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_workspace_fields_last)

    project_dir: str = Field(
        default_factory=_default_project,
        title="Workspace",
        description="Workspace with params.yaml and dvc.yaml; relative paths are taken from here.",
    )
    overrides: list[str] = Field(
        default_factory=list,
        description="More parameters as section.key=value (keys of params.yaml not on this form).",
    )

    @classmethod
    def mirrors(cls) -> list[Mirror]:
        """The form's fields that mirror params.yaml keys (in sections too)."""
        return _mirrors(cls)

    def get(self, path: tuple[str, ...] | str) -> Any:
        """The value of a field, by its path on the form (``"pretrain.max_steps"`` or a tuple)."""
        node: Any = self
        for part in path.split(".") if isinstance(path, str) else path:
            node = getattr(node, part)
        return node

    def params_keys(self) -> dict[str, str]:
        """``{field path: params key}`` of the fields that mirror params.yaml (``a.b`` inside a section)."""
        return {".".join(m.path): m.key for m in self.mirrors()}

    @classmethod
    def from_params(cls, params: Params, **values: Any) -> Self:
        """A form whose params.yaml fields hold ``params``' values (and ``values`` for the others).

        A dict given for a section updates the section's fields, leaving the others at ``params``.
        """
        doc: dict[str, Any] = {}
        for m in cls.mirrors():
            if m.path[0] not in values or isinstance(values[m.path[0]], dict):
                _set(doc, m.path, m.to_form(_lookup(params, m.key)))
        return cls(**_merge(doc, values))

    def as_overrides(self) -> list[str]:
        """This form's params.yaml fields, then its ``overrides``, as ``section.key=value`` items."""
        items = [f"{m.key}={json.dumps(m.to_params(self.get(m.path)))}" for m in self.mirrors()]
        return [*items, *self.overrides]

    def workspace(self) -> Path:
        """The workspace folder, absolute."""
        return Path(self.project_dir).expanduser().resolve()

    def path(self, value: str) -> str:
        """``value`` anchored at the workspace (``s3://`` URIs and absolute paths unchanged).

        Raises:
            ConfigError: Run by the services' deployments, a local path outside their data roots.
        """
        if "://" in value:
            return value
        out = value if Path(value).is_absolute() else str(self.workspace() / value)
        check_data_root(out, value)
        return out

    def resolve(self) -> Params:
        """The library parameters of this form (workspace params.yaml, fields, overrides).

        Raises:
            ConfigError: A bad value (one line naming the key).
            ModelConfigError: Model options that do not fit the chips (one line).
        """
        check_data_root(str(self.workspace()), self.project_dir, "project_dir")
        ws_params = self.workspace() / "params.yaml"
        base = load_params(ws_params if ws_params.is_file() else None, deployment_sets())
        doc = base.model_dump(mode="json")
        for m in self.mirrors():
            _set(doc, m.key.split("."), m.to_params(self.get(m.path)))
        doc = apply_overrides(doc, self.overrides)
        for key in PATH_KEYS:
            *parents, leaf = key.split(".")
            node = doc
            for part in parents:
                node = node[part]
            if node[leaf] is not None:  # optional paths (collect.locations) stay unset
                node[leaf] = self.path(node[leaf])
        datasets = doc["finetune"]["datasets"]
        for task_name, folder in datasets.items():  # anchored when the workspace holds the dataset
            if folder and (self.workspace() / folder).exists():
                datasets[task_name] = self.path(folder)
            elif folder and "://" not in folder:  # a relative one is read from the run's folder
                check_data_root(str(self.workspace() / folder), folder, f"finetune.datasets.{task_name}")
        uri = doc["registry"]["tracking_uri"]
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            doc["registry"]["tracking_uri"] = "sqlite:///" + self.path(uri[len("sqlite:///") :])
        return validate_params(doc, source="flow parameters")  # checks across sections included


#: Set by ``python -m flows.serve`` for its flow runs: its ``--set`` items (JSON list), applied over the
#: workspace's params.yaml and under the form's fields.
DEPLOYMENT_SETS_ENV = "A2MAE_DEPLOYMENT_SETS"


def deployment_sets() -> list[str]:
    """The serve process's ``--set`` items (:data:`DEPLOYMENT_SETS_ENV`); empty outside a deployment."""
    raw = os.environ.get(DEPLOYMENT_SETS_ENV)
    if not raw:
        return []
    try:
        items = json.loads(raw)
    except ValueError:
        raise ConfigError(f"{DEPLOYMENT_SETS_ENV}: not a JSON list of section.key=value items") from None
    return [str(i) for i in items] if isinstance(items, list) else []


def data_roots() -> list[Path] | None:
    """The folders local paths must lie in (:data:`~a2mae.config.DATA_ROOTS_ENV`); None: no limit.

    Set by ``a2mae services up`` for its deployments, whose forms anyone reaching the Prefect API may
    fill; runs without the services (the demo, a flow run by hand) are not limited.
    """
    raw = os.environ.get(DATA_ROOTS_ENV)
    if raw is None:
        return None
    return [Path(r).expanduser().resolve() for r in raw.split(os.pathsep) if r]


def check_data_root(path: str, given: str, what: str = "path") -> None:
    """Refuse a local ``path`` outside :func:`data_roots` (links and ``..`` resolved first).

    Raises:
        ConfigError: Outside every root (one line naming the path and the roots).
    """
    roots = data_roots()
    if roots is None:
        return
    real = Path(path).expanduser().resolve()
    if any(real == r or real.is_relative_to(r) for r in roots):
        return
    shown = given if len(given) <= 200 else given[:200] + "..."
    raise ConfigError(
        f"{what} {shown}: outside the services' data roots ({', '.join(map(str, roots))}); give a path "
        "under one of them, an s3:// URI, or add its folder to infra.data_roots and restart the services"
    )


# ---------------------------------------------------------------------------------------------- stages
class CollectParams(FlowParams):
    """Gather co-located scenes from a STAC API into the scene catalog (docs/collect.md)."""

    stac_url: str = p("collect.stac_url", "Root URL of the STAC API searched (empty: none).", none_as="")
    locations: str = p(
        "collect.locations", "GeoJSON or GeoParquet of points or polygons (empty: generated).", none_as=""
    )
    catalog: str = p("data.catalog")
    collections: list[str] = p("collect.collections")
    start: date = p("collect.start")
    end: date = p("collect.end")
    max_cloud_cover: float = p("collect.max_cloud_cover")
    n_locations: int = p("collect.n_locations")
    max_scenes: int = p("collect.max_scenes")


class IngestParams(FlowParams):
    """Scene ingest: read scene metadata from folders or s3:// prefixes into the catalog."""

    sources: list[str] = Field(
        default_factory=lambda: list(SAMPLE_SCENES),
        description="Folders, GeoTIFF files or s3:// prefixes of scenes.",
        min_length=1,
    )
    catalog: str = p("data.catalog")
    workers: int = p("data.workers")
    skip_bad: bool = Field(default=False, description="Go on past bad scenes and report them.")


class TileParams(FlowParams):
    """Tiling: cut the catalog's co-located scenes into an STSSD snapshot."""

    catalog: str = p("data.catalog")
    snapshot: str = p("tile.snapshot", "Snapshot folder written by tiling.")
    chip_size: int = p("tile.chip_size")
    grid_m: float = p("tile.grid_m")
    max_cloud_fraction: float = p("tile.max_cloud_fraction", "Drop a chip with more cloud than this.")
    max_nodata_fraction: float = p("tile.max_nodata_fraction", "Drop a chip with more nodata than this.")
    min_images_per_set: int = p("tile.min_images_per_set")
    executor: Executor = p("tile.executor")
    workers: int = p("tile.workers")
    force: bool = Field(default=False, description="Rebuild even when the snapshot is up to date.")


_PRETRAIN_STEPS = "Cap on pre-training optimiser steps (0: no cap, train for the epochs)."
_FINETUNE_STEPS = "Cap on fine-tuning optimizer steps (0: no cap, train for the epochs)."


class PretrainParams(FlowParams):
    """A²-MAE pre-training on a snapshot (Ray Train), registered as a new encoder version."""

    snapshot: str = p("tile.snapshot", "STSSD snapshot to train on.")
    run_name: str = Field(
        default="",
        description="MLflow/Ray run name; the same name resumes that run. Empty: derived from the snapshot.",
    )
    from_champion: bool = Field(
        default=False, description="Start from the weights of the champion encoder instead of scratch."
    )
    model_name: ModelVariant = p(
        "model.name", "A²-MAE variant (`a2mae models` lists their sizes).", title="Model variant"
    )
    mask_ratio: float = p("model.mask_ratio")
    masking: MaskingPolicy = p("model.masking")
    geo_encoding: bool = p("model.geo_encoding", "Add the geographic encoding to the tokens.")
    epochs: int = p("pretrain.epochs", "Passes over the snapshot.")
    max_steps: int = p("pretrain.max_steps", _PRETRAIN_STEPS, none_as=0)
    batch_size: int = p("pretrain.batch_size", "Image sets per worker per step.")
    blr: float = p("pretrain.blr", "Base learning rate (lr = blr x effective batch / 256).")
    num_workers: int = p("pretrain.num_workers", "Ray Train workers (0: in this process, without Ray).")
    use_gpu: bool = p("pretrain.use_gpu", "Train on GPUs.")
    experiment: str = p("pretrain.experiment", "MLflow experiment.")


# ------------------------------------------------------------------------- the pipeline, by stage
class RetrainIngest(Section):
    """New imagery: the sources ingested into the scene catalog (new scenes are appended)."""

    sources: list[str] = Field(
        default_factory=lambda: list(SAMPLE_SCENES),
        description="Folders or s3:// prefixes of scenes to ingest (new scenes are appended to the catalog).",
        min_length=1,
    )
    new_scene: str = Field(
        default="",
        title="New scene",
        description="The scene that triggered this run (set by the new-imagery trigger; empty otherwise).",
    )
    collect: bool = Field(
        default=False,
        title="Collect first",
        description="Gather scenes from the STAC API (collect.stac_url, collect.locations) before ingest.",
    )
    catalog: str = p("data.catalog")


class RetrainTile(Section):
    """Tiling: the catalog's co-located scenes cut into the STSSD snapshot."""

    snapshot: str = p("tile.snapshot", "Snapshot folder (tracked by DVC).")
    chip_size: int = p("tile.chip_size")


class RetrainVersion(Section):
    """Data version: the snapshot committed to DVC, pushed to a remote and recorded in git."""

    dvc_remote: DvcRemote = p(
        "infra.dvc_remote",
        "DVC remote the snapshot is pushed to: s3 (the services' store) or local (a folder in the "
        "workspace).",
        title="DVC remote",
    )
    git_commit: bool = Field(
        default=True,
        title="Commit to git",
        description="git-commit dvc.lock and params.yaml of each new snapshot version in the workspace, "
        "so that a clone restores it with `dvc pull`.",
    )


class RetrainPretrain(Section):
    """Pre-training: A²-MAE on the snapshot (Ray Train), registered as a new encoder version."""

    from_champion: bool = Field(
        default=True, description="Continue pre-training from the champion encoder when one exists."
    )
    model_name: ModelVariant = p(
        "model.name", "A²-MAE variant (`a2mae models` lists their sizes).", title="Model variant"
    )
    epochs: int = p("pretrain.epochs", "Pre-training passes over the snapshot.")
    max_steps: int = p("pretrain.max_steps", _PRETRAIN_STEPS, none_as=0)
    num_workers: int = p(
        "pretrain.num_workers", "Ray Train workers (0: in this process, without Ray).", title="Workers"
    )


class RetrainFinetune(Section):
    """Fine-tuning: the new encoder on the downstream task, registered as the challenger."""

    task: TaskName = p("finetune.task")
    max_steps: int = p("finetune.max_steps", _FINETUNE_STEPS, none_as=0)


class RetrainEvaluate(Section):
    """Evaluation and promotion: the challenger against the champion on the frozen split."""

    promote: bool = Field(default=True, description="Move the champion alias when the challenger wins.")
    promotion_margin: float = p("evaluate.promotion_margin")


class RetrainParams(FlowParams):
    """The pipeline: new imagery, ingest, tile, DVC snapshot, pre-train, fine-tune, evaluate, promote."""

    ingest: RetrainIngest = Field(
        default_factory=RetrainIngest, title="1. Ingest", description=RetrainIngest.__doc__
    )
    tile: RetrainTile = Field(default_factory=RetrainTile, title="2. Tile", description=RetrainTile.__doc__)
    version: RetrainVersion = Field(
        default_factory=RetrainVersion, title="3. Data version (DVC)", description=RetrainVersion.__doc__
    )
    pretrain: RetrainPretrain = Field(
        default_factory=RetrainPretrain, title="4. Pre-train", description=RetrainPretrain.__doc__
    )
    finetune: RetrainFinetune = Field(
        default_factory=RetrainFinetune, title="5. Fine-tune", description=RetrainFinetune.__doc__
    )
    evaluate: RetrainEvaluate = Field(
        default_factory=RetrainEvaluate, title="6. Evaluate and promote", description=RetrainEvaluate.__doc__
    )
    force: bool = Field(
        default=False,
        title="Force retraining",
        description="Retrain even when the champion encoder was trained on this snapshot.",
    )


# ------------------------------------------------------------------------------------ other stages
class FinetuneParams(FlowParams):
    """Downstream fine-tuning of an encoder; the model is registered with the challenger alias."""

    encoder: str = p("finetune.encoder")
    task: TaskName = p("finetune.task")
    protocol: FinetuneProtocol = p("finetune.protocol")
    data: str = Field(default="", description="Dataset folder (empty: finetune.datasets.<task>).")
    epochs: int = p("finetune.epochs", "Passes over the training split.")
    max_steps: int = p("finetune.max_steps", _FINETUNE_STEPS, none_as=0)
    batch_size: int = p("finetune.batch_size", "Samples per step.")
    lr: float = p("finetune.lr", "Peak learning rate.")


class EvaluateParams(FlowParams):
    """Challenger vs champion on the frozen evaluation split; the alias moves only past the margin."""

    model: str = Field(description="Registered model, e.g. a2mae-classification.", min_length=1)
    version: int = Field(description="Challenger version.", ge=1)
    data: str = Field(default="", description="Dataset folder (empty: the version's a2mae.data tag).")
    promote: bool = Field(default=True, description="Move the champion alias when the challenger wins.")
    promotion_margin: float = p("evaluate.promotion_margin")


class PromoteParams(FlowParams):
    """Manual promotion (or rollback) of a registered model version, recorded in the alias history."""

    model: RegisteredModel = Field(
        default=f"{_DEFAULTS.finetune.model_prefix}{_DEFAULTS.finetune.task}",
        description="Registered model whose champion alias moves.",
    )
    version: int = Field(
        default=0,
        ge=0,
        description="Version to make champion (0: the version holding the challenger alias, i.e. the "
        "latest fine-tuned one); ignored by rollback.",
    )
    action: Literal["promote", "rollback"] = Field(
        default="promote",
        description="promote: move the alias to the version; rollback: back to the previous champion.",
    )
    reason: str = Field(description="Why (kept in the alias history).", min_length=1)


class WatchParams(FlowParams):
    """New-imagery watcher: list a folder or s3:// prefix, emit one event per new or changed scene."""

    uri: str = p("infra.watch_uri")
    stac: bool = p("infra.watch_stac")
    settle_polls: int = p("infra.watch_settle_polls")
    state_dir: str = Field(
        default="",
        description="Folder of the watcher's listing state (empty: <infra.home>/watcher).",
    )


class PredictParams(FlowParams):
    """Apply a model to scenes: class/change maps (COG), chip labels or embeddings (GeoParquet)."""

    sources: list[str] = p("predict.aoi", "Scenes or catalogs of the area of interest (re-run on promotion).")
    new_scene: str = Field(
        default="", description="The new scene to predict on (set by the imagery trigger)."
    )
    model: str = p("predict.model")
    output: str = p("predict.output", "Folder or s3:// prefix; each run writes a sub-folder of it.")
    window: int = p("predict.window")
    overlap: int = p("predict.overlap")
    batch_size: int = p("predict.batch_size")
    executor: Literal["local", "ray"] = p("predict.executor")
    workers: int = p("predict.workers")
    probabilities: bool = p("predict.probabilities")
    dense_embeddings: bool = p("predict.dense_embeddings")


class BenchmarkParams(FlowParams):
    """`a2mae benchmark`: encoders against baselines with kNN and linear probes (docs/benchmark.md)."""

    data: str = Field(description="Labelled data folder (a layout of docs/benchmark.md).", min_length=1)
    encoders: list[str] = p("benchmark.encoders")
    out: str = Field(default="", description="Output folder (empty: benchmark.output/<data folder name>).")
    format: BenchmarkFormat = p("benchmark.format")
    baselines: list[BenchmarkBaseline] = p("benchmark.baselines")
    protocols: list[BenchmarkProtocol] = p("benchmark.protocols")
    fractions: list[float] = p("benchmark.fractions")
    seeds: int = p("benchmark.seeds")
    dense_labels: DenseLabels = p("benchmark.dense_labels")
    max_pixels_per_class: int = p("benchmark.max_pixels_per_class")
    block_m: float = p("benchmark.block_m")
    mae_steps: int = p("benchmark.mae_steps")
