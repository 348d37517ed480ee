"""``a2mae benchmark``: read a labelled set, embed it with every arm once, probe, score, report.

The steps: :func:`a2mae.benchmark.layouts.read_data` -> :func:`a2mae.benchmark.arms.build_arms` ->
:func:`a2mae.benchmark.embed.embeddings` (cached) -> per seed :mod:`a2mae.benchmark.probe` (frozen
protocols) -> intervals and paired differences
(:mod:`a2mae.benchmark.stats`) -> :mod:`a2mae.benchmark.report` (benchmark.md, results.parquet, the
figure) -> an MLflow run (:mod:`a2mae.benchmark.tracking`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from a2mae.benchmark import stats
from a2mae.benchmark.arms import build_arms, is_encoder
from a2mae.benchmark.arms.base import Arm, Embeddings, data_statistics
from a2mae.benchmark.data import TEST, BenchData, BenchmarkError
from a2mae.benchmark.embed import embeddings
from a2mae.benchmark.layouts import read_data
from a2mae.benchmark.metrics import Predictions, metrics_for, primary_metric
from a2mae.benchmark.probe import probe_arm, seed_folds
from a2mae.benchmark.report import write_outputs
from a2mae.benchmark.result import COLUMNS, BenchmarkResult
from a2mae.benchmark.stage import BenchmarkStage
from a2mae.config import BenchmarkConfig
from a2mae.console import line, progress


def _score_rows(
    arm: str,
    proto: str,
    fraction: float,
    seed: int,
    preds: Predictions,
    kind: str,
    n_cls: int,
    blocks: np.ndarray | None,
    n_boot: int,
) -> list[dict[str, Any]]:
    rows = []
    for name, fn in metrics_for(kind, n_cls).items():  # type: ignore[arg-type]
        iv = stats.bootstrap_interval(fn, preds, blocks, n_boot=n_boot, seed=seed)
        rows.append(
            dict(
                zip(
                    COLUMNS,
                    (arm, proto, fraction, seed, name, iv.value, iv.low, iv.high, iv.n_test, iv.n_blocks),
                    strict=True,
                )
            )
            | {"method": iv.method}
        )
    return rows


def _differences(
    arms: list[Arm],
    preds: dict[tuple[str, str, float], Predictions],
    kind: str,
    n_cls: int,
    blocks: np.ndarray | None,
    n_boot: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Paired intervals of each encoder minus each baseline (first seed), every protocol, fraction, metric."""
    out = []
    enc = [a.name for a in arms if is_encoder(a)]
    base = [a.name for a in arms if not is_encoder(a)]
    for (arm, proto, frac), p in preds.items():
        if arm not in enc:
            continue
        for b in base:
            q = preds.get((b, proto, frac))
            if q is None:
                continue
            for name, fn in metrics_for(kind, n_cls).items():  # type: ignore[arg-type]
                d = stats.paired_difference(fn, p, q, blocks, n_boot=n_boot, seed=seed)
                out.append(
                    {
                        "arm": arm,
                        "baseline": b,
                        "protocol": proto,
                        "fraction": frac,
                        "metric": name,
                        "mean": d.mean,
                        "low": d.low,
                        "high": d.high,
                        "resolved": d.resolved,
                        "n_test": d.n_test,
                        "n_blocks": d.n_blocks,
                        "method": d.method,
                    }
                )
    return out


def _embed_all(
    arms: list[Arm], data: BenchData, cfg: BenchmarkConfig, show: bool
) -> tuple[dict[str, Embeddings], dict[str, bool]]:
    ds = data_statistics(data)
    h, w = data.size
    emb, cached = {}, {}
    for arm in arms:
        if h % arm.patch or w % arm.patch:
            raise BenchmarkError(
                f"{data.root}: chips of {h}x{w} px are not a multiple of {arm.name}'s patch {arm.patch}; "
                "set benchmark.chip_size"
            )
        arm.prepare(data, ds)
        emb[arm.name], cached[arm.name] = embeddings(
            arm, data, Path(cfg.cache) if cfg.cache else None, cfg.batch_size, show=show
        )
        line(f"  {arm.name}: {'cached' if cached[arm.name] else 'embedded'} {len(data.chips)} chips")
    return emb, cached


def _probe_seeds(
    arms: list[Arm],
    emb: dict[str, Embeddings],
    data: BenchData,
    cfg: BenchmarkConfig,
    protocols: list[str],
    show: bool,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    n_cls, kind = len(data.classes), data.kind
    patch = arms[0].patch
    rows: list[dict[str, Any]] = []
    diffs: list[dict[str, Any]] = []
    frozen = [p for p in protocols if p in ("knn", "linear")]
    total = cfg.seeds * len(arms) * len(cfg.fractions)
    # one BLAS thread: these matrices are small, and several threads per process oversubscribe a busy machine
    with progress("probe", total, "arm-seeds", enabled=show) as bar, threadpool_limits(limits=1):
        for seed in range(cfg.seeds):
            sf = seed_folds(data, cfg, patch, seed)
            preds: dict[tuple[str, str, float], Predictions] = {}
            for arm in arms:
                for frac in cfg.fractions:
                    if frozen:
                        for proto, p in probe_arm(data, emb[arm.name], sf, cfg, patch, frozen, frac).items():
                            preds[(arm.name, proto, frac)] = p
                            rows += _score_rows(
                                arm.name, proto, frac, seed, p, kind, n_cls, sf.blocks, cfg.n_boot
                            )
                    bar.advance()
            if seed == 0:
                diffs = _differences(arms, preds, kind, n_cls, sf.blocks, cfg.n_boot, seed)
                n_blocks = len(np.unique(sf.blocks)) if sf.blocks is not None else 1
                line(f"  seed 0: {len(sf.index[TEST])} test samples in {n_blocks} blocks")
    return rows, diffs


def resolutions(diffs: list[dict[str, Any]], kind: str) -> dict[str, float]:
    """Per metric, the smallest resolvable difference (median paired half-width over the comparisons)."""
    out = {}
    for m in sorted({d["metric"] for d in diffs}):
        ds = [
            stats.Difference(d["mean"], d["low"], d["high"], d["n_test"], d["n_blocks"])
            for d in diffs
            if d["metric"] == m
        ]
        out[m] = stats.resolution(ds)
    return out


def run_benchmark(
    stage: BenchmarkStage,
    data_path: str | Path,
    out: str | Path,
    *,
    encoders: list[str] | None = None,
    fmt: str | None = None,
    show: bool = True,
    track: bool = True,
) -> BenchmarkResult:
    """Run the benchmark and write its outputs to ``out``.

    Args:
        stage: The ``benchmark`` section and its collaborators (encoders, MLflow, the plain-MAE arm).
        data_path: The labelled data (a folder in one of the layouts).
        out: Output folder.
        encoders: Encoders under test (default ``benchmark.encoders``).
        fmt: Layout (default ``benchmark.format``).
        show: Progress bars and lines.
        track: Log an MLflow run.

    Raises:
        BenchmarkError: Unreadable layout, a split or class too small to probe, an encoder without
            statistics for the data's bands, labels outside the rasters.
    """
    t0 = time.monotonic()
    cfg = stage.cfg
    data = read_data(Path(data_path), cfg, fmt)
    line(
        f"{data.root}: {data.layout} layout{' (detected)' if (fmt or cfg.format) == 'auto' else ''}, "
        f"{data.kind}, {len(data.chips)} chips of {data.size[0]}x{data.size[1]} px, {data.sensor} "
        f"{', '.join(data.bands)}"
    )
    for n in data.notes:
        line(f"  {n}")
    arms = build_arms(stage, list(encoders or cfg.encoders))
    emb, cached = _embed_all(arms, data, cfg, show)
    rows, diffs = _probe_seeds(arms, emb, data, cfg, list(cfg.protocols), show)
    res = BenchmarkResult(data, arms, rows, diffs, resolutions(diffs, data.kind), Path(out), cached=cached)
    res.seconds = time.monotonic() - t0
    write_outputs(res, cfg)
    if track:
        from a2mae.benchmark.tracking import log_run

        res.run_id = log_run(res, stage)
    return res


__all__ = ["COLUMNS", "BenchmarkResult", "primary_metric", "run_benchmark"]
