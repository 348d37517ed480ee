"""Batches of windows on a Ray cluster: Ray Data ``map_batches`` with actors that hold the model.

The same :class:`~a2mae.predict.infer.BatchTask` and :func:`~a2mae.predict.infer.run_batch` as the
local processes (one code path); only the scheduling differs. Each actor builds the model once
(on a GPU when the cluster has GPUs: one per actor) and runs the batches it is given; results stream
back to the caller, which writes them as they arrive. Ray is the cluster at ``ray_address`` (else
``$RAY_ADDRESS``, else a local Ray started for this call and shut down afterwards). The model files
must be readable at the same path on every node (one machine, or a shared folder).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from a2mae.executor import ExecutorError
from a2mae.predict.infer import BatchResult, BatchTask, run_batch


class _ModelActor:
    """Holds the tasks (by index) and the model; runs one batch of windows per call."""

    def __init__(self, tasks_ref: Any) -> None:
        import ray

        self.tasks: list[BatchTask] = ray.get(tasks_ref)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = [pickle.dumps(run_batch(self.tasks[int(i)])) for i in batch["i"]]
        return {"i": batch["i"], "result": np.array(out, dtype=object)}


def _init(workers: int, address: str | None) -> bool:
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR"}
    if address is None:
        kwargs["num_cpus"] = max(workers, 1)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise ExecutorError(
            f"cannot start or reach Ray at {address or 'a new local instance'} ({err}); "
            "check predict.ray_address / RAY_ADDRESS or use predict.executor=local"
        ) from None
    return True


def run_ray_data(
    tasks: Sequence[BatchTask],
    workers: int,
    address: str | None,
    on_done: Callable[[int], None] | None = None,
) -> Iterator[BatchResult]:
    """Run the batches on Ray Data actors; yield the results as they come back (any order).

    Raises:
        ExecutorError: Ray cannot be started or reached.
    """
    import ray

    started = _init(workers, address)
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        ref = ray.put(list(tasks))
        ds: ray.data.Dataset = ray.data.from_items(
            [{"i": i} for i in range(len(tasks))], override_num_blocks=max(1, len(tasks))
        )
        ds = ds.map_batches(
            _ModelActor,
            fn_constructor_args=(ref,),
            batch_size=1,
            concurrency=max(1, min(workers, gpus) if gpus else workers),
            num_gpus=1 if gpus else 0,
            num_cpus=1,
        )
        for row in ds.iter_rows():
            result = pickle.loads(row["result"])  # our own workers' results, never a stored model
            if on_done is not None:
                on_done(int(row["i"]))
            yield result
    finally:
        if started:
            ray.shutdown()
