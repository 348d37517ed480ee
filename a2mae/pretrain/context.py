"""Where the training loop runs: in this process or as a Ray Train worker.

:class:`LocalContext` and :class:`RayContext` implement :class:`WorkerContext`; the loop only talks to
this interface, so it is the same code in both places.

Checkpoints are directories named ``checkpoint_<global step, 8 digits>`` under the run's directory
(``<storage_path>/<run name>/``), in both contexts. On (re)start the loop resumes from the newest
*complete* one (see :func:`a2mae.pretrain.state.is_complete`). Under Ray this is the newer of the checkpoint
Ray Train hands back (``ray.train.get_checkpoint()``) and the newest complete directory in storage: Ray's
controller registers a reported checkpoint only when it next polls the workers (every 2 s), so a worker
killed right after reporting would otherwise lose a whole extra checkpoint interval.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch

from a2mae.pretrain.state import is_complete

_CKPT_RE = re.compile(r"^checkpoint_(\d{8})$")


def checkpoint_name(step: int) -> str:
    """Directory name of the checkpoint written after optimiser step ``step``."""
    return f"checkpoint_{step:08d}"


def checkpoint_step(name: str) -> int | None:
    """The step of a checkpoint directory name, or None when the name is not one of ours."""
    m = _CKPT_RE.match(name)
    return int(m.group(1)) if m else None


class WorkerContext(Protocol):
    """What the training loop needs from where it runs."""

    rank: int
    world_size: int
    device: torch.device

    def latest_checkpoint(self) -> contextlib.AbstractContextManager[Path | None]:
        """Context manager yielding a local directory of the newest complete checkpoint, or None."""
        ...

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None, step: int) -> None:
        """Persist ``checkpoint_dir`` (rank 0; None elsewhere) as the checkpoint of ``step``.

        Every worker calls it at the same steps.
        """
        ...

    def num_nodes(self) -> int:
        """Distinct nodes (machines or Ray nodes) the workers run on; a collective call."""
        ...


# ----------------------------------------------------------------------------------------- in-process
class LocalContext:
    """A single in-process worker; checkpoints go to ``run_dir`` (a local directory)."""

    rank = 0
    world_size = 1

    def __init__(
        self, run_dir: str | os.PathLike[str], keep: int, device: torch.device | None = None
    ) -> None:
        self.run_dir = Path(run_dir)
        self.keep = keep
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints of the run, oldest first."""
        if not self.run_dir.is_dir():
            return []
        found = [(checkpoint_step(p.name), p) for p in self.run_dir.iterdir() if p.is_dir()]
        return sorted((s, p) for s, p in found if s is not None and is_complete(p))

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        """The newest complete checkpoint directory, or None."""
        found = self.checkpoints()
        yield found[-1][1] if found else None

    def num_nodes(self) -> int:
        """Always 1."""
        return 1

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None, step: int) -> None:
        """Move ``checkpoint_dir`` into the run directory (atomically) and keep the newest ``keep``."""
        if checkpoint_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        target = self.run_dir / checkpoint_name(step)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=self.run_dir))
        shutil.rmtree(staging)
        shutil.copytree(checkpoint_dir, staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
        for _, old in self.checkpoints()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- Ray
class RayContext:
    """A Ray Train V2 worker (``TorchTrainer``); the process group is already set up by Ray."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self._ctx = ctx
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.local_rank = ctx.get_local_rank()
        self.device = ray.train.torch.get_device()

    def _storage_candidates(self) -> list[tuple[int, str]]:
        import pyarrow.fs as pafs

        storage = self._ctx.get_storage()
        fs, root = storage.storage_filesystem, storage.experiment_fs_path
        try:
            infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        except OSError:
            return []
        out = []
        for info in infos:
            step = checkpoint_step(Path(info.path).name)
            if info.type == pafs.FileType.Directory and step is not None:
                out.append((step, info.path))
        return sorted(out, reverse=True)

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        """The newest complete checkpoint: Ray's registered one or a newer complete one in storage."""
        import ray.train

        storage = self._ctx.get_storage()
        registered = ray.train.get_checkpoint()
        candidates: list[tuple[int, Any]] = []
        if registered is not None:
            candidates.append((checkpoint_step(Path(registered.path).name) or -1, registered))
        best_registered = candidates[0][0] if candidates else -1
        for step, path in self._storage_candidates():
            if step > best_registered:
                candidates.append(
                    (step, ray.train.Checkpoint(path=path, filesystem=storage.storage_filesystem))
                )
        for _, ckpt in sorted(candidates, key=lambda c: c[0], reverse=True):
            with ckpt.as_directory() as d:
                if is_complete(d):
                    yield Path(d)
                    return
        yield None

    def num_nodes(self) -> int:
        """Distinct Ray nodes of the worker group (all-gathered node ids; Ray's node rank goes by IP)."""
        import ray
        import torch.distributed as dist

        node = ray.get_runtime_context().get_node_id()
        if self.world_size == 1 or not dist.is_initialized():
            return 1
        nodes: list[Any] = [None] * self.world_size
        dist.all_gather_object(nodes, node)
        return len(set(nodes))

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None, step: int) -> None:
        """``ray.train.report`` (a barrier over all workers); rank 0 passes the checkpoint."""
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=checkpoint_name(step))
