"""The local process pool of ``run_tasks``: runs of consecutive items per worker, ordered results."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a2mae.executor import RunScheduler, run_tasks


def _square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("item 3 is bad")
    return x


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 60),
    workers=st.integers(1, 5),
    run=st.integers(1, 9),
    ahead=st.integers(1, 40),
    seed=st.integers(0, 2**31),
)
def test_run_scheduler_hands_out_every_item_once_within_the_bound(n, workers, run, ahead, seed):
    """Simulate workers finishing in random order; results are consumed in item order."""
    rng = random.Random(seed)
    sched = RunScheduler(n, workers, run, ahead)
    flight: list[list[int]] = [[] for _ in range(workers)]
    taken: list[int] = []
    done: set[int] = set()
    oldest = 0
    while True:
        for w in range(workers):
            while len(flight[w]) < 2:
                i = sched.take(w, oldest, idle=not flight[w])
                if i is None:
                    break
                # a new run never starts `ahead` or more items past the oldest unconsumed one
                assert i < oldest + ahead + run
                flight[w].append(i)
                taken.append(i)
        busy = [w for w in range(workers) if flight[w]]
        if not busy:
            break
        w = rng.choice(busy)
        done.add(flight[w].pop(0))
        while oldest in done:
            oldest += 1
    assert sorted(taken) == list(range(n))  # every item exactly once, and no stall before the end
    assert oldest == n


def test_run_scheduler_gives_each_worker_consecutive_items():
    sched = RunScheduler(12, 2, 6, 24)
    first = [sched.take(0, 0, idle=True), sched.take(0, 0, idle=False)]
    second = [sched.take(1, 0, idle=True), sched.take(1, 0, idle=False)]
    assert first == [0, 1] and second == [6, 7]
    assert [sched.take(0, 0, idle=False) for _ in range(4)] == [2, 3, 4, 5]
    assert sched.take(0, 0, idle=False) is None  # run used up, still busy: no stealing yet
    assert sched.take(0, 0, idle=True) == 10  # idle: the back half of the other worker's run (8..11)
    assert sched.take(1, 0, idle=False) == 8


def test_one_worker_takes_items_in_order():
    sched = RunScheduler(10, 1, 3, 6)
    assert [sched.take(0, i, idle=False) for i in range(10)] == list(range(10))
    assert sched.take(0, 10, idle=True) is None


def test_pool_results_come_back_in_item_order_and_runs_stay_on_one_worker():
    out = list(run_tasks(_square_and_pid, range(16), workers=2, ordered=True))
    assert [i for i, _ in out] == list(range(16))
    assert [r for _, (r, _) in out] == [i * i for i in range(16)]
    pids = [pid for _, (_, pid) in out]
    assert len(set(pids)) == 2 and os.getpid() not in pids
    # runs of 8: items 0-7 start on one worker and 8-15 on the other (steals move only a few)
    assert pids[0] == pids[1] and pids[8] == pids[9] and pids[0] != pids[8]


def test_unordered_results_cover_every_item():
    out = dict(run_tasks(_square_and_pid, range(9), workers=3))
    assert sorted(out) == list(range(9)) and all(out[i][0] == i * i for i in out)


def test_a_failing_item_raises_in_the_caller():
    with pytest.raises(ValueError, match="item 3 is bad"):
        list(run_tasks(_fail_on_three, range(8), workers=2, ordered=True))


@pytest.mark.parametrize("workers", [1, 2])
def test_on_done_reports_every_item_once_before_it_is_yielded(workers):
    reported: list[int] = []
    for i, _ in run_tasks(_square_and_pid, range(10), workers=workers, ordered=True, on_done=reported.append):
        assert i in reported  # progress counts an item as soon as its result is back
    assert sorted(reported) == list(range(10))


_ORPHAN_SCRIPT = """
import os, sys, time
from a2mae.executor import run_tasks
def slow(i):
    os.write(1, f"{os.getpid()}\\n".encode())  # one write: print's two could interleave between workers
    time.sleep(60)
    return i
if __name__ == "__main__":
    for _ in run_tasks(slow, range(4), workers=2):
        pass
"""


def test_workers_die_with_a_killed_parent(tmp_path):
    """SIGKILL of the process running the pool leaves no worker behind (they would block forever)."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "pool.py"
    script.write_text(_ORPHAN_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers = [int(proc.stdout.readline()) for _ in range(2)]  # both workers are inside a task
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    alive = workers
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in workers if _alive(pid)]
        time.sleep(0.1)
    assert not alive, f"workers {alive} outlived their killed parent"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie is dead, waiting to be reaped by init
    except FileNotFoundError:
        return False


def test_a_stopped_pool_leaves_no_worker_waiting_for_work():
    """A stop raised while a pool starts (its workers forked, its manager thread not yet running)
    must not leave workers that wait forever for work (Python's exit would wait for them)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from a2mae.executor import _shut_down, start_method

    pool = ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context(start_method()))
    pool._adjust_process_count()  # what submit() does before it starts the manager thread
    workers = list(pool._processes.values())
    assert workers and all(w.is_alive() for w in workers)
    _shut_down([pool], finished=False)
    assert not any(w.is_alive() for w in workers)
