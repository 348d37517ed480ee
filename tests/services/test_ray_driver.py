"""How drivers start or join Ray (fast part): the settings of a local Ray, undone afterwards."""

from __future__ import annotations

import os
import stat

import pytest

from a2mae.services.ray_driver import LocalRay, RayAccessError, check_gcs
from a2mae.services.reach import split_host_port


def test_local_ray_settings_are_private_and_undone(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "a-users-token")
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    local = LocalRay(dashboard=False).open()
    try:
        token = local.token_dir / "auth_token"
        assert stat.S_IMODE(os.stat(local.token_dir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(token).st_mode) == 0o600 and len(token.read_text()) == 64
        assert os.environ["RAY_AUTH_MODE"] == "token" and os.environ["RAY_AUTH_TOKEN_PATH"] == str(token)
        assert "RAY_AUTH_TOKEN" not in os.environ  # it would win over the file
        assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
        assert os.environ["RAY_API_SERVER_ADDRESS"] == f"http://127.0.0.1:{local.dashboard_port}"
        assert os.environ["A2MAE_RAY_STATE_API"] == "0"
    finally:
        local.close()
    assert os.environ["RAY_AUTH_MODE"] == "disabled" and os.environ["RAY_AUTH_TOKEN"] == "a-users-token"
    assert "RAY_API_SERVER_ADDRESS" not in os.environ and not local.token_dir.exists()


def test_addresses():
    assert split_host_port("127.0.0.1:6379") == ("127.0.0.1", 6379)
    assert split_host_port("ray://head:10001") == ("head", 10001)
    assert split_host_port("[::1]:6379") == ("::1", 6379)
    with pytest.raises(Exception, match="expected host:port"):
        split_host_port("nohost")
    check_gcs("auto", "RAY_ADDRESS")  # Ray finds a local cluster itself


def test_ray_client_address_gets_the_tcp_check():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RayAccessError, match=rf"Ray cluster at ray://127.0.0.1:{port} is unreachable"):
        check_gcs(f"ray://127.0.0.1:{port}", "pretrain.ray_address")


def test_closing_a_local_ray_keeps_what_was_set_since(monkeypatch, tmp_path):
    """A kept local Ray is forgotten only when the next Ray starts: settings made meanwhile (a cluster's
    token path, its auth mode) must survive that clean-up."""
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    local = LocalRay(dashboard=False).open()
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(tmp_path / "cluster_token")  # the user's cluster, set since
    local.close()
    assert os.environ["RAY_AUTH_TOKEN_PATH"] == str(tmp_path / "cluster_token")
    assert "RAY_AUTH_MODE" not in os.environ  # still the local Ray's value: undone
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
