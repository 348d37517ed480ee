"""Bootstrap intervals of the benchmark metrics against resampled copies scored by scikit-learn, in one run.

For each probe kind, ``N`` synthetic test predictions (``--n``, default 50,000 samples, 8 classes) with
spatial blocks of 100 samples; measured on the same predictions:

* **ours**: :func:`a2mae.benchmark.stats.bootstrap_interval` with ``--boot`` replicates (default 1,000)
  of the per-sample bootstrap and as many of the block bootstrap (prepared metrics, weights, no copies);
* **copies** (baseline): what a bootstrap without preparation does per replicate: draw ``N`` indices,
  copy the predictions, score them with scikit-learn; timed over ``--naive`` replicates and scaled to
  ``2 x --boot`` (the two bootstraps).

Goal: 1,000 replicates of both bootstraps over 50,000 samples in a few seconds per metric.

    .venv/bin/python benchmarks/bootstrap.py [--n 50000] [--boot 1000] [--naive 20]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, jaccard_score

from a2mae.benchmark.metrics import Predictions, metrics_for
from a2mae.benchmark.stats import bootstrap_interval


def synthetic(kind: str, n: int, c: int, rng: np.random.Generator) -> Predictions:
    if kind == "multi-label":
        t = (rng.random((n, c)) < 0.2).astype(np.int64)
        s = rng.random((n, c)) * 0.7 + 0.3 * t
        return Predictions(t, (s > 0.5).astype(np.int64), s)
    if kind == "change":
        t = (rng.random(n) < 0.08).astype(np.int64)
        s = rng.random(n) * 0.7 + 0.3 * t
        return Predictions(t, (s > 0.6).astype(np.int64), s)
    t = rng.integers(0, c, n)
    s = rng.random((n, c)) + np.eye(c)[t] * 0.5
    return Predictions(t, s.argmax(axis=1), s)


SKLEARN = {
    "accuracy": lambda p: accuracy_score(p.y_true, p.y_pred),
    "macro_f1": lambda p: f1_score(p.y_true, p.y_pred, average="macro"),
    "miou": lambda p: jaccard_score(p.y_true, p.y_pred, average="macro"),
    "macro_ap": lambda p: np.mean(
        [average_precision_score(p.y_true == k, p.y_score[:, k]) for k in np.unique(p.y_true)]
    ),
    "micro_map": lambda p: average_precision_score(p.y_true, p.y_score, average="micro"),
    "micro_f1": lambda p: f1_score(p.y_true, p.y_pred, average="micro"),
    "f1_changed": lambda p: f1_score(p.y_true, p.y_pred),
    "iou_changed": lambda p: jaccard_score(p.y_true, p.y_pred),
    "ap_changed": lambda p: average_precision_score(p.y_true, p.y_score),
}


def naive_seconds(name: str, p: Predictions, reps: int, rng: np.random.Generator) -> float:
    """Seconds per replicate of draw + copy + scikit-learn score."""
    t0 = time.perf_counter()
    for _ in range(reps):
        idx = rng.integers(0, p.n, p.n)
        q = Predictions(p.y_true[idx], p.y_pred[idx], None if p.y_score is None else p.y_score[idx])
        SKLEARN[name](q)
    return (time.perf_counter() - t0) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--naive", type=int, default=20)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    blocks = np.arange(args.n) // 100
    print(f"N = {args.n}, {args.n // 100} blocks, {args.boot} replicates per bootstrap (sample + block)")
    print(f"{'kind':<13} {'metric':<12} {'ours s':>8} {'copies s':>9} {'speed-up':>9}  interval")
    for kind in ("single-label", "multi-label", "segmentation", "change"):
        p = synthetic(kind, args.n, args.classes, rng)
        for name, metric in metrics_for(kind, 2 if kind == "change" else args.classes).items():  # type: ignore[arg-type]
            t0 = time.perf_counter()
            iv = bootstrap_interval(metric, p, blocks, n_boot=args.boot, seed=0)
            ours = time.perf_counter() - t0
            copies = naive_seconds(name, p, args.naive, rng) * 2 * args.boot
            print(
                f"{kind:<13} {name:<12} {ours:8.2f} {copies:9.1f} {copies / ours:8.1f}x  "
                f"{iv.value:.4f} [{iv.low:.4f}, {iv.high:.4f}] ({iv.method})"
            )


if __name__ == "__main__":
    main()
