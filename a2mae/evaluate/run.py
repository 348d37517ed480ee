"""Challenger vs champion on the same frozen evaluation split, with a gated move of ``@champion``.

:func:`evaluate_version` loads the challenger version (pickle-free) and the current ``@champion`` of the
same registered model, opens the challenger's evaluation split (``evaluate.split`` of the dataset
recorded on the version, or ``data``), checks both models fit it, scores both on it, and promotes the
challenger only when its primary metric beats the champion's by at least ``evaluate.promotion_margin``.
With no champion yet, the challenger becomes the first one. The evidence is written on the challenger
version as ``a2mae.eval.*`` tags and the scores are logged in an MLflow run of ``evaluate.experiment``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from a2mae.config import Params
from a2mae.finetune import engine
from a2mae.finetune.datasets import DatasetInfo, DownstreamDataset, check_compatible, open_dataset
from a2mae.finetune.metrics import confusion_png, metric_kind
from a2mae.models.downstream import DownstreamModel
from a2mae.registry import aliases
from a2mae.registry.downstream import load_model
from a2mae.registry.errors import RegistryError
from a2mae.tracking.client import client, configure, temp_dir
from a2mae.tracking.lineage import lineage_tags

EVAL_PREFIX = "a2mae.eval."


@dataclass
class Evaluation:
    """The outcome of a challenger-vs-champion evaluation.

    Attributes:
        name: Registered model.
        challenger: Challenger version.
        champion: Champion version before the evaluation (None: there was none).
        metric: Primary metric.
        challenger_score: Challenger's primary metric.
        champion_score: Champion's (None without a champion).
        margin: Required improvement.
        decision: ``promoted`` (beat the champion by the margin), ``first_champion`` or ``rejected``.
        split: Evaluation split name.
        split_hash: Content hash of the split.
        run_id: The MLflow evaluation run.
        challenger_metrics: All metrics of the challenger.
        champion_metrics: All metrics of the champion (empty without one).
    """

    name: str
    challenger: str
    champion: str | None
    metric: str
    challenger_score: float
    champion_score: float | None
    margin: float
    decision: str
    split: str
    split_hash: str
    run_id: str | None
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def promoted(self) -> bool:
        """True when ``@champion`` moved to the challenger."""
        return self.decision in ("promoted", "first_champion")


def spec_info(model: DownstreamModel) -> DatasetInfo:
    """The dataset description a model was trained for."""
    s = model.spec
    return DatasetInfo(
        s.task,
        tuple(s.classes),
        s.multilabel,
        s.sensor,
        tuple(s.bands),
        tuple(s.size),
        s.gsd_m,
        s.ignore_index,
    )  # type: ignore[arg-type]


def open_eval_split(model: DownstreamModel, root: Path, split: str) -> DownstreamDataset:
    """Open ``split`` of ``root`` the way ``model`` reads it, and check they agree.

    Raises:
        DatasetError: Missing or malformed split, or classes/bands that differ from the model's.
    """
    s = model.spec
    ds = open_dataset(
        s.task,
        root,
        split,
        sensor=s.sensor,
        bands=s.bands,
        label_mode="multi" if s.multilabel else "single",
        ignore_index=s.ignore_index,
    )
    check_compatible(ds.info, spec_info(model), f"{root} ({split})")
    return ds


def decide(challenger: float, champion: float | None, margin: float) -> str:
    """``first_champion``, ``promoted`` (challenger >= champion + margin) or ``rejected``."""
    if champion is None:
        return "first_champion"
    if math.isnan(challenger):
        return "rejected"
    if math.isnan(champion):
        return "promoted"
    return "promoted" if challenger - champion >= margin - 1e-12 else "rejected"


def evaluate_version(
    params: Params, name: str, version: str | int, *, data: str | Path | None = None, promote: bool = True
) -> Evaluation:
    """Score a challenger version against ``@champion`` and move the alias if it wins by the margin.

    Args:
        params: Parameters (``evaluate`` and ``registry`` sections).
        name: Registered model, e.g. ``a2mae-segmentation``.
        version: Challenger version.
        data: Dataset folder (default: the ``a2mae.data`` tag of the version).
        promote: Move the alias when the gate passes (False: report only).

    Returns:
        The evaluation (also written as ``a2mae.eval.*`` tags on the challenger version).

    Raises:
        RegistryError: Unknown model/version, or the version is already the champion.
        DatasetError: The split is missing, malformed, or does not fit a model.
    """
    import mlflow

    ev = params.evaluate
    alias = params.registry.champion_alias
    c = client(params)
    mv = aliases.get_version(c, name, version)
    version = str(mv.version)
    champ_mv = aliases.current(c, name, alias)
    if champ_mv is not None and str(champ_mv.version) == version:
        raise RegistryError(
            f"model {name} version {version} is already @{alias}; nothing to evaluate against"
        )
    root = (
        Path(data)
        if data is not None
        else (Path(mv.tags["a2mae.data"]) if mv.tags.get("a2mae.data") else None)
    )
    if root is None:
        raise RegistryError(f"model {name} version {version}: no a2mae.data tag; pass --data FOLDER")
    challenger = load_model(f"models:/{name}/{version}")
    ds = open_eval_split(challenger, root, ev.split)
    split_hash = ds.content_hash()
    kind = metric_kind(challenger.spec.task, challenger.spec.multilabel)
    metric = getattr(ev.primary_metric, kind)
    ch_metrics, ch_cm = engine.score(challenger, ds, ev.batch_size)
    champ_metrics: dict[str, float] = {}
    champion_score = None
    if champ_mv is not None:
        champion = load_model(f"models:/{name}/{champ_mv.version}")
        check_compatible(ds.info, spec_info(champion), f"champion version {champ_mv.version} on {root}")
        champ_metrics, _ = engine.score(champion, ds, ev.batch_size)
        champion_score = champ_metrics[metric]
    decision = decide(ch_metrics[metric], champion_score, ev.promotion_margin)

    configure(params)
    mlflow.set_experiment(ev.experiment)
    champ_v = None if champ_mv is None else str(champ_mv.version)
    tags = lineage_tags(
        params,
        stage="evaluate",
        model=name,
        challenger=version,
        champion=champ_v,
        data=str(root.resolve()),
        eval_split=ev.split,
        split_hash=split_hash,
        decision=decision,
    )
    with mlflow.start_run(run_name=f"{name}-v{version}-vs-champion", tags=tags) as run:
        mlflow.log_params(
            {
                "model": name,
                "challenger": version,
                "champion": champ_v or "none",
                "metric": metric,
                "margin": ev.promotion_margin,
                "split": ev.split,
            }
        )
        mlflow.log_metrics({f"challenger_{k}": v for k, v in ch_metrics.items() if math.isfinite(v)})
        mlflow.log_metrics({f"champion_{k}": v for k, v in champ_metrics.items() if math.isfinite(v)})
        if ch_cm is not None:
            with temp_dir() as d:
                p = d / f"confusion_v{version}.png"
                p.write_bytes(
                    confusion_png(ch_cm, challenger.spec.classes, f"{name} v{version} on {ev.split}")
                )
                mlflow.log_artifact(str(p))
    result = Evaluation(
        name=name,
        challenger=version,
        champion=champ_v,
        metric=metric,
        challenger_score=ch_metrics[metric],
        champion_score=champion_score,
        margin=ev.promotion_margin,
        decision=decision,
        split=ev.split,
        split_hash=split_hash,
        run_id=run.info.run_id,
        challenger_metrics=ch_metrics,
        champion_metrics=champ_metrics,
    )
    write_evidence(c, result, mv.run_id, None if champ_mv is None else champ_mv.run_id)
    if promote and result.promoted:
        reason = (
            f"evaluate: {metric} {result.challenger_score:.4f} vs champion "
            f"{'none' if champion_score is None else f'{champion_score:.4f}'} (margin {ev.promotion_margin})"
        )
        aliases.move(c, name, version, alias, "auto", reason, run.info.run_id)
    elif not promote and result.promoted:
        result.decision = f"{decision}_not_applied"
        c.set_model_version_tag(name, version, f"{EVAL_PREFIX}decision", result.decision)
    return result


def write_evidence(c: Any, e: Evaluation, challenger_run: str | None, champion_run: str | None) -> None:
    """Write the evaluation evidence on the challenger version as ``a2mae.eval.*`` tags."""
    tags = {
        "metric": e.metric,
        "challenger_score": repr(e.challenger_score),
        "champion_score": "none" if e.champion_score is None else repr(e.champion_score),
        "champion_version": e.champion or "none",
        "margin": repr(e.margin),
        "decision": e.decision,
        "split": e.split,
        "split_hash": e.split_hash,
        "run_id": e.run_id or "",
        "challenger_run_id": challenger_run or "",
        "champion_run_id": champion_run or "none",
        "at": aliases.now_iso(),
    }
    for k, v in tags.items():
        c.set_model_version_tag(e.name, e.challenger, f"{EVAL_PREFIX}{k}", v)
