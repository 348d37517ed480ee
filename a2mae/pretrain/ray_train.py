"""Ray Train plumbing: connect to Ray, resolve checkpoint storage and build the ``TorchTrainer``.

Which Ray:

* ``pretrain.ray_address`` (or ``$RAY_ADDRESS``) set: connect to that existing cluster (``ray://`` clients
  included), after checking in seconds that it answers and accepts this client's token. Its nodes must
  reach ``pretrain.storage_path`` (shared filesystem or ``s3://``).
* Otherwise a local Ray is started in this process (:func:`a2mae.services.ray_driver.start_local`):
  **bound to 127.0.0.1**, token authentication with a private token, usage stats off, and with the
  dashboard on 127.0.0.1 when ``pretrain.ray_dashboard`` is true (the default). The dashboard costs
  ~0.9 GB of RSS (~0.2 GB PSS) and serves Ray's state API, which Ray Train's placement-group cleaner
  polls every second; with it off (small machines) the cleaner is silenced, as it cannot work.

The workers of one node meet through a file in a private folder
(:class:`~a2mae.pretrain.ray_backend.LoopbackTorchConfig`): Ray
Train's default rendezvous is a torch ``TCPStore`` that listens on every interface whatever
``MASTER_ADDR`` says; gloo is bound to the loopback interface (``GLOO_SOCKET_IFNAME``). Workers spread
over several nodes use Ray Train's default.

Resume: Ray Train V2 reloads a run's checkpoint history when a trainer is built again with the same
``RunConfig(name, storage_path)``; the loop then resumes from the newest complete checkpoint
(:mod:`a2mae.pretrain.context`). ``FailureConfig(max_failures)`` restarts the worker group after a worker
or node dies, from that same checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from a2mae.config import PretrainConfig, S3Config
from a2mae.errors import A2maeError
from a2mae.pretrain.errors import RayClusterError as RayClusterError  # re-exported


@dataclass(frozen=True)
class Storage:
    """Where Ray Train keeps a run's checkpoints.

    Attributes:
        path: ``storage_path`` as Ray gets it (an absolute local path, or ``bucket/prefix`` when
            ``filesystem`` is set).
        filesystem: A pyarrow filesystem for S3 (None: local or Ray's own resolution).
        display: The user-facing location (``/abs/path`` or ``s3://bucket/prefix``).
    """

    path: str
    filesystem: Any
    display: str

    def run_dir(self, name: str) -> str:
        """The run's folder (user-facing)."""
        return f"{self.display.rstrip('/')}/{name}"

    def display_of(self, fs_path: str) -> str:
        """User-facing location of a path on the storage filesystem."""
        if self.filesystem is None:
            return fs_path
        return "s3://" + fs_path.lstrip("/")


def resolve_storage(pt: PretrainConfig, s3_cfg: S3Config) -> Storage:
    """Resolve ``pretrain.storage_path``: local paths become absolute; ``s3://`` gets the S3 settings.

    Args:
        pt: The ``pretrain`` section (``storage_path``).
        s3_cfg: The ``data.s3`` section (the ``AWS_*`` environment wins).
    """
    raw = pt.storage_path
    if raw.startswith("s3://"):
        import pyarrow.fs as pafs

        s3 = s3_cfg.settings()
        kwargs: dict[str, Any] = {"region": s3.region}
        if s3.anonymous:
            kwargs["anonymous"] = True
        elif s3.key:
            kwargs.update(access_key=s3.key, secret_key=s3.secret, session_token=s3.token)
        if s3.endpoint_url:
            u = urlparse(s3.endpoint_url)
            kwargs.update(endpoint_override=u.netloc or u.path, scheme=u.scheme or "https")
        fs = pafs.S3FileSystem(**kwargs)
        return Storage(raw[len("s3://") :].rstrip("/"), fs, raw.rstrip("/"))
    if "://" in raw:
        raise A2maeError(f"pretrain.storage_path {raw!r}: use a local (shared) path or an s3:// prefix")
    path = str(Path(raw).expanduser().resolve())
    return Storage(path, None, path)


def ray_address(pt: PretrainConfig) -> str | None:
    """The cluster to join: ``pretrain.ray_address``, else ``$RAY_ADDRESS``, else None (local Ray)."""
    return pt.ray_address or os.environ.get("RAY_ADDRESS") or None


def init_ray(pt: PretrainConfig) -> str:
    """Connect to (or start) Ray for the run; a no-op when Ray is already initialised here.

    Returns:
        ``"local"`` or the address joined.

    Raises:
        RayClusterError: The cluster cannot be reached, refuses this client, or has fewer CPUs/GPUs than
            the run needs.
    """
    import ray

    from a2mae.services.ray_driver import RayAccessError, join, start_local

    address = ray_address(pt)
    need_cpu = pt.num_workers * pt.cpus_per_worker
    if not ray.is_initialized():
        try:
            if address:
                join(address, "pretrain.ray_address / RAY_ADDRESS", log_to_driver=True)
            else:
                cpus = max(os.cpu_count() or 1, int(need_cpu + 0.999))
                start_local(cpus, dashboard=pt.ray_dashboard, keep=True, log_to_driver=True)
        except RayAccessError as err:
            raise RayClusterError(str(err)) from None
    have = ray.cluster_resources()
    if have.get("CPU", 0) < need_cpu:
        raise RayClusterError(
            f"the Ray cluster has {have.get('CPU', 0):g} CPUs; pretrain needs {need_cpu:g} "
            "(num_workers x cpus_per_worker): lower pretrain.num_workers or add nodes"
        )
    if pt.use_gpu and have.get("GPU", 0) < pt.num_workers:
        raise RayClusterError(
            f"the Ray cluster has {have.get('GPU', 0):g} GPUs; pretrain.use_gpu needs one per worker "
            f"({pt.num_workers}): set pretrain.use_gpu=false or add GPU nodes"
        )
    return address or "local"


def build_trainer(pt: PretrainConfig, name: str, loop_config: dict[str, Any], storage: Storage) -> Any:
    """The ``TorchTrainer`` of a run, from the ``pretrain`` section.

    Args:
        pt: The ``pretrain`` section (workers, GPUs, failures, checkpoints kept).
        name: Run name (``RunConfig.name``; the same name resumes).
        loop_config: ``train_loop_config`` (see :func:`a2mae.pretrain.loop.make_loop_config`).
        storage: Checkpoint storage from :func:`resolve_storage`.

    Returns:
        A ``ray.train.torch.TorchTrainer``; call ``.fit()``.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from a2mae.pretrain.loop import train_loop_per_worker
    from a2mae.pretrain.ray_backend import LoopbackTorchConfig

    resources: dict[str, float] = {"CPU": pt.cpus_per_worker}
    if pt.use_gpu:
        resources["GPU"] = 1
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=LoopbackTorchConfig(),
        scaling_config=ScalingConfig(
            num_workers=pt.num_workers, use_gpu=pt.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage.path,
            storage_filesystem=storage.filesystem,
            failure_config=FailureConfig(max_failures=pt.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=pt.checkpoints_to_keep),
        ),
    )


def progress_actor() -> Any:
    """A small Ray actor through which rank 0 reports progress to the driver (``update`` / ``latest``)."""
    import ray

    class Progress:
        def __init__(self) -> None:
            self._latest: dict[str, Any] = {}

        def update(self, info: dict[str, Any]) -> None:
            self._latest = info

        def latest(self) -> dict[str, Any]:
            return self._latest

    return ray.remote(num_cpus=0)(Progress).remote()
