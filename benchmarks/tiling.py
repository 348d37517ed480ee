"""Tiling throughput against a plain rasterio full read of the same files, in one run.

Generates co-located synthetic scenes (S2 L2A per-band files + SCL, L8 C2 L2 + QA_PIXEL, GF1, GF2;
deflate-compressed tiled GeoTIFFs like the archives' COGs), then measures, on the same files:

* **plain read**: open every file and ``read()`` it whole (one process): the baseline;
* **tiling**: ``a2mae tile`` (plan, windowed chip reads, resampling, QA, packing, manifest, stats),
  with 1 worker and with ``--workers`` workers (the default ``tile.workers``), each setting in a
  fresh process of its own (like a CLI run; one setting's memory never reaches the other's).

Throughput is MB of input files per second (best of ``--repeat``, page cache warm for both); CPU
seconds (this process and its workers) are printed too, as wall time is noisy on a shared machine.
Goal: tiling >= 0.5x the plain read.

    .venv/bin/python benchmarks/tiling.py [--scale 8] [--workers 2] [--repeat 5]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def plain_read(uris: list[str]) -> float:
    import rasterio

    t0 = time.perf_counter()
    for u in uris:
        with rasterio.open(u) as ds:
            ds.read()
    return time.perf_counter() - t0


def _cpu() -> float:
    """CPU seconds of this process and its finished children (wall time is noisy on shared machines)."""
    self, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return self.ru_utime + self.ru_stime + kids.ru_utime + kids.ru_stime


def _tile_best_of(root: Path, workers: int, repeat: int) -> tuple[float, float, dict]:
    """Best wall time and CPU seconds of ``repeat`` tilings (runs in its own fresh process)."""
    from a2mae.config import load_params
    from a2mae.stssd.run import tile

    best, cpu, counts = float("inf"), float("inf"), {}
    for i in range(repeat):
        out = root / f"snap-w{workers}-{i}"
        p = load_params(overrides=[f"tile.workers={workers}"])
        c0, t = _cpu(), time.perf_counter()
        s = tile(root / "catalog.parquet", out, p, progress=False)
        wall = time.perf_counter() - t
        for child in multiprocessing.active_children():  # workers exit after the last result:
            child.join()  # reap them so that their CPU seconds count (outside the wall time)
        best, cpu = min(best, wall), min(cpu, _cpu() - c0)
        counts = s.counts
        shutil.rmtree(out)
    return best, cpu, counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=8.0, help="scene size factor (8: S2 19 km, L8 38 km)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5, help="best of N timings")
    ap.add_argument("--keep", type=Path, default=None, help="keep the scenes and snapshots here")
    args = ap.parse_args()

    from a2mae.ingest.catalog import write_catalog
    from a2mae.testing.scenes import default_specs, make_scenes

    root = args.keep or Path(tempfile.mkdtemp(prefix="a2mae-bench-tiling-"))
    try:
        t0 = time.perf_counter()
        records = make_scenes(root / "scenes", default_specs(args.scale))
        write_catalog(records, root / "catalog.parquet")
        gen = time.perf_counter() - t0
        uris = sorted({b.uri for r in records for b in (*r.band_files, *([r.qa_file] if r.qa_file else []))})
        mb = sum(os.path.getsize(u) for u in uris) / 1e6
        print(
            f"scenes: {len(records)} ({len(uris)} files, {mb:.1f} MB) generated in {gen:.1f} s under {root}"
        )

        plain_read(uris)  # warm the page cache for both measurements

        def run(workers: int) -> tuple[float, float, dict]:
            ctx = multiprocessing.get_context("spawn")  # a fresh process per setting, like the CLI
            with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                return pool.submit(_tile_best_of, root, workers, args.repeat).result()

        c0 = _cpu()
        base = min(plain_read(uris) for _ in range(args.repeat))
        base_cpu = (_cpu() - c0) / args.repeat
        t1, c1, counts = run(1)
        tn, cn, _ = run(args.workers)
        print(
            f"snapshot: {counts['sets']} sets, {counts['images']} images, {counts['chips']} chips, "
            f"{counts['bytes'] / 1e6:.1f} MB in {counts['shards']} shard(s) "
            f"({counts['bytes'] / 1e6 / mb:.1f}x the input: nested L8 chips overlap, 20 m bands go to 10 m)"
        )
        print(f"{'':28s}{'seconds':>9s}{'MB/s':>9s}{'vs plain':>10s}{'CPU s':>8s}")
        print(f"{'plain rasterio full read':28s}{base:9.2f}{mb / base:9.1f}{1.0:9.2f}x{base_cpu:8.2f}")
        print(f"{'a2mae tile, 1 worker':28s}{t1:9.2f}{mb / t1:9.1f}{base / t1:9.2f}x{c1:8.2f}")
        print(f"{f'a2mae tile, {args.workers} workers':28s}{tn:9.2f}{mb / tn:9.1f}{base / tn:9.2f}x{cn:8.2f}")
        best = max(base / t1, base / tn)
        print(
            f"goal: tiling >= 0.5x the plain read: {'met' if best >= 0.5 else 'NOT met'} (best {best:.2f}x)"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
