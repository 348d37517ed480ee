"""The new-imagery watcher: events per scene seen in a folder or prefix, ``a2mae.scene.arrived`` per new one.

A scheduled flow lists a folder or ``s3://`` prefix and tells what it sees, scene by scene, as events
and a table artifact (the Prefect UI shows both at once):

* ``a2mae.scene.settling`` -- a new (or rewritten) scene seen for the first time; it is announced once
  its listing stays the same for ``settle_polls`` more listings;
* ``a2mae.scene.arrived`` -- the scene settled and is not in the catalog: the retrain deployment's
  trigger starts a run (the scene is *queued*);
* ``a2mae.scene.already-ingested`` -- the scene settled but the catalog already holds it (same listing,
  or the same files copied elsewhere): no retrain is started, and the event says which record it is.

Prefect's open-source server has events and automations but no webhooks, so this sensor flow is how
an upload starts a retrain. Scenes are grouped by :func:`a2mae.ingest.discover.discover` (the same
grouping ingest uses) and recognised by their listing fingerprint (URIs, sizes, S3 ETags or mtimes).
A scene is reported once its listing has stayed the same for ``settle_polls`` runs, so a folder still
being uploaded is not announced half-way. The state (what was reported, what is settling, when the
last run was) is a JSON file under ``<infra.home>/watcher/``, written atomically after the events
went out.

With ``infra.watch_stac`` the watcher searches the STAC API of ``a2mae collect`` instead
(:func:`a2mae.collect.watch.stac_listing`): new items over the sampled locations acquired since its
last run (minus ``collect.watch_lookback_days``), named ``stac:<collection>/<id>``. A published item is
complete, so it is reported at once; the triggered retrain runs ``collect`` first.
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
SETTLING_EVENT = "a2mae.scene.settling"
KNOWN_EVENT = "a2mae.scene.already-ingested"
RESOURCE_PREFIX = "a2mae.scene."
#: Resource prefix of the STAC watcher's events (``a2mae.stac.stac:<collection>/<id>``): the retrain
#: trigger follows them; the predict trigger (scenes as files) does not.
STAC_RESOURCE_PREFIX = "a2mae.stac."


@task(name="search-stac", retries=2, retry_delay_seconds=[5, 20], cache_policy=NO_CACHE)
def list_stac_items(doc: dict[str, Any], last_run: str | None) -> dict[str, str]:
    """``{"stac:<collection>/<id>": content hash}`` of the items over the locations since the last run."""
    from datetime import datetime

    from a2mae.collect.watch import since_of, stac_listing

    params = params_from(doc)
    from a2mae.sensors import get_registry

    since = since_of(datetime.fromisoformat(last_run) if last_run else None, params.collect)
    return stac_listing(params.collect, get_registry(params.data.sensor_files), since)


def _discover(uri: str, doc: dict[str, Any]) -> list[Any]:
    from a2mae.ingest.discover import discover
    from a2mae.io.storage import is_s3, list_files
    from a2mae.sensors import get_registry
    from a2mae.sensors.detect import band_vocabulary

    params = params_from(doc)
    settings = params.data.s3.settings()
    if not is_s3(uri) and not Path(uri).exists():
        return []
    if not list_files(uri, settings):
        return []
    return discover([uri], band_vocabulary(get_registry(params.data.sensor_files)), settings).scenes


@task(name="stac-in-catalog", retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE)
def stac_in_catalog(items: dict[str, str], doc: dict[str, Any]) -> dict[str, str | None]:
    """``{item name: scene id of its catalog record (same content hash), or None}``."""
    from a2mae.collect.watch import catalog_ids

    return catalog_ids(items, params_from(doc).data.catalog)


@task(name="list-scenes", retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE)
def list_scenes(uri: str, doc: dict[str, Any]) -> dict[str, str]:
    """``{scene source: listing fingerprint}`` under ``uri`` (empty when nothing is there yet)."""
    from a2mae.ingest.scene_reader import listing_fingerprint

    return {spec.source: listing_fingerprint(spec) for spec in _discover(uri, doc)}


@task(name="match-catalog", retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE)
def match_catalog(uri: str, sources: list[str], doc: dict[str, Any]) -> dict[str, str | None]:
    """``{scene source: scene id of its catalog record, or None}`` for the settled ``sources``."""
    from a2mae.ingest.run import catalog_matches

    params = params_from(doc)
    specs = [s for s in _discover(uri, doc) if s.source in set(sources)]
    found = catalog_matches(specs, params.data.catalog, params.data.s3.settings())
    return {source: (r.scene_id if r is not None else None) for source, r in found.items()}


def _state_path(folder: Path, uri: str) -> Path:
    return folder / f"{hashlib.sha256(uri.encode()).hexdigest()[:16]}.json"


def _load(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"reported": {}, "settling": {}, "last_run": None}
    return {
        "reported": dict(doc.get("reported", {})),
        "settling": dict(doc.get("settling", {})),
        "last_run": doc.get("last_run"),
    }


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


def first_sightings(state: dict[str, Any]) -> list[str]:
    """Scenes whose current listing was seen for the first time (the next state of :func:`plan`)."""
    return sorted(source for source, (_fp, seen) in state["settling"].items() if seen == 1)


def _announce(
    uri: str,
    listing: dict[str, str],
    settling: list[str],
    due: dict[str, str | None],
    settle_polls: int,
    prefix: str = RESOURCE_PREFIX,
) -> list[dict[str, str]]:
    """Emit one event per scene whose status changed; returns the rows of the status table."""
    rows = []
    for source in settling:
        wait = f"{settle_polls} more listing" + ("s" if settle_polls > 1 else "")
        rows.append({"scene": source, "status": "settling", "next": f"announced if unchanged for {wait}"})
        _emit(SETTLING_EVENT, uri, source, listing[source], {"listings_to_wait": settle_polls}, prefix)
    for source, scene_id in sorted(due.items()):
        if scene_id is None:
            rows.append(
                {"scene": source, "status": "queued", "next": "retrain/on-new-imagery starts a retrain run"}
            )
            _emit(EVENT, uri, source, listing[source], {}, prefix)
        else:
            rows.append(
                {
                    "scene": source,
                    "status": "already ingested",
                    "next": f"in the catalog as {scene_id}: no retrain started",
                }
            )
            _emit(KNOWN_EVENT, uri, source, listing[source], {"scene_id": scene_id}, prefix)
    return rows


def _emit(event: str, uri: str, source: str, fingerprint: str, extra: dict[str, Any], prefix: str) -> None:
    emit_event(
        event=event,
        resource={"prefect.resource.id": f"{prefix}{source}", "a2mae.watch": uri},
        payload={"uri": source, "fingerprint": fingerprint, **extra},
    )


@flow(name="watch-scenes", log_prints=True)
def watch_scenes(params: WatchParams) -> dict[str, Any]:
    """List the watched location; tell each scene's status; emit ``a2mae.scene.arrived`` per new scene.

    Args:
        params: Folder or s3:// prefix to watch, settling and state folder.

    Returns:
        The scenes announced (new), found in the catalog already (known) and still settling.
    """
    from datetime import UTC, datetime

    p = params.resolve()
    doc = p.model_dump(mode="json")
    uri = f"stac+{p.collect.stac_url}" if params.stac else params.path(params.uri)
    home = os.environ.get("A2MAE_INFRA_HOME") or params.path(p.infra.home)
    folder = Path(params.path(params.state_dir)) if params.state_dir else Path(home) / "watcher"
    path = _state_path(folder, uri)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    previous = _load(path)
    if params.stac:  # a published item is complete: no settling; a collected one is in the catalog already
        listing = list_stac_items(doc, previous["last_run"])
        settled, state = plan(listing, previous, 0)
        due = stac_in_catalog({s: listing[s] for s in settled}, doc) if settled else {}
        rows = _announce(uri, listing, [], due, 0, STAC_RESOURCE_PREFIX)
    else:
        listing = list_scenes(uri, doc)
        settled, state = plan(listing, previous, params.settle_polls)
        due = match_catalog(uri, settled, doc) if settled else {}
        rows = _announce(uri, listing, first_sightings(state), due, params.settle_polls)
    state["last_run"] = started
    _save(path, uri, state)
    for row in rows:
        log(f"watch: {row['scene']}: {row['status']} ({row['next']})")
    table("watch-scenes", rows, f"Scenes seen under {uri}: what happens next")
    new = sorted(s for s, scene_id in due.items() if scene_id is None)
    known = sorted(s for s, scene_id in due.items() if scene_id is not None)
    log(
        f"watch: {len(listing)} scene(s) under {uri}; {len(new)} new, {len(known)} already ingested, "
        f"{len(state['settling'])} settling"
    )
    settling = sorted(state["settling"])
    return {"uri": uri, "new": new, "known": known, "settling": settling, "scenes": len(listing)}
