"""One seed of the frozen protocols: folds, samples, kNN and linear probes of every arm, scored.

Every arm is probed on the same folds and the same (subsampled) samples, so their predictions are
paired: :mod:`a2mae.benchmark.stats` then bootstraps the same resampled test samples for both arms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from a2mae.benchmark import samples as smp
from a2mae.benchmark.arms.base import Embeddings
from a2mae.benchmark.data import TEST, TRAIN, VAL, BenchData, BenchmarkError
from a2mae.benchmark.metrics import Predictions, metrics_for, primary_metric
from a2mae.benchmark.protocols.knn import knn_predictions
from a2mae.benchmark.protocols.linear import linear_predict
from a2mae.benchmark.splits import chip_folds
from a2mae.config import BenchmarkConfig


@dataclass
class SeedFolds:
    """The samples of one seed: per fold its index, plus the test samples' spatial blocks."""

    seed: int
    index: dict[int, smp.Index]
    blocks: np.ndarray | None
    chosen_c: dict[str, float] = field(default_factory=dict)


def _check(data: BenchData, ix: dict[int, smp.Index], seed: int) -> None:
    names = {TRAIN: "train", VAL: "val", TEST: "test"}
    for f in (TRAIN, TEST):
        if len(ix[f]) == 0:
            raise BenchmarkError(
                f"{data.root}: the {names[f]} split of seed {seed} holds no labelled sample; too small to "
                "probe (lower benchmark.block_m or benchmark.chip_size, or add data)"
            )
    if data.kind == "multi-label":
        return
    seen = set(np.unique(np.concatenate([ix[TRAIN].y, ix[VAL].y])).tolist())
    if len(seen) < 2:
        raise BenchmarkError(
            f"{data.root}: the training split of seed {seed} holds only class "
            f"{data.classes[int(next(iter(seen)))]!r}; a class too small to probe (add labels of the others)"
        )


def seed_folds(data: BenchData, cfg: BenchmarkConfig, patch: int, seed: int) -> SeedFolds:
    """Folds and samples of one seed (the same for every arm).

    Raises:
        BenchmarkError: A split or class too small to probe.
    """
    fr = tuple(cfg.fold_fractions)
    folds = chip_folds(data, cfg.block_m, (fr[0], fr[1], fr[2]), seed)
    ix = {
        f: smp.fold_index(data, folds, f, cfg.dense_labels, patch, cfg.max_pixels_per_class, seed)
        for f in (TRAIN, VAL, TEST)
    }
    _check(data, ix, seed)
    return SeedFolds(seed, ix, smp.test_blocks(data, ix[TEST], cfg.block_m))


def probe_arm(
    data: BenchData,
    emb: Embeddings,
    sf: SeedFolds,
    cfg: BenchmarkConfig,
    patch: int,
    protocols: list[str],
    fraction: float,
) -> dict[str, Predictions]:
    """Predictions of every frozen protocol of one arm at one label fraction."""
    change = data.kind == "change"
    x = {f: smp.features(emb, sf.index[f], cfg.dense_labels, patch, change) for f in sf.index}
    keep = smp.fraction_of(sf.index[TRAIN], fraction, sf.seed)
    train = (x[TRAIN][keep], sf.index[TRAIN].y[keep])
    val = (x[VAL], sf.index[VAL].y)
    test = (x[TEST], sf.index[TEST].y)
    k_cls = len(data.classes)
    out: dict[str, Predictions] = {}
    if "knn" in protocols:
        bank_x, bank_y = np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]])
        for k, p in knn_predictions(
            bank_x, bank_y, test[0], test[1], list(cfg.knn_k), data.kind, k_cls
        ).items():
            out[f"knn{k}"] = p
    if "linear" in protocols:
        select = metrics_for(data.kind, k_cls)[primary_metric(data.kind)]
        out["linear"], c = linear_predict(train, val, test, cfg.linear_c, select, data.kind, k_cls, sf.seed)
        sf.chosen_c[f"{fraction}"] = c
    return out
