"""One code path for parallel work: local processes by default, Ray tasks when configured.

:func:`run_tasks` maps a top-level function over items and yields ``(index, result)``, either in
item order (``ordered=True``: what tiling uses, so shard packing never depends on which worker
finishes first) or as results arrive. At most ``2 * workers`` items are submitted ahead of the
oldest result not yet yielded, so memory stays bounded however many items there are.

* ``executor="local"``, ``workers=1``: in this process (no pool; easiest to debug and profile).
* ``executor="local"``, ``workers>1``: a ``ProcessPoolExecutor``. Workers are forked when this
  process runs a single thread (the CLI: workers start at once with the modules already imported)
  and spawned otherwise (forking next to running threads, e.g. inside Prefect, can deadlock).
* ``executor="ray"``: Ray remote tasks on the cluster at ``ray_address`` (else ``$RAY_ADDRESS``, else
  a local Ray started for this call with ``include_dashboard=False`` and shut down afterwards). The
  function and its module must be importable on the workers (install the package there).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, TypeVar

from a2mae.errors import A2maeError

T = TypeVar("T")
R = TypeVar("R")


class ExecutorError(A2maeError, RuntimeError):
    """The configured executor cannot be started (e.g. an unreachable Ray address)."""


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

    Yields:
        ``(index, fn(items[index]))`` for every item.

    Raises:
        ExecutorError: Ray cannot be started or reached.
    """
    items = list(items)
    if executor == "ray":
        yield from _run_ray(fn, items, workers, ray_address, ordered)
    elif in_process(executor, workers, len(items)):
        for i, item in enumerate(items):
            yield i, fn(item)
    else:
        yield from _run_pool(fn, items, workers, ordered)


def _run_pool(
    fn: Callable[[Any], Any], items: list[Any], workers: int, ordered: bool
) -> Iterator[tuple[int, Any]]:
    import multiprocessing as mp
    import threading
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = mp.get_context(
        "fork" if threading.active_count() == 1 and "fork" in mp.get_all_start_methods() else "spawn"
    )
    limit = 2 * workers
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=ctx) as pool:
        pending: dict[int, Any] = {}
        nxt = 0  # next item to submit
        try:
            while pending or nxt < len(items):
                oldest = min(pending, default=nxt)
                while nxt < len(items) and nxt - oldest < limit:
                    pending[nxt] = pool.submit(fn, items[nxt])
                    nxt += 1
                if ordered:
                    i = min(pending)
                    yield i, pending.pop(i).result()
                    continue
                done, _ = wait(pending.values(), return_when=FIRST_COMPLETED)
                for i in sorted(i for i, f in pending.items() if f in done):
                    yield i, pending.pop(i).result()
        except BaseException:
            for fut in pending.values():
                fut.cancel()
            raise


def _run_ray(
    fn: Callable[[Any], Any], items: list[Any], workers: int, address: str | None, ordered: bool
) -> Iterator[tuple[int, Any]]:
    import ray
    from ray.exceptions import RayTaskError

    started = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR"}
        if address is None:
            kwargs["num_cpus"] = workers
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ExecutorError(
                f"cannot start or reach Ray at {address or 'a new local instance'} ({err}); "
                "check tile.ray_address / RAY_ADDRESS or use tile.executor=local"
            ) from None
        started = True
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
            yield i, result
    finally:
        if started:
            ray.shutdown()
