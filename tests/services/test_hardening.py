"""Nobody gets in (fast part): what each service is told, the opt-in for a host beyond loopback, the
credentials handed to clients, and the Prefect launcher's origin guard. The slow part, with the real
services, is ``test_security.py``."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import stat
from pathlib import Path

import pytest

from a2mae.cli import main
from a2mae.config import load_params
from a2mae.services.base import is_loopback, is_wildcard

REPO = Path(__file__).resolve().parents[2]


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _stack(tmp_path, *sets):
    from a2mae.services.stack import Stack

    return Stack(load_params(None, [f"infra.home={tmp_path / 'home'}", *sets]), tmp_path)


def test_loopback_names():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.org", ""))
    assert is_wildcard("0.0.0.0") and is_wildcard("::") and not is_wildcard("127.0.0.1")


def test_host_beyond_loopback_needs_the_opt_in(tmp_path, capsys):
    sets = ["--set", f"infra.home={tmp_path / 'home'}", "--project-dir", str(tmp_path)]
    assert main(["services", "up", "--set", "infra.host=0.0.0.0", *sets]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "infra.host=0.0.0.0 is not a loopback address" in err
    assert "infra.allow_remote=true" in err
    assert not (tmp_path / "home").exists()  # refused before anything was written
    with pytest.raises(Exception, match="not a loopback address"):
        _stack(tmp_path, "infra.host=192.168.1.5").check_host()
    _stack(tmp_path, "infra.host=192.168.1.5", "infra.allow_remote=true").check_host()


def test_opt_in_turns_on_every_credential(tmp_path):
    stack = _stack(tmp_path, "infra.host=192.168.1.5", "infra.allow_remote=true")
    assert stack.mlflow.auth and stack.prefect.auth  # the Ray token and S3 keys are always on
    env = stack.client_env()
    assert env["MLFLOW_TRACKING_USERNAME"] == "admin" and len(env["MLFLOW_TRACKING_PASSWORD"]) == 64
    assert env["PREFECT_API_AUTH_STRING"].startswith("a2mae:")
    assert env["RAY_AUTH_MODE"] == "token" and "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in env
    assert env["AWS_SECRET_ACCESS_KEY"] and env["AWS_ACCESS_KEY_ID"]
    prefect = stack.prefect.environment()
    assert prefect["PREFECT_SERVER_API_AUTH_STRING"] == env["PREFECT_API_AUTH_STRING"]
    assert prefect["PREFECT_SERVER_CORS_ALLOWED_ORIGINS"] == "http://192.168.1.5:4200"
    assert stack.flows.environment()["PREFECT_API_AUTH_STRING"] == env["PREFECT_API_AUTH_STRING"]
    for secret in ("mlflow/auth/admin_password", "prefect/auth"):
        assert _mode(stack.home / secret) == 0o600


def test_loopback_default_mlflow_and_prefect_without_auth_but_fenced(tmp_path):
    stack = _stack(tmp_path)
    assert not stack.mlflow.auth and not stack.prefect.auth
    env = stack.client_env()
    assert "MLFLOW_TRACKING_PASSWORD" not in env and "PREFECT_API_AUTH_STRING" not in env
    assert env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] and env["PREFECT_API_REQUEST_TIMEOUT"]  # fail fast
    prefect = stack.prefect.environment()
    assert prefect["PREFECT_SERVER_CORS_ALLOWED_ORIGINS"] == "http://127.0.0.1:4200,http://localhost:4200"
    assert prefect["A2MAE_PREFECT_ALLOWED_HOSTS"] == "127.0.0.1:4200,localhost:4200"
    cmd = stack.mlflow.command()
    assert cmd[cmd.index("--allowed-hosts") + 1] == "127.0.0.1:5000,localhost:5000"
    assert "--app-name" not in cmd
    assert stack.mlflow.environment()["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"


def test_mlflow_basic_auth_settings(tmp_path):
    from a2mae.services.mlflow import MlflowServer

    svc = MlflowServer(tmp_path / "m", port=5123, auth=True)
    svc.prepare()
    cmd = svc.command()
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth"
    env = svc.environment()
    ini = Path(env["MLFLOW_AUTH_CONFIG_PATH"]).read_text()
    assert f"sqlite:///{tmp_path / 'm' / 'auth' / 'users.db'}" in ini and "NO_PERMISSIONS" in ini
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == svc.client_env()["MLFLOW_TRACKING_PASSWORD"]
    assert len(env["MLFLOW_FLASK_SERVER_SECRET_KEY"]) == 64
    assert MlflowServer(tmp_path / "m", auth=True).password == svc.password  # kept across restarts
    os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"] = "from-the-caller"
    try:
        assert svc.process_env()["MLFLOW_AUTH_ADMIN_PASSWORD"] == svc.password
    finally:
        del os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"]


def test_seaweedfs_runs_with_its_security_settings_only(tmp_path, monkeypatch):
    from a2mae.services.s3 import SeaweedFS

    store = SeaweedFS(tmp_path / "s3")
    store.state_dir.mkdir()
    store.prepare()
    cmd = store.command()
    assert cmd[1] == f"-config_dir={store.security_dir}" and cmd[2] == "mini" and "-disableHttp" in cmd
    toml = (store.security_dir / "security.toml").read_text()
    for section in ("[jwt.signing]", "[jwt.signing.read]", "[jwt.filer_signing]", "[jwt.filer_signing.read]"):
        assert section in toml
    assert toml.count('key = "') >= 4 + 5 and "[grpc]\nca = " in toml and "[grpc.volume]" in toml
    assert all(_mode(p) == 0o600 for p in store.security_dir.rglob("*") if p.is_file())
    assert _mode(store.security_dir) == 0o700 and _mode(store.config_path) == 0o600
    monkeypatch.setenv("WEED_JWT_SIGNING_KEY", "")  # a caller's variable would win over the file
    assert not any(k.startswith("WEED_") for k in store.process_env())
    before = toml
    store.prepare()
    assert (store.security_dir / "security.toml").read_text() == before  # keys made once


def test_ray_head_token_and_moved_ports(tmp_path, monkeypatch):
    from a2mae.services.ray import RayHead

    head = RayHead(tmp_path / "r", port=26379, dashboard=True)
    head.prepare()
    env = head.environment()
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"] == str(head.token_path)
    assert _mode(head.token_path) == 0o600 and len(head.token_path.read_text().strip()) == 64
    assert env["RAY_ADDRESS"] == "127.0.0.1:26379"  # the workers' state API needs no auto-detection
    assert env["RAY_API_SERVER_ADDRESS"] == f"http://127.0.0.1:{head.ports['dashboard']}"
    assert {"AUTOSCALER_METRIC_PORT", "DASHBOARD_METRIC_PORT"} <= set(env)
    cmd = head.command()
    assert f"--metrics-export-port={head.ports['metrics_export']}" in cmd
    assert "--include-dashboard=true" in cmd and "--dashboard-host=127.0.0.1" in cmd
    assert head.client_env() == {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(head.token_path),
        "RAY_ADDRESS": "127.0.0.1:26379",
    }
    monkeypatch.setenv("RAY_AUTH_TOKEN", "deadbeef")  # would win over the token file
    assert "RAY_AUTH_TOKEN" not in head.process_env()


def test_env_file_is_private_and_holds_the_token_path_not_the_token(tmp_path):
    stack = _stack(tmp_path, "infra.auth=true")
    stack.ray.prepare()
    stack._write_state()
    text = (stack.home / "env").read_text()
    assert _mode(stack.home / "env") == 0o600 and _mode(stack.home / "stack.json") == 0o600
    assert f"RAY_AUTH_TOKEN_PATH={stack.ray.token_path}" in text
    assert stack.ray.token_path.read_text().strip() not in text


# ----------------------------------------------------------------------------- Prefect origin guard
def _guard_module():
    spec = importlib.util.spec_from_file_location("prefect_server_launcher", REPO / "infra/prefect_server.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _call(guard, scope):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(msg):
        sent.append(msg)

    asyncio.run(guard(scope, receive, send))
    return sent


def test_origin_guard_refuses_foreign_pages_and_hosts():
    mod = _guard_module()
    reached = []

    async def app(scope, receive, send):
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})

    guard = mod.OriginGuard(app, ["http://127.0.0.1:4200", "http://localhost:4200"], ["127.0.0.1:4200"])

    def http(method, headers):
        scope = {"type": "http", "method": method, "path": "/api/flows/", "headers": headers}
        return _call(guard, scope)[0]["status"]

    host = (b"host", b"127.0.0.1:4200")
    assert http("POST", [host]) == 200  # a client without Origin (Python, curl)
    assert http("POST", [host, (b"origin", b"http://127.0.0.1:4200")]) == 200  # the UI itself
    assert http("POST", [host, (b"origin", b"http://evil.example.com")]) == 403
    assert http("GET", [host, (b"origin", b"http://localhost:9999")]) == 403  # another local page
    assert http("GET", [(b"host", b"evil.example.com:4200")]) == 403  # DNS rebinding
    ws = {"type": "websocket", "path": "/api/events/out", "headers": [host, (b"origin", b"http://x.org")]}
    assert _call(guard, ws) == [
        {"type": "websocket.close", "code": 1008, "reason": "cross-origin request refused"}
    ]
    # the server's own automation actions: Prefect's in-process client, through an ASGI transport
    inner = {"type": "http", "method": "POST", "path": "/api/deployments/x/create_flow_run",
             "headers": [(b"host", b"prefect-in-memory")], "server": ("prefect-in-memory", None)}  # fmt: skip
    assert _call(guard, inner)[0]["status"] == 200
    spoofed = {**inner, "server": ("127.0.0.1", 4200)}  # that Host name over a socket: refused
    assert _call(guard, spoofed)[0]["status"] == 403
    assert reached == ["/api/flows/", "/api/flows/", "/api/deployments/x/create_flow_run"]
    lifespan = _call(guard, {"type": "lifespan", "path": "", "headers": []})
    assert lifespan[0]["status"] == 200  # other scopes pass untouched


def test_origin_guard_is_installed_from_the_servers_settings(monkeypatch):
    mod = _guard_module()
    monkeypatch.setenv("PREFECT_SERVER_CORS_ALLOWED_ORIGINS", "*")
    monkeypatch.delenv("A2MAE_PREFECT_ALLOWED_HOSTS", raising=False)
    assert mod.guard_origins() is False  # Prefect's default: nothing to guard
    from prefect.server.api import server

    original = server.create_app
    monkeypatch.setattr(server, "create_app", lambda *a, **k: "app")
    monkeypatch.setenv("PREFECT_SERVER_CORS_ALLOWED_ORIGINS", "http://127.0.0.1:4200")
    assert mod.guard_origins() is True
    app = server.create_app(final=True)
    assert isinstance(app, mod.OriginGuard) and app.app == "app" and app.origins == {"http://127.0.0.1:4200"}
    assert original is not None


def test_services_env_prints_no_secret_but_evaluates_to_it(tmp_path, capsys):
    import subprocess

    sets = ["--set", f"infra.home={tmp_path / 'home'}", "--set", "infra.auth=true"]
    stack = _stack(tmp_path, "infra.auth=true")
    stack.s3.prepare()  # what `up` does: the S3 keys are stored
    stack = _stack(tmp_path, "infra.auth=true")
    stack._write_state()
    env = stack.client_env()
    assert main(["services", "env", *sets, "--project-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for key in ("AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING"):
        assert env[key] not in out and f"export {key}=" in out
    script = (
        out
        + '\nprintf "%s\\n" "$AWS_SECRET_ACCESS_KEY" "$MLFLOW_TRACKING_PASSWORD" "$PREFECT_API_AUTH_STRING"'
    )
    got = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert got == [
        env["AWS_SECRET_ACCESS_KEY"],
        env["MLFLOW_TRACKING_PASSWORD"],
        env["PREFECT_API_AUTH_STRING"],
    ]
