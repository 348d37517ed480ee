"""The operator's kinds of issue 21 on the real services, driven through the ``a2mae services`` CLI:
a fresh ``up`` exits 0 and prints the client settings; two ``up`` at once leave one healthy stack and
``down`` leaves no process of the home behind; a deployment's path outside the data roots is refused;
the ingest deployment re-ingests when its catalog was deleted (results as JSON under infra.home); and
``down`` during a retrain run ends the run CRASHED and frees the deployment's slot for the next run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_PIPELINE, ServicesStack

pytestmark = [pytest.mark.slow, pytest.mark.s3, pytest.mark.ray]


def _cli(
    args: list[str], sets: list[str], checkout: Path, timeout: float = 900
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "a2mae", *args, "--project-dir", str(checkout)]
    for item in sets:
        cmd += ["--set", item]
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)


@pytest.fixture(scope="module")
def operator_stack(tmp_path_factory):
    """A fresh stack started by two ``a2mae services up`` at once; ``down`` (through the CLI) at the end."""
    from a2mae.config import load_params
    from a2mae.services.base import free_port_pair
    from a2mae.services.daemon import marked_processes
    from a2mae.services.stack import Stack
    from flows.demo import make_workspace

    root = tmp_path_factory.mktemp("operator")
    checkout = make_workspace(root / "checkout")
    ports: list[int] = []
    while len(ports) < 4:
        port = free_port_pair(low=20000, high=30000)
        if port not in ports:
            ports.append(port)
    sets = [
        f"infra.home={root / 'home'}",
        f"infra.prefect_port={ports[0]}",
        f"infra.mlflow_port={ports[1]}",
        f"infra.s3_port={ports[2]}",
        f"infra.ray_port={ports[3]}",
        "infra.ray_num_cpus=2",
        "pretrain.num_workers=0",
        "tile.grid_m=20000",
        *TINY_PIPELINE,
    ]
    cmd = [sys.executable, "-m", "a2mae", "services", "up", "--project-dir", str(checkout)]
    for item in sets:
        cmd += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)]
    time.sleep(1.0)
    procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    stack = Stack(load_params(None, sets), checkout, sets)
    try:
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=900)
            outs.append((p.returncode, out, err))
        yield ServicesStack(stack, checkout, sets), outs
    finally:
        done = _cli(["services", "down"], sets, checkout)
        left = marked_processes(stack.home)
        assert done.returncode == 0 and not left, (done.stderr, left)


def test_two_ups_at_once_make_one_healthy_stack_and_exit_0(operator_stack):
    services, outs = operator_stack
    for code, out, err in outs:
        assert code == 0, err
        assert f"client settings: {services.stack.env_path}" in out and "Prefect UI: http://127.0.0.1:" in out
    assert any("waiting for pid" in out for _, out, _ in outs)  # the second waited for the first
    status = _cli(["services", "status"], services.sets, services.checkout)
    assert status.returncode == 0, status.stdout
    from a2mae.services.daemon import marked_processes, running_pid

    pids = {running_pid(services.stack.service(n)) for n in ("s3", "mlflow", "prefect", "ray", "flows")}
    marked = marked_processes(services.stack.home)
    tops = {pid for pid in marked if _ppid(pid) not in marked}
    assert tops == pids  # one process per service was launched, and its pid file names it


def _ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2 :].split()[1])


def _deployment_run(services: ServicesStack, name: str, changes: dict, timeout: float = 600):
    """Run deployment ``name`` with its default parameters updated by ``changes``; wait for the end."""
    from prefect import get_client
    from prefect.deployments import run_deployment

    with services.prefect_settings(), get_client(sync_client=True) as client:
        params = {**client.read_deployment_by_name(name).parameters["params"], **changes}
    with services.prefect_settings():
        return run_deployment(name, parameters={"params": params}, timeout=timeout, poll_interval=2)


def test_a_deployment_refuses_a_path_outside_its_data_roots(operator_stack, tmp_path):
    services, _ = operator_stack
    target = tmp_path / "elsewhere" / "catalog.parquet"
    run = _deployment_run(services, "ingest/ingest", {"catalog": str(target)})
    assert run.state.is_failed()
    msg = run.state.message or ""
    assert "outside the services' data roots" in msg and str(target) in msg and "\n" not in msg.strip()
    assert not target.parent.exists()


def test_the_ingest_deployment_reingests_a_deleted_catalog(operator_stack):
    services, _ = operator_stack
    catalog = services.workspace / "data" / "catalog.parquet"
    user_storage = Path.home() / ".prefect" / "storage"
    before = set(user_storage.rglob("*")) if user_storage.exists() else set()
    first = _deployment_run(services, "ingest/ingest", {})
    assert first.state.is_completed(), first.state.message
    assert catalog.is_file()
    catalog.unlink()
    again = _deployment_run(services, "ingest/ingest", {})
    assert again.state.is_completed(), again.state.message
    assert catalog.is_file()  # re-ingested: a cached "scenes added" did not stand in for it
    results = services.stack.home / "flows" / "results"
    stored = [p for p in results.rglob("*") if p.is_file()]
    assert stored and all(p.read_bytes().lstrip().startswith(b"{") for p in stored)  # JSON records
    new = (set(user_storage.rglob("*")) if user_storage.exists() else set()) - before
    mine = str(services.workspace).encode()  # results of this stack's runs name its workspace
    assert not [p for p in new if p.is_file() and mine in p.read_bytes()]  # nothing in ~/.prefect


def test_down_during_a_retrain_run_ends_it_crashed_and_frees_its_slot(operator_stack):
    from prefect import get_client
    from prefect.deployments import run_deployment

    services, _ = operator_stack
    with services.prefect_settings(), get_client(sync_client=True) as client:
        params = dict(client.read_deployment_by_name("retrain/pipeline").parameters["params"])
    params["force"] = True

    def start_and_wait_running(deadline_s: float = 300):
        with services.prefect_settings():
            run = run_deployment("retrain/pipeline", parameters={"params": params}, timeout=0)
        deadline = time.monotonic() + deadline_s
        with services.prefect_settings(), get_client(sync_client=True) as client:
            while (state := client.read_flow_run(run.id).state) is None or not state.is_running():
                assert time.monotonic() < deadline, f"never ran: {state}"
                time.sleep(1)
        return run

    run = start_and_wait_running()
    down = _cli(["services", "down"], services.sets, services.checkout)
    assert down.returncode == 0, down.stderr
    up = _cli(["services", "up"], services.sets, services.checkout)
    assert up.returncode == 0, up.stderr
    with services.prefect_settings(), get_client(sync_client=True) as client:
        state = client.read_flow_run(run.id).state
    assert state.is_crashed(), state
    # the deployment runs one at a time: the next run gets the slot instead of waiting for good
    nxt = start_and_wait_running(240)
    stopped = _cli(["services", "down"], services.sets, services.checkout)
    assert stopped.returncode == 0 and "marked CRASHED" in stopped.stdout, stopped.stdout
    assert _cli(["services", "up"], services.sets, services.checkout).returncode == 0
    with services.prefect_settings(), get_client(sync_client=True) as client:
        assert client.read_flow_run(nxt.id).state.is_crashed()
