"""Task metrics of the benchmark, fast enough to run inside a 1,000-replicate bootstrap.

Every metric is a :class:`Metric`: calling it on :class:`Predictions` gives the score on those samples, and
:meth:`Metric.prepare` does the expensive part once (class ids, confusion pair ids, the ranking of scores
for average precision) and returns a scorer that takes per-sample weights. A bootstrap replicate is then a
weight vector (how often each sample was drawn), and scoring it is one ``np.bincount`` per quantity, with no
copy of the predictions and no sort. Scoring with weights equals scoring the resampled multiset: duplicates
of a sample have the same score, so they fall in the same tie group of the ranking.

The values match scikit-learn's (``accuracy_score``, ``f1_score``, ``jaccard_score``,
``average_precision_score``) wherever scikit-learn defines them. Where a class is absent from a resample:

* macro-F1 and mIoU average over the classes present in ``y_true`` or ``y_pred`` (scikit-learn's default
  ``labels``; mmsegmentation's "union > 0"); a class absent from both is left out, not scored 0;
* macro AP (segmentation) averages over the classes with at least one positive sample; a class without
  positives has no defined AP and is left out;
* F1, IoU and AP of one class (change, micro-F1, micro-mAP) are 0 when the class has no positive and no
  predicted positive (scikit-learn's ``zero_division`` value);
* a set with no scored sample at all gives ``nan`` (the bootstrap ignores such replicates).

Segmentation leaves samples whose ``y_true`` lies outside ``[0, n_classes)`` (an ignore index such as
``-1`` or ``255``) unscored; the other kinds reject such labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

ProbeKind = Literal["single-label", "multi-label", "segmentation", "change"]
PROBE_KINDS: tuple[ProbeKind, ...] = ("single-label", "multi-label", "segmentation", "change")

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class Predictions:
    """One protocol's outputs on the test samples (a sample is a chip, a token or a pixel).

    Attributes:
        y_true: ``(N,)`` int class ids; ``(N, C)`` {0, 1} for multi-label; ``(N,)`` {0, 1} for change.
        y_pred: the hard decisions, same shape as ``y_true``.
        y_score: ``(N, C)`` class scores or probabilities; ``(N,)`` P(changed) for change; ``None`` where
            the protocol gives none (the threshold-free metrics then raise ``ValueError``).
    """

    y_true: NDArray[Any]
    y_pred: NDArray[Any]
    y_score: NDArray[Any] | None = None

    @property
    def n(self) -> int:
        """Number of test samples ``N``."""
        return int(np.shape(self.y_true)[0])


MetricFn = Callable[[Predictions], float]
#: A prepared metric: ``(N,)`` non-negative sample weights (``None``: every sample once) -> score.
Scorer = Callable[[FloatArray | None], float]


def take(p: Predictions, idx: NDArray[np.integer[Any]]) -> Predictions:
    """The predictions of the samples ``idx`` (``(M,)`` indices, repeats allowed), in that order."""
    return Predictions(
        y_true=np.asarray(p.y_true)[idx],
        y_pred=np.asarray(p.y_pred)[idx],
        y_score=None if p.y_score is None else np.asarray(p.y_score)[idx],
    )


@dataclass(frozen=True)
class Metric:
    """A named metric of one probe kind; a :data:`MetricFn` that can also be prepared for weights.

    Attributes:
        name: the metric's key in :func:`metrics_for` (``"accuracy"``, ``"micro_map"``, ...).
        kind: the probe kind it scores.
        n_classes: number of classes ``C`` (2 for change).
        build: ``(predictions, n_classes) -> scorer``; does the per-set work once.
    """

    name: str
    kind: ProbeKind
    n_classes: int
    build: Callable[[Predictions, int], Scorer]

    def prepare(self, p: Predictions) -> Scorer:
        """A scorer of ``p`` under sample weights ``(N,)``; equal to scoring the resampled multiset."""
        return self.build(p, self.n_classes)

    def __call__(self, p: Predictions) -> float:
        """The metric on every sample of ``p`` once."""
        return self.prepare(p)(None)


# ------------------------------------------------------------------------------------------ helpers
def _ids(y: NDArray[Any], what: str) -> IntArray:
    """``(N,)`` integer class ids of ``y`` (ints, bools or integral floats)."""
    a = np.asarray(y)
    if a.ndim != 1:
        raise ValueError(f"{what} must be (N,) class ids, got shape {a.shape}")
    if a.dtype.kind == "f" and not np.array_equal(a, np.round(a)):
        raise ValueError(f"{what} must hold integer class ids")
    return a.astype(np.int64, copy=False)


def _binary(y: NDArray[Any], what: str, ndim: int) -> NDArray[np.bool_]:
    """``y`` as booleans after checking it holds only 0 and 1 and has ``ndim`` dimensions."""
    a = np.asarray(y)
    if a.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dimension(s), got shape {a.shape}")
    if a.dtype != np.bool_ and not np.isin(a, (0, 1)).all():
        raise ValueError(f"{what} must hold only 0 and 1")
    return a.astype(np.bool_, copy=False)


def _dot(values: FloatArray, w: FloatArray | None) -> float:
    """``sum_i values[i] * w[i]`` (``w`` None: plain sum).

    Elementwise, not ``values @ w``: a BLAS dot spawns threads, which on a busy machine is 100x slower.
    """
    return float(values.sum() if w is None else np.multiply(values, w).sum())


def _ratio(num: float, den: float) -> float:
    """``num / den``, 0 when ``den`` is 0 (scikit-learn's ``zero_division``)."""
    return num / den if den > 0 else 0.0


def _scores(p: Predictions, shape: tuple[int, ...], name: str) -> FloatArray:
    """``p.y_score`` as float64 of ``shape``; ``ValueError`` if the protocol gave none."""
    if p.y_score is None:
        raise ValueError(f"metric {name} needs y_score (class scores), the predictions have none")
    s = np.asarray(p.y_score, dtype=np.float64)
    if s.shape != shape:
        raise ValueError(f"y_score must have shape {shape} for {name}, got {s.shape}")
    return s


def ap_scorer(y: NDArray[np.bool_], s: FloatArray) -> Scorer:
    """Average precision of the positives ``y`` ranked by ``s``, under sample weights.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds (ties form one step), as
    scikit-learn's ``average_precision_score``; only thresholds that hold a positive add to the sum.
    The ranking is computed once: each sample gets the index of the first such threshold at or below
    its score (its *bucket*), so the weighted count ranked above each positive threshold is a
    ``bincount`` of the weights by bucket and a cumulative sum over the ``P`` positive thresholds; no
    sort or gather per replicate.

    Args:
        y: ``(M,)`` True for the positive samples.
        s: ``(M,)`` scores, higher = more likely positive.

    Returns:
        A scorer ``(M,) weights -> AP``; ``nan`` where the weighted set has no positive.
    """
    m = y.shape[0]
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    new_group = np.ones(m, dtype=np.bool_)  # first sample of each tie group, in rank order
    np.not_equal(s_sorted[1:], s_sorted[:-1], out=new_group[1:])
    group = np.empty(m, dtype=np.int64)  # tie group of each sample (0 = highest scores)
    group[order] = np.cumsum(new_group) - 1
    positives: IntArray = np.flatnonzero(y)
    hit: IntArray = np.unique(group[positives])  # (P,) tie groups that hold a positive, ascending
    n_hit = hit.size
    bucket = np.searchsorted(hit, group, side="left")  # (M,) P for samples below the last positive
    pos_bucket = bucket[positives]

    def score(w: FloatArray | None) -> float:
        if n_hit == 0:
            return float("nan")
        tp = np.bincount(pos_bucket, weights=None if w is None else w[positives], minlength=n_hit)
        ctp = np.cumsum(tp)
        n_pos = float(ctp[-1])
        if n_pos <= 0:
            return float("nan")
        ctot = np.cumsum(np.bincount(bucket, weights=w, minlength=n_hit + 1)[:n_hit])
        precision = np.divide(ctp, ctot, out=np.zeros_like(ctp, dtype=np.float64), where=ctot > 0)
        return float(np.multiply(tp, precision).sum()) / n_pos

    return score


# ------------------------------------------------------------------------- confusion-matrix metrics
def _confusion(p: Predictions, n_classes: int, ignore: bool) -> Callable[[FloatArray | None], FloatArray]:
    """A function of sample weights giving the ``(C, C)`` confusion matrix (rows true, columns predicted).

    With ``ignore``, samples whose true id lies outside ``[0, C)`` are not counted; otherwise such ids
    raise ``ValueError``. Predicted ids outside ``[0, C)`` always raise.
    """
    t = _ids(p.y_true, "y_true")
    q = _ids(p.y_pred, "y_pred")
    if t.shape != q.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {q.shape} differ in shape")
    valid = (t >= 0) & (t < n_classes)
    sel: IntArray | None = None
    if not valid.all():
        if not ignore:
            raise ValueError(f"y_true holds class ids outside [0, {n_classes})")
        sel = np.flatnonzero(valid)
        t, q = t[sel], q[sel]
    if q.size and (q.min() < 0 or q.max() >= n_classes):
        raise ValueError(f"y_pred holds class ids outside [0, {n_classes})")
    pair = t * n_classes + q
    size = n_classes * n_classes

    def confusion(w: FloatArray | None) -> FloatArray:
        if w is not None and sel is not None:
            w = w[sel]
        counts = np.bincount(pair, weights=w, minlength=size)
        return counts.astype(np.float64, copy=False).reshape(n_classes, n_classes)

    return confusion


def _accuracy_of(cm: FloatArray) -> float:
    total = float(cm.sum())
    return float(np.trace(cm)) / total if total > 0 else float("nan")


def _per_class(cm: FloatArray, iou: bool) -> float:
    """Mean F1 (or IoU) over the classes present in the truth or the predictions; nan if none."""
    tp = np.diag(cm)
    row, col = cm.sum(axis=1), cm.sum(axis=0)
    present = (row + col) > 0
    if not present.any():
        return float("nan")
    tp, row, col = tp[present], row[present], col[present]
    per = tp / (row + col - tp) if iou else 2 * tp / (row + col)
    return float(per.mean())


def _build_accuracy(ignore: bool) -> Callable[[Predictions, int], Scorer]:
    def build(p: Predictions, n_classes: int) -> Scorer:
        confusion = _confusion(p, n_classes, ignore)
        return lambda w: _accuracy_of(confusion(w))

    return build


def _build_per_class(iou: bool, ignore: bool) -> Callable[[Predictions, int], Scorer]:
    def build(p: Predictions, n_classes: int) -> Scorer:
        confusion = _confusion(p, n_classes, ignore)
        return lambda w: _per_class(confusion(w), iou)

    return build


def _build_macro_ap(p: Predictions, n_classes: int) -> Scorer:
    """Segmentation: mean one-vs-rest AP over the classes with a positive in the (weighted) set."""
    t = _ids(p.y_true, "y_true")
    s = _scores(p, (t.shape[0], n_classes), "macro_ap")
    sel = np.flatnonzero((t >= 0) & (t < n_classes))
    t, s = t[sel], s[sel]
    scorers = [ap_scorer(t == c, s[:, c]) for c in np.unique(t)]

    def score(w: FloatArray | None) -> float:
        wv = None if w is None else w[sel]
        aps = np.array([f(wv) for f in scorers], dtype=np.float64)
        aps = aps[~np.isnan(aps)]
        return float(aps.mean()) if aps.size else float("nan")

    return score


# ------------------------------------------------------------------------------ multi-label metrics
def _build_micro_map(p: Predictions, n_classes: int) -> Scorer:
    """Multi-label micro-mAP: one AP over all ``N * C`` (sample, label) entries."""
    t = _binary(p.y_true, "y_true", 2)
    s = _scores(p, t.shape, "micro_map")
    width = t.shape[1]
    ap = ap_scorer(t.ravel(), s.ravel())

    def score(w: FloatArray | None) -> float:
        v = ap(None if w is None else np.repeat(w, width))
        return 0.0 if np.isnan(v) else v

    return score


def _build_micro_f1(p: Predictions, n_classes: int) -> Scorer:
    """Multi-label micro-F1: ``2 TP / (2 TP + FP + FN)`` summed over all entries."""
    t = _binary(p.y_true, "y_true", 2)
    q = _binary(p.y_pred, "y_pred", 2)
    if t.shape != q.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {q.shape} differ in shape")
    tp = (t & q).sum(axis=1).astype(np.float64)
    wrong = (t ^ q).sum(axis=1).astype(np.float64)  # FP + FN per sample
    return lambda w: _ratio(2 * _dot(tp, w), 2 * _dot(tp, w) + _dot(wrong, w))


# ----------------------------------------------------------------------------------- change metrics
def _build_changed(iou: bool) -> Callable[[Predictions, int], Scorer]:
    """F1 (or IoU) of the changed class: ``2TP / (2TP + FP + FN)`` (or ``TP / (TP + FP + FN)``)."""

    def build(p: Predictions, n_classes: int) -> Scorer:
        t = _binary(p.y_true, "y_true", 1)
        q = _binary(p.y_pred, "y_pred", 1)
        if t.shape != q.shape:
            raise ValueError(f"y_true {t.shape} and y_pred {q.shape} differ in shape")
        tp = (t & q).astype(np.float64)
        wrong = (t ^ q).astype(np.float64)
        k = 1.0 if iou else 2.0

        def score(w: FloatArray | None) -> float:
            hits = _dot(tp, w)
            return _ratio(k * hits, k * hits + _dot(wrong, w))

        return score

    return build


def _build_ap_changed(p: Predictions, n_classes: int) -> Scorer:
    """Average precision of the changed class ranked by P(changed); 0 without a changed sample."""
    t = _binary(p.y_true, "y_true", 1)
    ap = ap_scorer(t, _scores(p, t.shape, "ap_changed"))

    def score(w: FloatArray | None) -> float:
        v = ap(w)
        return 0.0 if np.isnan(v) else v

    return score


_BUILDERS: dict[ProbeKind, dict[str, Callable[[Predictions, int], Scorer]]] = {
    "single-label": {
        "accuracy": _build_accuracy(ignore=False),
        "macro_f1": _build_per_class(iou=False, ignore=False),
    },
    "multi-label": {"micro_map": _build_micro_map, "micro_f1": _build_micro_f1},
    "segmentation": {
        "miou": _build_per_class(iou=True, ignore=True),
        "accuracy": _build_accuracy(ignore=True),
        "macro_ap": _build_macro_ap,
    },
    "change": {
        "f1_changed": _build_changed(iou=False),
        "iou_changed": _build_changed(iou=True),
        "ap_changed": _build_ap_changed,
    },
}

_PRIMARY: dict[ProbeKind, str] = {
    "single-label": "accuracy",
    "multi-label": "micro_map",
    "segmentation": "miou",
    "change": "f1_changed",
}


def metrics_for(kind: ProbeKind, n_classes: int) -> dict[str, MetricFn]:
    """The metrics reported for a probe kind, by name (each also a :class:`Metric`).

    Args:
        kind: ``single-label`` (accuracy, macro_f1), ``multi-label`` (micro_map, micro_f1),
            ``segmentation`` (miou, accuracy, macro_ap) or ``change`` (f1_changed, iou_changed,
            ap_changed). The AP metrics need ``y_score``.
        n_classes: number of classes ``C`` (labels for multi-label; 2 for change).

    Returns:
        ``{name: metric}`` in reporting order.
    """
    if kind not in _BUILDERS:
        raise ValueError(f"unknown probe kind {kind!r}; expected one of {', '.join(PROBE_KINDS)}")
    if n_classes < 1:
        raise ValueError(f"n_classes must be at least 1, got {n_classes}")
    return {name: Metric(name, kind, n_classes, build) for name, build in _BUILDERS[kind].items()}


def primary_metric(kind: ProbeKind) -> str:
    """The headline metric of a probe kind: accuracy, micro_map, miou or f1_changed."""
    if kind not in _PRIMARY:
        raise ValueError(f"unknown probe kind {kind!r}; expected one of {', '.join(PROBE_KINDS)}")
    return _PRIMARY[kind]


# ------------------------------------------------------------------------------------- chance level
def _class_freq(y_true: NDArray[Any], n_classes: int | None) -> FloatArray:
    """Frequencies ``(K,)`` of the classes present among the scored samples of ``(N,)`` ids."""
    t = _ids(y_true, "y_true")
    t = t[(t >= 0) & (t < n_classes)] if n_classes is not None else t[t >= 0]
    if t.size == 0:
        return np.zeros(0, dtype=np.float64)
    counts = np.bincount(t).astype(np.float64)
    counts = counts[counts > 0]
    freq: FloatArray = counts / counts.sum()
    return freq


def _chance_multilabel(metric: str, y_true: NDArray[Any]) -> float:
    t = _binary(y_true, "y_true", 2)
    if t.size == 0:
        return float("nan")
    p = t.mean(axis=0)
    if metric == "micro_map":  # every entry of label c scored by p_c
        ap = ap_scorer(t.ravel(), np.broadcast_to(p, t.shape).ravel().astype(np.float64))(None)
        return 0.0 if np.isnan(ap) else ap
    # micro-F1: stratified guessing (label c with probability p_c) versus the best constant label set.
    best = _ratio(float((p * p).sum()), float(p.sum()))
    ranked = np.sort(p)[::-1]
    inside = np.cumsum(ranked)  # TP / N when the k most frequent labels are always predicted
    k = np.arange(1, ranked.size + 1)
    outside = ranked.sum() - inside  # FN / N
    f1 = 2 * inside / (2 * inside + (k - inside) + outside)
    return float(max(best, f1.max(initial=0.0)))


def chance_level(
    kind: ProbeKind, metric: str, y_true: NDArray[Any], *, n_classes: int | None = None
) -> float:
    """The score of the label-frequency prior, the bar an arm must clear to be "above chance".

    The prior knows the test labels' frequencies ``p_c`` and nothing about the samples. Its score is the
    better of two predictors that use only the prior: a constant one (the majority class; all changed;
    the best constant label set) and stratified guessing (class ``c`` with probability ``p_c``, in
    expectation). Threshold-free scores use the constant scores ``p_c``, whose AP is the prevalence.

    ============ ============================================================
    accuracy     ``max p_c``
    macro_f1     ``1 / K`` (``K`` classes present)
    miou         ``max(max p_c / K, mean p_c / (2 - p_c))``
    macro_ap     ``mean p_c = 1 / K``
    micro_map    AP of every entry of label ``c`` scored ``p_c``
    micro_f1     ``max(sum p_c^2 / sum p_c, best constant label set)``
    f1_changed   ``2 p / (1 + p)`` (all changed)
    iou_changed  ``p``
    ap_changed   ``p``
    ============ ============================================================

    Args:
        kind: the probe kind.
        metric: a name from :func:`metrics_for` of that kind.
        y_true: the test labels, as in :class:`Predictions`.
        n_classes: segmentation: ids outside ``[0, n_classes)`` are unscored (ignore index); without
            it only negative ids are.

    Returns:
        The chance score; ``nan`` without a scored sample.
    """
    if metric not in _BUILDERS.get(kind, {}):
        raise ValueError(f"no metric {metric!r} for probe kind {kind!r}")
    if kind == "multi-label":
        return _chance_multilabel(metric, y_true)
    if kind == "change":
        t = _binary(y_true, "y_true", 1)
        if t.size == 0:
            return float("nan")
        p = float(t.mean())
        return 2 * p / (1 + p) if metric == "f1_changed" else p
    freq = _class_freq(y_true, n_classes if kind == "segmentation" else None)
    if freq.size == 0:
        return float("nan")
    k = freq.size
    if metric == "accuracy":
        return float(freq.max())
    if metric == "miou":
        return float(max(freq.max() / k, (freq / (2 - freq)).mean()))
    return 1.0 / k  # macro_f1 (stratified guessing beats the majority class), macro_ap (prevalence)
