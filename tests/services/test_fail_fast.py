"""Clients fail fast when a service is down (trust issue item 9): MLflow, Prefect, S3 and Ray clients,
against a stopped service (nothing listens) or a hung one (accepts, never answers), each end with one
line naming the service, its address and how to start it, and a non-zero exit."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from a2mae.cli import main
from a2mae.config import load_params

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(180)  # a hang fails the test instead of blocking the suite


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def blackhole():
    """``host:port`` that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    t.join(2)
    for c in held:
        c.close()
    srv.close()


@pytest.fixture
def locked_server():
    """An HTTP server that answers health checks and 401 to everything else (a server with auth on)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.path.rstrip("/").endswith("/health")
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"true" if ok else b'{"detail": "unauthorized"}')

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _stack_env(tmp_path) -> dict[str, str]:
    """The clients' variables of a stack that is not running (what `.a2mae/env` holds after a `down`)."""
    from a2mae.services.stack import Stack

    ports = [f"infra.{k}_port={_closed_port()}" for k in ("prefect", "mlflow", "s3", "ray")]
    p = load_params(None, [f"infra.home={tmp_path / 'home'}", *ports])
    return Stack(p, tmp_path).client_env()


def _one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# --------------------------------------------------------------------------------------------- MLflow
def test_history_with_the_services_env_and_the_services_stopped(tmp_path):
    """The reported case: it hung 4 minutes and printed 140 lines."""
    env = {**os.environ, **_stack_env(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "a2mae", "history", "a2mae-encoder"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 2
    line = _one_line(proc.stderr)
    uri = env["MLFLOW_TRACKING_URI"]
    assert f"MLflow tracking server at {uri} is unreachable (connection refused)" in line
    assert "`a2mae services up`" in line and "MLFLOW_TRACKING_URI" in line


def test_hung_tracking_server_fails_after_the_timeout(blackhole, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://{blackhole}")
    assert main(["history", "a2mae-encoder"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"http://{blackhole} is unreachable (no answer within 5 s)" in line


def test_tracking_server_that_refuses_the_credentials(locked_server, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", locked_server)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert main(["promote", "a2mae-x", "1", "--reason", "r"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"{locked_server} refused the client (401: no credentials)" in line
    assert "MLFLOW_TRACKING_PASSWORD" in line
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cr3t-value")
    assert main(["history", "a2mae-x"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "(401: wrong credentials)" in line and "s3cr3t-value" not in line


# -------------------------------------------------------------------------------------------- Prefect
def test_flow_server_against_a_stopped_or_locked_prefect(tmp_path, locked_server, monkeypatch):
    from flows.serve import _require_api

    api = f"http://127.0.0.1:{_closed_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", api)
    with pytest.raises(SystemExit) as exit_:
        _require_api()
    line = _one_line(str(exit_.value.code))
    assert line.startswith("flows.serve: error: Prefect API at http://127.0.0.1:")
    assert "is unreachable (connection refused)" in line and "`a2mae services up`" in line

    monkeypatch.setenv("PREFECT_API_URL", f"{locked_server}/api")
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "a2mae:wrong-secret")
    with pytest.raises(SystemExit) as exit_:
        _require_api()
    line = _one_line(str(exit_.value.code))
    assert "refused the client (401: wrong auth string)" in line and "wrong-secret" not in line


def test_hung_prefect_api(blackhole):
    from a2mae.services.reach import ServiceUnreachable, check_prefect_api

    with pytest.raises(ServiceUnreachable, match=r"Prefect API at http://.* \(no answer within 1 s\)"):
        check_prefect_api(f"http://{blackhole}/api", timeout=1)


def test_stack_env_gives_prefect_clients_short_timeouts(tmp_path):
    env = _stack_env(tmp_path)
    assert int(env["PREFECT_API_REQUEST_TIMEOUT"]) <= 30 and int(env["PREFECT_CLIENT_MAX_RETRIES"]) <= 2
    assert int(env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) <= 2 and int(env["MLFLOW_HTTP_REQUEST_TIMEOUT"]) <= 60


# ------------------------------------------------------------------------------------------------- S3
def test_ingest_from_the_stopped_store(tmp_path, monkeypatch, capsys):
    env = _stack_env(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    rc = main(["ingest", "s3://a2mae-scenes/incoming/", "--catalog", str(tmp_path / "c.parquet")])
    assert rc == 2
    line = _one_line(capsys.readouterr().err)
    assert f"cannot reach the S3 endpoint {env['AWS_ENDPOINT_URL']} (nothing accepts connections)" in line
    assert "a2mae services up" in line and env["AWS_SECRET_ACCESS_KEY"] not in line
    assert not (tmp_path / "c.parquet").exists()


# ------------------------------------------------------------------------------------------------ Ray
def test_tile_on_a_stopped_or_hung_ray(synthetic_scenes, tmp_path, blackhole, monkeypatch, capsys):
    env = _stack_env(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = ["tile", "--catalog", str(synthetic_scenes[2]), "--out", str(tmp_path / "out")]
    assert main([*args, "--set", "tile.executor=ray"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"Ray cluster at {env['RAY_ADDRESS']} is unreachable (connection refused)" in line
    assert "tile.ray_address / RAY_ADDRESS" in line and "tile.executor=local" in line
    assert main([*args, "--set", "tile.executor=ray", "--set", f"tile.ray_address={blackhole}"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"Ray cluster at {blackhole} is unreachable (no answer within 3 s)" in line
    assert not (tmp_path / "out").exists()


def test_pretrain_driver_on_a_stopped_ray():
    from a2mae.pretrain.ray_train import RayClusterError, init_ray

    address = f"127.0.0.1:{_closed_port()}"
    with pytest.raises(
        RayClusterError, match=rf"Ray cluster at {address} is unreachable \(connection refused\)"
    ):
        init_ray(load_params(None, [f"pretrain.ray_address={address}", "pretrain.num_workers=1"]).pretrain)


@pytest.fixture
def refusing_gcs():
    """A gRPC server that answers every call UNAUTHENTICATED (a Ray GCS with token auth, wrong token)."""
    from concurrent import futures

    import grpc

    class Handler(grpc.GenericRpcHandler):
        def service(self, details):
            def refuse(request, context):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "InvalidAuthToken")

            return grpc.unary_unary_rpc_method_handler(refuse)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[Handler()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


def test_ray_cluster_that_refuses_the_token(refusing_gcs, tmp_path, monkeypatch):
    from a2mae.services.ray_driver import RayAccessError, check_gcs

    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(RayAccessError, match=r"requires its token \(RAY_AUTH_MODE is not token\)"):
        check_gcs(refusing_gcs, "RAY_ADDRESS")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(RayAccessError, match=r"requires its token \(no token found\)"):
        check_gcs(refusing_gcs, "RAY_ADDRESS")
    (tmp_path / "token").write_text("0123abcd")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "token"))
    with pytest.raises(RayAccessError) as err:
        check_gcs(refusing_gcs, "RAY_ADDRESS")
    assert "(a wrong token)" in str(err.value) and "0123abcd" not in str(err.value)
