"""Ingest of a pre-chipped archive (tens of thousands of small patch folders), in scenes per second.

Generates a BigEarthNet-style archive (``a2mae/testing/patches.py``: one folder per 1200 m patch
holding 12 per-band GeoTIFFs, 10 m bands at 120 px, 20 m at 60 px, 60 m at 20 px) and measures, on
the same files (page cache warm for all):

* **plain headers**: open every file of every patch with rasterio and read its header (CRS,
  transform, size, dtype, nodata), one process, one thread: the least any metadata ingest does;
* **ingest**: ``a2mae ingest`` into a new catalog (discovery, headers, detection, grid checks,
  nodata check, content hashes, catalog write) with 1 and with ``--workers`` threads, each in a
  fresh process (like a CLI run);
* **ingest again**: the same ingest with the catalog in place (every patch skipped by its listing
  fingerprint, no file opened);
* **plan**: the tiling plan of the catalog (one scene-anchored centre per patch), and with
  ``--tile`` the whole ``a2mae tile`` (one chip per patch is checked).

Prints scenes per second, the ratio to the plain header reads (the goal: ingest at least 0.5x) and
the CPU seconds of each setting (wall time is noisy on a shared machine).

    .venv/bin/python benchmarks/ingest.py [--patches 20000] [--workers 2] [--tile]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def _cpu() -> float:
    """CPU seconds of this process, all its threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def plain_headers(root: Path) -> tuple[float, float, int]:
    """Seconds and CPU seconds to open every patch file and read its header; number of patches."""
    import rasterio

    folders = sorted(p for p in root.iterdir() if p.is_dir())
    c0, t0 = _cpu(), time.perf_counter()
    for folder in folders:
        for f in sorted(folder.iterdir()):
            with rasterio.open(f) as ds:
                _ = (ds.crs, ds.transform, ds.width, ds.height, ds.dtypes, ds.nodata)
    return time.perf_counter() - t0, _cpu() - c0, len(folders)


def run_ingest(root: Path, catalog: Path, workers: int) -> tuple[float, float, int, int]:
    """Seconds and CPU seconds of one ``a2mae ingest`` of ``root`` into ``catalog``; scenes added, skipped."""
    from a2mae.config import load_params
    from a2mae.ingest.run import ingest

    params = load_params(overrides=[f"data.workers={workers}"])
    c0, t0 = _cpu(), time.perf_counter()
    report = ingest([str(root)], catalog, params, progress=False)
    if report.failed:
        raise SystemExit(f"ingest failed: {report.failed[0].message}")
    return time.perf_counter() - t0, _cpu() - c0, len(report.added), len(report.skipped)


def run_plan(catalog: Path) -> tuple[float, int, int]:
    """Seconds to plan the catalog; sets planned and distinct patches in them."""
    from a2mae.config import load_params
    from a2mae.ingest.catalog import read_catalog
    from a2mae.sensors import get_registry
    from a2mae.stssd.grouping import plan_sets
    from a2mae.stssd.run import on_chip_grid

    params = load_params()
    records = [on_chip_grid(r, get_registry(), params.tile) for r in read_catalog(catalog)]
    t0 = time.perf_counter()
    plan = plan_sets(records, params.tile)
    chips = {(im.window.scene, im.window.row0, im.window.col0) for s in plan.sets for im in s.images}
    return time.perf_counter() - t0, len(plan.sets), len(chips)


def run_tile(catalog: Path, out: Path) -> tuple[float, dict]:
    """Seconds of the whole ``a2mae tile``, and the snapshot counts."""
    from a2mae.config import load_params
    from a2mae.stssd.run import tile

    t0 = time.perf_counter()
    summary = tile(catalog, out, load_params(), progress=False)
    return time.perf_counter() - t0, summary.counts


def _fresh(fn, *args):
    """Run ``fn(*args)`` in a fresh process (imports and caches not shared with other settings)."""
    with ProcessPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=int, default=20_000, help="patch folders (12 files each)")
    ap.add_argument("--workers", type=int, default=2, help="ingest threads (data.workers)")
    ap.add_argument("--tile", action="store_true", help="also tile the catalog")
    ap.add_argument("--keep", type=Path, default=None, help="generate (or reuse) the archive here")
    args = ap.parse_args()

    from a2mae.testing.patches import BIGEARTHNET_BANDS, PatchLayout, make_patch_archive

    base = args.keep or Path(tempfile.mkdtemp(prefix="a2mae-bench-ingest-"))
    root = base / "patches"
    try:
        if not root.is_dir():
            cols = 100
            t0 = time.perf_counter()
            rows = -(-args.patches // cols)
            make_patch_archive(root, PatchLayout(BIGEARTHNET_BANDS, rows=rows, cols=cols))
            print(f"generated {rows * cols} patch folders in {time.perf_counter() - t0:.0f} s")
        plain, plain_cpu, n = _fresh(plain_headers, root)
        lines = [("plain rasterio headers", plain, plain_cpu, n)]
        catalog = base / "catalog.parquet"
        for w in sorted({1, args.workers}):
            catalog.unlink(missing_ok=True)
            secs, cpu, added, _ = _fresh(run_ingest, root, catalog, w)
            lines.append((f"a2mae ingest, {w} thread{'s' if w > 1 else ''}", secs, cpu, added))
        secs, cpu, _, skipped = _fresh(run_ingest, root, catalog, args.workers)
        lines.append(("a2mae ingest again (all skipped)", secs, cpu, skipped))
        print(f"{n} patches, {sum(1 for _ in root.rglob('*.tif'))} files")
        print(f"{'':34}{'seconds':>9}{'scenes/s':>10}{'vs plain':>10}{'CPU s':>9}{'vs plain':>10}")
        for label, secs, cpu, count in lines:
            rate = count / secs
            print(
                f"{label:34}{secs:9.1f}{rate:10.0f}{rate / (n / plain):9.2f}x"
                f"{cpu:9.1f}{(count / cpu) / (n / plain_cpu):9.2f}x"
            )
        planned, sets, chips = _fresh(run_plan, catalog)
        print(f"tiling plan: {planned:.1f} s for {n} patches: {sets} sets, {chips} chips")
        if args.tile:
            secs, counts = _fresh(run_tile, catalog, base / "stssd")
            print(f"a2mae tile: {secs:.1f} s; {counts['sets']} sets, {counts['chips']} chips stored")
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
