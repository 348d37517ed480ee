"""Ingest flow: scene metadata from folders or ``s3://`` prefixes into the scene catalog.

Calls :func:`a2mae.ingest.run.ingest`, the function behind ``a2mae ingest``. The listing is a task of
its own (I/O, retried, never cached); the ingest task is cached on the listing's fingerprint (URIs, sizes,
S3 ETags or mtimes), the catalog's MD5 and the ``data`` parameters, so re-running over unchanged inputs
costs a listing only. A cached result records the MD5 of the catalog it left; when the catalog on disk
is not that one (deleted, replaced, edited), the result is not trusted and the ingest runs again.
Results are JSON and expire (:data:`flows.common.CACHE_EXPIRATION`).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from flows.common import CACHE_EXPIRATION, cached_call, content_key, file_md5, log, params_from, stage, table
from flows.params import IngestParams


@task(name="list-sources", retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE)
def fingerprint_sources(sources: list[str], doc: dict[str, Any]) -> str:
    """List the sources (no file is opened) and hash what they hold: one fingerprint per scene."""
    from a2mae.ingest.discover import discover
    from a2mae.ingest.scene_reader import listing_fingerprint
    from a2mae.sensors import get_registry
    from a2mae.sensors.detect import band_vocabulary

    params = params_from(doc)
    vocab = band_vocabulary(get_registry(params.data.sensor_files))
    found = discover(sources, vocab, params.data.s3.settings())
    return content_key(sorted(listing_fingerprint(s) for s in found.scenes))


def _ingest_key(ctx: TaskRunContext, args: dict[str, Any]) -> str:
    return content_key(
        "ingest", args["sources"], args["listing"], args["catalog_md5"], args["doc"]["data"], args["skip_bad"]
    )


@task(
    name="ingest-scenes",
    retries=2,
    retry_delay_seconds=[2, 5],
    cache_key_fn=_ingest_key,
    result_serializer="json",
    cache_expiration=CACHE_EXPIRATION,
    persist_result=True,
)
def ingest_scenes(
    sources: list[str], catalog: str, doc: dict[str, Any], listing: str, catalog_md5: str, skip_bad: bool
) -> dict[str, Any]:
    """Read new scenes into the catalog (append-only, atomic); returns a summary with a row per scene."""
    from a2mae.ingest.run import ingest

    report = ingest(sources, catalog, params_from(doc), skip_bad=skip_bad, progress=True)
    rows = [
        {
            "status": status,
            "scene_id": r.scene_id,
            "sensor": r.sensor,
            "product": r.product,
            "datetime": r.datetime.isoformat() if r.datetime else "",
            "bands": len(r.bands),
            "cloud_fraction": round(r.cloud_fraction, 4) if r.cloud_fraction is not None else None,
        }
        for status, recs in (("added", report.added), ("present", report.skipped))
        for r in recs
    ]
    return {
        "catalog": str(report.catalog),
        "catalog_md5": file_md5(report.catalog),  # what a cached copy of this result must find there
        "added": [r.scene_id for r in report.added],
        "present": len(report.skipped),
        "failed": [f.message for f in report.failed],
        "warnings": list(report.warnings),
        "summary": report.summary(),
        "rows": rows,
    }


_DEFAULT = IngestParams()


@flow(name="ingest", log_prints=True)
def ingest_flow(params: IngestParams = _DEFAULT) -> dict[str, Any]:
    """Ingest scenes into the catalog.

    Args:
        params: Sources, catalog and ingest settings (defaults from params.yaml).

    Returns:
        Summary: catalog path, added scene ids, counts, failures.
    """
    p = params.resolve()
    doc = p.model_dump(mode="json")
    sources = [params.path(s) for s in params.sources]
    catalog = p.data.catalog
    listing = fingerprint_sources(sources, doc)
    result: dict[str, Any] = cached_call(
        ingest_scenes,
        lambda r: r.get("catalog_md5") == file_md5(catalog),
        *(sources, catalog, doc, listing, file_md5(catalog), params.skip_bad),
    )
    failed = f", {len(result['failed'])} failed" if result["failed"] else ""
    stage(
        "ingest", f"{len(result['added'])} scenes added, {result['present']} already in the catalog{failed}"
    )
    for note in result.get("warnings", []):
        log(f"ingest warning: {note}")
    table("ingest-scenes", result["rows"], f"Scenes of the catalog {catalog} ({result['summary']})")
    return result
