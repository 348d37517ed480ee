"""``make evidence QUICK=1``: the whole evidence in minutes, run twice with the same seed.

Checks the table's shape, that RCF and the encoder score above chance on a real set (the Slovenian land
cover: pixel accuracy and mIoU above the label prior of the same test pixels, per seed), and that the
second run gives the same numbers as the first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

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
        # each run pre-trains its own plain MAE (none reused from an earlier run's checkpoints)
        assert list((out / "ray").glob("benchmark-mae-*/checkpoint_*")), out
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
    """Per seed, pixel accuracy and mIoU above the label prior of that seed's own test pixels.

    The harness re-splits the set spatially per seed and samples at most ``max_pixels_per_class`` pixels
    per class and fold, so chance is measured on the same test pixels it scored (``chance_level``: the
    majority class for accuracy), not on the dataset's ``test/masks``.
    """
    from a2mae.benchmark.data import TEST
    from a2mae.benchmark.layouts import read_data
    from a2mae.benchmark.metrics import chance_level
    from a2mae.benchmark.probe import seed_folds
    from a2mae.config import load_params
    from flows.evidence import NORMALIZATION

    ev = load_params().evidence
    p = load_params(
        None, [f"benchmark.normalization={NORMALIZATION}", *ev.set_overrides.get("landcover", [])]
    )
    data = read_data(LANDCOVER, p.benchmark)
    rows = [r for r in _results(runs[0][1]) if r["protocol"] == "linear"]
    checked = 0
    for seed in sorted({r["seed"] for r in rows}):
        y = seed_folds(data, p.benchmark, 8, seed).index[TEST].y  # pixel labels: the patch does not matter
        for metric in ("accuracy", "miou"):
            chance = chance_level("segmentation", metric, y, n_classes=len(data.classes))
            for arm in ("rcf", "encoder"):
                mine = [
                    r["value"]
                    for r in rows
                    if r["seed"] == seed
                    and r["metric"] == metric
                    and (r["arm"] == arm or r["arm"].startswith(arm + "-"))
                ]
                assert mine and min(mine) > chance, (arm, seed, metric, mine, chance)
                checked += 1
    assert checked == 2 * 2 * 2  # two seeds x two metrics x two arms


def test_a_second_run_with_the_same_seed_gives_the_same_numbers(runs):
    def key(r):
        return (r["arm"], r["protocol"], r["fraction"], r["seed"], r["metric"])

    first = {key(r): r["value"] for r in _results(runs[0][1])}
    second = {key(r): r["value"] for r in _results(runs[1][1])}
    assert first.keys() == second.keys()
    for k, v in first.items():
        assert second[k] == pytest.approx(v, abs=1e-9), k
