"""Faults around ``a2mae ingest`` with real processes (trust issue items 4 and 6-8).

* Two ingests into one catalog at the same time: no scene is lost, both exit 0.
* SIGKILL, SIGINT or SIGTERM at a random moment: the catalog is the previous one or the complete new
  one (never half-written), the exit code is 130/143 with one line, no process is left behind, and the
  next run finishes the work and leaves no temporary or lock file.
"""

from __future__ import annotations

import random
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from a2mae.config import load_params
from a2mae.ingest.catalog import read_catalog
from a2mae.ingest.run import ingest
from a2mae.testing.processes import run_verb, signal_outcome, wait_gone
from a2mae.testing.rasters import write_scene


def scenes(folder: Path, n: int, first_day: int = 0, size: int = 48) -> Path:
    """``n`` distinct GF2 scenes (one file each, distinct dates and pixels) under ``folder``."""
    rng = np.random.default_rng(first_day)
    for k in range(n):
        day = first_day + k
        name = f"GF2_PMS1_E113.6_N23.1_2020{1 + day // 28:02d}{1 + day % 28:02d}_L1A00012{day:05d}-MSS1.tif"
        write_scene(folder / f"s{day:03d}" / name, rng.integers(100, 3000, (4, size, size)).astype(np.uint16))
    return folder


def leftovers(catalog: Path) -> list[str]:
    return sorted(p.name for p in catalog.parent.iterdir() if p.name.startswith(f".{catalog.name}"))


def test_two_concurrent_ingests_lose_no_scene(tmp_path):
    """Both read the (empty) catalog, read their scenes, then merge under the lock after re-reading it."""
    a, b = scenes(tmp_path / "a", 12), scenes(tmp_path / "b", 12, first_day=100)
    cat = tmp_path / "cat" / "catalog.parquet"
    p = load_params(overrides=["data.workers=1"])
    start = threading.Barrier(2)
    results: dict[str, object] = {}

    def run(name: str, src: Path) -> None:
        start.wait()
        try:
            results[name] = ingest([str(src)], cat, p, progress=False)
        except BaseException as err:  # surfaced below
            results[name] = err

    threads = [threading.Thread(target=run, args=(n, s)) for n, s in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(len(r.added) == 12 for r in results.values()), results
    assert len(read_catalog(cat)) == 24
    assert leftovers(cat) == []


@pytest.mark.slow
def test_two_concurrent_ingest_processes_lose_no_scene(tmp_path):
    a, b = scenes(tmp_path / "a", 10), scenes(tmp_path / "b", 10, first_day=100)
    cat = tmp_path / "catalog.parquet"
    runs: dict[str, object] = {}

    def run(name: str, src: Path) -> None:
        runs[name] = run_verb(["ingest", str(src), "--catalog", str(cat), "--no-progress"])

    threads = [threading.Thread(target=run, args=(n, s)) for n, s in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in runs.values():
        assert r.returncode == 0, r.stderr
        assert "10 added" in r.stdout
    assert len(read_catalog(cat)) == 20
    assert leftovers(cat) == []


def _kill_and_recover(tmp_path: Path, sig: int, delay: float) -> str:
    """Ingest 16 new scenes into a catalog of 2, signal the run after ``delay`` s, check, then finish."""
    cat = tmp_path / "catalog.parquet"
    ingest([str(scenes(tmp_path / "old", 2, first_day=200))], cat, load_params(), progress=False)
    before = cat.read_bytes()
    src = scenes(tmp_path / "new", 16, size=96)
    args = ["ingest", str(src), "--catalog", str(cat), "--no-progress", "--set", "data.workers=1"]
    run = run_verb(args, sig=sig, delay=delay)
    assert wait_gone(run.workers) == set()  # no orphan
    ids = {r.scene_id for r in read_catalog(cat)}  # always a readable catalog
    assert cat.read_bytes() == before or len(ids) == 18  # the previous one, or the complete new one
    written = "new catalog" if cat.read_bytes() != before else "old catalog"
    outcome = signal_outcome(run, sig, written, leftovers(cat))
    again = run_verb(args)
    assert again.returncode == 0, again.stderr
    assert len(read_catalog(cat)) == 18
    assert leftovers(cat) == []  # a killed run's temporary is removed under the lock
    return outcome


@pytest.mark.parametrize(
    "sig",
    [signal.SIGKILL, signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],
    ids=["KILL", "INT", "TERM"],
)
def test_a_signal_mid_run_leaves_the_previous_catalog_or_the_complete_one(tmp_path, sig):
    _kill_and_recover(tmp_path, sig, delay=1.5)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_signals_at_random_moments(tmp_path, seed):
    rng = random.Random(seed)
    sig = rng.choice([signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
    _kill_and_recover(tmp_path, sig, delay=rng.uniform(0.0, 4.0))
