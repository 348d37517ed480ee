"""kNN probe: L2-normalised embeddings, cosine similarity, votes weighted by ``exp(s / 0.07)`` (DINO).

The memory bank is train + val (nothing is tuned: k is fixed at each of ``benchmark.knn_k``).
"""

from __future__ import annotations

import numpy as np

from a2mae.benchmark.metrics import Predictions

TEMPERATURE = 0.07


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    out: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return out


def knn_scores(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int, n_classes: int, chunk: int = 2048
) -> np.ndarray:
    """Class scores ``(n_test, K)``: similarity-weighted votes (multi-label: weighted label mean).

    Args:
        train_x: ``(n, D)`` bank embeddings.
        train_y: ``(n,)`` classes or ``(n, K)`` multi-hot.
        test_x: ``(m, D)`` queries.
        k: Neighbours (capped at ``n``).
        n_classes: ``K``.
        chunk: Queries per similarity block (bounds memory).
    """
    bank, q = _unit(train_x), _unit(test_x)
    k = min(k, len(bank))
    onehot = train_y.astype(np.float32) if train_y.ndim > 1 else np.eye(n_classes, dtype=np.float32)[train_y]
    out = np.zeros((len(q), n_classes), np.float32)
    for s in range(0, len(q), chunk):
        sim = q[s : s + chunk] @ bank.T
        nn = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        w = np.exp(np.take_along_axis(sim, nn, axis=1) / TEMPERATURE - 1 / TEMPERATURE)
        votes = (w[:, :, None] * onehot[nn]).sum(1)
        out[s : s + chunk] = votes / np.maximum(w.sum(1, keepdims=True), 1e-12)
    return out


def knn_predict(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    k: int,
    kind: str,
    n_classes: int,
) -> Predictions:
    """Hard decisions and scores of the kNN probe in the form the metrics take."""
    return knn_predictions(train_x, train_y, test_x, test_y, [k], kind, n_classes)[k]


def knn_predictions(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    ks: list[int],
    kind: str,
    n_classes: int,
) -> dict[int, Predictions]:
    """:func:`knn_predict` for several ``k`` from one similarity pass."""
    return {
        k: _decide(s, test_y, kind)
        for k, s in knn_scores_multi(train_x, train_y, test_x, ks, n_classes).items()
    }


def knn_scores_multi(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    ks: list[int],
    n_classes: int,
    chunk: int = 2048,
) -> dict[int, np.ndarray]:
    """:func:`knn_scores` for several ``k``: the neighbours are ranked once."""
    bank, q = _unit(train_x), _unit(test_x)
    kmax = min(max(ks), len(bank))
    onehot = train_y.astype(np.float32) if train_y.ndim > 1 else np.eye(n_classes, dtype=np.float32)[train_y]
    out = {k: np.zeros((len(q), n_classes), np.float32) for k in ks}
    for s in range(0, len(q), chunk):
        sim = q[s : s + chunk] @ bank.T
        nn = np.argpartition(-sim, kmax - 1, axis=1)[:, :kmax]
        top = np.take_along_axis(sim, nn, axis=1)
        order = np.argsort(-top, axis=1)
        nn, top = np.take_along_axis(nn, order, axis=1), np.take_along_axis(top, order, axis=1)
        for k in ks:
            kk = min(k, kmax)
            w = np.exp(top[:, :kk] / TEMPERATURE - 1 / TEMPERATURE)
            votes = (w[:, :, None] * onehot[nn[:, :kk]]).sum(1)
            out[k][s : s + chunk] = votes / np.maximum(w.sum(1, keepdims=True), 1e-12)
    return out


def _decide(scores: np.ndarray, test_y: np.ndarray, kind: str) -> Predictions:
    if kind == "multi-label":
        return Predictions(test_y, (scores > 0.5).astype(np.int64), scores)
    pred = scores.argmax(1).astype(np.int64)
    if kind == "change":
        return Predictions(test_y, pred, scores[:, 1])
    return Predictions(test_y, pred, scores)
