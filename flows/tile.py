"""Tile flow: cut the catalog's co-located scenes into an STSSD snapshot (image sets in shards).

Calls :func:`a2mae.stssd.run.tile`, the function behind ``a2mae tile``. The task is cached on the
catalog's MD5 and the tile parameters (a snapshot is a pure function of both); when the snapshot
folder has gone missing, a file of it no longer matches its digest, or it holds another snapshot than
the cached result names, the cache is refreshed instead of trusted. Results are JSON and expire
(:data:`flows.common.CACHE_EXPIRATION`). Reads of ``s3://`` scenes are
retried. A table artifact shows the snapshot's statistics.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.context import TaskRunContext

from flows.common import (
    CACHE_EXPIRATION,
    cached_call,
    content_key,
    file_md5,
    params_from,
    snapshot_id,
    stage,
    table,
)
from flows.params import TileParams


def _tile_key(ctx: TaskRunContext, args: dict[str, Any]) -> str:
    doc = args["doc"]
    return content_key(
        "tile", args["catalog_md5"], args["out"], doc["tile"], doc["data"]["sensor_files"], args["force"]
    )


@task(
    name="tile-snapshot",
    retries=1,
    retry_delay_seconds=[5],
    cache_key_fn=_tile_key,
    result_serializer="json",
    cache_expiration=CACHE_EXPIRATION,
    persist_result=True,
)
def tile_snapshot(
    catalog: str, out: str, doc: dict[str, Any], catalog_md5: str, force: bool
) -> dict[str, Any]:
    """Write (or confirm) the snapshot; returns its id and counts."""
    from a2mae.stssd.run import tile

    s = tile(catalog, out, params_from(doc), progress=True, force=force)
    return {
        "snapshot": str(s.out),
        "snapshot_id": s.snapshot_id,
        "up_to_date": s.up_to_date,
        "counts": s.counts,
        "seconds": round(s.seconds, 2),
    }


def _stat_rows(counts: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, value in counts.items():
        if isinstance(value, dict):
            rows += [{"statistic": f"{key}.{k}", "value": v} for k, v in value.items()]
        else:
            rows.append({"statistic": key, "value": value})
    return rows


_DEFAULT = TileParams()


@flow(name="tile", log_prints=True)
def tile_flow(params: TileParams = _DEFAULT) -> dict[str, Any]:
    """Tile the scene catalog into an STSSD snapshot.

    Args:
        params: Catalog, snapshot folder and tiling settings (defaults from params.yaml).

    Returns:
        The snapshot's path, content id and counts.
    """
    p = params.resolve()
    doc = p.model_dump(mode="json")
    catalog, out = p.data.catalog, p.tile.snapshot
    result: dict[str, Any] = cached_call(
        tile_snapshot,
        lambda r: r.get("snapshot_id") == snapshot_id(out),  # the folder holds the snapshot named
        *(catalog, out, doc, file_md5(catalog), params.force),
        refresh=snapshot_id(out, verify=True) is None,  # gone or damaged: do not even look
    )
    c = result["counts"]
    state = "up to date" if result["up_to_date"] else f"written in {result['seconds']:.1f} s"
    sizes = (
        f"{c.get('sets', 0)} image sets, {c.get('chips', 0)} chips"
        if "chips" in c
        else f"{c.get('sets', 0)} sets"
    )
    stage("tile", f"snapshot {result['snapshot_id']}: {sizes} ({state})")
    table("tile-snapshot", _stat_rows(result["counts"]), f"STSSD snapshot {result['snapshot_id']} at {out}")
    return result
