"""Fixtures of the predict tests: small generated scenes and parameters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest


@pytest.fixture(scope="session")
def s2_pair(tmp_path_factory):
    """Two generated Sentinel-2 L2A scenes (360 x 360 px at 10 m, exact georeferencing) of one place,
    the second 20 px east and 10 px south of the first, plus a third far away; ``(records, folder)``."""
    from a2mae.testing.scenes import SceneSpec, make_scenes

    root = tmp_path_factory.mktemp("predict_scenes")

    def d(m):
        return datetime(2020, m, 15, 3, 5, 41, tzinfo=UTC)

    specs = [
        SceneSpec("S2", d(6), 3600, cloud=(600, 600, 400), nodata_cols=7),
        SceneSpec("S2", d(12), 3600, shift_m=(200, -100)),
        SceneSpec("S2", d(9), 3600, shift_m=(60_000, 0)),
    ]
    records = make_scenes(root / "scenes", specs)
    by_date = sorted(records, key=lambda r: r.datetime)
    return by_date, root


@pytest.fixture
def predict_params():
    """``predict_params(*overrides)``: parameters with small windows, in-process."""
    from a2mae.config import load_params

    def make(*overrides: str):
        base = ["predict.window=64", "predict.overlap=16", "predict.batch_size=16", "predict.workers=1"]
        return load_params(None, [*base, *overrides])

    return make
