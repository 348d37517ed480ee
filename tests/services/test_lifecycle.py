"""The stack's lifecycle kinds (issue 21): the exit status of ``services up`` through the CLI, one
``up``/``down`` of a home at a time, every process a home started found and stopped even when its pid
file lost track of it, and flow runs whose process is gone ending CRASHED. A tiny HTTP server stands in
for the real services here; tests/e2e/test_operator_services.py does the same with the real stack."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from a2mae.cli import main
from a2mae.config import load_params
from a2mae.services.base import free_port_pair
from a2mae.services.daemon import MARKER, launch, marked_processes, pid_alive, stop_marked
from a2mae.services.stack import ServiceStatus, Stack
from tests.services.test_services import Dummy, _child_pid


def _rows(model_running: bool = False) -> list[ServiceStatus]:
    def row(name: str, running: bool, healthy: bool) -> ServiceStatus:
        return ServiceStatus(
            name, running, healthy, 1 if running else None, "http://127.0.0.1:1", f"{name}.log"
        )

    core = [row(n, True, True) for n in ("s3", "mlflow", "prefect", "ray", "flows")]
    return [*core, row("model", model_running, False)]


@pytest.mark.parametrize(("model_running", "code"), [(False, 0), (True, 1)])
def test_services_up_exit_status_through_the_cli(tmp_path, capsys, monkeypatch, model_running, code):
    """A healthy start without --serve-model exits 0 and prints the client settings; a model server
    that runs but does not answer is still an error naming its log."""
    monkeypatch.setattr(Stack, "up", lambda self, only=(), echo=None: _rows(model_running))
    home = f"infra.home={tmp_path / 'home'}"
    assert main(["services", "up", "--set", home, "--project-dir", str(tmp_path)]) == code
    got = capsys.readouterr()
    if code == 0:
        assert f"client settings: {tmp_path / 'home' / 'env'}" in got.out and "Prefect UI: http" in got.out
        assert got.err == ""
    else:
        assert got.err.strip() == "a2mae: error: not healthy: model (log model.log)"
        assert "client settings" not in got.out


def test_launched_processes_carry_their_state_folder_and_children_inherit_it(tmp_path):
    svc = Dummy(tmp_path / "home" / "dummy", free_port_pair(low=20000, high=30000))
    pid = launch(svc, None, 30)
    child = _child_pid(svc)
    try:
        found = marked_processes(tmp_path / "home")
        assert found == {pid: str(svc.state_dir), child: str(svc.state_dir)}
        assert marked_processes(tmp_path / "elsewhere") == {}
        assert os.getpid() not in found and MARKER not in os.environ
    finally:
        stop_marked(tmp_path / "home", timeout=10)
    assert not pid_alive(pid) and not pid_alive(child)


def test_down_stops_processes_of_the_home_that_no_pid_file_names(tmp_path):
    """What a race between two `up`s leaves (a process whose pid file was overwritten) is stopped."""
    params = load_params(None, [f"infra.home={tmp_path / 'home'}", "infra.s3_port=28339"])
    stack = Stack(params, tmp_path)
    stray = Dummy(stack.ray.state_dir, free_port_pair(low=20000, high=30000))  # as if started for ray
    pid = launch(stray, None, 30)
    child = _child_pid(stray)
    stray.pid_path.unlink()  # lost track of it
    lines: list[str] = []
    assert stack.down(echo=lines.append) == ["ray"]
    assert not pid_alive(pid) and not pid_alive(child)
    assert lines == ["ray      stopped (and 2 untracked process(es))"]
    assert stack.down() == []


def test_one_up_or_down_of_a_home_at_a_time(tmp_path, monkeypatch):
    """A second `up` of the same home waits for the first (saying for whom), then finds it done."""
    params = load_params(None, [f"infra.home={tmp_path / 'home'}"])
    inside, order = threading.Event(), []

    def slow_up(self, only, echo):
        order.append("start")
        inside.set()
        time.sleep(1.5)
        order.append("end")
        return []

    monkeypatch.setattr(Stack, "_up", slow_up)
    first = threading.Thread(target=Stack(params, tmp_path).up)
    first.start()
    assert inside.wait(20)
    said: list[str] = []
    Stack(params, tmp_path).up(echo=said.append)
    first.join()
    assert order == ["start", "end", "start", "end"]  # never interleaved
    assert len(said) == 1 and said[0].startswith("waiting for pid ") and str(tmp_path / "home") in said[0]
    assert not (tmp_path / "home" / ".stack.lock").exists()


class _FakePrefect:
    """Answers the few Prefect API calls of ``crash_orphaned_runs`` from a dict of flow runs."""

    def __init__(self, runs: list[dict], task_parents: dict[str, str]) -> None:
        self.runs, self.task_parents, self.states = runs, task_parents, {}

    def __call__(self, url: str, body, timeout=10.0, auth=None, method="POST"):
        path = url.split("/api", 1)[1]
        if path == "/flow_runs/filter":
            return [r for r in self.runs if r["state"] in body["flow_runs"]["state"]["type"]["any_"]]
        if path == "/task_runs/filter":
            return []
        run_id = path.split("/")[2]
        self.states[run_id] = body["state"]["type"]
        return {"status": "ACCEPT"}

    def get(self, url: str, timeout=2.0, auth=None):
        if url.endswith("/health"):
            return True
        return {"flow_run_id": self.task_parents[url.rsplit("/", 1)[1]]}


def test_orphaned_runs_are_the_deployments_and_their_subflows_not_a_clients_own(tmp_path, monkeypatch):
    from a2mae.services import prefect as prefect_mod
    from a2mae.services.prefect import PrefectServer

    runs = [
        {"id": "dep", "name": "retrain-1", "deployment_id": "d1", "state": "RUNNING"},
        {"id": "sub", "name": "pretrain-1", "parent_task_run_id": "t1", "state": "RUNNING"},
        {"id": "subsub", "name": "tile-1", "parent_task_run_id": "t2", "state": "PENDING"},
        {"id": "own", "name": "local", "state": "RUNNING"},  # a client's own flow run: alive elsewhere
        {"id": "own-sub", "name": "local-sub", "parent_task_run_id": "t3", "state": "RUNNING"},
        {"id": "done", "name": "old", "deployment_id": "d1", "state": "COMPLETED"},
    ]
    fake = _FakePrefect(runs, {"t1": "dep", "t2": "sub", "t3": "own"})
    monkeypatch.setattr(prefect_mod, "http_post_json", fake)
    monkeypatch.setattr(prefect_mod, "http_json", fake.get)
    server = PrefectServer(tmp_path / "prefect", port=free_port_pair(low=20000, high=30000))
    assert sorted(server.crash_orphaned_runs("gone")) == ["pretrain-1", "retrain-1", "tile-1"]
    assert fake.states == {"dep": "CRASHED", "sub": "CRASHED", "subsub": "CRASHED"}


def test_the_prefect_server_keeps_concurrency_leases_on_disk(tmp_path):
    from a2mae.services.prefect import PrefectServer

    env = PrefectServer(tmp_path / "prefect").environment()
    assert env["PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"].endswith("lease_storage.filesystem")
    assert Path(env["PREFECT_HOME"]).is_relative_to(tmp_path)


def test_the_flow_runs_keep_prefect_state_and_cached_results_under_the_home(tmp_path):
    params = load_params(None, [f"infra.home={tmp_path / 'home'}"])
    env = Stack(params, tmp_path).flows.environment()
    for key in ("PREFECT_HOME", "PREFECT_RESULTS_LOCAL_STORAGE_PATH"):
        assert Path(env[key]).is_relative_to(tmp_path / "home"), key
    assert env["PREFECT_RESULTS_DEFAULT_SERIALIZER"] == "json"
