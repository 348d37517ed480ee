"""``a2mae collect``: gather co-located scenes from a STAC API into the scene catalog.

Steps: the locations (a file, or generated); per location, collection and period, a STAC search
(:mod:`a2mae.collect.search`, in parallel threads); each item found becomes a catalog row
(:mod:`a2mae.collect.mapping`; an item that cannot is reported and not chosen); per location and
period the best scenes are chosen; a scene chosen at several locations is one row whose region of
interest is the union of theirs; the rows are merged into the catalog ingest writes (atomic write).
``a2mae tile`` then reads only the chip windows inside those regions, from the remote COGs.

At most ``collect.max_scenes`` new scenes are added per run (locations in order). Running again with
the same parameters adds nothing ("present"); a scene chosen for new locations gets their regions
added ("updated").
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from a2mae.collect.locations import Location, generate_locations, read_locations
from a2mae.collect.mapping import CollectError, CollectionMap, item_record, load_mapping
from a2mae.collect.search import (
    Interval,
    SearchTask,
    choose,
    open_client,
    period_intervals,
    search_items,
)
from a2mae.config import CollectConfig, GrowthPeriodConfig, Params
from a2mae.ingest.catalog import SceneRecord, read_catalog, write_catalog
from a2mae.ingest.roi import Polygon, polygons_of, union_geojson
from a2mae.sensors import get_registry
from a2mae.sensors.registry import SensorRegistry

if TYPE_CHECKING:
    from rich.progress import Progress


@dataclass
class CollectReport:
    """What :func:`collect` did.

    Attributes:
        catalog: The catalog written.
        locations: Locations searched.
        searches: STAC searches run.
        found: Distinct items found (after the cloud, platform and period filters).
        added: Rows new in the catalog.
        updated: Rows already there whose region of interest grew.
        present: Rows already there, unchanged.
        failed: One line per item that cannot become a row.
        empty: Ids of locations where no scene was chosen.
        capped: Whether ``collect.max_scenes`` stopped the run early.
    """

    catalog: Path
    locations: int = 0
    searches: int = 0
    found: int = 0
    added: list[SceneRecord] = field(default_factory=list)
    updated: list[SceneRecord] = field(default_factory=list)
    present: list[SceneRecord] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    capped: bool = False

    def summary(self) -> str:
        """One line: counts."""
        cap = " (collect.max_scenes reached)" if self.capped else ""
        return (
            f"{self.locations} location(s), {self.searches} search(es), {self.found} item(s) found; "
            f"{len(self.added)} scene(s) added, {len(self.updated)} updated, {len(self.present)} present, "
            f"{len(self.failed)} unusable item(s), {len(self.empty)} location(s) without a scene{cap}"
        )


def resolve_locations(cfg: CollectConfig, path: str | os.PathLike[str] | None = None) -> list[Location]:
    """The locations of a run: ``path`` (or ``collect.locations``), else ``collect.n_locations`` generated."""
    given = path if path is not None else cfg.locations
    if given:
        return read_locations(given, cfg.location_size_m)
    return generate_locations(cfg.n_locations, cfg.seed, cfg.location_size_m, cfg.bbox)


def collect(
    params: Params,
    *,
    stac_url: str | None = None,
    locations: str | os.PathLike[str] | None = None,
    catalog: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> CollectReport:
    """Search a STAC API at each location and write the best scenes into the scene catalog.

    Args:
        params: Parameters (``collect``, ``data.growth_period``, ``data.sensor_files``).
        stac_url: STAC API root (default ``collect.stac_url``).
        locations: Locations file (default ``collect.locations``; none: generated).
        catalog: Catalog to merge into (default ``data.catalog``).
        progress: Progress bar on a terminal.

    Returns:
        The report.

    Raises:
        CollectError: No STAC URL, an unreachable API, a bad collection or locations file, a failed
            search, or no scene at all (one line saying what to change).
    """
    cfg = params.collect
    url = stac_url or cfg.stac_url
    if not url:
        raise CollectError("collect: no STAC API given; set collect.stac_url or pass --stac URL")
    registry = get_registry(params.data.sensor_files)
    mappings = [load_mapping(name, registry) for name in cfg.collections]
    start, end = cfg.start, cfg.end
    if end < start:
        raise CollectError(f"collect.end {cfg.end} is before collect.start {cfg.start}")
    locs = resolve_locations(cfg, locations)
    report = CollectReport(Path(catalog or params.data.catalog), locations=len(locs))
    tasks, intervals = _search_tasks(locs, mappings, start, end, params.data.growth_period)
    report.searches = len(tasks)
    found = _run_searches(url, tasks, cfg, progress)
    report.found = len({(t.cmap.collection, str(it["id"])) for t, items in found for it in items})
    rows = _rows(found, registry, params.data.growth_period, report)
    chosen = _choose_all(locs, mappings, found, rows, intervals, cfg, report)
    if not chosen and report.capped:
        raise CollectError(
            f"collect.max_scenes={cfg.max_scenes} is below the scenes the first location needs; raise it"
        )
    if not chosen:
        why = f"; {len(report.failed)} item(s) unusable, e.g. {report.failed[0]}" if report.failed else ""
        raise CollectError(
            f"collect: no scene at any of {len(locs)} location(s) in "
            f"{', '.join(m.collection for m in mappings)} "
            f"at {url} from {cfg.start} to {cfg.end} with cloud cover <= {cfg.max_cloud_cover:g} %{why}; "
            "widen collect.start/collect.end, raise collect.max_cloud_cover or check the locations"
        )
    _merge(report, _with_regions(chosen, rows))
    return report


def _search_tasks(
    locs: Sequence[Location],
    mappings: Sequence[CollectionMap],
    start: date,
    end: date,
    growth: GrowthPeriodConfig,
) -> tuple[list[SearchTask], dict[tuple[str, str], list[Interval]]]:
    """Every search of the run, and the intervals of each ``(location id, period)`` (``growth``: data)."""
    tasks: list[SearchTask] = []
    intervals: dict[tuple[str, str], list[Interval]] = {}
    for loc in locs:
        for period, ivs in period_intervals(start, end, loc.lat, growth).items():
            intervals[(loc.id, period)] = ivs
            tasks.extend(SearchTask(loc, cmap, period, iv) for cmap in mappings for iv in ivs)
    return tasks, intervals


def _run_searches(
    url: str, tasks: Sequence[SearchTask], cfg: CollectConfig, progress: bool
) -> list[tuple[SearchTask, list[dict[str, Any]]]]:
    """Run the searches in ``collect.workers`` threads (one client per thread), in task order."""
    local = threading.local()
    open_client(url, cfg.timeout_s)  # fail early, with one line, on a bad URL

    def run(task: SearchTask) -> list[dict[str, Any]]:
        if not hasattr(local, "client"):
            local.client = open_client(url, cfg.timeout_s)
        return search_items(local.client, task, cfg)

    with _progress(progress) as bar, ThreadPoolExecutor(cfg.workers) as pool:
        job = bar.add_task("searching", total=len(tasks))
        futures = [pool.submit(run, t) for t in tasks]
        out = []
        for task, fut in zip(tasks, futures, strict=True):
            out.append((task, fut.result()))
            bar.advance(job)
    return out


def _rows(
    found: Sequence[tuple[SearchTask, list[dict[str, Any]]]],
    registry: SensorRegistry,
    growth: GrowthPeriodConfig,
    report: CollectReport,
) -> dict[tuple[str, str], SceneRecord]:
    """The catalog row of every distinct item found; unusable items are reported once."""
    rows: dict[tuple[str, str], SceneRecord] = {}
    bad: set[tuple[str, str]] = set()
    for task, items in found:
        for it in items:
            key = (task.cmap.collection, str(it["id"]))
            if key in rows or key in bad:
                continue
            try:
                rows[key] = item_record(it, task.cmap, registry, growth)
            except CollectError as err:
                bad.add(key)
                report.failed.append(str(err))
    return rows


def _choose_all(
    locs: Sequence[Location],
    mappings: Sequence[CollectionMap],
    found: Sequence[tuple[SearchTask, list[dict[str, Any]]]],
    rows: Mapping[tuple[str, str], SceneRecord],
    intervals: Mapping[tuple[str, str], list[Interval]],
    cfg: CollectConfig,
    report: CollectReport,
) -> list[tuple[Location, tuple[str, str]]]:
    """The chosen ``(location, item key)`` pairs, locations in order, within ``collect.max_scenes``."""
    by_loc: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for task, items in found:
        usable = [it for it in items if (task.cmap.collection, str(it["id"])) in rows]
        by_loc[(task.location.id, task.period)][task.cmap.collection].extend(usable)
    chosen: list[tuple[Location, tuple[str, str]]] = []
    scenes: set[tuple[str, str]] = set()
    for loc in locs:
        picks = []
        for (loc_id, _period), ivs in intervals.items():
            if loc_id == loc.id:
                picks += choose(by_loc[(loc_id, _period)], mappings, ivs, cfg)
        keys = [(cmap.collection, str(it["id"])) for cmap, it in picks]
        if len(scenes | set(keys)) > cfg.max_scenes:
            report.capped = True
            break
        if not keys:
            report.empty.append(loc.id)
        scenes |= set(keys)
        chosen.extend((loc, k) for k in keys)
    return chosen


def _with_regions(
    chosen: Sequence[tuple[Location, tuple[str, str]]], rows: Mapping[tuple[str, str], SceneRecord]
) -> list[SceneRecord]:
    """One row per chosen scene, its region of interest the union of its locations' regions."""
    regions: dict[tuple[str, str], list[Polygon]] = defaultdict(list)
    for loc, key in chosen:
        regions[key].append(loc.polygon)
    return [
        rows[key].model_copy(update={"roi_geojson": union_geojson(polys)}) for key, polys in regions.items()
    ]


def _merge(report: CollectReport, records: Sequence[SceneRecord]) -> None:
    """Merge the rows into the catalog (regions of rows already there are united) and write it."""
    existing = {r.scene_id: r for r in read_catalog(report.catalog)}
    changed = False
    for rec in records:
        old = existing.get(rec.scene_id)
        if old is None:
            existing[rec.scene_id] = rec
            report.added.append(rec)
            changed = True
            continue
        merged = _union_roi(old, rec)
        if merged.roi_geojson != old.roi_geojson:
            existing[rec.scene_id] = merged
            report.updated.append(merged)
            changed = True
        else:
            report.present.append(old)
    if changed or not report.catalog.exists():
        report.catalog.parent.mkdir(parents=True, exist_ok=True)
        write_catalog(list(existing.values()), report.catalog)


def _union_roi(old: SceneRecord, new: SceneRecord) -> SceneRecord:
    """``old`` with its region grown by ``new``'s (a row without a region is tiled everywhere already)."""
    import json

    if old.roi_geojson is None or new.roi_geojson is None:
        return old
    polys = polygons_of(json.loads(old.roi_geojson)) + polygons_of(json.loads(new.roi_geojson))
    return old.model_copy(update={"roi_geojson": union_geojson(polys)})


def _progress(enabled: bool) -> Progress:
    """A rich progress bar on stderr (only on a terminal)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not (enabled and console.is_terminal),
        transient=True,
    )
