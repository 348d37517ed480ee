"""``a2mae ingest``: read scene metadata from local files, folders or ``s3://`` prefixes into the catalog.

Steps (``docs/ingest.md``):

1. :func:`~a2mae.ingest.discover.discover` lists the sources and groups files into scenes (no raster is
   opened).
2. A scene whose listing fingerprint (URIs, sizes, mtimes or ETags) is already in the catalog is
   skipped without reading any of its files; so is one whose content hash is (the same files copied
   elsewhere).
3. The other scenes are read in parallel (``params.data.workers`` threads) by
   :func:`~a2mae.ingest.scene_reader.read_scene`: headers, sidecars, detection, grid checks, cloud
   fraction, WGS84 corners, period.
4. New records are merged with the catalog and it is rewritten atomically, once, under the catalog's
   writer lock (:func:`a2mae.io.lock.writer_lock`): the catalog is read again under the lock, so
   scenes added meanwhile by another ingest (a flow, a manual run) are kept. When nothing is new the
   catalog file is not touched and no lock is taken.

Any bad scene stops the run with an :class:`IngestError` (nothing written) unless ``skip_bad`` is set,
in which case it is reported in :attr:`IngestReport.failed` and the rest goes on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from a2mae.config import Params
from a2mae.console import progress as progress_bar
from a2mae.errors import A2maeError
from a2mae.ingest.catalog import CatalogRowError, SceneRecord, read_catalog, write_catalog
from a2mae.ingest.discover import IngestError, SceneSpec, discover
from a2mae.ingest.scene_reader import ReadContext, listing_fingerprint, read_scene, scene_content_hash
from a2mae.io.atomic import remove_stale_temporaries
from a2mae.io.lock import writer_lock
from a2mae.io.raster import raster_env
from a2mae.io.storage import S3Settings, StorageOSError, is_s3
from a2mae.sensors.detect import band_vocabulary
from a2mae.sensors.registry import get_registry

__all__ = ["Failure", "IngestError", "IngestReport", "catalog_matches", "ingest"]


@dataclass(frozen=True)
class Failure:
    """A scene (or source) that could not be ingested, with the one-line reason."""

    source: str
    message: str


@dataclass
class IngestReport:
    """Outcome of one ingest run."""

    catalog: Path
    added: list[SceneRecord] = field(default_factory=list)
    skipped: list[SceneRecord] = field(default_factory=list)  # already in the catalog
    replaced: list[tuple[SceneRecord, SceneRecord]] = field(
        default_factory=list
    )  # (old, new): files replaced
    failed: list[Failure] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # auxiliary files next to per-band scenes
    warnings: list[str] = field(default_factory=list)  # scenes added with a doubt (e.g. two dates)
    written: bool = False  # whether the catalog file was (re)written

    def summary(self) -> str:
        """One line: counts and the catalog path."""
        replaced = f"{len(self.replaced)} replaced, " if self.replaced else ""
        return (
            f"{len(self.added)} added, {replaced}{len(self.skipped)} already in the catalog, "
            f"{len(self.failed)} failed -> {self.catalog}"
        )


def ingest(
    sources: Sequence[str],
    catalog: str | Path,
    params: Params,
    *,
    skip_bad: bool = False,
    progress: bool = True,
) -> IngestReport:
    """Ingest scenes into the scene catalog (metadata only; append-only; atomic).

    Args:
        sources: Local files, local folders or ``s3://`` prefixes.
        catalog: Local path of the Parquet catalog (created when missing).
        params: Parameters (``data`` section: sensor files, workers, S3, growth period).
        skip_bad: Go on past bad scenes and report them instead of stopping.
        progress: Show a progress bar (only on a terminal).

    Returns:
        What was added, skipped (already present) and failed.

    Raises:
        IngestError: Bad input (without ``skip_bad``), a bad catalog path, or no source at all.
        LockBusy: Another writer held the catalog for longer than ``data.lock_timeout_s``.
    """
    catalog = _check_arguments(sources, catalog)
    existing = _read_existing(catalog)
    report = IngestReport(catalog=catalog)
    registry = get_registry(params.data.sensor_files)
    settings = params.data.s3.settings()
    ctx = ReadContext(
        registry=registry,
        settings=settings,
        growth=params.data.growth_period,
        max_pixels=params.data.max_raster_pixels,
    )

    specs = _discover_sources(sources, ctx, report, skip_bad=skip_bad)
    todo = _skip_listed(specs, existing, report)
    new = _read_all(todo, ctx, report, skip_bad=skip_bad, progress=progress, workers=params.data.workers)
    if new:
        with writer_lock(catalog, params.data.lock_timeout_s, setting="data.lock_timeout_s"):
            remove_stale_temporaries(catalog)  # of a killed writer; none can be half-way now
            _merge_into_catalog(new, _read_existing(catalog), catalog, report)
    return report


def _check_arguments(sources: Sequence[str], catalog: str | Path) -> Path:
    """Refuse an empty source list and a catalog path that is on S3 or a folder.

    Returns:
        The catalog path.

    Raises:
        IngestError: No source, or an unusable catalog path.
    """
    if not sources:
        raise IngestError("no source given; pass files, folders or s3:// prefixes to ingest")
    if is_s3(catalog):
        raise IngestError(f"{catalog}: the catalog must be a local path (copy it to S3 afterwards)")
    catalog = Path(catalog)
    if catalog.exists() and not catalog.is_file():
        raise IngestError(f"{catalog}: the catalog path is a folder; give a .parquet file path")
    if catalog.exists():
        os.close(os.open(catalog, os.O_RDONLY))  # a forbidden catalog: an OS error (exit code 1)
    return catalog


def _read_existing(catalog: Path) -> list[SceneRecord]:
    """Read the records already in the catalog (none when the file is missing).

    Raises:
        IngestError: The file exists but is not a readable catalog (before anything else is read).
    """
    try:
        return read_catalog(catalog)
    except CatalogRowError as err:
        raise IngestError(f"{catalog}: {err}") from None
    except Exception as err:
        raise IngestError(
            f"{catalog}: cannot read the existing catalog ({' '.join(str(err).split())[:200]}); "
            "move it away or give another --catalog"
        ) from None


def _discover_sources(
    sources: Sequence[str], ctx: ReadContext, report: IngestReport, *, skip_bad: bool
) -> list[SceneSpec]:
    """List each source and group its files into scenes (no raster is opened).

    Sources are discovered one at a time, so that with ``skip_bad`` a bad source is reported in
    ``report.failed`` and the others still count; auxiliary files go to ``report.ignored``.

    Returns:
        The scenes of all sources, in source order.

    Raises:
        IngestError: A source cannot be listed (without ``skip_bad``).
    """
    specs: list[SceneSpec] = []
    for src in sources:
        try:
            found = discover([src], band_vocabulary(ctx.registry), ctx.settings)
        except A2maeError as err:
            if not skip_bad:  # a forbidden path or a name too long keeps its exit code 1
                raise err if isinstance(err, StorageOSError) else IngestError(str(err)) from None
            report.failed.append(Failure(str(src), str(err)))
            continue
        for bad in found.bad:  # broken links, named pipes, forbidden entries: never opened
            if not skip_bad:
                raise (StorageOSError if bad.os_error else IngestError)(f"{bad.path}: {bad.why}")
            report.failed.append(Failure(bad.path, f"{bad.path}: {bad.why}"))
        specs.extend(found.scenes)
        report.ignored.extend(found.ignored)
    return specs


def _skip_listed(
    specs: Sequence[SceneSpec], existing: Sequence[SceneRecord], report: IngestReport
) -> list[tuple[SceneSpec, str]]:
    """Drop repeated sources and the scenes whose listing fingerprint is already in the catalog.

    The fingerprint needs only the listing (URIs, sizes, mtimes or ETags), so an unchanged scene is
    skipped without reading any of its files; it goes to ``report.skipped``.

    Returns:
        ``(scene, listing fingerprint)`` of each scene still to read, in discovery order.
    """
    rows_of: dict[str, int] = {}
    for r in existing:
        rows_of[r.source] = rows_of.get(r.source, 0) + 1
    # a source with several rows (replaced files, ingested by an older a2mae) is read again to fold them
    by_fingerprint = {r.fingerprint: r for r in existing if r.fingerprint and rows_of[r.source] == 1}
    todo: list[tuple[SceneSpec, str]] = []
    seen_sources: set[str] = set()
    for spec in specs:
        if spec.source in seen_sources:
            continue
        seen_sources.add(spec.source)
        fp = listing_fingerprint(spec)
        if fp in by_fingerprint:
            report.skipped.append(by_fingerprint[fp])
        else:
            todo.append((spec, fp))
    return todo


def _merge_into_catalog(
    new: Sequence[SceneRecord], existing: Sequence[SceneRecord], catalog: Path, report: IngestReport
) -> None:
    """Add the records whose content is new, replace those of re-ingested sources, rewrite once.

    A record of a source the catalog already holds replaces that source's rows: with the same content
    it only refreshes them (counted as skipped), with new content (files replaced at the same path)
    it is counted in ``report.replaced``. A record whose content hash is already in the catalog under
    another source (the same files copied elsewhere, or added by another writer while this run was
    reading), or was read twice in this run, counts as skipped. Identical repeated rows are folded.
    When nothing changed the catalog file is not touched. ``report.added`` ends sorted by scene id.
    The caller holds the catalog's writer lock and read ``existing`` under it.
    """
    rows = list(dict.fromkeys(existing))  # identical repeated rows (an older a2mae, a hand merge) once
    folded = len(rows) != len(existing)
    for record in new:
        same_source = [r for r in rows if r.source == record.source]
        rows = [r for r in rows if r.source != record.source]
        copy = next((r for r in rows if r.content_hash == record.content_hash), None)
        if copy is not None:  # the same files under another source: that row stands for them
            report.skipped.append(copy)
            folded |= bool(same_source)
        elif same_source:
            rows.append(record)
            if any(r.content_hash != record.content_hash for r in same_source):
                report.replaced.append((same_source[0], record))
            else:
                report.skipped.append(record)
                folded |= same_source != [record]
        else:
            rows.append(record)
            report.added.append(record)
    if report.added or report.replaced or folded:
        write_catalog(rows, catalog)
        report.written = True
    report.added.sort(key=lambda r: r.scene_id)


def catalog_matches(
    specs: Sequence[SceneSpec], catalog: str | Path, settings: S3Settings | None = None
) -> dict[str, SceneRecord | None]:
    """The catalog record each scene already has, the way :func:`ingest` would find it.

    A record matches a scene with the same listing fingerprint (nothing is read), else the same content
    hash (the same files copied elsewhere: S3 ETags, or the bytes of local files).

    Args:
        specs: Scenes from :func:`~a2mae.ingest.discover.discover`.
        catalog: The local Parquet catalog (missing: nothing matches).
        settings: S3 settings for objects.

    Returns:
        ``{scene source: matching record, or None when ingest would add the scene}``.
    """
    existing = read_catalog(catalog)
    by_fingerprint = {r.fingerprint: r for r in existing if r.fingerprint}
    by_hash = {r.content_hash: r for r in existing}
    out: dict[str, SceneRecord | None] = {}
    for spec in specs:
        record = by_fingerprint.get(listing_fingerprint(spec))
        if record is None and by_hash:
            record = by_hash.get(scene_content_hash(spec, settings))
        out[spec.source] = record
    return out


def _read_all(
    todo: Sequence[tuple[SceneSpec, str]],
    ctx: ReadContext,
    report: IngestReport,
    *,
    skip_bad: bool,
    progress: bool,
    workers: int,
) -> list[SceneRecord]:
    """Read the scenes still to read in parallel threads, with a progress bar.

    Finished scenes are handled in source order within each batch of completions, so reports do not
    depend on thread timing more than necessary; the first bad scene (without ``skip_bad``) cancels
    the scenes not yet started and stops the run.

    Returns:
        The records read (bad scenes are in ``report.failed`` when ``skip_bad`` is set).

    Raises:
        IngestError: A bad scene, without ``skip_bad``.
    """
    if not todo:
        return []

    def work(spec: SceneSpec, fp: str) -> tuple[SceneRecord, list[str]]:
        notes: list[str] = []
        with raster_env(ctx.settings):  # GDAL options are thread-local
            return read_scene(spec, ctx, fp, notes), notes

    records: list[SceneRecord] = []
    with (
        progress_bar("ingest", len(todo), "scenes", enabled=progress and len(todo) > 1) as bar,
        ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo)))) as pool,
    ):
        futures = {pool.submit(work, s, fp): s for s, fp in todo}
        pending = set(futures)
        try:
            _collect(futures, pending, records, report, skip_bad, bar)
        except BaseException:  # a bad scene, Ctrl-C, SIGTERM: scenes not yet started are not read
            for fut in futures:
                fut.cancel()
            raise
    return records


def _collect(
    futures: dict[Future[tuple[SceneRecord, list[str]]], SceneSpec],
    pending: set[Future[tuple[SceneRecord, list[str]]]],
    records: list[SceneRecord],
    report: IngestReport,
    skip_bad: bool,
    bar: Any,
) -> None:
    """Gather finished scenes in source order within each batch of completions (see :func:`_read_all`).

    Raises:
        IngestError: A bad scene, without ``skip_bad``.
    """
    while pending:
        done, pending = wait(pending, return_when=FIRST_EXCEPTION)
        for fut in sorted(done, key=lambda f: futures[f].source):
            spec = futures[fut]
            err = fut.exception()
            bar.advance()
            if err is None:
                record, notes = fut.result()
                records.append(record)
                report.warnings.extend(notes)
            elif isinstance(err, A2maeError) and skip_bad:
                report.failed.append(Failure(spec.source, str(err)))
            else:
                if isinstance(err, A2maeError):
                    raise IngestError(str(err)) from None
                raise err
