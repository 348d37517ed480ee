"""Parameter models of the flows: the forms of the Prefect UI.

Each model is flat (one level, no free-form dicts: they render badly in the UI) and every field that
mirrors a ``params.yaml`` key takes its default, bounds and description from there
(``a2mae.config``), so the UI, the CLI and ``dvc repro`` share one schema. :meth:`FlowParams.resolve`
turns a form into the library's :class:`~a2mae.config.Params`: the workspace's ``params.yaml``, then
the form's fields, then the free ``overrides`` (``section.key=value``, for keys not on the form).
Relative paths are anchored at the workspace (``project_dir``).

This module imports no torch and no Prefect, so schema generation stays cheap.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

from a2mae.config import (
    Executor,
    FinetuneProtocol,
    MaskingPolicy,
    Params,
    Task,
    apply_overrides,
    load_params,
    validate_params,
)
from a2mae.models.variants import check_chip_size

_DEFAULTS = load_params()
_BOUNDS = ("ge", "gt", "le", "lt", "multiple_of", "min_length", "max_length")
#: Params keys that are local paths, anchored at the workspace by :meth:`FlowParams.resolve`.
PATH_KEYS = ("data.catalog", "tile.snapshot", "pretrain.storage_path", "finetune.output")
#: The bundled real scenes (the sources of the ingest stage in dvc.yaml).
SAMPLE_SCENES = (
    "data/samples/sentinel2_l2a_T29RKH_20200219",
    "data/samples/landsat8_c2l2_p001r062_20201031",
    "data/samples/tanzania_s2_arcsi_T37MEM",
    "data/samples/naip_m4709963se_northdakota",
)


def _config_field(key: str) -> FieldInfo:
    model: Any = Params
    *parents, leaf = key.split(".")
    for part in parents:
        model = model.model_fields[part].annotation
    return model.model_fields[leaf]


def _lookup(params: BaseModel, key: str) -> Any:
    node: Any = params
    for part in key.split("."):
        node = getattr(node, part)
    return node


def p(key: str, description: str | None = None, **extra: Any) -> Any:
    """A form field mirroring the params.yaml ``key``: its default, bounds and description."""
    info = _config_field(key)
    bounds = {b: getattr(m, b) for m in info.metadata for b in _BOUNDS if getattr(m, b, None) is not None}
    desc = description or info.description or f"params.yaml {key}"
    return Field(
        default=_lookup(_DEFAULTS, key),
        description=f"{desc} [params.yaml {key}]",
        json_schema_extra={"params_key": key},
        **{**bounds, **extra},
    )


def _default_project() -> str:
    return os.environ.get("A2MAE_PROJECT_DIR", ".")


class FlowParams(BaseModel):
    """Fields every flow form has: the workspace and extra overrides."""

    model_config = ConfigDict(extra="forbid")

    project_dir: str = Field(
        default_factory=_default_project,
        description="Workspace with params.yaml and dvc.yaml; relative paths are taken from here.",
    )
    overrides: list[str] = Field(
        default_factory=list,
        description="More parameters as section.key=value (keys of params.yaml not on this form).",
    )

    def params_keys(self) -> dict[str, str]:
        """``{field name: params key}`` of the fields that mirror params.yaml."""
        return self._keys()

    @classmethod
    def from_params(cls, params: Params, **values: Any) -> Self:
        """A form whose params.yaml fields hold ``params``' values (and ``values`` for the others)."""
        fields = {name: _lookup(params, key) for name, key in cls._keys().items() if name not in values}
        return cls(**fields, **values)

    @classmethod
    def _keys(cls) -> dict[str, str]:
        out = {}
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra
            if isinstance(extra, dict) and "params_key" in extra:
                out[name] = str(extra["params_key"])
        return out

    def as_overrides(self) -> list[str]:
        """This form's params.yaml fields, then its ``overrides``, as ``section.key=value`` items."""
        items = [f"{key}={json.dumps(getattr(self, name))}" for name, key in self._keys().items()]
        return [*items, *self.overrides]

    def workspace(self) -> Path:
        """The workspace folder, absolute."""
        return Path(self.project_dir).expanduser().resolve()

    def path(self, value: str) -> str:
        """``value`` anchored at the workspace (``s3://`` URIs and absolute paths unchanged)."""
        if "://" in value or Path(value).is_absolute():
            return value
        return str(self.workspace() / value)

    def resolve(self) -> Params:
        """The library parameters of this form (workspace params.yaml, fields, overrides).

        Raises:
            ConfigError: A bad value (one line naming the key).
            ModelConfigError: Model options that do not fit the chips (one line).
        """
        ws_params = self.workspace() / "params.yaml"
        base = load_params(ws_params if ws_params.is_file() else None)
        doc = base.model_dump(mode="json")
        for name, key in self.params_keys().items():
            *parents, leaf = key.split(".")
            node = doc
            for part in parents:
                node = node[part]
            node[leaf] = getattr(self, name)
        doc = apply_overrides(doc, self.overrides)
        for key in PATH_KEYS:
            *parents, leaf = key.split(".")
            node = doc
            for part in parents:
                node = node[part]
            node[leaf] = self.path(node[leaf])
        datasets = doc["finetune"]["datasets"]
        for task_name, folder in datasets.items():  # anchored when the workspace holds the dataset
            if folder and (self.workspace() / folder).exists():
                datasets[task_name] = self.path(folder)
        uri = doc["registry"]["tracking_uri"]
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            doc["registry"]["tracking_uri"] = "sqlite:///" + self.path(uri[len("sqlite:///") :])
        params = validate_params(doc, source="flow parameters")
        check_chip_size(params.model, params.tile.chip_size, **params.pretrain.model_overrides)
        return params


# ---------------------------------------------------------------------------------------------- stages
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
    model_name: str = p("model.name")
    mask_ratio: float = p("model.mask_ratio")
    masking: MaskingPolicy = p("model.masking")
    geo_encoding: bool = p("model.geo_encoding", "Add the geographic encoding to the tokens.")
    epochs: int = p("pretrain.epochs", "Passes over the snapshot.")
    max_steps: int | None = p("pretrain.max_steps")
    batch_size: int = p("pretrain.batch_size", "Image sets per worker per step.")
    blr: float = p("pretrain.blr", "Base learning rate (lr = blr x effective batch / 256).")
    num_workers: int = p("pretrain.num_workers", "Ray Train workers (0: in this process, without Ray).")
    use_gpu: bool = p("pretrain.use_gpu", "Train on GPUs.")
    experiment: str = p("pretrain.experiment", "MLflow experiment.")


# Keeps the nested-form depth at one: RetrainParams repeats the few fields a retrain usually changes.
class RetrainParams(FlowParams):
    """The pipeline: new imagery, ingest, tile, DVC snapshot, pre-train, fine-tune, evaluate, promote."""

    sources: list[str] = Field(
        default_factory=lambda: list(SAMPLE_SCENES),
        description="Folders or s3:// prefixes of scenes to ingest (new scenes are appended to the catalog).",
        min_length=1,
    )
    new_scene: str = Field(default="", description="The scene that triggered this run (set by the trigger).")
    catalog: str = p("data.catalog")
    snapshot: str = p("tile.snapshot", "Snapshot folder (tracked by DVC).")
    chip_size: int = p("tile.chip_size")
    from_champion: bool = Field(
        default=True, description="Continue pre-training from the champion encoder when one exists."
    )
    model_name: str = p("model.name")
    epochs: int = p("pretrain.epochs", "Pre-training passes over the snapshot.")
    max_steps: int | None = p("pretrain.max_steps", "Cap on pre-training steps (None: epochs).")
    num_workers: int = p("pretrain.num_workers", "Ray Train workers (0: in this process, without Ray).")
    finetune_task: Task = p("finetune.task")
    finetune_max_steps: int | None = p("finetune.max_steps", "Cap on fine-tuning steps (None: epochs).")
    promote: bool = Field(default=True, description="Move the champion alias when the challenger wins.")
    dvc_remote: str = p("infra.dvc_remote")
    git_commit: bool = Field(
        default=False, description="git-commit dvc.lock and params.yaml of each new snapshot version."
    )
    force: bool = Field(default=False, description="Retrain even when the snapshot did not change.")


class FinetuneParams(FlowParams):
    """Downstream fine-tuning of an encoder; the model is registered with the challenger alias."""

    encoder: str = p("finetune.encoder")
    task: Task = p("finetune.task")
    protocol: FinetuneProtocol = p("finetune.protocol")
    data: str = Field(default="", description="Dataset folder (empty: finetune.datasets.<task>).")
    epochs: int = p("finetune.epochs", "Passes over the training split.")
    max_steps: int | None = p("finetune.max_steps")
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

    model: str = Field(description="Registered model, e.g. a2mae-classification.", min_length=1)
    version: int = Field(default=0, description="Version to make champion (ignored by rollback).", ge=0)
    action: Literal["promote", "rollback"] = Field(default="promote", description="Promote or roll back.")
    reason: str = Field(description="Why (kept in the alias history).", min_length=1)


class WatchParams(FlowParams):
    """New-imagery watcher: list a folder or s3:// prefix, emit one event per new or changed scene."""

    uri: str = p("infra.watch_uri")
    settle_polls: int = Field(
        default=1,
        ge=0,
        description="Unchanged listings a scene needs before it is reported (uploads in progress wait).",
    )
    state_dir: str = Field(
        default="",
        description="Folder of the watcher's listing state (empty: <infra.home>/watcher).",
    )
