"""STAC API searches per location, collection and period, and the choice of the best scenes.

**Periods.** Between ``collect.start`` and ``collect.end``, the months of a location are labelled by
the same rule ingest labels scenes with (:func:`a2mae.ingest.period.growth_period`, at the location's
latitude): runs of consecutive months with one label become the search intervals of that period
(north of the tropics with growth months 4-9: non-growth Jan-Mar, growth Apr-Sep, non-growth Oct-Dec;
in the tropics one ``na`` interval).

**Search.** One pystac-client search per location x collection x interval: ``intersects`` the
location's region, the collection's platforms and ``cloud cover <= collect.max_cloud_cover`` (a CQL2
JSON filter where the server has the filter extension, else the query extension for the cloud cover),
at most ``collect.max_items_per_search`` items. The limits are applied again here, so a server
without either extension gives the same result.

**Choice** (per location, period and collection, collections in ``collect.collections`` order):
items are ranked by cloud cover in steps of ``collect.cloud_step`` percent, then by the distance of
their date to an anchor (the first collection's: the middle of the period's longest interval; the
next collections': the date of the first collection's best scene there, so a location's Sentinel-2
and Landsat scenes of one period are close in time), then by id; the first
``collect.scenes_per_period`` are kept.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from a2mae.collect.locations import Location
from a2mae.collect.mapping import CollectError, CollectionMap
from a2mae.config import CollectConfig, GrowthPeriodConfig
from a2mae.ingest.period import Period, growth_period
from a2mae.ingest.sidecars import datetime_from_stac

if TYPE_CHECKING:
    from pystac_client import Client


Interval = tuple[datetime, datetime]


def period_intervals(
    start: date, end: date, lat: float, growth: GrowthPeriodConfig
) -> dict[Period, list[Interval]]:
    """The search intervals of each period between ``start`` and ``end`` (inclusive) at latitude ``lat``.

    Returns:
        ``{period: [(first instant, last instant), ...]}`` in UTC, months of one label merged.
    """
    out: dict[Period, list[Interval]] = {}
    cur = date(start.year, start.month, 1)
    run: tuple[Period, date] | None = None
    while cur <= end:
        label = growth_period(
            datetime(cur.year, cur.month, 15, tzinfo=UTC), lat, growth.growth_months, growth.tropics_lat
        )
        nxt = date(cur.year + cur.month // 12, cur.month % 12 + 1, 1)
        if run is None or run[0] != label:
            if run is not None:
                out.setdefault(run[0], []).append(
                    _interval(max(run[1], start), min(cur - timedelta(days=1), end))
                )
            run = (label, cur)
        cur = nxt
    if run is not None:
        out.setdefault(run[0], []).append(_interval(max(run[1], start), end))
    return out


def _interval(a: date, b: date) -> Interval:
    return datetime(a.year, a.month, a.day, tzinfo=UTC), datetime(
        b.year, b.month, b.day, 23, 59, 59, tzinfo=UTC
    )


def interval_text(iv: Interval) -> str:
    """``start/end`` in RFC 3339, as the STAC ``datetime`` parameter."""
    return f"{iv[0].strftime('%Y-%m-%dT%H:%M:%SZ')}/{iv[1].strftime('%Y-%m-%dT%H:%M:%SZ')}"


# ------------------------------------------------------------------------------------------- search
def open_client(url: str, timeout: float) -> Client:
    """Open a STAC API (reads its landing page).

    Raises:
        CollectError: Unreachable, or not a STAC API.
    """
    from pystac_client import Client

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Client.open(url, timeout=timeout)
    except Exception as err:  # requests, pystac and pystac-client raise many types
        raise CollectError(
            f"{url}: cannot open the STAC API ({_reason(err)}); check collect.stac_url or --stac"
        ) from None


def _reason(err: BaseException) -> str:
    """A short reason for a failed STAC request."""
    text = " ".join(str(err).split())
    low = text.lower()
    if "failed to establish a new connection" in low or "connection refused" in low:
        return "nothing answers there"
    if "timed out" in low or "timeout" in low:
        return "no answer in time (collect.timeout_s)"
    if "name or service not known" in low or "nodename nor servname" in low:
        return "unknown host"
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__


@dataclass(frozen=True)
class SearchTask:
    """One search: a location, a collection, a period and one of its intervals."""

    location: Location
    cmap: CollectionMap
    period: Period
    interval: Interval


def search_items(client: Any, task: SearchTask, cfg: CollectConfig) -> list[dict[str, Any]]:
    """Run one search and return the item dicts that pass the filters (cloud, platform, period rule).

    Raises:
        CollectError: The API refused the search or could not be reached (one line naming the URL).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DoesNotConformTo on servers advertising other versions
            search = client.search(
                collections=[task.cmap.collection],
                intersects=task.location.geometry,
                datetime=interval_text(task.interval),
                max_items=cfg.max_items_per_search,
                limit=min(cfg.max_items_per_search, 100),
                **_server_filter(client, task.cmap, cfg),
            )
            items = list(search.items_as_dicts())
    except Exception as err:
        raise CollectError(
            f"{client.self_href or 'STAC API'}: search of {task.cmap.collection} at {task.location.id} "
            f"failed ({_reason(err)}); check that the collection exists there"
        ) from None
    return [it for it in items if _passes(it, task, cfg)]


def _server_filter(client: Any, cmap: CollectionMap, cfg: CollectConfig) -> dict[str, Any]:
    """Cloud and platform limits in the server's own terms.

    CQL2 JSON where the server has the filter extension, else the query extension (cloud cover only:
    it has no ``in``), else none (the limits are applied here anyway).
    """
    from pystac_client import ConformanceClasses

    cloud = {"op": "<=", "args": [{"property": cmap.cloud_cover}, cfg.max_cloud_cover]}
    if client.conforms_to(ConformanceClasses.FILTER):
        args: list[Any] = [cloud]
        if cmap.platforms:
            args.append({"op": "in", "args": [{"property": "platform"}, list(cmap.platforms)]})
        return {"filter": {"op": "and", "args": args} if len(args) > 1 else cloud, "filter_lang": "cql2-json"}
    if client.conforms_to(ConformanceClasses.QUERY):
        return {"query": {cmap.cloud_cover: {"lte": cfg.max_cloud_cover}}}
    return {}


def _passes(item: Mapping[str, Any], task: SearchTask, cfg: CollectConfig) -> bool:
    props = item.get("properties") or {}
    cover = props.get(task.cmap.cloud_cover)
    if cover is not None and float(cover) > cfg.max_cloud_cover:
        return False
    platforms = {p.lower() for p in task.cmap.platforms}
    if platforms and str(props.get("platform", "")).lower() not in platforms:
        return False
    when = datetime_from_stac(item)
    return when is not None and task.interval[0] <= when <= task.interval[1]


# ------------------------------------------------------------------------------------------- choice
def period_anchor(intervals: Sequence[Interval]) -> datetime:
    """The middle of the longest interval of a period."""
    a, b = max(intervals, key=lambda iv: (iv[1] - iv[0], -iv[0].timestamp()))
    return a + (b - a) / 2


def rank_key(
    item: Mapping[str, Any], cloud_key: str, step: float, anchor: datetime
) -> tuple[int, float, str]:
    """Sort key: cloud cover in steps of ``step`` percent, days from ``anchor``, id."""
    cover = (item.get("properties") or {}).get(cloud_key)
    bucket = int(float(cover) // step) if cover is not None else 10**6
    when = datetime_from_stac(item) or anchor
    return bucket, abs((when - anchor).total_seconds()), str(item.get("id"))


def choose(
    candidates: Mapping[str, Sequence[Mapping[str, Any]]],
    order: Sequence[CollectionMap],
    intervals: Sequence[Interval],
    cfg: CollectConfig,
) -> list[tuple[CollectionMap, Mapping[str, Any]]]:
    """The scenes kept for one location and period.

    Args:
        candidates: Usable items per collection id (found by the searches of this period).
        order: The collections, in ``collect.collections`` order (the first sets the anchor date).
        intervals: The period's search intervals.
        cfg: ``collect`` parameters.

    Returns:
        ``(collection, item)`` pairs, ``scenes_per_period`` per collection at most.
    """
    anchor = period_anchor(intervals)
    out: list[tuple[CollectionMap, Mapping[str, Any]]] = []
    for k, cmap in enumerate(order):
        items = {str(it.get("id")): it for it in candidates.get(cmap.collection, ())}  # one per id
        ranked = sorted(items.values(), key=lambda it: rank_key(it, cmap.cloud_cover, cfg.cloud_step, anchor))
        kept = ranked[: cfg.scenes_per_period]
        out.extend((cmap, it) for it in kept)
        if k == 0 and kept:
            anchor = datetime_from_stac(kept[0]) or anchor
    return out
