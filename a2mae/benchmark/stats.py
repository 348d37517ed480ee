"""Intervals for benchmark scores: per-sample and spatial-block bootstrap, paired differences, resolution.

Neighbouring pixels and chips are not independent samples, so a per-sample bootstrap alone understates the
uncertainty of a score on a spatial test set. :func:`bootstrap_interval` therefore also resamples whole
spatial blocks (with replacement, as many blocks as the test set has) when it is given each sample's block,
and reports the wider of the two 95 % percentile intervals, naming which one it was.

A replicate is a vector of sample weights (how often each sample was drawn; for a block replicate, how
often its block was drawn), which :meth:`a2mae.benchmark.metrics.Metric.prepare` scores without copying
the predictions. Any other :data:`~a2mae.benchmark.metrics.MetricFn` is scored on the resampled copy.

Comparisons between arms use :func:`paired_difference`: both arms are scored on the same replicate (the
same samples or blocks), so the shared difficulty of the test samples cancels out. A difference is
*resolved* where its paired interval excludes 0, and :func:`resolution` turns the paired intervals into
the sentence the report prints: "at this size, differences below X are not resolvable".

Everything is seeded: the same ``seed`` gives the same intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from a2mae.benchmark.metrics import FloatArray, Metric, MetricFn, Predictions, Scorer, take

Method = Literal["sample", "block"]


@dataclass(frozen=True)
class Interval:
    """A score on the full test set with its bootstrap interval.

    Attributes:
        value: the metric on the full test set.
        low: lower end of the reported interval (never above ``value``).
        high: upper end of the reported interval (never below ``value``).
        method: which bootstrap gave the reported (wider) interval: per ``sample`` or per spatial ``block``.
        n_test: number of test samples ``N``.
        n_blocks: distinct spatial blocks among the test samples (1 if none were given).
    """

    value: float
    low: float
    high: float
    method: Method
    n_test: int
    n_blocks: int

    @property
    def width(self) -> float:
        """``high - low``."""
        return self.high - self.low


@dataclass(frozen=True)
class Difference:
    """A paired difference ``metric(a) - metric(b)`` of two arms on the same test samples.

    Attributes:
        mean: the difference on the full test set.
        low: lower end of the paired interval.
        high: upper end of the paired interval.
        n_test: number of test samples ``N``.
        n_blocks: distinct spatial blocks among them (1 if none were given).
        method: which bootstrap gave the reported (wider) interval.
    """

    mean: float
    low: float
    high: float
    n_test: int
    n_blocks: int
    method: Method = "sample"

    @property
    def resolved(self) -> bool:
        """Whether the paired interval excludes 0 (only then may a report say "better")."""
        return self.low > 0 or self.high < 0

    @property
    def half_width(self) -> float:
        """Half the paired interval's width: the smallest difference it separates from 0."""
        return (self.high - self.low) / 2


def _scorer(metric: MetricFn, p: Predictions) -> Scorer:
    """A weights -> score function for any metric (prepared where it is a :class:`Metric`)."""
    if isinstance(metric, Metric):
        return metric.prepare(p)
    n = p.n

    def score(w: FloatArray | None) -> float:
        if w is None:
            return float(metric(p))
        return float(metric(take(p, np.repeat(np.arange(n), w.astype(np.int64)))))

    return score


def _block_index(blocks: NDArray[Any] | None, n: int) -> tuple[NDArray[np.int64] | None, int]:
    """``(N,)`` dense block index of each sample and the number of blocks (None, 1 without blocks)."""
    if blocks is None:
        return None, 1
    b = np.asarray(blocks)
    if b.shape != (n,):
        raise ValueError(f"blocks must have shape ({n},) (one block id per test sample), got {b.shape}")
    _, inverse = np.unique(b, return_inverse=True)
    inv = inverse.astype(np.int64).reshape(n)
    return inv, int(inv.max()) + 1 if n else 0


def _replicates(
    scorers: Sequence[Scorer],
    n: int,
    weights_of: Callable[[np.random.Generator], FloatArray],
    *,
    n_boot: int,
    seed: int,
) -> FloatArray:
    """``(n_boot, len(scorers))`` scores, every scorer on the same replicate weights."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, len(scorers)), dtype=np.float64)
    for r in range(n_boot):
        w = weights_of(rng)
        for j, score in enumerate(scorers):
            out[r, j] = score(w)
    return out


def _sample_weights(n: int) -> Callable[[np.random.Generator], FloatArray]:
    """Per-sample bootstrap: ``N`` draws with replacement, as counts ``(N,)``."""

    def weights(rng: np.random.Generator) -> FloatArray:
        return np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)

    return weights


def _block_weights(inv: NDArray[np.int64], n_blocks: int) -> Callable[[np.random.Generator], FloatArray]:
    """Block bootstrap: ``B`` blocks drawn with replacement; a sample weighs its block's count ``(N,)``."""

    def weights(rng: np.random.Generator) -> FloatArray:
        counts = np.bincount(rng.integers(0, n_blocks, n_blocks), minlength=n_blocks).astype(np.float64)
        return counts[inv]

    return weights


def _percentile(values: FloatArray, alpha: float) -> tuple[float, float]:
    """The ``alpha / 2`` and ``1 - alpha / 2`` quantiles of the finite replicates (nan if none)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _wider(
    scorers: Sequence[Scorer],
    combine: Callable[[FloatArray], FloatArray],
    n: int,
    blocks: NDArray[Any] | None,
    *,
    n_boot: int,
    alpha: float,
    seed: int,
) -> tuple[float, float, Method, int]:
    """The wider of the per-sample and block percentile intervals of ``combine(replicates)``.

    Returns:
        ``(low, high, method, n_blocks)``.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    inv, n_blocks = _block_index(blocks, n)
    seeds = np.random.SeedSequence(seed).generate_state(2)
    reps = _replicates(scorers, n, _sample_weights(n), n_boot=n_boot, seed=int(seeds[0]))
    low, high = _percentile(combine(reps), alpha)
    method: Method = "sample"
    if inv is not None and n_blocks >= 2:
        reps = _replicates(scorers, n, _block_weights(inv, n_blocks), n_boot=n_boot, seed=int(seeds[1]))
        b_low, b_high = _percentile(combine(reps), alpha)
        if not (b_high - b_low <= high - low):  # also when the per-sample interval is nan
            low, high, method = b_low, b_high, "block"
    return low, high, method, n_blocks


def _contain(value: float, low: float, high: float) -> tuple[float, float]:
    """The interval widened, if needed, to contain the full-set value.

    A percentile interval of a biased statistic (F1 of a rare class) can miss the value at small sizes.
    """
    if np.isfinite(value):
        low = value if not low <= value else low
        high = value if not high >= value else high
    return low, high


def bootstrap_interval(
    metric: MetricFn,
    preds: Predictions,
    blocks: NDArray[Any] | None = None,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Interval:
    """A metric on the test set with a ``1 - alpha`` percentile bootstrap interval.

    Args:
        metric: the metric (a :class:`~a2mae.benchmark.metrics.Metric` is scored without copies).
        preds: the test predictions, ``N`` samples.
        blocks: ``(N,)`` spatial block id of each test sample; when given (and there are 2 or more blocks)
            a block bootstrap runs beside the per-sample one and the wider interval is reported.
        n_boot: replicates per bootstrap.
        alpha: 0.05 for a 95 % interval.
        seed: seeds both bootstraps (the same seed gives the same interval).

    Returns:
        The :class:`Interval`; ``low``/``high`` are widened to contain ``value`` where the percentile
        interval misses it, and are nan when no replicate could be scored.
    """
    value = float(metric(preds))
    low, high, method, n_blocks = _wider(
        [_scorer(metric, preds)], lambda r: r[:, 0], preds.n, blocks, n_boot=n_boot, alpha=alpha, seed=seed
    )
    low, high = _contain(value, low, high)
    return Interval(value=value, low=low, high=high, method=method, n_test=preds.n, n_blocks=n_blocks)


def paired_difference(
    metric: MetricFn,
    a: Predictions,
    b: Predictions,
    blocks: NDArray[Any] | None = None,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Difference:
    """``metric(a) - metric(b)`` with a paired bootstrap interval (same resampled samples for both arms).

    Args:
        metric: the metric.
        a: arm A's predictions on the test samples.
        b: arm B's predictions on the same test samples (``b.y_true`` must equal ``a.y_true``).
        blocks: ``(N,)`` spatial block id per test sample; adds a paired block bootstrap and reports the
            wider interval.
        n_boot: replicates per bootstrap.
        alpha: 0.05 for a 95 % interval.
        seed: seeds both bootstraps.

    Returns:
        The :class:`Difference`; an arm against itself gives exactly 0 with zero width.
    """
    if np.shape(a.y_true) != np.shape(b.y_true) or not np.array_equal(a.y_true, b.y_true):
        raise ValueError(
            "paired_difference needs both arms' predictions on the same test samples (y_true differs)"
        )
    mean = float(metric(a)) - float(metric(b))
    low, high, method, n_blocks = _wider(
        [_scorer(metric, a), _scorer(metric, b)],
        lambda r: r[:, 0] - r[:, 1],
        a.n,
        blocks,
        n_boot=n_boot,
        alpha=alpha,
        seed=seed,
    )
    low, high = _contain(mean, low, high)
    return Difference(mean=mean, low=low, high=high, n_test=a.n, n_blocks=n_blocks, method=method)


def resolution(diffs: Sequence[Difference]) -> float:
    """The smallest difference the paired intervals can separate at this size.

    A difference ``d`` is resolved where its paired interval excludes 0, roughly where ``|d|`` exceeds the
    interval's half-width. The report's line "at this size, differences below X are not resolvable" uses
    X = the median half-width over the given comparisons (each encoder against each baseline).

    Args:
        diffs: the paired differences of one test set and metric (at least one).

    Returns:
        X, the median half-width (nan if no comparison has a finite interval).
    """
    if not diffs:
        raise ValueError("resolution needs at least one paired difference")
    halves = np.array([d.half_width for d in diffs], dtype=np.float64)
    halves = halves[np.isfinite(halves)]
    return float(np.median(halves)) if halves.size else float("nan")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``) of scores over seeds; std 0 for one value."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean_std needs at least one value")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0
