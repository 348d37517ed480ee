"""A downstream task as one object, and the registry of tasks.

A :class:`Task` owns everything that differs between tasks: how its dataset is laid out and validated
(:meth:`~Task.open`, :meth:`~Task.target`), its head and how the head reads the encoder
(:meth:`~Task.head`, :attr:`~Task.dense`, :attr:`~Task.paired`), its loss, metrics and primary metric,
the checks of its registered ``spec.json`` and what ``a2mae predict`` writes for it (a dense COG, or
per-chip columns of a GeoParquet file). Generic code (fine-tuning, evaluation, the registry, predict)
asks the task object; it never compares a task name.

The registry (:func:`register`, :func:`get`, :func:`names`) is the one list of task names: the CLI
help, the ``finetune.task`` check and the Prefect form derive theirs from it. The built-in tasks
register themselves when :mod:`a2mae.tasks` is imported; a new task is one module that subclasses
:class:`Task` and calls :func:`register` (``tests/tasks/test_new_task.py`` adds a regression task so).
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from a2mae.config import ConfigError, Params, PrimaryMetrics, register_check
from a2mae.models.downstream import DownstreamModel, ModelSpec
from a2mae.tasks.chips import BandSpec
from a2mae.tasks.data import DatasetInfo, DownstreamDataset, Item, canonical_split, check_root
from a2mae.tasks.errors import UnknownTaskError as UnknownTaskError  # re-exported

if TYPE_CHECKING:
    from a2mae.models.a2mae import A2MAE


class Metrics(Protocol):
    """What a task's metrics accumulate over batches (e.g. :class:`a2mae.tasks.metrics.TaskMetrics`)."""

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of model outputs and targets."""

    def compute(self) -> dict[str, float]:
        """The metric values."""

    def figures(self, classes: Sequence[str], title: str) -> dict[str, bytes]:
        """PNG figures of the split by file name (may be empty)."""


@dataclass(frozen=True)
class DatasetOptions:
    """The ``finetune`` settings a dataset opener reads.

    Attributes:
        sensor: Sensor of the chips unless a chip's ``A2MAE_SENSOR`` tag says otherwise.
        bands: Band ids in file order (None: from the band descriptions).
        label_mode: Classification: ``auto``, ``single`` or ``multi``.
        ignore_index: Mask value excluded from loss and metrics.
    """

    sensor: str
    bands: tuple[str, ...] | None = None
    label_mode: str = "auto"
    ignore_index: int = 255


class Task(ABC):
    """One downstream task. Subclasses set the class attributes and implement the abstract methods.

    Attributes:
        name: Registry name (also ``finetune.task``, ``--task`` and the ``task`` of ``spec.json``).
        summary: One line for help texts.
        dense: Per-pixel outputs (the head reads token maps; predict writes a map COG); else one
            output per chip (the head reads the pooled embedding; predict writes GeoParquet rows).
        paired: Samples are before/after image pairs (siamese encoder; predict takes scene pairs).
        map_name: Dense tasks: file stem of the predicted map (``<map_name>.tif``).
        chips_file: Per-chip tasks: the GeoParquet file predict writes.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    dense: ClassVar[bool] = False
    paired: ClassVar[bool] = False
    map_name: ClassVar[str] = "classmap"
    chips_file: ClassVar[str] = "chips.parquet"

    # ------------------------------------------------------------------------------------- data
    @abstractmethod
    def open(self, root: Path, split: str, spec: BandSpec, options: DatasetOptions) -> DownstreamDataset:
        """Open and validate one split (its name already canonical) of a dataset folder.

        Raises:
            DatasetError: Missing file, empty split (:class:`EmptySplitError`), bad label; one line.
        """

    @abstractmethod
    def target(self, item: Item, info: DatasetInfo) -> torch.Tensor:
        """The training target of one item (class, multi-hot vector, mask or value)."""

    # ------------------------------------------------------------------------------------ model
    @abstractmethod
    def head(self, spec: ModelSpec, dim: int, levels: int) -> nn.Module:
        """A new head for an encoder of width ``dim`` with ``levels`` feature levels."""

    def build_model(self, encoder: A2MAE, spec: ModelSpec) -> DownstreamModel:
        """Encoder + a new head of this task (the encoder is used as is: copy it first)."""
        return DownstreamModel(
            encoder, spec, functools.partial(self.head, spec), pooled=not self.dense, paired=self.paired
        )

    def loss(self, spec: ModelSpec, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Training loss: cross-entropy (``ignore_index`` excluded on dense targets)."""
        if self.dense:
            return F.cross_entropy(logits, target, ignore_index=spec.ignore_index)
        return F.cross_entropy(logits, target)

    def input_shape(self, channels: int, height: int, width: int) -> tuple[int, ...]:
        """Shape of one input sample: ``(C, H, W)``, or ``(2, C, H, W)`` for paired tasks."""
        return (2, channels, height, width) if self.paired else (channels, height, width)

    # ---------------------------------------------------------------------------------- metrics
    @abstractmethod
    def metric_kind(self, multilabel: bool) -> str:
        """The kind of metrics (a key of ``evaluate.primary_metric`` when it has one)."""

    @abstractmethod
    def metrics(self, spec: ModelSpec) -> Metrics:
        """A fresh metric accumulator for a model of ``spec``."""

    @abstractmethod
    def primary_metric(self, cfg: PrimaryMetrics, multilabel: bool) -> str:
        """The metric that decides promotion (higher is better)."""

    # ---------------------------------------------------------------------------------- predict
    def scores(self, logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
        """What predict keeps of the logits: class probabilities (sigmoid when multi-label)."""
        return logits.sigmoid() if multilabel else logits.softmax(1)

    def chip_columns(self, classes: Sequence[str], multilabel: bool) -> dict[str, Any]:
        """Per-chip tasks: the task's GeoParquet columns (name -> pyarrow type)."""
        raise NotImplementedError(f"task {self.name} writes no per-chip rows")

    def chip_values(
        self, scores: np.ndarray, classes: Sequence[str], multilabel: bool
    ) -> tuple[dict[str, list[Any]], dict[str, np.ndarray]]:
        """Per-chip tasks: ``(column values, fixed-size list columns)`` of a batch of ``scores``."""
        raise NotImplementedError(f"task {self.name} writes no per-chip rows")

    # --------------------------------------------------------------------------------- registry
    def check_spec(self, classes: Sequence[str], multilabel: bool) -> str | None:
        """What is wrong with a registered model's ``spec.json`` for this task (None: nothing)."""
        if multilabel:
            return f"multilabel is true, but {self.name} models are single-label"
        return None


# ------------------------------------------------------------------------------------- registry
_TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Register a task under its name (a second task of the same name replaces the first)."""
    _TASKS[task.name] = task
    return task


def unregister(name: str) -> None:
    """Forget a task (tests that register their own)."""
    _TASKS.pop(name, None)


def names() -> tuple[str, ...]:
    """Registered task names, in registration order."""
    return tuple(_TASKS)


def find(name: str) -> Task | None:
    """The task called ``name``, None when there is none."""
    return _TASKS.get(name)


def get(name: str) -> Task:
    """The task called ``name``.

    Raises:
        UnknownTaskError: No such task (one line listing the known ones).
    """
    task = _TASKS.get(name)
    if task is None:
        raise UnknownTaskError(f"unknown task {name!r} (known: {', '.join(_TASKS)})")
    return task


def _check_params(params: Params) -> None:
    """``finetune.task`` and the keys of ``finetune.datasets`` name registered tasks.

    Raises:
        ConfigError: One names no task (one line listing the known ones).
    """
    unknown = [f"datasets.{k}" for k in params.finetune.datasets if k not in _TASKS]
    if params.finetune.task not in _TASKS:
        unknown.insert(0, f"task {params.finetune.task!r}")
    if unknown:
        raise ConfigError(f"finetune.{unknown[0]}: unknown task (known: {', '.join(_TASKS)})")


register_check(_check_params)


def open_dataset(
    task: str | Task,
    root: str | Path,
    split: str,
    *,
    sensor: str,
    bands: Sequence[str] | None = None,
    label_mode: str = "auto",
    ignore_index: int = 255,
) -> DownstreamDataset:
    """Open and validate one split of a downstream dataset.

    Args:
        task: A registered task (or its name).
        root: The dataset folder.
        split: ``train``, ``val`` or ``test`` (aliases accepted).
        sensor: Sensor of the chips unless a chip's ``A2MAE_SENSOR`` tag says otherwise.
        bands: Band ids in file order (None: from the band descriptions).
        label_mode: Classification: ``auto``, ``single`` or ``multi``.
        ignore_index: Mask value excluded from loss and metrics.

    Returns:
        The dataset; ``info`` describes classes, bands and chip size.

    Raises:
        DatasetError: Unknown task, missing folder or file, empty split, unknown label or mask value, or
            mismatched sizes; the message names the file.
    """
    t = get(task) if isinstance(task, str) else task
    folder = check_root(Path(root))
    band_ids = tuple(bands) if bands is not None else None
    options = DatasetOptions(sensor, band_ids, label_mode, ignore_index)
    return t.open(folder, canonical_split(split), BandSpec(sensor, band_ids), options)
