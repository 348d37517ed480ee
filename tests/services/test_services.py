"""The services of infra/: detached processes, pid files, health waits, port checks, the stack and
the ``a2mae services`` verb. A tiny HTTP server stands in for the real services (those run in the
slow end-to-end tests)."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from a2mae.cli import main
from a2mae.config import load_params
from a2mae.services.base import ServiceError, free_port, free_port_pair
from a2mae.services.daemon import DetachedService, group_members, pid_alive, read_pid_file, write_pid_file
from a2mae.services.http import http_get, tcp_open

# A parent that serves HTTP and keeps a child process alive (both must die with the group).
SERVER = """
import http.server, subprocess, sys, time
if sys.argv[2] == "crash":
    print("boom: cannot start", flush=True); sys.exit(3)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print("CHILD_PID", child.pid, flush=True)
if sys.argv[2] == "mute":
    time.sleep(600)
handler = http.server.SimpleHTTPRequestHandler
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
"""


class Dummy(DetachedService):
    name = "dummy"

    def __init__(self, state_dir, port: int, mode: str = "ok") -> None:
        super().__init__(state_dir)
        self.port = port
        self.mode = mode

    def environment(self) -> dict[str, str]:
        return {"A2MAE_DUMMY": "1"}

    def command(self) -> list[str]:
        return [sys.executable, "-c", SERVER, str(self.port), self.mode]

    def is_healthy(self) -> bool:
        got = http_get(f"http://127.0.0.1:{self.port}/")
        return got is not None and got[0] == 200


def _child_pid(svc: Dummy) -> int:
    for _ in range(50):
        for line in svc.log_path.read_text().splitlines():
            if line.startswith("CHILD_PID "):
                return int(line.split()[1])
        time.sleep(0.1)
    raise AssertionError("no child pid in the log")


def test_detached_service_lifecycle(tmp_path):
    port = free_port_pair(low=20000, high=30000)
    svc = Dummy(tmp_path / "dummy", port).start(timeout=30)
    pid = svc.pid
    assert pid and pid_alive(pid) and svc.is_healthy()
    assert json.loads(svc.pid_path.read_text())["pid"] == pid
    child = _child_pid(svc)
    assert set(group_members(pid)) >= {pid, child}  # its own process group, child included

    again = Dummy(tmp_path / "dummy", port)  # another object (e.g. `a2mae services status` later)
    assert again.pid == pid and again.start(timeout=5).pid == pid  # adopted, not started twice
    again.stop(timeout=10)
    assert not pid_alive(pid) and not pid_alive(child)  # the whole group is gone
    assert not svc.pid_path.exists() and svc.pid is None
    assert "start:" in svc.log_path.read_text()


def test_crash_while_starting_names_the_log_and_its_last_line(tmp_path):
    svc = Dummy(tmp_path / "dummy", free_port_pair(low=20000, high=30000), mode="crash")
    with pytest.raises(ServiceError) as err:
        svc.start(timeout=20)
    msg = str(err.value)
    assert "\n" not in msg and "exited with code 3" in msg and "boom: cannot start" in msg
    assert str(svc.log_path) in msg and not svc.pid_path.exists()


def test_unhealthy_service_is_stopped_after_the_timeout(tmp_path):
    svc = Dummy(tmp_path / "dummy", free_port_pair(low=20000, high=30000), mode="mute")
    with pytest.raises(ServiceError, match=r"dummy: not healthy after 2 s; see .*dummy\.log"):
        svc.start(timeout=2)
    assert svc.pid is None and not svc.pid_path.exists()


def test_pid_file_of_a_recycled_pid_is_ignored(tmp_path):
    path = tmp_path / "x.pid"
    write_pid_file(path, os.getpid(), ["me"])
    assert read_pid_file(path) == os.getpid()
    doc = json.loads(path.read_text())
    doc["start_ticks"] = doc["start_ticks"] + 12345  # same pid, another process start
    path.write_text(json.dumps(doc))
    assert read_pid_file(path) is None
    path.write_text("not a pid")
    assert read_pid_file(path) is None


@pytest.fixture
def listener():
    """Something listening on a free loopback port (another program holding it)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def test_busy_ports_give_one_line_naming_the_param(tmp_path, listener):
    from a2mae.services.mlflow import MlflowServer
    from a2mae.services.prefect import PrefectServer
    from a2mae.services.ray import RayHead

    for svc, key in (
        (PrefectServer(tmp_path / "p", port=listener), "infra.prefect_port"),
        (MlflowServer(tmp_path / "m", port=listener), "infra.mlflow_port"),
        (RayHead(tmp_path / "r", port=listener), "infra.ray_port"),
    ):
        with pytest.raises(ServiceError, match=rf"port {listener} on 127.0.0.1 is in use.*{key}"):
            svc.start(timeout=5)
    with pytest.raises(ServiceError, match="inside Ray's worker port range 10002-19999"):
        RayHead(tmp_path / "r2", port=12000).prepare()


def test_service_commands_bind_loopback_and_switch_telemetry_off(tmp_path):
    from a2mae.services.flows import FlowServer
    from a2mae.services.mlflow import MlflowServer
    from a2mae.services.prefect import PrefectServer
    from a2mae.services.ray import RayHead

    prefect = PrefectServer(tmp_path / "p", port=4321)
    cmd = prefect.command()
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and "--analytics-off" in cmd
    env = prefect.environment()
    assert env["PREFECT_UI_API_URL"] == "http://127.0.0.1:4321/api"  # the UI calls the right port
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and env["PREFECT_HOME"].startswith(
        str(tmp_path)
    )

    mlflow = MlflowServer(
        tmp_path / "m", port=5432, artifacts="s3://bucket/x", s3_env={"AWS_ACCESS_KEY_ID": "k"}
    )
    cmd = mlflow.command()
    assert cmd[cmd.index("--backend-store-uri") + 1].startswith("sqlite:///")
    assert cmd[cmd.index("--artifacts-destination") + 1] == "s3://bucket/x"
    assert mlflow.environment()["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"

    ray = RayHead(tmp_path / "r", port=26379, num_cpus=1)
    ray.prepare()
    cmd = ray.command()
    assert "--node-ip-address=127.0.0.1" in cmd and "--block" in cmd and "--include-dashboard=false" in cmd
    assert ray.environment()["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert len(str(ray.temp_dir)) <= 40  # Unix socket paths stay below 107 bytes

    flows = FlowServer(
        tmp_path / "f", project_dir=tmp_path, api_url="http://127.0.0.1:4321/api", overrides=["a.b=1"]
    )
    assert flows.command()[1:3] == ["-m", "flows.serve"] and flows.command()[-2:] == ["--set", "a.b=1"]
    assert not flows.is_healthy()  # not ready before its deployments are registered


def test_stack_status_and_env_without_anything_running(tmp_path):
    from a2mae.services.stack import SERVICES, Stack

    p = load_params(None, [f"infra.home={tmp_path / 'home'}", "infra.s3_port=28333"])
    stack = Stack(p, tmp_path)
    rows = stack.status()
    assert [r.name for r in rows] == list(SERVICES)
    assert not any(r.running or r.healthy for r in rows)
    env = stack.client_env()
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:28333" and env["RAY_ADDRESS"] == "127.0.0.1:6379"
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert stack.down() == []
    # the deployments work in the stack's own workspace (cloned at start), the code comes from the checkout
    assert stack.workspace == tmp_path / "home" / "workspace" and stack.flows.project_dir == stack.workspace
    assert stack.flows.environment()["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path)
    assert p.infra.dvc_remote == "s3"  # no hidden remote switch; only the predict flow's output moves
    assert stack.flows.overrides == ["predict.output=s3://a2mae-predict/runs"]  # into the stack's S3 store


def test_services_verb(tmp_path, capsys):
    home = f"infra.home={tmp_path / 'home'}"
    assert main(["services", "status", "--json", "--set", home, "--project-dir", str(tmp_path)]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {"s3", "mlflow", "prefect", "ray", "flows", "model"}
    assert main(["services", "env", "--set", home, "--project-dir", str(tmp_path)]) == 0
    assert "export PREFECT_API_URL=http://127.0.0.1:4200/api" in capsys.readouterr().out
    assert main(["services", "up", "--only", "nope", "--set", home, "--project-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "a2mae: error: unknown service 'nope' (known: s3, mlflow, prefect, ray, flows, model, stac)"
    assert main(["services", "down", "--set", home, "--project-dir", str(tmp_path)]) == 0
    assert "nothing was running" in capsys.readouterr().out


def test_infra_scripts_wrap_the_verb():
    root = Path(__file__).resolve().parents[2]
    for name, verb in (("up.sh", "services up"), ("down.sh", "services down")):
        text = (root / "infra" / name).read_text()
        assert os.access(root / "infra" / name, os.X_OK) and f"a2mae {verb}" in text
    template = (root / "infra" / "env.template").read_text()
    for var in (
        "PREFECT_API_URL",
        "PREFECT_UI_API_URL",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_S3_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL",
        "RAY_ADDRESS",
    ):
        assert f"\n{var}=" in template, var


def test_tcp_open_tells_listening_from_closed(listener):
    assert tcp_open("127.0.0.1", listener)
    closed = free_port_pair(low=20000, high=30000)
    assert not tcp_open("127.0.0.1", closed)


def test_free_port_steps_past_a_taken_one(listener):
    assert free_port(listener) != listener and free_port(listener) > listener
    spare = free_port_pair(low=20000, high=30000)
    assert free_port(spare) == spare


def test_demo_hints_use_free_ports_and_their_own_stores(tmp_path):
    from flows.demo import look_commands

    text = "\n".join(look_commands(tmp_path / "demo-output"))
    mlflow = text.split("mlflow ui ", 1)[1].split("\n", 1)[0]
    assert f"sqlite:///{tmp_path / 'demo-output' / 'workspace' / 'mlruns.db'}" in mlflow
    assert "--host 127.0.0.1 --port " in mlflow
    prefect = text.split("  Prefect  ", 1)[1].split("\n", 1)[0]
    port = prefect.rsplit("--port ", 1)[1]
    assert prefect.startswith("env -u PREFECT_API_URL ")  # not the services' server of this shell
    assert f"PREFECT_UI_API_URL=http://127.0.0.1:{port}/api" in prefect


def test_make_clean_keeps_the_services_state_and_clean_services_asks(tmp_path):
    import shutil
    import subprocess

    root = Path(__file__).resolve().parents[2]
    clean = (root / "Makefile").read_text().split("\nclean:", 1)[1].split("\n\n", 1)[0]
    assert "rm -rf" in clean and ".a2mae" not in clean
    (tmp_path / "scripts").mkdir()
    shutil.copy(root / "scripts" / "clean-services.sh", tmp_path / "scripts")
    (tmp_path / ".a2mae" / "mlflow").mkdir(parents=True)
    (tmp_path / ".a2mae" / "mlflow" / "mlflow.db").write_text("runs")
    script = ["bash", str(tmp_path / "scripts" / "clean-services.sh")]
    refused = subprocess.run(script, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert refused.returncode == 1 and "YES=1" in refused.stderr and (tmp_path / ".a2mae").is_dir()
    subprocess.run(script, input="n\n", capture_output=True, text=True, env={**os.environ, "YES": ""})
    assert (tmp_path / ".a2mae").is_dir()  # piped input is not an answer
    done = subprocess.run(script, capture_output=True, text=True, env={**os.environ, "YES": "1"})
    assert done.returncode == 0 and not (tmp_path / ".a2mae").exists(), done.stderr


def test_a_stopped_model_server_is_fine_but_a_stopped_core_service_is_not():
    from a2mae.services.stack import ServiceStatus

    def row(name, running, healthy):
        return ServiceStatus(name, running, healthy, None, "http://127.0.0.1:1", "x.log")

    assert row("model", False, False).ok
    assert not row("model", True, False).ok  # started on request, then broken: report it
    assert not row("mlflow", False, False).ok
    assert row("mlflow", True, True).ok


def test_the_store_never_inherits_the_callers_s3_keys(tmp_path, monkeypatch):
    """SeaweedFS takes AWS_* keys as its admin identity: a shell pointed at another store (or the
    tests' own store) would lock the stack out of its buckets."""
    from a2mae.services.s3 import SeaweedFS

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone-else")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "their-secret")
    monkeypatch.setenv("WEED_JWT_SIGNING_KEY", "x")
    env = SeaweedFS(tmp_path / "s3").process_env()
    assert not any(k.startswith(("AWS_", "WEED_")) for k in env)
