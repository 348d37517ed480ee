"""The loopback rendezvous of Ray Train (fast part; the sockets of real workers are checked in
``tests/services/test_security.py``)."""

from __future__ import annotations

import os
import stat

import pytest

from a2mae.config import load_params


def test_the_private_ray_train_names_we_build_on_still_exist():
    import inspect

    from ray.train.torch import config

    for name in ("_TorchBackend", "_setup_torch_process_group", "_set_torch_distributed_env_vars"):
        assert hasattr(config, name), name
    params = inspect.signature(config._setup_torch_process_group).parameters
    assert {"backend", "world_rank", "world_size", "init_method", "timeout_s"} <= set(params)


def test_pretrain_trainer_uses_the_loopback_rendezvous(tmp_path):
    from a2mae.pretrain.ray_backend import FileStoreTorchBackend, LoopbackTorchConfig
    from a2mae.pretrain.ray_train import build_trainer, resolve_storage

    p = load_params(None, [f"pretrain.storage_path={tmp_path}", "pretrain.num_workers=2"])
    trainer = build_trainer(p.pretrain, "x", {}, resolve_storage(p.pretrain, p.data.s3))
    cfg = next(v for v in vars(trainer).values() if isinstance(v, LoopbackTorchConfig))
    assert cfg.backend_cls is FileStoreTorchBackend


def test_rendezvous_folder_is_private_and_gloo_binds_loopback(monkeypatch):
    from a2mae.pretrain.ray_backend import (
        loopback_interface,
        remove_folder,
        rendezvous_folder,
        use_loopback_interface,
    )

    folder = rendezvous_folder()
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    remove_folder(folder)
    assert not os.path.exists(folder)
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    use_loopback_interface()
    assert os.environ["GLOO_SOCKET_IFNAME"] == loopback_interface()
    import psutil

    addrs = psutil.net_if_addrs()[os.environ["GLOO_SOCKET_IFNAME"]]
    assert any(a.address == "127.0.0.1" for a in addrs)
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "eth7")
    use_loopback_interface()
    assert os.environ["GLOO_SOCKET_IFNAME"] == "eth7"  # the user's choice wins


@pytest.mark.parametrize("state_api, level", [("0", "ERROR"), ("1", "NOTSET"), (None, "NOTSET")])
def test_cleaner_is_silenced_only_where_no_state_api_runs(monkeypatch, state_api, level):
    import logging

    from a2mae.services.ray_driver import STATE_API_VAR, quiet_without_state_api

    logger = logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner")
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    if state_api is None:
        monkeypatch.delenv(STATE_API_VAR, raising=False)
    else:
        monkeypatch.setenv(STATE_API_VAR, state_api)
    quiet_without_state_api()
    assert logging.getLevelName(logger.level) == level
