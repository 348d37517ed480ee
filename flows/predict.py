"""Predict flow: apply the champion (or a given version) to the area of interest or to new scenes.

Calls :func:`a2mae.predict.run.predict`, the function behind ``a2mae predict``. Deployments
(``flows/serve.py``): ``predict/predict`` on demand; ``predict/on-promotion`` started by the
``a2mae.model.promoted`` event of ``retrain`` (re-runs ``predict.aoi`` with the promoted version);
``predict/on-new-scene`` started by ``a2mae.scene.arrived`` (predicts the new scene with
``predict.model``). Each run writes a new sub-folder ``<output>/<UTC time>-<model>-v<version>`` (a
folder or an ``s3://`` prefix) and leaves artifacts: a link per output and a preview PNG of each map.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_link_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import PROMOTED_EVENT, artifact_key, log, markdown, params_from
from flows.params import PredictParams

__all__ = ["PROMOTED_EVENT", "predict_flow", "run_folder"]


def run_folder(output: str, model_uri: str, now: datetime | None = None) -> str:
    """``<output>/<UTC time>-<model>-v<version or alias>``: a fresh folder per run."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", model_uri.removeprefix("models:/")).strip("-")
    return f"{output.rstrip('/')}/{stamp}-{tail}"


@task(name="predict", cache_policy=NO_CACHE)
def predict_task(doc: dict[str, Any], sources: list[str], model: str, out: str) -> dict[str, Any]:
    """Run the predict stage; returns the report (outputs, windows, model provenance)."""
    from dataclasses import asdict

    from a2mae.predict.run import predict

    report = predict(sources, out, params_from(doc), model_uri=model, progress=False)
    return asdict(report)


def _model_registered(doc: dict[str, Any], model: str) -> bool:
    """Whether ``model`` names a registered version (a new scene may arrive before any champion)."""
    from a2mae.predict.model import is_registered
    from a2mae.tracking.client import tracking_uri

    return is_registered(model, tracking_uri(params_from(doc).registry))


def _preview_markdown(out: str, report: dict[str, Any]) -> str:
    """Markdown with the preview PNG of every map (inline, so it shows for S3 outputs too)."""
    from a2mae.io.storage import is_s3

    lines = [f"### a2mae predict: {report['task']}", f"- model `{report['model']['model_uri']}` "
             f"(v{report['model']['model_version']}, run `{report['model']['run_id']}`)",
             f"- {report['windows']} windows, {report['pixels']} input pixels in {report['seconds']:.1f} s",
             f"- outputs: `{out}`"]  # fmt: skip
    for o in report["outputs"]:
        lines.append(f"- **{o['key']}**: " + ", ".join(f"`{Path(f).name}`" for f in o["files"]))
        png = next((f for f in o["files"] if f.endswith("preview.png")), None)
        if png and not is_s3(out):
            data = base64.b64encode((Path(out) / png).read_bytes()).decode()
            lines.append(f"\n![{o['key']}](data:image/png;base64,{data})\n")
    return "\n".join(lines)


def _artifacts(out: str, report: dict[str, Any]) -> None:
    from a2mae.io.storage import is_s3

    for o in report["outputs"]:
        for f in o["files"]:
            url = f"{out.rstrip('/')}/{f}" if is_s3(out) else (Path(out) / f).resolve().as_uri()
            create_link_artifact(
                url,
                link_text=f,
                key=artifact_key("predict", o["key"][-40:], Path(f).stem),
                description=o["key"],
            )
    markdown("predict-summary", _preview_markdown(out, report), description="Maps of this predict run")


_DEFAULT = PredictParams()


@flow(name="predict", log_prints=True)
def predict_flow(params: PredictParams = _DEFAULT) -> dict[str, Any]:
    """Apply a model to the area of interest (or to a new scene) and publish the outputs.

    Args:
        params: Model, scenes, output location and windowing (defaults from params.yaml).

    Returns:
        The predict report (output folder, model provenance, files per scene), or ``skipped``.
    """
    p = params.resolve()
    doc = p.model_dump(mode="json")
    sources = (
        [params.path(params.new_scene)] if params.new_scene else [params.path(s) for s in params.sources]
    )
    if not sources:
        log("predict: no scene (predict.aoi is empty and no new scene was given); nothing to do")
        return {"skipped": True}
    if params.new_scene and not _model_registered(doc, params.model):  # a scene before any champion
        log(f"predict: {params.model} is not registered yet; new scenes are predicted once one is promoted")
        return {"skipped": True}
    out = run_folder(params.path(params.output), params.model)
    report = predict_task(doc, sources, params.model, out)
    _artifacts(out, report)
    log(f"predict: {report['task']} of {params.model} on {len(report['outputs'])} scene(s) -> {out}")
    return report
