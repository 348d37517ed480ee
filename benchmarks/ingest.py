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
* **tile**: ``a2mae tile`` of the catalog: the plan (one scene-anchored centre per patch) and the
  chips (``--tile`` only; one chip per patch is checked).

Prints scenes per second and the ratio to the plain header reads (the goal: ingest at least 0.5x).

    .venv/bin/python benchmarks/ingest.py [--patches 20000] [--workers 2] [--tile]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def plain_headers(root: Path) -> tuple[float, int]:
    """Seconds to open every patch file and read its header; number of patches."""
    import rasterio

    folders = sorted(p for p in root.iterdir() if p.is_dir())
    t0 = time.perf_counter()
    for folder in folders:
        for f in sorted(folder.iterdir()):
            with rasterio.open(f) as ds:
                _ = (ds.crs, ds.transform, ds.width, ds.height, ds.dtypes, ds.nodata)
    return time.perf_counter() - t0, len(folders)


def run_ingest(root: Path, catalog: Path, workers: int) -> tuple[float, int, int]:
    """Seconds of one ``a2mae ingest`` of ``root`` into ``catalog``; scenes added and skipped."""
    from a2mae.config import load_params
    from a2mae.ingest.run import ingest

    params = load_params(overrides=[f"data.workers={workers}"])
    t0 = time.perf_counter()
    report = ingest([str(root)], catalog, params, progress=False)
    if report.failed:
        raise SystemExit(f"ingest failed: {report.failed[0].message}")
    return time.perf_counter() - t0, len(report.added), len(report.skipped)


def run_tile(catalog: Path, out: Path) -> tuple[float, float, dict]:
    """Seconds to plan, seconds of the whole ``a2mae tile``, and the snapshot counts."""
    from a2mae.config import load_params
    from a2mae.ingest.catalog import read_catalog
    from a2mae.sensors import get_registry
    from a2mae.stssd.grouping import plan_sets
    from a2mae.stssd.run import on_chip_grid, tile

    params = load_params()
    records = read_catalog(catalog)
    t0 = time.perf_counter()
    plan_sets([on_chip_grid(r, get_registry(), params.tile) for r in records], params.tile)
    planned = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = tile(catalog, out, params, progress=False)
    return planned, time.perf_counter() - t0, summary.counts


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
        plain, n = _fresh(plain_headers, root)
        lines = [("plain rasterio headers", plain, n)]
        catalog = base / "catalog.parquet"
        for w in sorted({1, args.workers}):
            catalog.unlink(missing_ok=True)
            secs, added, _ = _fresh(run_ingest, root, catalog, w)
            lines.append((f"a2mae ingest, {w} thread{'s' if w > 1 else ''}", secs, added))
        secs, _, skipped = _fresh(run_ingest, root, catalog, args.workers)
        lines.append(("a2mae ingest again (skipped)", secs, skipped))
        print(f"{n} patches, {sum(1 for _ in root.rglob('*.tif'))} files")
        print(f"{'':34}{'seconds':>9}{'scenes/s':>10}{'vs plain':>10}")
        for label, secs, count in lines:
            rate = count / secs
            print(f"{label:34}{secs:9.1f}{rate:10.0f}{rate / (n / plain):9.2f}x")
        if args.tile:
            planned, secs, counts = _fresh(run_tile, catalog, base / "stssd")
            print(
                f"a2mae tile: plan {planned:.1f} s, whole run {secs:.1f} s; {counts['sets']} sets, "
                f"{counts['chips']} chips for {n} patches"
            )
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
