"""What a fine-tuning run reads and what one arm of it is, shared by :mod:`.run` and :mod:`.tracking`.

:class:`FinetuneStage` holds the sections fine-tuning reads (``finetune``, ``evaluate``, ``registry``)
and its collaborators (the lineage tags of the run's parameters, the scratch encoder); the entry points
:func:`a2mae.finetune.run.finetune` and :func:`~a2mae.finetune.run.compare_scratch` build it once from
the parameters, and nothing below them sees the whole parameters.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from a2mae.config import EvaluateConfig, FinetuneConfig, Params, RegistryConfig, params_to_flat
from a2mae.finetune import engine
from a2mae.finetune.encoder import EncoderHandle, load_encoder, scratch_encoder
from a2mae.models import A2MAE
from a2mae.models.downstream import DownstreamModel
from a2mae.registry.downstream import LoggedVersion
from a2mae.tasks.data import DatasetInfo, DownstreamDataset


@dataclass(frozen=True)
class FinetuneStage:
    """The sections and collaborators of fine-tuning.

    Attributes:
        cfg: The ``finetune`` section.
        evaluate: The ``evaluate`` section (evaluation split, batch size, primary metrics, challenger
            alias).
        registry: The ``registry`` section (tracking URI).
        lineage: ``lineage(**extra) -> tags`` of the run's parameters
            (:func:`a2mae.tracking.lineage.lineage_tags`).
        scratch: Builds the ``scratch`` encoder (:func:`a2mae.finetune.encoder.scratch_encoder`).
    """

    cfg: FinetuneConfig
    evaluate: EvaluateConfig
    registry: RegistryConfig
    lineage: Callable[..., dict[str, str]]
    scratch: Callable[[], A2MAE]

    @classmethod
    def of(cls, params: Params) -> FinetuneStage:
        """The stage of resolved parameters (the one place fine-tuning reads them whole)."""
        from a2mae.tracking.lineage import lineage_tags

        ft = params.finetune
        scratch = scratch_encoder(
            params.model, params.pretrain.model_overrides, params.data.sensor_files, ft.seed
        )
        return cls(
            ft,
            params.evaluate,
            params.registry,
            functools.partial(lineage_tags, params_to_flat(params)),
            scratch,
        )

    def load_encoder(self, uri: str) -> EncoderHandle:
        """The encoder of ``uri`` (see :func:`a2mae.finetune.encoder.load_encoder`)."""
        return load_encoder(uri, self.registry, self.scratch)

    def registered_name(self, task: str) -> str:
        """Registry name of a task's fine-tuned models, e.g. ``a2mae-change-detection``."""
        return f"{self.cfg.model_prefix}{task.replace('_', '-')}"


@dataclass
class FinetuneOutcome:
    """Result of one fine-tuning arm.

    Attributes:
        task: The task.
        kind: Metric kind (``single_label``, ``multi_label``, ``segmentation``, ``change_detection``).
        protocol: ``linear_probe`` or ``full``.
        encoder: Encoder source (``models:/...``, a path, or ``scratch``).
        pretrained: False for a scratch encoder.
        metric: Primary metric name.
        score: Primary metric on the evaluation split.
        metrics: All metrics on the evaluation split.
        val_metrics: Metrics on ``val`` (None when the dataset has no val split).
        split: Evaluation split name.
        split_hash: Content hash of the evaluation split.
        data: Dataset folder.
        steps: Optimiser steps.
        final_loss: Train loss of the last step.
        seconds: Training wall time.
        run_id: MLflow run (None when not tracked).
        version: Registered version (None when not registered).
        model: The fine-tuned model.
    """

    task: str
    kind: str
    protocol: str
    encoder: str
    pretrained: bool
    metric: str
    score: float
    metrics: dict[str, float]
    val_metrics: dict[str, float] | None
    split: str
    split_hash: str
    data: str
    steps: int
    final_loss: float
    seconds: float
    run_id: str | None = None
    version: LoggedVersion | None = None
    model: DownstreamModel | None = field(default=None, repr=False)


@dataclass
class Splits:
    """The splits of a fine-tuning run."""

    train: DownstreamDataset
    val: DownstreamDataset | None
    eval: DownstreamDataset

    @property
    def info(self) -> DatasetInfo:
        """Dataset description (from the train split)."""
        return self.train.info


@dataclass
class Arm:
    """One fine-tuning arm, ready to train (see :func:`a2mae.finetune.run.finetune`).

    Attributes:
        model: Encoder copy + new head.
        handle: The encoder it was copied from.
        splits: Train, val and evaluation splits.
        train_ds: The train split, cached in memory after the first epoch.
        steps: Optimiser steps of the budget.
        label: ``<protocol>/<pretrained|scratch>``, for run names and progress bars.
        fields: The outcome's fields known before training (task, kind, protocol, encoder, metric,
            split, split hash, data).
    """

    model: DownstreamModel
    handle: EncoderHandle
    splits: Splits
    train_ds: engine.CachedDataset
    steps: int
    label: str
    fields: dict[str, Any]


def outcome(
    kw: dict[str, Any],
    metric: str,
    test: dict[str, float],
    val: dict[str, float] | None,
    log: engine.TrainLog,
    model: DownstreamModel,
    **more: Any,
) -> FinetuneOutcome:
    """The outcome of one fine-tuning arm from its scores and training log."""
    return FinetuneOutcome(
        **kw,
        score=test[metric],
        metrics=test,
        val_metrics=val,
        steps=log.steps,
        final_loss=log.losses[-1] if log.losses else math.nan,
        seconds=log.seconds,
        model=model,
        **more,
    )
