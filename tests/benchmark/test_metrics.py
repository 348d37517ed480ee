"""Benchmark metrics: equal to scikit-learn, weights equal resampling, defined fallbacks, chance levels."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, jaccard_score

from a2mae.benchmark.metrics import (
    Metric,
    Predictions,
    chance_level,
    metrics_for,
    primary_metric,
    take,
)

SEEDS = st.integers(0, 2**32 - 1)


def _sk(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero_division / no-positive warnings: the values are what we test
        return fn(*args, **kwargs)


def _single(seed, n, c, ties=True):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, c, n)
    q = np.where(rng.random(n) < 0.5, t, rng.integers(0, c, n))
    s = rng.random((n, c))
    return Predictions(t, q, s.round(1) if ties else s)


def _change(seed, n):
    rng = np.random.default_rng(seed)
    t = (rng.random(n) < rng.random()).astype(np.int64)
    q = (rng.random(n) < 0.3).astype(np.int64)
    s = (rng.random(n) * 0.7 + 0.3 * t).round(1)  # ties on purpose
    return Predictions(t, q, s)


def _multi(seed, n, c):
    rng = np.random.default_rng(seed)
    t = (rng.random((n, c)) < 0.3).astype(np.int64)
    q = (rng.random((n, c)) < 0.3).astype(np.int64)
    return Predictions(t, q, (rng.random((n, c)) + 0.3 * t).round(1))


def test_the_contract_names_and_primary_metrics():
    assert list(metrics_for("single-label", 3)) == ["accuracy", "macro_f1"]
    assert list(metrics_for("multi-label", 3)) == ["micro_map", "micro_f1"]
    assert list(metrics_for("segmentation", 3)) == ["miou", "accuracy", "macro_ap"]
    assert list(metrics_for("change", 2)) == ["f1_changed", "iou_changed", "ap_changed"]
    for kind, name in [
        ("single-label", "accuracy"),
        ("multi-label", "micro_map"),
        ("segmentation", "miou"),
        ("change", "f1_changed"),
    ]:
        assert primary_metric(kind) == name
        assert name in metrics_for(kind, 2)
    with pytest.raises(ValueError, match="unknown probe kind"):
        metrics_for("regression", 2)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(seed=SEEDS, n=st.integers(1, 80), c=st.integers(2, 6))
def test_single_label_and_segmentation_equal_sklearn(seed, n, c):
    p = _single(seed, n, c)
    m = metrics_for("single-label", c)
    assert m["accuracy"](p) == pytest.approx(accuracy_score(p.y_true, p.y_pred))
    assert m["macro_f1"](p) == pytest.approx(_sk(f1_score, p.y_true, p.y_pred, average="macro"))
    s = metrics_for("segmentation", c)
    assert s["miou"](p) == pytest.approx(_sk(jaccard_score, p.y_true, p.y_pred, average="macro"))
    assert s["accuracy"](p) == pytest.approx(accuracy_score(p.y_true, p.y_pred))
    present = np.unique(p.y_true)  # macro AP: classes with a positive (documented)
    ref = np.mean([average_precision_score(p.y_true == k, p.y_score[:, k]) for k in present])
    assert s["macro_ap"](p) == pytest.approx(ref)


@settings(max_examples=60, deadline=None)
@given(seed=SEEDS, n=st.integers(1, 80))
def test_change_metrics_equal_sklearn(seed, n):
    p = _change(seed, n)
    m = metrics_for("change", 2)
    assert m["f1_changed"](p) == pytest.approx(_sk(f1_score, p.y_true, p.y_pred))
    assert m["iou_changed"](p) == pytest.approx(_sk(jaccard_score, p.y_true, p.y_pred))
    assert m["ap_changed"](p) == pytest.approx(_sk(average_precision_score, p.y_true, p.y_score))


@settings(max_examples=60, deadline=None)
@given(
    seed=SEEDS, n=st.integers(1, 60), c=st.integers(2, 7)
)  # sklearn reads (N, 1) as binary, not multi-label
def test_multi_label_metrics_equal_sklearn(seed, n, c):
    p = _multi(seed, n, c)
    m = metrics_for("multi-label", c)
    assert m["micro_f1"](p) == pytest.approx(_sk(f1_score, p.y_true, p.y_pred, average="micro"))
    ref = _sk(average_precision_score, p.y_true.ravel(), p.y_score.ravel()) if p.y_true.any() else 0.0
    assert m["micro_map"](p) == pytest.approx(ref)
    if p.y_true.any(axis=0).all():  # sklearn's own micro average where it defines it
        assert m["micro_map"](p) == pytest.approx(
            average_precision_score(p.y_true, p.y_score, average="micro")
        )


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, n=st.integers(1, 50))
def test_weights_score_exactly_the_resampled_multiset(seed, n):
    """What the bootstrap relies on: prepared(weights) == metric(take(p, the drawn indices))."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, n)
    w = np.bincount(idx, minlength=n).astype(np.float64)
    cases = [("single-label", 4, _single(seed, n, 4)), ("segmentation", 4, _single(seed, n, 4))]
    cases += [("change", 2, _change(seed, n)), ("multi-label", 3, _multi(seed, n, 3))]
    for kind, c, p in cases:
        for name, metric in metrics_for(kind, c).items():
            assert isinstance(metric, Metric)
            want = metric(take(p, idx))
            got = metric.prepare(p)(w)
            assert got == pytest.approx(want, nan_ok=True), (kind, name)


def test_absent_classes_use_the_documented_fallbacks():
    # only class 0 in the truth, class 2 predicted once: macro-F1 over {0, 2} (class 1 left out)
    p = Predictions(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 2]), np.full((4, 3), 1 / 3))
    m = metrics_for("single-label", 3)
    assert m["macro_f1"](p) == pytest.approx((6 / 7 + 0.0) / 2)
    seg = metrics_for("segmentation", 3)
    assert seg["miou"](p) == pytest.approx((3 / 4 + 0.0) / 2)
    assert seg["macro_ap"](p) == pytest.approx(1.0)  # only class 0 has positives; all tied -> AP 1
    # no change at all, none predicted: F1, IoU and AP are 0 (sklearn's zero_division), no exception
    none = Predictions(np.zeros(5, int), np.zeros(5, int), np.linspace(0, 1, 5))
    assert [f(none) for f in metrics_for("change", 2).values()] == [0.0, 0.0, 0.0]
    empty = Predictions(np.zeros((3, 2), int), np.zeros((3, 2), int), np.ones((3, 2)))
    assert [f(empty) for f in metrics_for("multi-label", 2).values()] == [0.0, 0.0]


def test_segmentation_leaves_the_ignore_index_unscored():
    p = _single(7, 200, 4)
    t = p.y_true.copy()
    t[::5] = 255
    t[1::7] = -1
    masked = Predictions(t, p.y_pred, p.y_score)
    keep = (t >= 0) & (t < 4)
    for name, metric in metrics_for("segmentation", 4).items():
        assert metric(masked) == pytest.approx(metric(take(p, np.flatnonzero(keep)))), name
    with pytest.raises(ValueError, match="outside"):
        metrics_for("single-label", 4)["accuracy"](masked)  # not an ignore index outside segmentation


def test_threshold_free_metrics_need_scores_and_shapes_are_checked():
    p = Predictions(np.array([0, 1]), np.array([0, 1]), None)
    with pytest.raises(ValueError, match="ap_changed needs y_score"):
        metrics_for("change", 2)["ap_changed"](p)
    with pytest.raises(ValueError, match="0 and 1"):
        metrics_for("change", 2)["f1_changed"](Predictions(np.array([0, 2]), np.array([0, 1])))
    with pytest.raises(ValueError, match="outside"):
        metrics_for("single-label", 2)["accuracy"](Predictions(np.array([0, 1]), np.array([0, 5])))


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, n=st.integers(1, 60), c=st.integers(2, 5))
def test_chance_level_is_the_score_of_a_prior_predictor(seed, n, c):
    """Where the prior's best predictor is constant, chance_level equals that predictor's actual score."""
    rng = np.random.default_rng(seed)
    t = rng.integers(0, c, n)
    freq = np.bincount(t, minlength=c) / n
    majority = Predictions(t, np.full(n, np.argmax(freq)), np.tile(freq, (n, 1)))
    m = metrics_for("single-label", c)
    assert chance_level("single-label", "accuracy", t) == pytest.approx(m["accuracy"](majority))
    assert chance_level("segmentation", "macro_ap", t) == pytest.approx(
        metrics_for("segmentation", c)["macro_ap"](majority)
    )
    assert chance_level("single-label", "macro_f1", t) >= m["macro_f1"](majority)  # stratified beats it
    tb = (rng.random(n) < rng.random()).astype(np.int64)
    ch = metrics_for("change", 2)
    prior = Predictions(tb, np.ones(n, np.int64), np.full(n, tb.mean()))
    for name in ("f1_changed", "iou_changed", "ap_changed"):
        assert chance_level("change", name, tb) == pytest.approx(ch[name](prior)), name
    tm = (rng.random((n, c)) < 0.3).astype(np.int64)
    flat = Predictions(tm, np.zeros_like(tm), np.tile(tm.mean(axis=0), (n, 1)))
    assert chance_level("multi-label", "micro_map", tm) == pytest.approx(
        metrics_for("multi-label", c)["micro_map"](flat)
    )


def test_chance_level_of_stratified_guessing_matches_a_simulation():
    """macro-F1, mIoU and micro-F1 use the expected score of guessing by the label frequencies."""
    rng = np.random.default_rng(3)
    n, c = 20000, 4
    p = np.array([0.5, 0.3, 0.15, 0.05])
    t = rng.choice(c, n, p=p)
    guess = Predictions(t, rng.choice(c, n, p=p))
    assert metrics_for("single-label", c)["macro_f1"](guess) == pytest.approx(
        chance_level("single-label", "macro_f1", t), abs=0.01
    )
    miou_guess = metrics_for("segmentation", c)["miou"](guess)
    assert miou_guess <= chance_level("segmentation", "miou", t) + 0.01
    tm = (rng.random((n, c)) < p).astype(np.int64)
    gm = (rng.random((n, c)) < p).astype(np.int64)
    stratified = metrics_for("multi-label", c)["micro_f1"](Predictions(tm, gm))
    assert stratified <= chance_level("multi-label", "micro_f1", tm) + 0.01
    everything = metrics_for("multi-label", c)["micro_f1"](Predictions(tm, np.ones_like(tm)))
    assert everything <= chance_level("multi-label", "micro_f1", tm) + 1e-12


def test_chance_level_rejects_a_metric_of_another_kind():
    with pytest.raises(ValueError, match="no metric"):
        chance_level("change", "miou", np.array([0, 1]))
