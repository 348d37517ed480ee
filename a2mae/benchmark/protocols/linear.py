"""Linear probe: scikit-learn logistic regression on standardised, cached embeddings.

``StandardScaler`` then ``LogisticRegression`` (lbfgs, ``max_iter`` 2000); ``C`` is swept over
``benchmark.linear_c`` on the validation fold (primary metric), then the probe is refit on train + val
with the chosen ``C`` and scores the test fold once. Multi-label: one-vs-rest.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from a2mae.benchmark.metrics import MetricFn, Predictions

MAX_ITER = 2000


def _fit(x: np.ndarray, y: np.ndarray, c: float, kind: str, seed: int):  # type: ignore[no-untyped-def]
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    lr = LogisticRegression(C=c, max_iter=MAX_ITER, random_state=seed)
    clf = OneVsRestClassifier(lr) if kind == "multi-label" else lr
    model = make_pipeline(StandardScaler(), clf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)  # one-vs-rest on a label column with one value
        model.fit(x, y)
    return model


def _predict(model, x: np.ndarray, y: np.ndarray, kind: str, n_classes: int) -> Predictions:  # type: ignore[no-untyped-def]
    proba = model.predict_proba(x)
    if kind == "multi-label":
        return Predictions(y, (proba > 0.5).astype(np.int64), proba)
    full = np.zeros((len(x), n_classes), np.float32)
    full[:, model.classes_.astype(int)] = proba
    pred = full.argmax(1).astype(np.int64)
    if kind == "change":
        return Predictions(y, pred, full[:, 1])
    return Predictions(y, pred, full)


def linear_predict(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    grid: Sequence[float],
    select: MetricFn,
    kind: str,
    n_classes: int,
    seed: int = 0,
) -> tuple[Predictions, float]:
    """Sweep ``C`` on val, refit on train + val, predict test.

    Returns:
        Test predictions and the chosen ``C``.
    """
    best_c, best = grid[0], -np.inf
    if len(val[0]):
        for c in grid:
            score = select(_predict(_fit(*train, c, kind, seed), *val, kind, n_classes))
            if np.isfinite(score) and score > best:
                best_c, best = c, score
    x = np.concatenate([train[0], val[0]])
    y = np.concatenate([train[1], val[1]])
    return _predict(_fit(x, y, best_c, kind, seed), *test, kind, n_classes), float(best_c)
