"""The new-imagery watcher: one ``a2mae.scene.arrived`` event per new scene in a folder or prefix.

A scheduled flow lists a folder or ``s3://`` prefix and emits one event per new (or rewritten) scene;
the retrain deployment's trigger reacts to them.

Prefect's open-source server has events and automations but no webhooks, so this sensor flow is how
an upload starts a retrain. Scenes are grouped by :func:`a2mae.ingest.discover.discover` (the same
grouping ingest uses) and recognised by their listing fingerprint (URIs, sizes, S3 ETags or mtimes).
A scene is reported once its listing has stayed the same for ``settle_polls`` runs, so a folder still
being uploaded is not announced half-way. The state (what was reported, what is settling) is a JSON
file under ``<infra.home>/watcher/``, written atomically after the events went out.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from flows.common import log, params_from, table
from flows.params import WatchParams

EVENT = "a2mae.scene.arrived"
RESOURCE_PREFIX = "a2mae.scene."


@task(name="list-scenes", retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE)
def list_scenes(uri: str, doc: dict[str, Any]) -> dict[str, str]:
    """``{scene source: listing fingerprint}`` under ``uri`` (empty when nothing is there yet)."""
    from a2mae.ingest.discover import discover
    from a2mae.ingest.scene_reader import listing_fingerprint
    from a2mae.io.storage import S3Settings, is_s3, list_files
    from a2mae.sensors import get_registry
    from a2mae.sensors.detect import band_vocabulary

    params = params_from(doc)
    settings = S3Settings.from_params(params.data.s3)
    if not is_s3(uri) and not Path(uri).exists():
        return {}
    if not list_files(uri, settings):
        return {}
    found = discover([uri], band_vocabulary(get_registry(params.data.sensor_files)), settings)
    return {spec.source: listing_fingerprint(spec) for spec in found.scenes}


def _state_path(folder: Path, uri: str) -> Path:
    return folder / f"{hashlib.sha256(uri.encode()).hexdigest()[:16]}.json"


def _load(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"reported": {}, "settling": {}}
    return {"reported": dict(doc.get("reported", {})), "settling": dict(doc.get("settling", {}))}


def _save(path: Path, uri: str, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"uri": uri, **state}, indent=1, sort_keys=True))
    os.replace(tmp, path)


def plan(
    listing: dict[str, str], state: dict[str, Any], settle_polls: int
) -> tuple[list[str], dict[str, Any]]:
    """Which scenes to report now, and the next state (pure; the unit tests drive it).

    A scene is due when its fingerprint differs from the reported one and has been seen unchanged
    ``settle_polls`` times before (``settling`` counts the sightings of the latest fingerprint).
    """
    reported, settling = dict(state["reported"]), {}
    due = []
    for source, fp in sorted(listing.items()):
        if reported.get(source) == fp:
            continue
        prev_fp, seen = state["settling"].get(source, (None, 0))
        seen = seen + 1 if prev_fp == fp else 1
        if seen > settle_polls:
            due.append(source)
            reported[source] = fp
        else:
            settling[source] = (fp, seen)
    return due, {"reported": reported, "settling": settling}


@flow(name="watch-scenes", log_prints=True)
def watch_scenes(params: WatchParams) -> dict[str, Any]:
    """List the watched location and emit an ``a2mae.scene.arrived`` event per new scene.

    Args:
        params: Folder or s3:// prefix to watch, settling and state folder.

    Returns:
        The scenes reported by this run and how many are still settling.
    """
    p = params.resolve()
    doc = p.model_dump(mode="json")
    uri = params.path(params.uri)
    home = os.environ.get("A2MAE_INFRA_HOME") or params.path(p.infra.home)
    folder = Path(params.path(params.state_dir)) if params.state_dir else Path(home) / "watcher"
    path = _state_path(folder, uri)
    listing = list_scenes(uri, doc)
    due, state = plan(listing, _load(path), params.settle_polls)
    for source in due:
        emit_event(
            event=EVENT,
            resource={"prefect.resource.id": f"{RESOURCE_PREFIX}{source}", "a2mae.watch": uri},
            payload={"uri": source, "fingerprint": listing[source]},
        )
    _save(path, uri, state)
    table(
        "new-scenes", [{"scene": s, "fingerprint": listing[s][:16]} for s in due], f"New scenes under {uri}"
    )
    log(f"watch: {len(listing)} scene(s) under {uri}; {len(due)} new; {len(state['settling'])} settling")
    return {"uri": uri, "new": due, "settling": sorted(state["settling"]), "scenes": len(listing)}
