"""One code path for parallel work: local processes by default, Ray tasks when configured.

:func:`run_tasks` maps a top-level function over items and yields ``(index, result)``, either in
item order (``ordered=True``: what tiling uses, so shard packing never depends on which worker
finishes first) or as results arrive. Only a bounded number of items runs ahead of the oldest
result not yet yielded, so memory stays bounded however many items there are.

* ``executor="local"``, ``workers=1``: in this process (no pool; easiest to debug and profile).
* ``executor="local"``, ``workers>1``: one single-process ``ProcessPoolExecutor`` per worker, fed
  by a :class:`RunScheduler`: each worker takes **runs of consecutive items** (up to 8; neighbouring
  shard tasks read the same image tiles, which stay decoded in the worker's GDAL cache), two items
  in flight, and an idle worker steals the back half of another's run at the end. Workers are
  forked when this process runs a single thread (the CLI: workers start at once with the modules
  already imported) and spawned otherwise (forking next to running threads, e.g. inside Prefect,
  can deadlock).
* ``executor="ray"``: Ray remote tasks on the cluster at ``ray_address`` (else ``$RAY_ADDRESS``; checked
  in seconds before joining), else on a local Ray started for this call (loopback only, token auth,
  no dashboard: :mod:`a2mae.services.ray_driver`) and shut down afterwards, at most ``2 * workers``
  ahead of the oldest result. The function and its module must be importable on the workers (install
  the package there).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from a2mae.errors import A2maeError

if TYPE_CHECKING:
    from a2mae.services.ray_driver import LocalRay

T = TypeVar("T")
R = TypeVar("R")


class ExecutorError(A2maeError, RuntimeError):
    """The configured executor cannot be started (e.g. an unreachable Ray address)."""


def die_with_parent(parent_pid: int) -> None:
    """In a worker process: be killed by the kernel when the process that started it dies.

    Without it, a worker of a killed run (SIGKILL, OOM) can block forever on a queue whose other end a
    sibling worker still holds open. Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere a no-op.
    """
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def start_method() -> str:
    """How to start worker processes here: ``fork`` in a single-threaded process, else ``spawn``.

    Forking next to running threads is unsafe, and a process that ran a Prefect flow leaves thread-exit
    hooks behind that fail in a forked child (its worker exits with code 1 after its work is done).
    """
    import multiprocessing as mp
    import threading

    return "fork" if threading.active_count() == 1 and "fork" in mp.get_all_start_methods() else "spawn"


def in_process(executor: Literal["local", "ray"], workers: int, n_items: int) -> bool:
    """Whether :func:`run_tasks` runs the items in the calling process (no pool, no Ray)."""
    return executor == "local" and (workers <= 1 or n_items <= 1)


def run_tasks(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    executor: Literal["local", "ray"] = "local",
    workers: int = 1,
    ray_address: str | None = None,
    ordered: bool = False,
    on_done: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, R]]:
    """Apply ``fn`` to every item in parallel; yield ``(item index, result)``.

    Args:
        fn: A module-level function (picklable by reference).
        items: Picklable work items.
        executor: ``local`` (processes) or ``ray``.
        workers: Local worker processes (``1`` runs in this process); for Ray, the number of CPUs of
            a locally started Ray and the in-flight bound.
        ray_address: Ray cluster address (``auto``, ``ray://host:10001``, ...) when ``executor="ray"``.
        ordered: Yield in item order (else in completion order).
        on_done: Called with an item's index as soon as its result is back, before it waits for
            its turn in item order (progress bars: local workers finish runs out of order).

    Yields:
        ``(index, fn(items[index]))`` for every item.

    Raises:
        ExecutorError: Ray cannot be started or reached.
    """
    items = list(items)
    if executor == "ray":
        yield from _run_ray(fn, items, workers, ray_address, ordered, on_done)
    elif in_process(executor, workers, len(items)):
        for i, item in enumerate(items):
            result = fn(item)
            if on_done is not None:
                on_done(i)
            yield i, result
    else:
        yield from _run_pool(fn, items, workers, ordered, on_done)


class RunScheduler:
    """Hands item indexes to local workers in runs of consecutive items, stealing at the end.

    Consecutive items often read the same inputs (neighbouring shard tasks share image tiles, which
    a worker keeps decoded in its cache), so each worker takes its items from the front of a run of
    its own. A worker whose run is used up gets the next ``run`` items nobody has taken, as long as
    that keeps every taken item fewer than ``ahead`` items past the oldest result not yet consumed
    (bounded memory for ordered results); otherwise, once it is idle, it takes the back half of the
    largest run another worker has not started yet (balanced ends).

    Args:
        n: Number of items.
        workers: Number of workers.
        run: Items per run.
        ahead: How far past the oldest unconsumed item a new run may start.
    """

    def __init__(self, n: int, workers: int, run: int, ahead: int) -> None:
        self.n, self.run, self.ahead = n, max(1, run), max(1, ahead)
        self.frontier = 0  # first item of no run
        self.runs = [[0, 0] for _ in range(workers)]  # [next, stop) per worker

    def take(self, worker: int, oldest: int, idle: bool) -> int | None:
        """The next item for ``worker`` (None: nothing it may take now).

        Args:
            worker: The worker asking.
            oldest: Index of the oldest result not yet consumed.
            idle: The worker has nothing to do (only then may it steal: a worker that still has
                work would take items its owner will reach as soon).
        """
        own = self.runs[worker]
        if own[0] >= own[1]:
            if self.frontier < self.n and self.frontier < oldest + self.ahead:
                own[:] = [self.frontier, min(self.n, self.frontier + self.run)]
                self.frontier = own[1]
            elif not idle:
                return None
            else:
                victim = max(self.runs, key=lambda r: r[1] - r[0])
                left = victim[1] - victim[0]
                if left <= 0:
                    return None
                cut = victim[1] - (left + 1) // 2
                own[:] = [cut, victim[1]]
                victim[1] = cut
        own[0] += 1
        return own[0] - 1


def _run_pool(
    fn: Callable[[Any], Any],
    items: list[Any],
    workers: int,
    ordered: bool,
    on_done: Callable[[int], None] | None,
) -> Iterator[tuple[int, Any]]:
    """One single-process pool per worker, fed by a :class:`RunScheduler` (two items in flight each)."""
    import math
    import multiprocessing as mp
    from collections import Counter
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

    ctx = mp.get_context(start_method())
    n = len(items)
    workers = min(workers, n)
    run = min(_MAX_RUN, math.ceil(n / workers))
    # ordered results wait for their turn: bound how far runs may start past the oldest unyielded one
    sched = RunScheduler(n, workers, run, 2 * workers * run if ordered else n)
    pools = [
        ProcessPoolExecutor(
            max_workers=1, mp_context=ctx, initializer=die_with_parent, initargs=(os.getpid(),)
        )
        for _ in range(workers)
    ]
    pending: dict[Future[Any], tuple[int, int]] = {}  # future -> (worker, item)
    done: dict[int, Any] = {}
    oldest = 0  # next item to yield in item order
    finished_all = False

    def feed() -> None:
        busy = Counter(w for w, _ in pending.values())
        for w in range(workers):
            while busy[w] < 2:
                i = sched.take(w, oldest, idle=busy[w] == 0)
                if i is None:
                    break
                pending[pools[w].submit(fn, items[i])] = (w, i)
                busy[w] += 1

    try:
        feed()
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                _, i = pending.pop(fut)
                done[i] = fut.result()
                if on_done is not None:
                    on_done(i)
            feed()  # before yielding: the caller's work on the results must not keep workers waiting
            if not ordered:
                for i in sorted(done):
                    yield i, done.pop(i)
                continue
            while oldest in done:
                yield oldest, done.pop(oldest)
                oldest += 1
                feed()  # a consumed result may let a new run start
        finished_all = True
    finally:
        for fut in pending:
            fut.cancel()
        _shut_down(pools, finished_all)


def _shut_down(pools: list[Any], finished: bool) -> None:
    """Shut the pools down, without waiting after the last result, with no worker left otherwise.

    After the last result the workers exit while the caller goes on; after an error or a stop
    (Ctrl-C) the running items finish, then every worker is gone.

    A stop raised while a pool was starting leaves a manager thread that cannot be joined (the stop,
    not that RuntimeError, is what the caller must see) and a worker waiting for work that would never
    come, which Python's exit would wait for: such workers are terminated.
    """
    workers = (
        [] if finished else [w for pool in pools for w in (getattr(pool, "_processes", None) or {}).values()]
    )
    for pool in pools:
        with contextlib.suppress(RuntimeError):
            pool.shutdown(wait=not finished, cancel_futures=True)
    for w in workers:
        w.join(timeout=1)
        if w.is_alive():
            w.terminate()
            w.join(timeout=5)


#: Longest run of consecutive items one local worker takes at a time (:class:`RunScheduler`).
_MAX_RUN = 8


def _run_ray(
    fn: Callable[[Any], Any],
    items: list[Any],
    workers: int,
    address: str | None,
    ordered: bool,
    on_done: Callable[[int], None] | None,
) -> Iterator[tuple[int, Any]]:
    import ray
    from ray.exceptions import RayTaskError

    from a2mae.services.ray_driver import LocalRay

    local = _connect_ray(workers, address)
    started = local is not None
    try:
        remote = ray.remote(num_cpus=1)(fn)
        limit = max(2, 2 * workers)
        pending: dict[int, Any] = {}
        nxt = 0
        while pending or nxt < len(items):
            oldest = min(pending, default=nxt)
            while nxt < len(items) and nxt - oldest < limit:
                pending[nxt] = remote.remote(items[nxt])
                nxt += 1
            if ordered:
                i = min(pending)
            else:
                (ref,), _ = ray.wait(list(pending.values()), num_returns=1)
                i = next(k for k, v in pending.items() if v == ref)
            try:
                result = ray.get(pending.pop(i))
            except RayTaskError as err:
                cause = getattr(err, "cause", None)
                if isinstance(cause, BaseException):
                    raise cause from None
                raise
            if on_done is not None:
                on_done(i)
            yield i, result
    finally:
        if started:
            ray.shutdown()
        if isinstance(local, LocalRay):
            local.close()


def _connect_ray(workers: int, address: str | None) -> LocalRay | bool | None:
    """Join the cluster at ``address`` (else ``$RAY_ADDRESS``) or start a local Ray for this call.

    Returns:
        The local Ray's settings when one was started, True when a cluster was joined, None when Ray
        was already initialised in this process.

    Raises:
        ExecutorError: Ray cannot be started, or the cluster is unreachable or refuses this client.
    """
    import ray

    from a2mae.services.ray_driver import RayAccessError, join, start_local

    if ray.is_initialized():
        return None
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if address is None:
            return start_local(workers, dashboard=False, logging_level="ERROR")
        join(address, "tile.ray_address / RAY_ADDRESS", logging_level="ERROR")
        return True
    except RayAccessError as err:
        raise ExecutorError(f"{err} (or use tile.executor=local)") from None
