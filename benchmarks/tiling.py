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

**Remote case** (``--remote``, the catalog ``a2mae collect`` writes): the same kind of scenes as COGs
with sensor-like noise (so tiles compress as real imagery does) in a SeaweedFS S3 store started
here, a catalog of their ``s3://`` URIs whose scenes carry a region of interest (``--roi-m``, a
square at the scenes' centre, as around a sampled location), against a plain rasterio read of the same
windows from the same store: every chip window of the plan, in every file tiling reads, each file
opened once (``/vsis3/`` with ``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR``, GDAL's block cache). Every
timed run is a fresh process (no HTTP cache carried over); one more pass of each through a counting
proxy prints the bytes each fetched. Goal: tiling >= 0.5x the plain read.

    .venv/bin/python benchmarks/tiling.py [--scale 8] [--workers 2] [--repeat 5]
    .venv/bin/python benchmarks/tiling.py --remote [--scale 8] [--roi-m 9600]
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
    ap.add_argument("--remote", action="store_true", help="the remote case: COGs in an S3 store")
    ap.add_argument("--roi-m", type=float, default=9600.0, help="remote: side of the region tiled, metres")
    args = ap.parse_args()
    if args.remote:
        return remote_main(args)

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


# -------------------------------------------------------------------------------------- remote case
def _s3_environ(settings) -> None:
    """Point GDAL (this process) at the store through its own variables: plain rasterio reads them."""
    from a2mae.io.raster import gdal_s3_options

    os.environ.update(gdal_s3_options(settings))
    os.environ["GDAL_DISABLE_READDIR_ON_OPEN"] = "EMPTY_DIR"


def _plain_windows(file_windows: dict[str, list[tuple[int, int, int, int]]], settings) -> tuple[float, float]:
    """Plain rasterio: open each remote file once, read each window (a fresh process per call)."""
    _s3_environ(settings)
    import rasterio
    from rasterio.windows import Window

    c0, t0 = _cpu(), time.perf_counter()
    for uri, wins in file_windows.items():
        with rasterio.open("/vsis3/" + uri[len("s3://") :]) as ds:
            for c, r, w, h in wins:
                ds.read(1, window=Window(c, r, w, h))
    return time.perf_counter() - t0, _cpu() - c0


def _tile_remote(catalog: Path, out: Path, workers: int, settings) -> tuple[float, float, dict]:
    """``a2mae tile`` of the remote catalog (a fresh process per call)."""
    from a2mae.config import load_params
    from a2mae.stssd.run import tile

    os.environ["AWS_ENDPOINT_URL"] = settings.endpoint_url
    os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = settings.key, settings.secret
    c0, t0 = _cpu(), time.perf_counter()
    s = tile(catalog, out, load_params(overrides=[f"tile.workers={workers}"]), progress=False, force=True)
    wall = time.perf_counter() - t0
    for child in multiprocessing.active_children():
        child.join()
    shutil.rmtree(out, ignore_errors=True)
    return wall, _cpu() - c0, s.counts


def _fresh(fn, *args):
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def _remote_data(root: Path, args, store):
    """Noisy COGs of generated scenes uploaded to the store; the catalog of their s3:// URIs with a
    region of interest; the windows of a plain read. Returns ``(catalog, file windows, MB, chips)``."""
    from a2mae.config import load_params
    from a2mae.ingest.catalog import write_catalog
    from a2mae.ingest.roi import square_around, union_geojson
    from a2mae.testing.scenes import Place, default_specs, make_scenes
    from a2mae.testing.stac import chip_windows, cog_scene, upload_scene, window_in, with_uris

    specs = [s for s in default_specs(args.scale) if s.sensor in ("S2", "L8")]
    made = make_scenes(root / "scenes", specs)
    cogs = [cog_scene(r, root / "cogs" / r.sensor, noise=40.0, seed=k) for k, r in enumerate(made)]
    bucket = store.create_bucket("a2mae-bench")
    place = Place()
    roi = union_geojson([square_around(place.lon, place.lat, args.roi_m)])
    remote = [
        with_uris(r, upload_scene(r, f"{bucket}/{r.scene_id}", store.settings())).model_copy(
            update={"roi_geojson": roi}
        )
        for r in cogs
    ]
    write_catalog(remote, root / "remote.parquet")
    windows: dict[str, list[tuple[int, int, int, int]]] = {}
    chips = 0
    for rec, wins in chip_windows(remote, load_params()):
        chips += len(wins)
        for bf in [*rec.band_files, *([rec.qa_file] if rec.qa_file else [])]:
            for row0, col0 in wins:
                c0, r0, c1, r1 = window_in(bf, rec.transform, row0, col0, 96)
                windows.setdefault(bf.uri, []).append((c0, r0, c1 - c0 + 1, r1 - r0 + 1))
    mb = sum(os.path.getsize(b.uri) for r in cogs for b in (*r.band_files, r.qa_file)) / 1e6
    return root / "remote.parquet", windows, mb, chips


def _bytes_fetched(store, catalog: Path, windows, root: Path, workers: int) -> tuple[int, int]:
    """Bytes each fetched, one pass each through a counting proxy (not timed)."""
    import dataclasses

    from a2mae.testing.countproxy import CountingProxy

    with CountingProxy(store.endpoint_url) as proxy:
        via = dataclasses.replace(store.settings(), endpoint_url=proxy.url)
        _fresh(_plain_windows, windows, via)
        plain = proxy.stats()["bytes"]
        proxy.reset()
        _fresh(_tile_remote, catalog, root / "snap-bytes", workers, via)
        return plain, proxy.stats()["bytes"]


def remote_main(args) -> int:
    """The remote case (``--remote``)."""
    from a2mae.services import SeaweedFS

    root = args.keep or Path(tempfile.mkdtemp(prefix="a2mae-bench-remote-"))
    store = SeaweedFS(root / "weed").start()
    try:
        t0 = time.perf_counter()
        catalog, windows, mb, chips = _remote_data(root, args, store)
        settings = store.settings()
        n = sum(len(w) for w in windows.values())
        print(
            f"remote: {len(windows)} COGs ({mb:.1f} MB) in S3 at {store.endpoint_url}, region "
            f"{args.roi_m:g} m: {chips} chip windows, {n} file windows "
            f"(prepared in {time.perf_counter() - t0:.1f} s)"
        )
        base = min(
            (_fresh(_plain_windows, windows, settings) for _ in range(args.repeat)), key=lambda x: x[0]
        )
        runs = {}
        for w in sorted({1, args.workers}):
            runs[w] = min(
                (_fresh(_tile_remote, catalog, root / f"snap-{w}", w, settings) for _ in range(args.repeat)),
                key=lambda x: x[0],
            )
        plain_b, tile_b = _bytes_fetched(store, catalog, windows, root, args.workers)
        counts = runs[1][2]
        print(
            f"snapshot: {counts['sets']} sets, {counts['chips']} chips stored of {counts['chips_read']} read"
        )
        print(f"{'':34s}{'seconds':>9s}{'vs plain':>10s}{'CPU s':>8s}")
        print(f"{'plain rasterio, same windows':34s}{base[0]:9.2f}{1.0:9.2f}x{base[1]:8.2f}")
        for w, (wall, cpu, _) in runs.items():
            print(f"{f'a2mae tile, {w} worker(s)':34s}{wall:9.2f}{base[0] / wall:9.2f}x{cpu:8.2f}")
        print(
            f"bytes fetched: plain {plain_b / 1e6:.2f} MB, tile {tile_b / 1e6:.2f} MB "
            f"({tile_b / plain_b:.2f}x)"
        )
        best = max(base[0] / wall for wall, _, _ in runs.values())
        print(
            f"goal: remote tiling >= 0.5x the plain read: {'met' if best >= 0.5 else 'NOT met'} "
            f"(best {best:.2f}x)"
        )
    finally:
        store.stop()
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
