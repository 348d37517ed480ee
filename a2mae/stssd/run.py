"""``a2mae tile``: scene catalog -> STSSD snapshot of co-located image sets.

Steps: read the catalog; plan the sets from metadata (:mod:`a2mae.stssd.grouping`); cut the plan
into shard tasks of consecutive grid points; each task, in a local process or a Ray task
(:mod:`a2mae.executor`), reads its chips in bounded batches, drops chips over the nodata/cloud
limits and the sets that lose what they need, and writes the rest into its shard
(:func:`a2mae.stssd.packing.write_shard`); as results come back in plan order, this process writes
the manifest and the statistics (:mod:`a2mae.stssd.snapshot`).

* **Determinism**: the plan and the packing order depend only on the catalog content and the
  parameters; results are consumed in plan order, and statistics are exact integer sums.
* **Incremental**: ``snapshot.json`` stores a fingerprint of the catalog records, the tile parameters
  that change the output, the sensors used and the format version. When the target already holds a
  complete snapshot with the same fingerprint, nothing is read ("up to date").
* **Atomic**: the snapshot is built in a temporary sibling folder and renamed into place; a failure
  removes the temporary folder and leaves a previous snapshot untouched.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from a2mae.config import Params, TileConfig
from a2mae.console import progress as progress_bar
from a2mae.errors import A2maeError
from a2mae.executor import in_process, run_tasks
from a2mae.ingest.catalog import CatalogRowError, SceneRecord, read_catalog
from a2mae.io.lock import writer_lock
from a2mae.io.storage import S3Settings
from a2mae.sensors import get_registry
from a2mae.sensors.registry import QASpec, SensorRegistry
from a2mae.stssd.chips import SceneSource, close_open_files
from a2mae.stssd.errors import TilingError as TilingError  # re-exported
from a2mae.stssd.grouping import Plan, PlannedSet, estimate_plan, pack_runs, plan_sets
from a2mae.stssd.packing import ShardTask, write_shard
from a2mae.stssd.snapshot import (
    FORMAT_VERSION,
    INFO,
    SnapshotCounts,
    SnapshotError,
    SnapshotWriter,
    read_info,
    verify_snapshot,
)

#: Tile parameters that do not change the output (how the work runs, where it goes).
EXECUTION_KEYS = (
    "executor",
    "workers",
    "ray_address",
    "chips_per_task",
    "gdal_cache_mb",
    "snapshot",
    "max_plan_mb",
    "lock_timeout_s",
)


#: Plans of more scene x grid-point pairs than this get a progress bar of their own (seconds of work).
PLAN_BAR_PAIRS = 20_000


@dataclass
class TileSummary:
    """Result of :func:`tile`.

    Attributes:
        out: The snapshot folder.
        snapshot_id: Content hash of the snapshot.
        up_to_date: True when nothing was done (same inputs and parameters as the existing snapshot).
        counts: Counts stored in ``snapshot.json``.
        seconds: Wall time of this call.
        input_bytes: Size of the scenes' local files (0 for s3:// scenes).
        note: Why a snapshot of the same inputs was rebuilt (a damaged file), or None.
        skipped: With ``skip_bad``: one line per scene left out because a file of it could not be read
            (or changed since ingest).
        notes: Lines worth showing about the catalog (repeated rows used once).
    """

    out: Path
    snapshot_id: str
    up_to_date: bool
    counts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    input_bytes: int = 0
    note: str | None = None
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def load_catalog(path: str | os.PathLike[str]) -> list[SceneRecord]:
    """Read a scene catalog, with one-line errors.

    Raises:
        TilingError: Missing, a folder, not a catalog, or empty.
        OSError: The operating system refuses to open it (permissions).
    """
    p = Path(path)
    if not p.exists():
        raise TilingError(f"{p}: catalog not found; run `a2mae ingest` first or pass --catalog PATH")
    if p.is_dir():
        raise TilingError(f"{p}: is a folder; --catalog takes the catalog file written by `a2mae ingest`")
    os.close(os.open(p, os.O_RDONLY))  # a forbidden catalog: an OS error (exit code 1), not "not a catalog"
    try:
        records = read_catalog(p)
    except CatalogRowError as err:
        raise TilingError(f"{p}: {err}") from None
    except Exception as err:  # pyarrow raises several types for a non-Parquet or foreign file
        text = " ".join(str(err).split())
        if "parquet" in text.lower() and ("magic" in text.lower() or "could not open" in text.lower()):
            reason = "not a Parquet file"
        else:
            reason = f"{type(err).__name__}: {text[:120]}"
        raise TilingError(
            f"{p}: not an a2mae scene catalog ({reason}); rebuild it with `a2mae ingest`"
        ) from None
    if not records:
        raise TilingError(f"{p}: the catalog has no scenes; ingest some scenes first")
    return records


def fingerprint(
    records: Sequence[SceneRecord], cfg: TileConfig, registry: SensorRegistry
) -> tuple[str, dict[str, Any]]:
    """Fingerprint of everything that determines a snapshot's bytes.

    Returns:
        ``(fingerprint, info)`` where ``info`` holds the parts recorded in ``snapshot.json``.
    """
    import a2mae

    recs = sorted(records, key=lambda r: r.scene_id)
    # A record without a region of interest hashes as before the field existed (snapshots stay valid).
    # The files ingest saw (sizes, times, digests) are checked before tiling, not part of the content.
    dumps = [
        r.model_dump(mode="json", exclude={"files", "roi_geojson"} if r.roi_geojson is None else {"files"})
        for r in recs
    ]
    cat = hashlib.sha256(json.dumps(dumps, sort_keys=True).encode()).hexdigest()
    params = cfg.model_dump(mode="json", exclude=set(EXECUTION_KEYS))
    sensors = registry.to_dict(sorted({r.sensor for r in recs}))
    payload = {
        "format_version": FORMAT_VERSION,
        "a2mae": getattr(a2mae, "__version__", "0"),
        "catalog": cat,
        "params": params,
        "sensors": sensors,
    }
    fp = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    info = {
        "fingerprint": fp,
        "a2mae_version": payload["a2mae"],
        "catalog": {"scenes": len(recs), "sha256": cat},
        "params": {"tile": params},
    }
    return fp, info


def kept_bands(rec: SceneRecord, registry: SensorRegistry, cfg: TileConfig) -> tuple[str, ...]:
    """Bands written for a scene: the sensor's pre-training order, minus dropped and missing bands."""
    sensor = registry.get(rec.sensor)
    drop = set(cfg.drop_bands.get(rec.sensor, []))
    present = {bf.band for bf in rec.band_files}
    return tuple(b for b in sensor.pretrain_bands if b not in drop and b in present)


def on_chip_grid(rec: SceneRecord, registry: SensorRegistry, cfg: TileConfig) -> SceneRecord:
    """The record with its grid set to the finest grid of the bands written.

    The catalog's grid is the scene's finest band, which may be a band that is not written (Landsat
    L1's 15 m panchromatic B8): chips are cut at the native GSD of the pre-training bands.

    Raises:
        TilingError: A scene has none of its sensor's pre-training bands.
    """
    keep = kept_bands(rec, registry, cfg)
    if not keep:
        raise TilingError(
            f"scene {rec.scene_id} ({rec.source}): none of the {rec.sensor} pre-training bands is present"
        )
    finest = min(
        (bf for bf in rec.band_files if bf.band in keep), key=lambda bf: (bf.gsd_m, keep.index(bf.band))
    )
    if finest.transform == rec.transform and (finest.width, finest.height) == (rec.width, rec.height):
        return rec
    a, _, c, _, e, f = finest.transform
    xs = (c, c + a * finest.width)
    ys = (f, f + e * finest.height)
    return rec.model_copy(
        update={
            "transform": finest.transform,
            "width": finest.width,
            "height": finest.height,
            "gsd_m": finest.gsd_m,
            "bounds": (min(xs), min(ys), max(xs), max(ys)),
        }
    )


def _qa_decode(rec: SceneRecord, registry: SensorRegistry) -> QASpec | None:
    """How to decode the scene's QA layer (None when it has none)."""
    if rec.qa_file is None:
        return None
    return registry.get(rec.sensor).product(rec.product).qa


def build_tasks(
    plan: Plan, cfg: TileConfig, registry: SensorRegistry, s3: object | None = None
) -> tuple[list[ShardTask], dict[int, tuple[str, ...]]]:
    """One task per shard: whole blocks of grid points whose chips add up to at most ``shard_max_mb``.

    The partition (:func:`~a2mae.stssd.grouping.pack_runs`) depends only on the plan and
    ``shard_max_mb`` (not on the worker count or ``chips_per_task``), so it is part of the output's
    definition. Runs hold whole 8 x 8 blocks of grid points where they fit, so a block's chips of
    one scene are read as one region by one task.

    Returns:
        ``(tasks in plan order, bands written per scene index)``; ``out_dir`` is left unset.

    Raises:
        TilingError: A scene has none of its sensor's pre-training bands.
    """
    sources: dict[int, SceneSource] = {}
    bands: dict[int, tuple[str, ...]] = {}

    def source(scene: int) -> SceneSource:
        # Each scene is described once and shared by every task that reads it; ``bands`` fills in
        # the order scenes are first needed.
        if scene not in sources:
            bands[scene], sources[scene] = _scene_source(plan.records[scene], registry, cfg)
        return sources[scene]

    max_bytes = int(cfg.shard_max_mb * 1024 * 1024)
    chip_bytes = 2 * cfg.chip_size * cfg.chip_size  # int16 pixels

    def point_bytes(sets: Sequence[PlannedSet]) -> int:
        # A window shared by several sets of a grid point is stored once.
        wins = {im.window for st in sets for im in st.images}
        return sum(len(source(w.scene).bands) * chip_bytes for w in wins)

    tasks: list[ShardTask] = []
    for a, b in pack_runs(plan.sets, point_bytes, max_bytes):
        tasks.append(_shard_task(len(tasks), tuple(plan.sets[a:b]), plan, source, cfg, max_bytes, s3))
    return tasks, bands


def _scene_source(
    rec: SceneRecord, registry: SensorRegistry, cfg: TileConfig
) -> tuple[tuple[str, ...], SceneSource]:
    """What a worker needs to read a scene's chips: the files of the bands written, nodata, QA, scale.

    Returns:
        ``(bands written, scene source)``.

    Raises:
        TilingError: The scene has none of its sensor's pre-training bands.
    """
    keep = kept_bands(rec, registry, cfg)
    if not keep:
        raise TilingError(
            f"scene {rec.scene_id} ({rec.source}): none of the {rec.sensor} pre-training bands is present"
        )
    by_band = {bf.band: bf for bf in rec.band_files}
    files = tuple(by_band[b] for b in keep)
    product = registry.get(rec.sensor).product(rec.product)
    return keep, SceneSource(
        scene_id=rec.scene_id,
        content_hash=rec.content_hash,
        transform=rec.transform,
        bands=keep,
        band_files=files,
        nodata=tuple(bf.nodata if bf.nodata is not None else product.nodata for bf in files),
        qa_file=rec.qa_file,
        qa=_qa_decode(rec, registry),
        scale=rec.scale,
        offset=rec.offset,
    )


def _shard_task(
    unit: int,
    sets: tuple[PlannedSet, ...],
    plan: Plan,
    source: Callable[[int], SceneSource],
    cfg: TileConfig,
    max_bytes: int,
    s3: object | None,
) -> ShardTask:
    """The task writing shard ``unit``: its sets, the scenes they read (by index) and the drop rules."""
    scenes = sorted({im.window.scene for st in sets for im in st.images})
    return ShardTask(
        unit=unit,
        chip=cfg.chip_size,
        scenes=tuple(source(sc) for sc in scenes),
        scene_index=tuple(scenes),
        sensors=tuple(plan.records[sc].sensor for sc in scenes),
        sets=sets,
        max_nodata=cfg.max_nodata_fraction,
        max_cloud=cfg.max_cloud_fraction,
        min_images=cfg.min_images_per_set,
        hires_sensors=frozenset(cfg.hires_sensors),
        max_bytes=max_bytes,
        batch_chips=cfg.chips_per_task,
        gdal_cache_mb=cfg.gdal_cache_mb,
        s3=s3,
    )


def _input_bytes(records: Sequence[SceneRecord]) -> int:
    """Size of the scenes' local files, for the summary's MB/s (s3:// files are not asked for)."""
    uris = {bf.uri for r in records for bf in (*r.band_files, *([r.qa_file] if r.qa_file else []))}
    total = 0
    for u in uris:
        if not u.startswith("s3://"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(u)
    return total


def _check_target(out: Path) -> dict[str, Any] | None:
    """The existing snapshot's info at ``out`` (None when ``out`` is absent or an empty folder)."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise TilingError(f"{out}: exists and is a file; choose another --out")
    if not (out / INFO).exists():
        if any(out.iterdir()):
            raise TilingError(
                f"{out}: exists, is not empty and is not an a2mae snapshot; choose another --out or remove it"
            )
        return None
    try:
        return read_info(out)
    except SnapshotError:
        return None  # an older or damaged snapshot: rebuilt and replaced


#: In a temporary snapshot folder: ``<host> <pid>`` of the run building it.
OWNER = ".owner"
#: A temporary folder without an owner is left alone this long (its run may be starting).
_OWNERLESS_GRACE_S = 60.0


def _remove_stale_temporaries(out: Path) -> list[Path]:
    """Remove temporary folders of killed runs that targeted ``out`` (``.<name>.tmp-*``).

    A folder is stale when its owner is a process of this host that no longer runs, or when it has
    no owner file and is older than a minute. Folders of live runs, and of other hosts (a shared
    file system), are left alone.

    Returns:
        The folders removed.
    """
    from a2mae.services.daemon import pid_alive

    removed = []
    host = socket.gethostname()
    for p in sorted(out.parent.glob(f".{out.name}.tmp-*")):
        try:
            owner_host, pid = (p / OWNER).read_text().split()
            stale = owner_host == host and not pid_alive(int(pid))
        except FileNotFoundError:
            try:
                stale = time.time() - p.stat().st_mtime > _OWNERLESS_GRACE_S
            except FileNotFoundError:
                continue
        except (OSError, ValueError):
            continue
        if stale:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished snapshot ``tmp`` to ``out``, moving a previous snapshot aside first."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


def tile(
    catalog: str | os.PathLike[str],
    out: str | os.PathLike[str],
    params: Params,
    *,
    progress: bool = True,
    force: bool = False,
    skip_bad: bool = False,
    verify_sources: bool = False,
) -> TileSummary:
    """Tile a scene catalog into an STSSD snapshot.

    Scenes may be local files or remote COGs (``s3://``, ``http(s)://``: the catalog of
    ``a2mae collect``); of remote ones only the chip windows are read.

    Args:
        catalog: Scene catalog written by ``a2mae ingest`` (or :func:`~a2mae.ingest.catalog.write_catalog`).
        out: Snapshot folder (created, or replaced atomically when its inputs changed).
        params: Parameters (``tile`` section; ``data.sensor_files`` and ``data.s3`` for reading).
        progress: Show a progress bar (only on a terminal).
        force: Rebuild even when the snapshot is up to date.
        skip_bad: Leave out the scenes a file of which cannot be opened or read (a remote asset that
            is gone, denied or unreachable after retries) and tile the rest; they are listed in
            :attr:`TileSummary.skipped`. The snapshot's fingerprint covers only the scenes used, so a
            later run, once the files are back, rebuilds it with them. Scenes whose files changed
            since ingest are left out too.
        verify_sources: Compare the MD5 of every local scene file with the catalog's (reads every
            byte); by default sizes, modification times and the first 64 KiB are compared
            (:func:`a2mae.ingest.verify.changed_scenes`).

    Returns:
        What was done.

    Raises:
        TilingError: Bad catalog or output folder, or (``skip_bad``) no readable scene.
        A2maeError: Unreadable scene files and other input problems (without ``skip_bad``).
    """
    t0 = time.perf_counter()
    records, notes = _unique_rows(load_catalog(catalog), catalog)
    cfg, registry, s3 = params.tile, get_registry(params.data.sensor_files), params.data.s3.settings()
    records, skipped = _unchanged(records, catalog, s3, skip_bad=skip_bad, full=verify_sources)
    run = functools.partial(_tile_records, cfg=cfg, registry=registry, s3=s3, progress=progress, force=force)
    if not skip_bad:
        summary = run(records, catalog, Path(out), t0)
        summary.notes = notes
        return summary
    records, unreadable = _readable(records, s3)
    skipped += unreadable
    while True:
        if not records:
            raise TilingError(f"{catalog}: no scene can be read ({len(skipped)} skipped: {skipped[0]})")
        try:
            summary = run(records, catalog, Path(out), t0)
        except A2maeError as err:  # a read failing after the probe: leave that scene out and go again
            bad = _scenes_named(str(err), records)
            if not bad:
                raise
            skipped += [f"{r.scene_id}: {err}" for r in bad]
            records = [r for r in records if r not in bad]
            continue
        summary.skipped = skipped
        summary.notes = notes
        return summary


def _unique_rows(
    records: list[SceneRecord], catalog: str | os.PathLike[str]
) -> tuple[list[SceneRecord], list[str]]:
    """The catalog's rows with identical repeats folded (and a note for each), see :func:`duplicate_rows`.

    Raises:
        TilingError: Two different rows for one scene or one source.
    """
    from a2mae.ingest.verify import CatalogDuplicates, duplicate_rows

    try:
        return duplicate_rows(records, str(catalog))
    except CatalogDuplicates as err:
        raise TilingError(str(err)) from None


def _unchanged(
    records: list[SceneRecord], catalog: str | os.PathLike[str], s3: S3Settings, *, skip_bad: bool, full: bool
) -> tuple[list[SceneRecord], list[str]]:
    """The scenes whose files still match their catalog rows, and a line per other scene.

    Remote scenes are read with ``s3``.

    Raises:
        TilingError: A scene's files changed since ingest (without ``skip_bad``).
    """
    from a2mae.ingest.verify import changed_scenes

    changed = changed_scenes(records, s3, full=full)
    if not changed:
        return records, []
    lines = [f"{r.scene_id}: {why}" for r, why in changed]
    if not skip_bad:
        r, why = changed[0]
        more = f" (and {len(changed) - 1} more scenes)" if len(changed) > 1 else ""
        raise TilingError(
            f"scene {r.scene_id}: {why}{more}; ingest {r.source} again "
            f"(--catalog {catalog}) to replace its row, or remove it with `a2mae catalog rm {r.scene_id}`"
        )
    bad = {id(r) for r, _ in changed}
    return [r for r in records if id(r) not in bad], lines


def _readable(records: Sequence[SceneRecord], settings: S3Settings) -> tuple[list[SceneRecord], list[str]]:
    """The scenes all of whose files open (headers only, in threads), and a line per other scene."""
    from concurrent.futures import ThreadPoolExecutor

    from a2mae.io.raster import open_raster

    def probe(uri: str) -> str | None:
        try:
            with open_raster(uri, settings):
                return None
        except A2maeError as err:
            return str(err)

    uris = sorted({bf.uri for r in records for bf in (*r.band_files, *([r.qa_file] if r.qa_file else []))})
    with ThreadPoolExecutor(8) as pool:
        errors = dict(zip(uris, pool.map(probe, uris), strict=True))
    good, skipped = [], []
    for r in records:
        bad = [
            errors[bf.uri] for bf in (*r.band_files, *([r.qa_file] if r.qa_file else [])) if errors[bf.uri]
        ]
        if bad:
            skipped.append(f"{r.scene_id}: {bad[0]}")
        else:
            good.append(r)
    return good, skipped


def _scenes_named(message: str, records: Sequence[SceneRecord]) -> list[SceneRecord]:
    """The scenes an error line names (by scene id or by the URI of one of their files)."""
    return [
        r
        for r in records
        if r.scene_id in message
        or any(bf.uri in message for bf in (*r.band_files, *([r.qa_file] if r.qa_file else [])))
    ]


def _tile_records(
    records: Sequence[SceneRecord],
    catalog: str | os.PathLike[str],
    out: Path,
    t0: float,
    *,
    cfg: TileConfig,
    registry: SensorRegistry,
    s3: S3Settings,
    progress: bool,
    force: bool,
) -> TileSummary:
    """Tile ``records`` (the catalog's, or those of them that can be read) into ``out``.

    ``cfg`` is the ``tile`` section, ``registry`` the sensors of ``data.sensor_files``, ``s3`` the
    settings remote scenes are read with.
    """
    fp, info = fingerprint(records, cfg, registry)
    with writer_lock(out, cfg.lock_timeout_s, setting="tile.lock_timeout_s"):
        _remove_stale_temporaries(out)
        existing = _check_target(out)
        note = None
        if not force and existing is not None and existing.get("fingerprint") == fp:
            note = _damage(out, existing)
            if note is None:
                counts = existing.get("counts", {})
                return TileSummary(out, existing["snapshot_id"], True, counts, time.perf_counter() - t0)

        plan = _plan(records, registry, cfg, catalog, progress=progress)
        tasks, bands = build_tasks(plan, cfg, registry, s3)
        in_workers = _prepare_workers(cfg, len(tasks))
        snapshot_id, counts = _build_snapshot(
            out, plan, tasks, bands, info, cfg, in_workers=in_workers, progress=progress
        )
    seconds = time.perf_counter() - t0
    return TileSummary(out, snapshot_id, False, counts.__dict__, seconds, _input_bytes(plan.records), note)


def _damage(out: Path, existing: dict[str, Any]) -> str | None:
    """Why the snapshot at ``out`` (of the right fingerprint) cannot be called up to date, or None.

    Every file is checked against the sizes and sha256 digests of its own ``snapshot.json``
    (:func:`~a2mae.stssd.snapshot.verify_snapshot`); a snapshot written before shard digests were
    recorded is rebuilt once, so that it has them.
    """
    try:
        doc = verify_snapshot(out, doc=existing)
    except SnapshotError as err:
        return str(err).split("; rebuild it")[0]
    if doc["verified"] != "sha256":
        return f"{out}: written without shard digests (an older a2mae)"
    return None


def _plan(
    records: Sequence[SceneRecord],
    registry: SensorRegistry,
    cfg: TileConfig,
    catalog: str | os.PathLike[str],
    *,
    progress: bool = False,
) -> Plan:
    """Plan the image sets from the catalog's metadata, on each scene's chip grid (with a progress bar).

    Raises:
        TilingError: No set fits (every scene too small for a chip or off the grid), a scene has
            none of its sensor's pre-training bands, or the plan would take more memory than
            ``tile.max_plan_mb`` (refused before anything is built).
    """
    on_grid = [on_chip_grid(r, registry, cfg) for r in records]
    need, pairs = estimate_plan(on_grid, cfg)
    if need > cfg.max_plan_mb * 2**20:
        raise TilingError(
            f"{catalog}: planning would need about {need / 2**30:.1f} GB ({pairs:,} scene x grid-point "
            f"pairs at tile.grid_m={cfg.grid_m:g}), above tile.max_plan_mb={cfg.max_plan_mb}; raise "
            "tile.grid_m, tile a subset of the catalog (by region), or raise tile.max_plan_mb"
        )
    with progress_bar("plan", None, "grid points", enabled=progress and pairs > PLAN_BAR_PAIRS) as bar:
        plan = plan_sets(on_grid, cfg, lambda done, total: bar.update(done, total=total))
    if not plan.sets:
        if any(min(r.width, r.height) >= cfg.chip_size for r in on_grid):
            raise TilingError(
                f"{catalog}: no image set fits: no point of the {cfg.grid_m:g} m grid (tile.grid_m) lies "
                f"where a chip of tile.chip_size={cfg.chip_size} px fits inside a scene (with a pixel to "
                "spare); lower tile.grid_m or tile.chip_size"
            )
        raise TilingError(
            f"{catalog}: no image set fits: every scene is smaller than a chip of tile.chip_size="
            f"{cfg.chip_size} px (of its finest band grid); lower tile.chip_size"
        )
    return plan


def _prepare_workers(cfg: TileConfig, n_tasks: int) -> bool:
    """Whether the shard tasks run in worker processes (local pool or Ray) rather than in this one.

    For a local pool, rasterio and GDAL are imported here first, so the forked workers inherit them.
    """
    in_workers = not in_process(cfg.executor, cfg.workers, n_tasks)
    if in_workers and cfg.executor == "local":
        import a2mae.io.raster  # noqa: F401  (rasterio and GDAL load once here, not in every forked worker)
    return in_workers


def _build_snapshot(
    out: Path,
    plan: Plan,
    tasks: Sequence[ShardTask],
    bands: dict[int, tuple[str, ...]],
    info: dict[str, Any],
    cfg: TileConfig,
    *,
    in_workers: bool,
    progress: bool,
) -> tuple[str, SnapshotCounts]:
    """Write the snapshot into a temporary sibling of ``out`` and swap it into place.

    The temporary folder holds an owner file (host and pid) while it is written, so that a later
    run can tell a killed run's folder from a live one; any failure removes the folder and leaves a
    previous snapshot at ``out`` untouched.

    Returns:
        ``(snapshot id, counts)``.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        (tmp / OWNER).write_text(f"{socket.gethostname()} {os.getpid()}\n")
        counts = _write_snapshot(tmp, plan, tasks, bands, info, cfg, in_workers=in_workers, progress=progress)
        snapshot_id = json.loads((tmp / INFO).read_text())["snapshot_id"]
        (tmp / OWNER).unlink()
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return snapshot_id, counts


def _write_snapshot(
    tmp: Path,
    plan: Plan,
    tasks: Sequence[ShardTask],
    bands: dict[int, tuple[str, ...]],
    info: dict[str, Any],
    cfg: TileConfig,
    *,
    in_workers: bool,
    progress: bool,
) -> SnapshotCounts:
    """Run the shard tasks and write the manifest, statistics and info file into ``tmp``.

    Returns:
        The counts written to ``snapshot.json``.
    """
    writer = SnapshotWriter(tmp, plan, bands, chip=cfg.chip_size, info=info)
    # local workers write the shards; a Ray worker may be on another machine (bytes come back)
    out_dir = str(writer.shard_dir) if cfg.executor == "local" else None
    tasks = [replace(t, out_dir=out_dir, worker_process=in_workers) for t in tasks]
    try:
        _run_shard_tasks(tasks, writer, cfg, total_sets=len(plan.sets), progress=progress)
        return writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        close_open_files()  # the files this process opened (workers=1, or a failure)


def _run_shard_tasks(
    tasks: Sequence[ShardTask], writer: SnapshotWriter, cfg: TileConfig, *, total_sets: int, progress: bool
) -> None:
    """Run the shard tasks on the configured executor and hand their results to the writer in plan order.

    The progress bar counts sets and advances as shards finish, in whatever order they do; the
    writer still receives the results in plan order, which keeps the snapshot deterministic.
    """
    with progress_bar("tile", total_sets, "sets", enabled=progress) as bar:
        results = run_tasks(
            write_shard,
            tasks,
            executor=cfg.executor,
            workers=cfg.workers,
            ray_address=cfg.ray_address,
            ordered=True,
            on_done=lambda i: bar.advance(len(tasks[i].sets)),  # as shards finish
        )
        for i, result in results:
            writer.add(tasks[i].sets, result)
