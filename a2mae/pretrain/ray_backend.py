"""A Ray Train ``TorchConfig`` whose single-node rendezvous opens no network listener.

Ray Train's default rendezvous (``init_method="env"`` or ``"tcp"``) makes rank 0 host a torch
``TCPStore`` on ``MASTER_PORT``, and torch binds that store to every interface whatever ``MASTER_ADDR``
says (it has no option to do otherwise), so a training run was reachable from the network while it
ran. When every worker is on one node, :class:`LoopbackTorchConfig` rendezvouses through a torch
``FileStore`` in a private folder (mode 0700) instead, and binds gloo to the loopback interface
(``GLOO_SOCKET_IFNAME``, unless set). Workers spread over several nodes use Ray Train's default.

The backend reuses three private names of ``ray.train.torch.config`` (Ray is pinned; the tests in
``tests/pretrain/test_ray_backend.py`` catch a change).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import ray
from ray.train.torch.config import (
    TorchConfig,
    _set_torch_distributed_env_vars,
    _setup_torch_process_group,
    _TorchBackend,
)


def rendezvous_folder() -> str:
    """On a worker: a new private folder (0700) for the rendezvous file."""
    return tempfile.mkdtemp(prefix="a2mae-rdzv-")


def remove_folder(folder: str) -> None:
    """On a worker: remove the rendezvous folder."""
    shutil.rmtree(folder, ignore_errors=True)


def loopback_interface() -> str:
    """Name of the network interface that holds 127.0.0.1 (``lo`` on Linux)."""
    import psutil

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.address == "127.0.0.1" for a in addrs):
            return name
    return "lo"


def use_loopback_interface() -> None:
    """On a worker: gloo binds the loopback interface (``GLOO_SOCKET_IFNAME``) unless told otherwise."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", loopback_interface())


class FileStoreTorchBackend(_TorchBackend):
    """Single node: rendezvous through a file, gloo on loopback; several nodes: Ray Train's default."""

    def on_start(self, worker_group: Any, backend_config: Any) -> None:
        """Set up the process group of the workers (see the module doc)."""
        if len(set(worker_group.execute(ray.util.get_node_ip_address))) > 1:
            super().on_start(worker_group, backend_config)
            return
        self._folder = worker_group.execute_single(0, rendezvous_folder)
        worker_group.execute(use_loopback_interface)
        worker_group.execute(_set_torch_distributed_env_vars)
        gpus = worker_group.get_resources_per_worker().get("GPU", 0)
        backend = backend_config.backend or ("nccl" if gpus > 0 else "gloo")
        ray.get(
            [
                worker_group.execute_single_async(
                    rank,
                    _setup_torch_process_group,
                    backend=backend,
                    world_rank=rank,
                    world_size=len(worker_group),
                    init_method=f"file://{self._folder}/store",
                    timeout_s=backend_config.timeout_s,
                )
                for rank in range(len(worker_group))
            ]
        )

    def on_shutdown(self, worker_group: Any, backend_config: Any) -> None:
        """Destroy the process group, then remove the rendezvous folder."""
        super().on_shutdown(worker_group, backend_config)
        folder = getattr(self, "_folder", None)
        if folder:
            worker_group.execute_single(0, remove_folder, folder)


@dataclass
class LoopbackTorchConfig(TorchConfig):
    """``TorchConfig`` with :class:`FileStoreTorchBackend` (same options)."""

    @property
    def backend_cls(self) -> type:
        """The backend Ray Train instantiates."""
        return FileStoreTorchBackend
