"""Collect flow: gather co-located scenes from a STAC API into the scene catalog.

Calls :func:`a2mae.collect.run.collect`, the function behind ``a2mae collect``. The searches are a task
(retried: a STAC API may throttle); it is never cached, since the catalog served changes over time.
A table artifact lists the scenes added, updated and already present.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.common import log, params_from, table
from flows.params import CollectParams


@task(name="collect-scenes", retries=2, retry_delay_seconds=[5, 20], cache_policy=NO_CACHE)
def collect_scenes(doc: dict[str, Any], locations: str | None) -> dict[str, Any]:
    """Search the STAC API and merge the best scenes into the catalog; returns a summary."""
    from a2mae.collect.run import collect

    params = params_from(doc)
    report = collect(params, locations=locations, progress=False)
    rows = [
        {
            "status": status,
            "scene_id": r.scene_id,
            "sensor": r.sensor,
            "period": r.period,
            "datetime": r.datetime.isoformat() if r.datetime else "",
            "cloud_fraction": r.cloud_fraction,
            "source": r.source,
        }
        for status, recs in (
            ("added", report.added),
            ("updated", report.updated),
            ("present", report.present),
        )
        for r in recs
    ]
    return {
        "catalog": str(report.catalog),
        "added": [r.scene_id for r in report.added],
        "updated": len(report.updated),
        "present": len(report.present),
        "failed": report.failed,
        "empty": report.empty,
        "summary": report.summary(),
        "rows": rows,
    }


_DEFAULT = CollectParams()


@flow(name="collect", log_prints=True)
def collect_flow(params: CollectParams = _DEFAULT) -> dict[str, Any]:
    """Gather scenes from a STAC API into the scene catalog.

    Args:
        params: STAC API, locations, collections, dates, limits (defaults from params.yaml).

    Returns:
        Summary: catalog path, scene ids added, counts, unusable items, locations without a scene.
    """
    p = params.resolve()
    result = collect_scenes(p.model_dump(mode="json"), p.collect.locations)
    log(f"collect: {result['summary']}")
    table("collect-scenes", result["rows"], f"Scenes gathered into {result['catalog']} ({result['summary']})")
    return result
