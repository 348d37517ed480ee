"""Window layout and blending weights (property tests)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a2mae.predict.errors import PredictError
from a2mae.predict.windows import grid, starts, taper


@settings(max_examples=200, deadline=None)
@given(
    win=st.integers(8, 128),
    frac=st.floats(0, 0.5),
    extra=st.integers(0, 1000),
    align=st.sampled_from([1, 4, 8]),
)
def test_windows_cover_every_pixel_and_stay_inside(win, frac, extra, align):
    win = max(align, win // align * align)
    overlap = int(win * frac)
    n = win + extra
    s = starts(n, win, overlap, align)
    assert s[0] == 0 and all(0 <= a <= n - win for a in s)
    assert s == sorted(set(s))
    assert all(a % align == 0 for a in s)
    covered = np.zeros(n, bool)
    for a in s:
        covered[a : a + win] = True
    assert covered[: (n - win) // align * align + win].all()
    if align == 1:
        assert covered.all() and s[-1] == n - win
    steps = np.diff(s)
    assert (steps <= max(align, win - overlap)).all()


@settings(max_examples=100, deadline=None)
@given(win=st.integers(2, 96), frac=st.floats(0, 0.5))
def test_cosine_tapers_of_neighbours_add_up_to_one(win, frac):
    overlap = int(win * frac)
    t = taper(win, overlap).astype(np.float64)
    assert (t > 0).all() and t.max() <= 1.0
    if win > 2 * overlap:
        assert t.max() == pytest.approx(1.0)  # flat between the ramps
    if overlap:  # the falling end of one window over the rising start of the next
        np.testing.assert_allclose(t[win - overlap :] + t[:overlap], 1.0, atol=1e-6)


def test_a_scene_smaller_than_a_window_is_refused():
    with pytest.raises(PredictError, match="smaller than one window"):
        grid(50, 200, 64, 16)
