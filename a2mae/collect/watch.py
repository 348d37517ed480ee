"""What the new-imagery watcher sees of a STAC API: items over the sampled locations since a date.

The watcher flow (``flows/watch.py`` with ``infra.watch_stac``) calls :func:`stac_listing` on each run
with its previous run's time minus ``collect.watch_lookback_days`` (archives publish scenes days after
acquisition): every item of the collections of ``collect.collections`` over the locations of
``collect.locations`` (or the generated ones) acquired since then, within the cloud and platform
limits of ``a2mae collect``. Items are named ``stac:<collection>/<item id>`` and fingerprinted by
their content (:func:`~a2mae.collect.mapping.item_content_hash`), so a re-processed item is new again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from a2mae.collect.mapping import CollectError, item_content_hash, load_mapping
from a2mae.collect.run import resolve_locations
from a2mae.collect.search import SearchTask, open_client, search_items
from a2mae.config import CollectConfig
from a2mae.sensors.registry import SensorRegistry

#: The end of every watcher search (open-ended in practice).
_FAR = datetime(2100, 1, 1, tzinfo=UTC)


def since_of(last_run: datetime | None, cfg: CollectConfig) -> datetime:
    """Where a watcher search starts: the last run minus the lookback, or ``collect.start`` at first."""
    start = datetime(cfg.start.year, cfg.start.month, cfg.start.day, tzinfo=UTC)
    if last_run is None:
        return start
    return max(start, last_run - timedelta(days=cfg.watch_lookback_days))


def stac_listing(
    cfg: CollectConfig, registry: SensorRegistry, since: datetime, stac_url: str | None = None
) -> dict[str, str]:
    """``{"stac:<collection>/<id>": content hash}`` of the items over the locations acquired since ``since``.

    ``cfg`` is the ``collect`` section; ``registry`` the sensors of ``data.sensor_files``.

    Raises:
        CollectError: No STAC URL, an unreachable API or a failed search (one line).
    """
    url = stac_url or cfg.stac_url
    if not url:
        raise CollectError("watch: no STAC API; set collect.stac_url")
    mappings = [load_mapping(name, registry) for name in cfg.collections]
    client = open_client(url, cfg.timeout_s)
    out: dict[str, str] = {}
    for loc in resolve_locations(cfg):
        for cmap in mappings:
            for item in search_items(client, SearchTask(loc, cmap, "na", (since, _FAR)), cfg):
                out[f"stac:{cmap.collection}/{item['id']}"] = item_content_hash(item)
    return out


def catalog_ids(items: dict[str, str], catalog: str) -> dict[str, str | None]:
    """Which of the items (``{name: content hash}``) the catalog holds already: ``{name: scene id or None}``.

    A collected item's row keeps the item's content hash, so an item collected before (by a run of
    ``a2mae collect`` or an earlier retrain) is recognised without another search.
    """
    from a2mae.ingest.catalog import read_catalog

    held = {r.content_hash: r.scene_id for r in read_catalog(catalog)}
    return {name: held.get(digest) for name, digest in items.items()}
