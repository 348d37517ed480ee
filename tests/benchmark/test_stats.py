"""Bootstrap intervals: contain the estimate, shrink with n, widen under spatial correlation, pair arms."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a2mae.benchmark.metrics import Predictions, metrics_for
from a2mae.benchmark.stats import (
    Difference,
    Interval,
    bootstrap_interval,
    mean_std,
    paired_difference,
    resolution,
)

SEEDS = st.integers(0, 2**32 - 1)
ACC = metrics_for("single-label", 2)["accuracy"]


def _binary_arm(seed, n, p_correct=0.8):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 2, n)
    right = rng.random(n) < p_correct
    return Predictions(t, np.where(right, t, 1 - t), None)


def _change_arm(seed, n):
    rng = np.random.default_rng(seed)
    t = (rng.random(n) < 0.1).astype(np.int64)
    s = rng.random(n) * 0.8 + 0.3 * t
    return Predictions(t, (s > 0.6).astype(np.int64), s)


@settings(max_examples=25, deadline=None)
@given(seed=SEEDS, n=st.integers(5, 400), blocked=st.booleans())
def test_intervals_contain_the_estimate(seed, n, blocked):
    blocks = np.arange(n) // 7 if blocked else None
    for p, metrics in [
        (_binary_arm(seed, n), {"accuracy": ACC}),
        (_change_arm(seed, n), metrics_for("change", 2)),
    ]:
        for name, metric in metrics.items():
            iv = bootstrap_interval(metric, p, blocks, n_boot=100, seed=seed % 1000)
            assert iv.low <= iv.value <= iv.high, (name, iv)
            assert iv.n_test == n
            assert iv.n_blocks == (len(np.unique(blocks)) if blocked else 1)


def test_the_percentile_interval_of_an_unbiased_score_contains_it_unwidened():
    """The widening in _contain is a safety net; for accuracy the percentile interval itself brackets it."""
    for seed in range(20):
        p = _binary_arm(seed, 300)
        iv = bootstrap_interval(ACC, p, n_boot=300, seed=seed)
        assert iv.low < iv.value < iv.high


def test_an_interval_that_misses_a_biased_score_is_widened_to_contain_it():
    """Macro-F1 over 10 singleton classes: a replicate holds all ten with probability 0.63^10 = 1 %, so the
    full-set value lies above the 97.5 % quantile of the replicates; the reported interval still has it."""
    t = np.array([0] * 200 + list(range(1, 11)))
    q = np.array([0] * 100 + [11] * 100 + list(range(1, 11)))
    f1 = metrics_for("single-label", 12)["macro_f1"]
    iv = bootstrap_interval(f1, Predictions(t, q), n_boot=400, seed=0)
    assert iv.value == pytest.approx((2 / 3 + 10) / 12)
    assert iv.high == iv.value and iv.low < iv.value


@pytest.mark.parametrize("seed", range(5))
def test_intervals_shrink_with_n(seed):
    small = bootstrap_interval(ACC, _binary_arm(seed, 100), n_boot=300, seed=seed)
    large = bootstrap_interval(ACC, _binary_arm(seed, 10_000), n_boot=300, seed=seed)
    # the width falls as 1 / sqrt(n): 10x here; ask for 4x to stay clear of bootstrap noise
    assert large.width * 4 < small.width


def test_the_same_seed_gives_the_same_interval_and_another_seed_another():
    p = _change_arm(1, 500)
    f1 = metrics_for("change", 2)["f1_changed"]
    blocks = np.arange(500) // 25
    a = bootstrap_interval(f1, p, blocks, n_boot=200, seed=4)
    assert a == bootstrap_interval(f1, p, blocks, n_boot=200, seed=4)
    assert a != bootstrap_interval(f1, p, blocks, n_boot=200, seed=5)


def _correlated(seed, n_blocks=40, per_block=50):
    """Errors that come in spatial clumps: each block is mostly right or mostly wrong."""
    rng = np.random.default_rng(seed)
    n = n_blocks * per_block
    blocks = np.repeat(np.arange(n_blocks), per_block)
    block_acc = np.where(rng.random(n_blocks) < 0.7, 0.95, 0.3)[blocks]
    t = rng.integers(0, 2, n)
    right = rng.random(n) < block_acc
    return Predictions(t, np.where(right, t, 1 - t)), blocks


@pytest.mark.parametrize("seed", range(5))
def test_block_bootstrap_is_wider_under_spatially_correlated_errors(seed):
    p, blocks = _correlated(seed)
    sample = bootstrap_interval(ACC, p, n_boot=300, seed=seed)
    iv = bootstrap_interval(ACC, p, blocks, n_boot=300, seed=seed)
    assert sample.method == "sample"
    assert iv.method == "block"
    assert iv.width > 2 * sample.width  # the per-sample interval pretends 2,000 independent samples
    assert iv.n_blocks == 40


def test_block_bootstrap_agrees_with_the_sample_one_when_errors_are_independent():
    p = _binary_arm(0, 2000)
    blocks = np.repeat(np.arange(40), 50)
    sample = bootstrap_interval(ACC, p, n_boot=400, seed=0)
    iv = bootstrap_interval(ACC, p, blocks, n_boot=400, seed=0)
    assert iv.width == pytest.approx(sample.width, rel=0.3)
    assert iv.width >= sample.width  # the reported one is the wider of the two


def test_a_single_block_reports_the_per_sample_interval():
    p = _binary_arm(2, 300)
    iv = bootstrap_interval(ACC, p, np.zeros(300, int), n_boot=200, seed=1)
    assert (iv.method, iv.n_blocks) == ("sample", 1)
    assert iv == dataclasses.replace(bootstrap_interval(ACC, p, n_boot=200, seed=1), n_blocks=1)


def test_a_plain_metric_function_gives_the_same_interval_as_the_weighted_path():
    """Any MetricFn works (scored on resampled copies) and equals the prepared Metric's weights path."""
    p = _change_arm(3, 120)
    ap = metrics_for("change", 2)["ap_changed"]
    blocks = np.arange(120) // 6

    def plain(q: Predictions) -> float:
        return ap(q)

    assert bootstrap_interval(plain, p, blocks, n_boot=60, seed=2) == bootstrap_interval(
        ap, p, blocks, n_boot=60, seed=2
    )


@settings(max_examples=20, deadline=None)
@given(seed=SEEDS, n=st.integers(2, 300), blocked=st.booleans())
def test_an_arm_against_itself_differs_by_exactly_zero(seed, n, blocked):
    p = _change_arm(seed, n)
    blocks = np.arange(n) // 5 if blocked else None
    for name, metric in metrics_for("change", 2).items():
        same = Predictions(p.y_true.copy(), p.y_pred.copy(), p.y_score.copy())  # equal, not identical
        d = paired_difference(metric, p, same, blocks, n_boot=50, seed=seed % 100)
        assert (d.mean, d.low, d.high) == (0.0, 0.0, 0.0), name
        assert not d.resolved


def test_a_real_difference_is_resolved_and_pairing_beats_two_separate_intervals():
    rng = np.random.default_rng(0)
    a = _binary_arm(0, 3000, p_correct=0.85)
    worse = a.y_pred.copy()
    flip = rng.random(3000) < 0.06
    worse[flip] = a.y_true[flip] ^ 1  # arm b: arm a with extra mistakes on 6 % of samples
    b = Predictions(a.y_true, worse)
    d = paired_difference(ACC, a, b, n_boot=400, seed=0)
    assert d.resolved and d.low > 0
    assert d.mean == pytest.approx(ACC(a) - ACC(b))
    ia, ib = bootstrap_interval(ACC, a, n_boot=400), bootstrap_interval(ACC, b, n_boot=400)
    assert d.half_width < (ia.width + ib.width) / 4  # shared difficulty cancels out in the pairs
    swapped = paired_difference(ACC, b, a, n_boot=400, seed=0)
    assert swapped.mean == -d.mean and swapped.high < 0 and swapped.resolved


def test_paired_block_difference_is_wider_under_correlated_disagreement():
    p, blocks = _correlated(1)
    rng = np.random.default_rng(1)
    wrong_blocks = rng.random(40) < 0.3  # b additionally fails in a few whole blocks
    worse = np.where(wrong_blocks[blocks] & (rng.random(p.n) < 0.5), 1 - p.y_true, p.y_pred)
    b = Predictions(p.y_true, worse)
    plain = paired_difference(ACC, p, b, n_boot=300, seed=1)
    blocked = paired_difference(ACC, p, b, blocks, n_boot=300, seed=1)
    assert blocked.method == "block" and blocked.n_blocks == 40
    assert blocked.half_width > 1.5 * plain.half_width


def test_paired_difference_needs_the_same_test_samples():
    a = _binary_arm(0, 50)
    b = _binary_arm(1, 50)
    with pytest.raises(ValueError, match="same test samples"):
        paired_difference(ACC, a, b)


def test_resolution_is_the_median_half_width():
    diffs = [
        Difference(0.1, 0.0, 0.2, 100, 1),
        Difference(0.0, -0.05, 0.05, 100, 1),
        Difference(0, -1, 1, 9, 1),
    ]
    assert resolution(diffs) == pytest.approx(0.1)
    assert resolution(diffs[:2]) == pytest.approx(0.075)
    with pytest.raises(ValueError, match="at least one"):
        resolution([])


def test_resolution_separates_what_the_paired_intervals_resolve():
    """A difference clearly above X is resolved; one clearly below is not."""
    rng = np.random.default_rng(5)
    a = _binary_arm(5, 2000, p_correct=0.8)
    diffs = []
    for share in (0.0, 0.005, 0.08):
        worse = a.y_pred.copy()
        flip = rng.random(2000) < share
        worse[flip] = a.y_true[flip] ^ 1
        diffs.append(paired_difference(ACC, a, Predictions(a.y_true, worse), n_boot=300, seed=0))
    x = resolution(diffs[1:])
    assert diffs[2].mean > 2 * x and diffs[2].resolved
    assert abs(diffs[0].mean) < x and not diffs[0].resolved


def test_mean_std_over_seeds():
    assert mean_std([0.5]) == (0.5, 0.0)
    m, s = mean_std([0.1, 0.2, 0.6])
    assert m == pytest.approx(0.3) and s == pytest.approx(np.std([0.1, 0.2, 0.6], ddof=1))
    with pytest.raises(ValueError):
        mean_std([])


def test_bad_arguments_are_rejected():
    p = _binary_arm(0, 20)
    with pytest.raises(ValueError, match="blocks must have shape"):
        bootstrap_interval(ACC, p, np.zeros(3, int))
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_interval(ACC, p, n_boot=0)
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_interval(ACC, p, alpha=1.5)
    assert isinstance(bootstrap_interval(ACC, p, n_boot=10), Interval)
