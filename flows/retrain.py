"""The parent flow ``retrain``: the whole pipeline on new imagery.

New imagery (optionally gathered from a STAC API first: ``collect``) -> ingest -> tile -> DVC snapshot
-> pre-train (from the champion encoder when there is one) -> fine-tune -> evaluate -> promote if better.

Each stage is a subflow (its own run, parameters and artifacts in the UI) over the same library
functions as the CLI. Tasks pass paths, URIs and small dicts, never tensors. When the snapshot's DVC
hash is the one the champion encoder was trained on, training is skipped (``force`` overrides), so
duplicate triggers for one batch of scenes cost an ingest listing and a cache hit. The snapshot's DVC
hash is recorded on every MLflow run and registered version the retrain produced.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.collect import collect_flow
from flows.common import (
    emit_promoted,
    flow_run_link,
    log,
    markdown,
    md_link,
    mlflow_run_path,
    mlflow_version_path,
    stage,
)
from flows.evaluate import evaluate_flow
from flows.finetune import finetune_flow
from flows.ingest import ingest_flow
from flows.params import (
    CollectParams,
    EvaluateParams,
    FinetuneParams,
    IngestParams,
    PretrainParams,
    RetrainParams,
    TileParams,
)
from flows.pretrain import pretrain_flow
from flows.tile import tile_flow
from flows.version import DVC_TAG, champion_snapshot, tag_lineage, version_snapshot


@task(name="promote-encoder", retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE)
def promote_encoder(doc: dict[str, Any], version: str, reason: str) -> None:
    """Move the encoder's champion alias to the version behind the newly promoted downstream model."""
    from a2mae.config import validate_params
    from a2mae.registry import aliases
    from a2mae.tracking.client import client

    p = validate_params(doc)
    aliases.move(
        client(p.registry), p.registry.encoder_model, str(version), p.registry.champion_alias, "auto", reason
    )


def _summary(doc: dict[str, Any], out: dict[str, Any]) -> None:
    """The retrain's summary artifact: what each stage did, with links to the MLflow pages."""
    from a2mae.tracking.client import tracking_uri

    p = _params(doc)
    uri = tracking_uri(p.registry)
    snap = out["snapshot"]
    lines = [
        "### a2mae retrain",
        f"- scenes: {len(out['ingest']['added'])} added, {out['ingest']['present']} already in the catalog",
        f"- snapshot `{out['tile']['snapshot_id']}`, DVC hash `{snap.get('md5')}` on remote "
        f"`{snap.get('remote')}`, git commit `{snap.get('git_commit')}`",
    ]
    if out.get("new_scene"):
        got = "ingested" if out["ingest"]["added"] else "already in the catalog: nothing new was ingested"
        lines.insert(1, f"- triggered by the new scene `{out['new_scene']}`: {got}")
    if out.get("skipped"):
        lines.append(
            "- training skipped: the champion encoder was trained on this snapshot (force retrains anyway)"
        )
    else:
        lines += _trained_lines(uri, p.registry.encoder_model, out)
    markdown("retrain-summary", "\n".join(lines), description="What this retrain did")


def _trained_lines(uri: str, encoder: str, out: dict[str, Any]) -> list[str]:
    """Summary lines of the trained stages: runs and versions as links to their MLflow pages."""
    pre, ft, ev = out["pretrain"], out["finetune"], out["evaluate"]
    pre_run = md_link(uri, mlflow_run_path(pre["experiment_id"], pre["run_id"]), pre["run_name"])
    ft_run = md_link(
        uri, mlflow_run_path(ft["experiment_id"], ft["run_id"]), f"{ft['task']} {ft['protocol']}"
    )
    champion = f"v{ev['champion']}" if ev["champion"] else "none"
    enc_v = md_link(uri, mlflow_version_path(encoder, pre["version"]), f"{encoder} v{pre['version']}")
    model, version = ft["model"], ft["version"]
    ft_v = md_link(uri, mlflow_version_path(model, version), f"{model} v{version}")
    lines = [
        f"- pre-training run {pre_run}: {enc_v} (start: {pre['start']})",
        f"- fine-tuning run {ft_run}: {ft_v}, {ft['metric']} {ft['score']:.4f}",
    ]
    verdict = f"**{ev['decision']}** (champion before: {champion})"
    if ev.get("run_id") and ev.get("experiment_id"):
        ev_run = md_link(uri, mlflow_run_path(ev["experiment_id"], ev["run_id"]), "evaluation run")
        lines.append(f"- {ev_run}: {verdict}")
    else:
        lines.append(f"- evaluation: {verdict}")
    lines.append(f"- MLflow: {md_link(uri, '#/models/' + model, model)} (its versions and aliases)")
    return lines


def _params(doc: dict[str, Any]) -> Any:
    from a2mae.config import validate_params

    return validate_params(doc)


_DEFAULT = RetrainParams()


@flow(name="retrain", log_prints=True)
def retrain(params: RetrainParams = _DEFAULT) -> dict[str, Any]:
    """Run the whole pipeline on new imagery and promote the result if it beats the champion.

    Args:
        params: The pipeline's settings, one section per stage (defaults from the workspace's
            params.yaml).

    Returns:
        What each stage did: scenes, snapshot and its DVC hash, runs, versions, the decision.
    """
    p = params.resolve()
    doc = p.model_dump(mode="json")
    common: dict[str, Any] = {"project_dir": params.project_dir, "overrides": params.as_overrides()}
    new_scene = params.ingest.new_scene
    if new_scene:
        log(f"retrain: triggered by new scene {new_scene}")
    out: dict[str, Any] = {"new_scene": new_scene}
    if params.ingest.collect:
        out["collect"] = collect_flow(CollectParams.from_params(p, **common))
    out["ingest"] = ingest_flow(IngestParams.from_params(p, sources=params.ingest.sources, **common))
    out["tile"] = tile_flow(TileParams.from_params(p, **common))
    version = params.version
    snap = version_snapshot(params.project_dir, doc, p.tile.snapshot, version.dvc_remote, version.git_commit)
    out["snapshot"] = snap
    md5 = snap.get("md5")
    commit = f", git commit {str(snap['git_commit'])[:10]}" if snap.get("git_commit") else ""
    stage("version", f"DVC {str(md5)[:12]} on remote {snap.get('remote')}{commit}")
    if md5 and not params.force and champion_snapshot(doc) == md5:
        out["skipped"] = True
        _summary(doc, out)
        stage("train", "skipped: the champion encoder was trained on this snapshot (force retrains anyway)")
        return out
    pre = pretrain_flow(PretrainParams.from_params(p, from_champion=params.pretrain.from_champion, **common))
    encoder = f"models:/{p.registry.encoder_model}/{pre['version']}"
    ft = finetune_flow(FinetuneParams.from_params(p, encoder=encoder, **common))
    ev = evaluate_flow(
        EvaluateParams.from_params(
            p, model=ft["model"], version=ft["version"], promote=params.evaluate.promote, **common
        )
    )
    out.update(pretrain=pre, finetune=ft, evaluate=ev)
    if ev["promoted"]:
        promote_encoder(doc, pre["version"], f"retrain: {ft['model']} v{ft['version']} {ev['decision']}")
        emit_promoted(ft["model"], ft["version"], encoder_version=pre["version"], snapshot_dvc_hash=md5)
    tags = {DVC_TAG: md5 or "none", "a2mae.snapshot_git_commit": snap.get("git_commit") or "none"}
    link, _ = flow_run_link()  # the retrain behind every run and version it produced
    tags.update({k.replace(".flow_run", ".retrain_flow_run"): v for k, v in link.items() if ".flow_run" in k})
    versions = [(p.registry.encoder_model, pre["version"]), (ft["model"], str(ft["version"]))]
    tag_lineage(doc, tags, [pre["run_id"], ft["run_id"], ev["run_id"]], versions)
    _summary(doc, out)
    log(f"retrain: {ft['model']} v{ft['version']} {ev['decision']}")
    return out
