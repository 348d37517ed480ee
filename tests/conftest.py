"""Shared test settings: services stay on loopback, telemetry off, no network."""

from __future__ import annotations

import os

import pytest

# Before anything imports ray/prefect/mlflow.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


# --------------------------------------------------------------------- synthetic scenes and snapshots


@pytest.fixture(scope="session")
def synthetic_scenes(tmp_path_factory):
    """Co-located synthetic S2 L2A, L8 C2 L2, GF1 and GF2 scenes with their catalog (read-only!).

    Returns ``(folder, records, catalog_path)``; see ``a2mae/data/synthetic.py``.
    """
    from a2mae.data.catalog import write_catalog
    from a2mae.data.synthetic import make_scenes

    root = tmp_path_factory.mktemp("synthetic_scenes")
    records = make_scenes(root / "scenes")
    catalog = root / "catalog.parquet"
    write_catalog(records, catalog)
    return root / "scenes", records, catalog


@pytest.fixture(scope="session")
def tiny_snapshot(tmp_path_factory, synthetic_scenes):
    """A small STSSD snapshot tiled from ``synthetic_scenes`` (read-only!): S2-L8 and GF-S2 sets."""
    from a2mae.config import load_params
    from a2mae.data.tiling import tile

    out = tmp_path_factory.mktemp("tiny_snapshot") / "stssd"
    tile(synthetic_scenes[2], out, load_params(overrides=["tile.workers=1"]), progress=False)
    return out
