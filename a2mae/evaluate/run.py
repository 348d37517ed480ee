"""Challenger vs champion on the same frozen evaluation split, with a gated move of ``@champion``.

:func:`evaluate_version` loads the challenger version (pickle-free) and the current ``@champion`` of the
same registered model, opens the challenger's evaluation split (``evaluate.split`` of the dataset
recorded on the version, or ``data``), checks both models fit it, scores both on it, and promotes the
challenger only when its primary metric beats the champion's by at least ``evaluate.promotion_margin``.
With no champion yet, the challenger becomes the first one. The evidence is written on the challenger
version as ``a2mae.eval.*`` tags and the scores are logged in an MLflow run of ``evaluate.experiment``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from a2mae import tasks
from a2mae.config import EvaluateConfig, Params, RegistryConfig, params_to_flat
from a2mae.finetune import engine
from a2mae.models.downstream import DownstreamModel
from a2mae.registry import aliases
from a2mae.registry.downstream import load_model
from a2mae.registry.errors import RegistryError
from a2mae.tasks.base import Metrics, open_dataset
from a2mae.tasks.data import DatasetInfo, DownstreamDataset, check_compatible
from a2mae.tracking.client import client, temp_dir, use_experiment
from a2mae.tracking.context import description_tags
from a2mae.tracking.lineage import lineage_tags

EVAL_PREFIX = "a2mae.eval."


class ChampionMovedError(RegistryError):
    """``@champion`` moved between reading it and promoting a challenger scored against it."""


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
        (s.size[0], s.size[1]),  # validated to two entries
        s.gsd_m,
        s.ignore_index,
    )


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


@dataclass
class _Scores:
    """Both models scored on the challenger's evaluation split (see :func:`_score_both`).

    Attributes:
        challenger: The loaded challenger model.
        root: The dataset folder.
        split_hash: Content hash of the evaluation split.
        metric: Primary metric name.
        challenger_metrics: All metrics of the challenger.
        scored: The challenger's accumulated metrics (its ``figures()``: the confusion matrix, or
            multi-label precision-recall curves and per-class counts).
        champion_metrics: All metrics of the champion (empty without one).
        champion_score: The champion's primary metric (None without one).
        decision: ``first_champion``, ``promoted`` or ``rejected`` (see :func:`decide`).
    """

    challenger: DownstreamModel
    root: Path
    split_hash: str
    metric: str
    challenger_metrics: dict[str, float]
    scored: Metrics
    champion_metrics: dict[str, float]
    champion_score: float | None
    decision: str


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
        ChampionMovedError: ``@champion`` moved while the versions were scored (nothing promoted).
        RegistryBusyError: Other writers held the model's alias history for too long.
        DatasetError: The split is missing, malformed, or does not fit a model.
    """
    ev = params.evaluate
    c = client(params.registry)
    mv, champ_mv = _challenger_and_champion(c, name, version, params.registry.champion_alias)
    version = str(mv.version)
    scores = _score_both(ev, name, mv, champ_mv, _eval_root(mv, name, data))
    champ_v = None if champ_mv is None else str(champ_mv.version)
    lineage = functools.partial(lineage_tags, params_to_flat(params))
    run_id = _log_evaluation_run(ev, params.registry, lineage, (name, version, champ_v), scores)
    result = Evaluation(
        name=name,
        challenger=version,
        champion=champ_v,
        metric=scores.metric,
        challenger_score=scores.challenger_metrics[scores.metric],
        champion_score=scores.champion_score,
        margin=ev.promotion_margin,
        decision=scores.decision,
        split=ev.split,
        split_hash=scores.split_hash,
        run_id=run_id,
        challenger_metrics=scores.challenger_metrics,
        champion_metrics=scores.champion_metrics,
    )
    runs = (mv.run_id, None if champ_mv is None else champ_mv.run_id)
    _apply_decision(c, ev, params.registry.champion_alias, result, runs, promote)
    return result


def _challenger_and_champion(c: Any, name: str, version: str | int, alias: str) -> tuple[Any, Any | None]:
    """The challenger's model version and the current ``@alias`` version (None when there is none).

    Raises:
        RegistryError: Unknown model or version, or the challenger already holds the alias.
    """
    mv = aliases.get_version(c, name, version)
    champ_mv = aliases.current(c, name, alias)
    if champ_mv is not None and str(champ_mv.version) == str(mv.version):
        raise RegistryError(
            f"model {name} version {mv.version} is already @{alias}; nothing to evaluate against"
        )
    return mv, champ_mv


def _eval_root(mv: Any, name: str, data: str | Path | None) -> Path:
    """The dataset folder: ``data``, else the ``a2mae.data`` tag the version was registered with.

    Raises:
        RegistryError: Neither is there.
    """
    if data is not None:
        return Path(data)
    if mv.tags.get("a2mae.data"):
        return Path(mv.tags["a2mae.data"])
    raise RegistryError(f"model {name} version {mv.version}: no a2mae.data tag; pass --data FOLDER")


def _score_both(ev: EvaluateConfig, name: str, mv: Any, champ_mv: Any | None, root: Path) -> _Scores:
    """Load the challenger, open its evaluation split, score it and the champion there, and decide.

    The split is opened the way the challenger reads it; the champion must fit the same split (same
    classes and bands), so both are scored on exactly the same chips.

    Raises:
        DatasetError: The split is missing or malformed, or does not fit one of the models.
    """
    challenger = load_model(f"models:/{name}/{mv.version}")
    ds = open_eval_split(challenger, root, ev.split)
    split_hash = ds.content_hash()
    metric = tasks.get(challenger.spec.task).primary_metric(ev.primary_metric, challenger.spec.multilabel)
    ch_metrics, ch_scored = engine.score(challenger, ds, ev.batch_size)
    champ_metrics: dict[str, float] = {}
    champion_score = None
    if champ_mv is not None:
        champion = load_model(f"models:/{name}/{champ_mv.version}")
        check_compatible(ds.info, spec_info(champion), f"champion version {champ_mv.version} on {root}")
        champ_metrics, _ = engine.score(champion, ds, ev.batch_size)
        champion_score = champ_metrics[metric]
    decision = decide(ch_metrics[metric], champion_score, ev.promotion_margin)
    return _Scores(
        challenger, root, split_hash, metric, ch_metrics, ch_scored, champ_metrics, champion_score, decision
    )


def _log_evaluation_run(
    ev: EvaluateConfig,
    registry: RegistryConfig,
    lineage: Callable[..., dict[str, str]],
    versions: tuple[str, str, str | None],
    scores: _Scores,
) -> str:
    """Log the evaluation as an MLflow run of ``evaluate.experiment`` and return its id.

    ``versions`` is ``(model name, challenger version, champion version or None)``; ``lineage`` makes
    the lineage tags of the run's parameters (:func:`a2mae.tracking.lineage.lineage_tags`).

    The run holds lineage tags (with the decision), the gate's parameters, both models' metrics
    (``challenger_*``, ``champion_*``; non-finite values left out) and the challenger's figures.
    """
    import mlflow

    name, version, champ_v = versions
    use_experiment(registry, ev.experiment)
    tags = lineage(
        stage="evaluate",
        model=name,
        challenger=version,
        champion=champ_v,
        data=str(scores.root.resolve()),
        eval_split=ev.split,
        split_hash=scores.split_hash,
        decision=scores.decision,
    )
    champion = f"v{champ_v}" if champ_v else "none yet"
    champ_score = "-" if scores.champion_score is None else f"{scores.champion_score:.4f}"
    tags.update(
        description_tags(
            f"Evaluation of {name} v{version} against @{registry.champion_alias} ({champion}) on "
            f"the frozen `{ev.split}` split: **{scores.decision}**.",
            f"{scores.metric}: challenger {scores.challenger_metrics[scores.metric]:.4f}, champion "
            f"{champ_score}, promotion margin {ev.promotion_margin}",
            f"data `{scores.root}`, split hash `{scores.split_hash[:12]}`",
        )
    )
    with mlflow.start_run(run_name=f"{name}-v{version}-vs-champion", tags=tags) as run:
        mlflow.log_params(
            {
                "model": name,
                "challenger": version,
                "champion": champ_v or "none",
                "metric": scores.metric,
                "margin": ev.promotion_margin,
                "split": ev.split,
            }
        )
        mlflow.log_metrics(
            {f"challenger_{k}": v for k, v in scores.challenger_metrics.items() if math.isfinite(v)}
        )
        mlflow.log_metrics(
            {f"champion_{k}": v for k, v in scores.champion_metrics.items() if math.isfinite(v)}
        )
        title = f"{name} v{version} on {ev.split}"
        figures = scores.scored.figures(list(scores.challenger.spec.classes), title)
        if figures:
            with temp_dir() as d:
                for file_name, png in figures.items():
                    p = d / f"{Path(file_name).stem}_v{version}.png"
                    p.write_bytes(png)
                    mlflow.log_artifact(str(p))
    return str(run.info.run_id)


def _apply_decision(
    c: Any,
    ev: EvaluateConfig,
    alias: str,
    result: Evaluation,
    runs: tuple[str | None, str | None],
    promote: bool,
) -> None:
    """Write the evidence and move ``@alias`` (the champion) to a winner, under the model's history lock.

    A winner is promoted in one transaction (:func:`a2mae.registry.aliases.transaction`) that first reads
    the champion again: when it is no longer the one the challenger was scored against, nothing moves,
    the decision becomes ``champion_moved`` and the evaluation is refused. A winner that is not promoted
    (``promote`` off) gets the decision ``<decision>_not_applied`` (on ``result`` and as the
    ``a2mae.eval.decision`` tag), so the version's tags never claim a move that did not happen.

    Args:
        c: MLflow client.
        ev: The ``evaluate`` section (promotion margin).
        alias: ``registry.champion_alias``.
        result: The evaluation; its ``decision`` is updated.
        runs: Fine-tuning runs of the challenger and the champion.
        promote: Move the alias when the gate passes.

    Raises:
        ChampionMovedError: The champion changed while the challenger was scored (one line, exit 2).
        RegistryBusyError: Other writers held the model's history for too long.
    """
    if not (promote and result.promoted):
        if result.promoted:
            result.decision = f"{result.decision}_not_applied"
        write_evidence(c, result, *runs)
        return
    with aliases.transaction(c, result.name, alias) as tx:
        if tx.champion != result.champion:
            result.decision = "champion_moved"
            write_evidence(c, result, *runs)
            if result.run_id:
                c.set_tag(result.run_id, "a2mae.decision", result.decision)
            compared = f"v{result.champion}" if result.champion else "unset"
            now = f"v{tx.champion}" if tx.champion else "unset"
            raise ChampionMovedError(
                f"model {result.name}: @{alias} moved from {compared} to {now} while version "
                f"{result.challenger} was evaluated; nothing promoted (a2mae.eval.decision=champion_moved); "
                f"run `a2mae evaluate {result.name} {result.challenger}` again"
            )
        write_evidence(c, result, *runs)
        champion = "none" if result.champion_score is None else f"{result.champion_score:.4f}"
        reason = (
            f"evaluate: {result.metric} {result.challenger_score:.4f} vs champion "
            f"{champion} (margin {ev.promotion_margin})"
        )
        tx.move(result.challenger, "auto", reason, result.run_id)


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
