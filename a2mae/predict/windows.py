"""Window layout and blending (pure numpy).

A scene of ``H x W`` pixels is covered by square windows of side ``win`` whose starts step by
``win - overlap``; the last window of a row or column is moved back to end on the scene's edge, so
every window lies inside the scene and every pixel is covered. Predictions of overlapping windows are
blended with a separable cosine (Hann) taper: within ``overlap`` pixels of a window edge the weight
rises as ``sin^2``, elsewhere it is 1. Where two windows overlap by exactly ``overlap`` pixels the two
tapers add up to 1, so a pixel at one window's edge takes (almost) all of its value from the window
in which it lies centrally: no seam. Weights never reach 0, so pixels on the scene's border, covered
by a single window, keep that window's prediction after normalisation by the summed weights.
"""

from __future__ import annotations

import math

import numpy as np

from a2mae.predict.errors import PredictError


def starts(n: int, win: int, overlap: int, align: int = 1) -> list[int]:
    """Window starts along one axis of ``n`` pixels.

    Args:
        n: Axis length, pixels.
        win: Window side.
        overlap: Pixels shared by neighbouring windows (``0 <= overlap <= win / 2``).
        align: Starts are multiples of this (the patch size, for token-aligned outputs): the step is
            rounded down to a multiple of it, and the last window moved back to the last aligned start
            that fits.

    Raises:
        PredictError: ``n`` is smaller than one window.
    """
    if n < win:
        raise PredictError(f"{n} px is smaller than one window of {win} px")
    stride = max(align, (win - overlap) // align * align)
    out = list(range(0, n - win + 1, stride))
    last = (n - win) // align * align
    if out[-1] != last:
        out.append(last)
    return out


def taper(win: int, overlap: int) -> np.ndarray:
    """``[win]`` float32 weights: ``sin^2`` ramps over ``overlap`` pixels at both ends, 1 between."""
    w = np.ones(win, np.float64)
    if overlap > 0:
        i = np.arange(overlap)
        ramp = np.sin(0.5 * math.pi * (i + 0.5) / overlap) ** 2
        w[:overlap] = ramp
        w[win - overlap :] = ramp[::-1]
    return w.astype(np.float32)


def weights(win: int, overlap: int) -> np.ndarray:
    """``[win, win]`` separable blending weights (outer product of :func:`taper`)."""
    t = taper(win, overlap)
    return np.outer(t, t)


def grid(height: int, width: int, win: int, overlap: int, align: int = 1) -> list[tuple[int, int]]:
    """Every window ``(row0, col0)`` of a ``height x width`` scene, row-major."""
    return [(r, c) for r in starts(height, win, overlap, align) for c in starts(width, win, overlap, align)]
