"""``make evidence QUICK=1``: the whole evidence in minutes, run twice with the same seed.

Checks the table's shape, that RCF and the encoder score above chance on a real set (the Slovenian land
cover: pixel accuracy above the share of its most frequent class), and that the second run gives the
same numbers as the first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio

pytestmark = [pytest.mark.slow, pytest.mark.ray]

# The harness of issue 19 (a2mae benchmark) lands separately; until it is in the checkout these tests
# cannot run (make evidence stops with a one-line error) and are reported as skipped.
pytest.importorskip("a2mae.benchmark.run", reason="a2mae benchmark (issue 19) is not in this checkout")

REPO = Path(__file__).resolve().parents[2]
LANDCOVER = REPO / "data" / "samples" / "landcover_slovenia"


def _quick(out: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "RAY_", "AWS_"))}
    return subprocess.run(
        [sys.executable, "-m", "flows.evidence", "--quick", "--out", str(out)],
        cwd=REPO,
        env={**env, "COLUMNS": "80", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("evidence")
    return [(_quick(root / name), root / name) for name in ("first", "second")]


def _results(out: Path) -> list[dict]:
    return pq.read_table(out / "benchmark" / "landcover" / "results.parquet").to_pylist()


def test_quick_evidence_writes_its_report_with_the_table(runs):
    for proc, out in runs:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        text = (out / "evidence.md").read_text()
        assert "make evidence QUICK=1" in text and "### landcover: segmentation, miou" in text
        assert "| encoder |" in text and "| scratch |" in text and "s CPU" in text
        assert (out / "evidence.png").read_bytes()[:4] == b"\x89PNG"
    rows = _results(runs[0][1])
    arms = {r["arm"] for r in rows}
    assert {"scratch", "mae"} <= arms and any(a.startswith("rcf") for a in arms) and len(arms) >= 4
    protos, seeds = {r["protocol"] for r in rows}, {r["seed"] for r in rows}
    assert protos == {"knn5", "knn20", "linear"} and len(seeds) == 2
    per_cell = {}
    for r in rows:
        per_cell.setdefault((r["arm"], r["protocol"], r["metric"]), set()).add(r["seed"])
    assert all(s == seeds for s in per_cell.values())  # every arm x protocol x metric has every seed


def test_rcf_and_the_encoder_score_above_chance_on_the_land_cover(runs):
    counts = np.zeros(256, np.int64)
    for p in (LANDCOVER / "test" / "masks").glob("*.tif"):
        with rasterio.open(p) as ds:
            counts += np.bincount(ds.read(1).ravel(), minlength=256)
    counts[255] = 0
    chance = counts.max() / counts.sum()  # always predicting the most frequent class
    rows = [r for r in _results(runs[0][1]) if r["metric"] == "accuracy" and r["protocol"] == "linear"]
    for arm in ("rcf", "encoder"):
        mine = [r["value"] for r in rows if r["arm"] == arm or r["arm"].startswith(arm + "-")]
        assert mine and np.mean(mine) > chance, (arm, mine, chance)


def test_a_second_run_with_the_same_seed_gives_the_same_numbers(runs):
    def key(r):
        return (r["arm"], r["protocol"], r["fraction"], r["seed"], r["metric"])

    first = {key(r): r["value"] for r in _results(runs[0][1])}
    second = {key(r): r["value"] for r in _results(runs[1][1])}
    assert first.keys() == second.keys()
    for k, v in first.items():
        assert second[k] == pytest.approx(v, abs=1e-9), k
