"""Embedding throughput of ``a2mae benchmark`` vs the bare encoder forward over the same chips in memory.

The harness path (:func:`a2mae.benchmark.embed.compute`: chips -> per-batch stacking, normalisation
with the arm's statistics, ``forward_features``, pooled + token maps copied to numpy) against the bare
forward pass of the same encoder over the same chips, already normalised and held as ``ImageSample``
tensors. Goal: harness >= 0.8x the bare forward. Both run in this process, alternating, best of
``--repeats``; one BLAS thread count for both.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/benchmark_harness.py [--chips 156] [--batch 32]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from a2mae.benchmark.arms.base import data_statistics
from a2mae.benchmark.arms.encoder import EncoderArm
from a2mae.benchmark.data import BenchData
from a2mae.benchmark.embed import compute
from a2mae.benchmark.layouts import read_data
from a2mae.config import load_params
from a2mae.finetune.encoder import EncoderHandle
from a2mae.testing.models import build_model
from a2mae.types import ImageSample


def _data(n: int) -> BenchData:
    base = read_data(Path("data/samples/segmentation"), load_params().benchmark)  # 39 real S2 chips, 64 px
    chips = [base.chips[i % len(base.chips)] for i in range(n)]
    return BenchData(base.kind, base.classes, chips, base.layout, base.root, base.sensor, base.bands)


def _bare(model: torch.nn.Module, samples: list[ImageSample], batch: int) -> None:
    with torch.inference_mode():
        for s in range(0, len(samples), batch):
            model.forward_features(samples[s : s + batch])  # type: ignore[operator]


def main() -> None:
    """Print harness and bare throughput (chips/s) and their ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chips", type=int, default=156)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variant", default="a2mae_vit_tiny_p8_t96")
    a = ap.parse_args()
    torch.manual_seed(0)
    data = _data(a.chips)
    model = build_model(a.variant, sensors=["S2"], mask_ratio=0.75).eval()
    arm = EncoderArm("encoder", handle=EncoderHandle(model, "benchmark"))
    arm.prepare(data, data_statistics(data))
    x = arm.normalise(np.stack([c.pixels[0] for c in data.chips]))
    samples = [ImageSample(px, c.metas[0]) for px, c in zip(x, data.chips, strict=True)]
    best = {"harness": float("inf"), "bare": float("inf")}
    _bare(model, samples[: a.batch], a.batch)  # warm-up
    for _ in range(a.repeats):
        t = time.perf_counter()
        _bare(model, samples, a.batch)
        best["bare"] = min(best["bare"], time.perf_counter() - t)
        t = time.perf_counter()
        compute(arm, data, a.batch, show=False)
        best["harness"] = min(best["harness"], time.perf_counter() - t)
    rate = {k: a.chips / v for k, v in best.items()}
    print(
        f"{a.chips} chips of {data.size[0]}x{data.size[1]} px, {len(data.bands)} bands, {a.variant}, "
        f"batch {a.batch}, torch threads {torch.get_num_threads()}, best of {a.repeats}"
    )
    print(f"bare encoder forward : {rate['bare']:8.1f} chips/s ({best['bare']:.2f} s)")
    print(f"harness embeddings   : {rate['harness']:8.1f} chips/s ({best['harness']:.2f} s)")
    print(f"harness / bare       : {rate['harness'] / rate['bare']:.2f}x (goal >= 0.8x)")


if __name__ == "__main__":
    main()
