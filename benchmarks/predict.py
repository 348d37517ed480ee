"""Predict throughput against the model's forward pass alone, and peak memory against scene size.

On generated Sentinel-2 L2A scenes (per-band deflate GeoTIFFs, exact georeferencing; 10 bands, 20 m
bands resampled) and a random segmentation model on the registered tiny encoder (12 blocks, width
192; ``--toy``: the tests' 2-block width-32 encoder, where reading costs as much as the forward
pass), in one run:

* **forward only** (the baseline): the same windows as predict, already cut and held in memory,
  through :meth:`PredictModel.infer` in batches of the same size (one process);
* **predict**: ``a2mae predict`` of the whole scene (scene metadata, windowed reads, geographic
  encoding per window, forward, blending into the disk-backed accumulator, class map / quality COGs,
  validation), after one warm-up run in the same process (imports, GDAL and PROJ set-up), as the
  baseline has its warm-up batch;
* **peak memory**: ``predict`` of the scene and of one 4x larger (2x per side), each in a fresh process
  of its own; its peak resident set (``ru_maxrss``).

Goals: predict >= 0.8x the forward pass (windows/s); peak memory of the larger <= 1.2x the smaller.
Throughput is the best of ``--repeat`` runs (one worker, page cache warm).

    .venv/bin/python benchmarks/predict.py [--side 768] [--window 96] [--overlap 48] [--repeat 2] [--toy]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

SEG_BANDS = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"]


def make_scene(root: Path, side_px: int) -> str:
    """A generated S2 L2A scene of ``side_px`` pixels at 10 m; returns its folder."""
    from a2mae.testing.scenes import SceneSpec, make_scenes

    spec = SceneSpec("S2", datetime(2020, 6, 15, 3, 5, 41, tzinfo=UTC), side_px * 10.0)
    (rec,) = make_scenes(root, [spec])
    return rec.source


def _params(window: int, overlap: int, batch: int):
    from a2mae.config import load_params

    return load_params(
        overrides=[f"predict.window={window}", f"predict.overlap={overlap}", f"predict.batch_size={batch}"]
    )


#: Encoder of the benchmark model: the registered tiny variant (12 blocks, width 192), or ``--toy``.
ENCODER: dict = {"sensors": ["S2"]}


def _model():
    from a2mae.predict.model import from_module
    from a2mae.testing.models import tiny_downstream

    return from_module(tiny_downstream("segmentation", bands=SEG_BANDS, k=3, size=96, encoder=ENCODER))


def forward_only(scene: str, window: int, overlap: int, batch: int) -> tuple[float, int]:
    """Seconds of the forward passes over the scene's windows cut in memory beforehand, and the count."""
    import numpy as np
    import torch

    from a2mae.io.raster import raster_env
    from a2mae.predict.infer import window_geometry
    from a2mae.predict.run import batch_tasks
    from a2mae.predict.scenes import plan_jobs, read_sources
    from a2mae.stssd.chips import read_region_dn
    from a2mae.types import ImageMeta

    p = _params(window, overlap, batch)
    model = _model()
    from a2mae.sensors import get_registry

    (job,) = plan_jobs(
        read_sources([scene], p.data), model, get_registry(p.data.sensor_files), p.predict.window
    )
    tasks = batch_tasks(job, model, p.predict, None)
    cut = []
    with raster_env():
        for t in tasks:
            px = np.stack([read_region_dn(job.sources[0], r, c, window, window)[0] for r, c in t.windows])
            metas = []
            for r, c in t.windows:
                gsd, corners = window_geometry(job.crs, job.transform, r, c, window, window)
                metas.append((ImageMeta("S2", job.bands, gsd, corners, job.datetime),))
            cut.append((px, metas))
    torch.set_num_threads(1)
    model.infer(*cut[0])  # warm-up
    t0 = time.perf_counter()
    for px, metas in cut:
        model.infer(px, metas)
    return time.perf_counter() - t0, sum(len(t.windows) for t in tasks)


def run_predict(scene: str, out: str, window: int, overlap: int, batch: int) -> dict:
    """``predict`` of one scene in this process: seconds, windows, pixels, peak RSS (MiB)."""
    import torch

    from a2mae.predict.run import predict

    torch.set_num_threads(1)
    p = _params(window, overlap, batch)
    model = _model()  # built before the clock starts, as in the baseline
    predict([scene], out, p, model=model, overwrite=True, progress=False)  # warm-up, as the baseline's
    t0 = time.perf_counter()
    r = predict([scene], out, p, model=model, overwrite=True, progress=False)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": dt, "windows": r.windows, "pixels": r.pixels, "peak_mib": peak}


def in_child(scene: str, out: str, window: int, overlap: int, batch: int) -> dict:
    """:func:`run_predict` in a fresh process (its own peak memory)."""
    code = (
        "import json, sys; sys.path.insert(0, 'benchmarks'); import predict as b; "
        f"b.ENCODER.clear(); b.ENCODER.update({ENCODER!r}); "
        f"print(json.dumps(b.run_predict({scene!r}, {out!r}, {window}, {overlap}, {batch})))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=768, help="Side of the smaller scene, pixels.")
    ap.add_argument("--window", type=int, default=96)
    ap.add_argument("--overlap", type=int, default=48)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--toy", action="store_true", help="2-block width-32 encoder (the tests' model).")
    a = ap.parse_args()
    if a.toy:
        from a2mae.testing.models import TINY_ENCODER

        ENCODER.clear()
        ENCODER.update(TINY_ENCODER)
    with tempfile.TemporaryDirectory(prefix="a2mae-bench-predict-") as tmp:
        root = Path(tmp)
        small = make_scene(root / "small", a.side)
        large = make_scene(root / "large", 2 * a.side)
        args = (a.window, a.overlap, a.batch)
        fwd = min(forward_only(small, *args)[0] for _ in range(a.repeat))
        _, n = forward_only(small, *args)
        runs = [in_child(small, str(root / "out_small"), *args) for _ in range(a.repeat)]
        best = min(runs, key=lambda r: r["seconds"])
        big = in_child(large, str(root / "out_large"), *args)
    px = best["pixels"]
    enc = "toy encoder (2 blocks, width 32)" if a.toy else "a2mae_vit_tiny_p8_t96 encoder"
    print(
        f"scene {a.side}x{a.side} px, 10 bands, window {a.window}, overlap {a.overlap}, "
        f"batch {a.batch}, {enc}"
    )
    print(f"  forward only (windows cut in memory): {n / fwd:8.2f} windows/s  {px / fwd / 1e6:7.3f} Mpx/s")
    print(
        f"  predict (read, encode, blend, COGs):  {best['windows'] / best['seconds']:8.2f} windows/s  "
        f"{px / best['seconds'] / 1e6:7.3f} Mpx/s   -> {fwd / best['seconds']:.2f}x the forward pass "
        "(goal >= 0.8x)"
    )
    ratio = big["peak_mib"] / best["peak_mib"]
    print(
        f"  peak memory: {best['peak_mib']:.0f} MiB ({a.side}^2 px), {big['peak_mib']:.0f} MiB "
        f"({2 * a.side}^2 px, 4x the pixels) -> {ratio:.2f}x (goal <= 1.2x)"
    )


if __name__ == "__main__":
    main()
