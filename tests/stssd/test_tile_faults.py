"""Faults around ``a2mae tile`` (trust issue items 4, 5 and 6-8), with real processes where it matters.

* Two writers of one ``--out``: the second waits up to ``tile.lock_timeout_s``, then refuses with one
  line naming the first; a dead first writer never blocks.
* SIGKILL, SIGINT or SIGTERM at a random moment: ``--out`` holds the previous snapshot or the complete
  new one, both intact; the exit code is 130/143 with one line; no worker outlives the run; the next run
  finishes and leaves no temporary folder or lock.
* Planning memory: a plan estimated above ``tile.max_plan_mb`` is refused before it is built.
"""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pytest

from a2mae.cli import main
from a2mae.config import load_params
from a2mae.sensors import get_registry
from a2mae.stssd import grouping
from a2mae.stssd.grouping import estimate_plan, plan_sets
from a2mae.stssd.run import build_tasks, on_chip_grid, tile
from a2mae.stssd.snapshot import verify_snapshot
from a2mae.testing.processes import run_verb, signal_outcome, wait_gone


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}"))


# --------------------------------------------------------------------------------- concurrent writers
HOLD = textwrap.dedent(
    """
    import sys, time
    from a2mae.io.lock import writer_lock
    with writer_lock(sys.argv[1], 0, setting="x", command="a2mae tile (the first)"):
        print("held", flush=True)
        time.sleep(600)
    """
)


def test_a_second_tile_to_the_same_out_waits_then_refuses(synthetic_scenes, tmp_path, capsys):
    out = tmp_path / "stssd"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        args = ["tile", "--catalog", str(synthetic_scenes[2]), "--out", str(out), "--no-progress"]
        assert main([*args, "--set", "tile.lock_timeout_s=0.5", "--set", "tile.workers=1"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"pid {holder.pid}" in err and "a2mae tile (the first)" in err
        assert "waited 0.5 s" in err and "tile.lock_timeout_s" in err
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    assert main([*args, "--set", "tile.lock_timeout_s=0", "--set", "tile.workers=1"]) == 0  # owner dead
    assert verify_snapshot(out)["verified"] == "sha256"
    assert leftovers(out) == []


@pytest.mark.slow
def test_two_forced_tiles_to_one_out_end_with_one_intact_snapshot(synthetic_scenes, tmp_path):
    out = tmp_path / "stssd"
    args = ["tile", "--catalog", str(synthetic_scenes[2]), "--out", str(out), "--no-progress", "--force"]
    procs = [
        subprocess.Popen([sys.executable, "-m", "a2mae", *args], stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate()
        assert p.returncode == 0, err  # the second waited for the first (tile.lock_timeout_s)
    assert verify_snapshot(out)["verified"] == "sha256"
    assert leftovers(out) == []


# ----------------------------------------------------------------------------------- kill at random
@pytest.fixture(scope="module")
def snapshots(synthetic_scenes, tmp_path_factory):
    """Reference bytes of the previous snapshot (other parameters) and of the one the killed run makes."""
    root = tmp_path_factory.mktemp("reference")
    old, new = root / "old", root / "new"
    tile(synthetic_scenes[2], old, load_params(overrides=["tile.workers=1", "tile.max_cloud_fraction=0.5"]))
    tile(synthetic_scenes[2], new, load_params(overrides=["tile.workers=1", "tile.shard_max_mb=1"]))
    return old, tree(old), tree(new)


def _kill_and_recover(synthetic_scenes, snapshots, tmp_path: Path, sig: int, delay: float) -> str:
    import shutil

    old, old_tree, new_tree = snapshots
    out = tmp_path / "stssd"
    shutil.copytree(old, out)
    args = ["tile", "--catalog", str(synthetic_scenes[2]), "--out", str(out), "--no-progress"]
    run = run_verb([*args, "--set", "tile.workers=2", "--set", "tile.shard_max_mb=1"], sig=sig, delay=delay)
    assert wait_gone(run.workers) == set(), "a worker outlived the run"
    now = tree(out)
    assert now in (old_tree, new_tree)  # the previous snapshot, or the complete new one
    verify_snapshot(out)
    written = "new snapshot" if now == new_tree else "old snapshot"
    outcome = signal_outcome(run, sig, written, leftovers(out))
    again = run_verb([*args, "--set", "tile.workers=2", "--set", "tile.shard_max_mb=1"])
    assert again.returncode == 0, again.stderr
    assert wait_gone(again.workers) == set()
    assert tree(out) == new_tree
    assert leftovers(out) == []  # a killed run's temporary folder is removed by the next run
    return outcome


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["KILL", "INT"])
def test_a_signal_mid_tiling_leaves_an_intact_snapshot_and_no_worker(
    synthetic_scenes, snapshots, tmp_path, sig
):
    _kill_and_recover(synthetic_scenes, snapshots, tmp_path, sig, delay=2.0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(12))
def test_tiling_signals_at_random_moments(synthetic_scenes, snapshots, tmp_path, seed):
    rng = random.Random(seed)
    sig = rng.choice([signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
    _kill_and_recover(synthetic_scenes, snapshots, tmp_path, sig, delay=rng.uniform(0.0, 9.0))


# ------------------------------------------------------------------------------- planning memory
def test_a_plan_too_large_for_memory_is_refused_before_it_is_built(
    synthetic_scenes, tmp_path, capsys, monkeypatch
):
    def never(*a, **k):
        raise AssertionError("the plan was built")

    monkeypatch.setattr("a2mae.stssd.run.plan_sets", never)
    out = tmp_path / "stssd"
    args = ["tile", "--catalog", str(synthetic_scenes[2]), "--out", str(out), "--no-progress"]
    assert main([*args, "--set", "tile.grid_m=0.05"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "planning would need about" in err and "GB" in err
    assert "tile.max_plan_mb=4096" in err and "tile.grid_m=0.05" in err
    assert not out.exists() and leftovers(out) == []


@pytest.mark.parametrize("grid_m", [960.0, 240.0, 60.0])
def test_the_plan_estimate_bounds_the_memory_planning_takes(synthetic_scenes, grid_m):
    cfg = load_params(overrides=[f"tile.grid_m={grid_m}"]).tile
    registry = get_registry()
    records = [on_chip_grid(r, registry, cfg) for r in synthetic_scenes[1]]
    need, pairs = estimate_plan(records, cfg)
    exact = sum(len(grouping.scene_points(r, cfg.grid_m, cfg.chip_size)) for r in records)
    assert pairs >= exact
    tracemalloc.start()
    try:
        plan = plan_sets(records, cfg)
        build_tasks(plan, cfg, registry)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= need
