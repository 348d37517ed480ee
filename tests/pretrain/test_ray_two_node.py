"""Pre-training on a two-node Ray cluster formed on this machine, loopback only (slow).

The head is ``ray start --head`` (1 CPU), with token authentication (``RAY_AUTH_MODE=token``, a 0600
token file of its own) like every Ray the project starts. The second node is a separate process running
a Ray worker node (1 CPU) joined to the head's address. Both use 127.0.0.1 only:
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps every Ray listener on loopback, but with it set ``ray
start --address`` refuses to add a node ("multi-node clusters are not supported"), and without it Ray
listens on all interfaces; so the second node is started through Ray's node API (what ``ray start
--address`` runs), with the same variable. With one CPU per node and one CPU per training worker, Ray
must place one worker on each node.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
from mlflow.tracking import MlflowClient

from a2mae.config import load_params
from a2mae.pretrain.run import run_pretrain

pytestmark = [pytest.mark.slow, pytest.mark.ray]

_NODE = """
import signal, sys, time
from ray._private.node import Node
from ray._private.parameter import RayParams

params = RayParams(gcs_address=sys.argv[1], num_cpus=1, node_ip_address="127.0.0.1", temp_dir=sys.argv[2],
                   min_worker_port=0, max_worker_port=0, node_manager_port=0, include_log_monitor=False)
node = Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
print("node", node.node_id, flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(3600)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _own_processes(markers: list[str]) -> list[int]:
    import psutil

    out = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        if any(m in cmd for m in markers) and proc.info["pid"] != os.getpid():
            out.append(proc.info["pid"])
    return out


def _listeners(pids: list[int]) -> set[str]:
    import psutil

    found = set()
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            found.add(conn.laddr.ip)
    return found


@pytest.fixture
def two_node_cluster():
    import ray

    from a2mae.services.ray_driver import _release_kept

    ray.shutdown()  # a local Ray of an earlier test,
    _release_kept()  # and its settings, before this test sets the cluster's
    tmp = tempfile.mkdtemp(prefix="a2n")  # short: Ray's socket paths must stay < 108 chars
    port = _free_port()
    token = os.path.join(tmp, "auth_token")  # token authentication, as every Ray of the project
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(uuid.uuid4().hex + uuid.uuid4().hex)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))},
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": token,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "AUTOSCALER_METRIC_PORT": str(_free_port()),
        "DASHBOARD_METRIC_PORT": str(_free_port()),
    }
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    head = [
        ray_bin, "start", "--head", f"--port={port}", "--num-cpus=1", f"--temp-dir={tmp}/h",
        "--include-dashboard=false", "--disable-usage-stats", f"--ray-client-server-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}",
    ]  # fmt: skip
    markers = [tmp, f"127.0.0.1:{port}"]
    node = None
    try:
        subprocess.run(head, env=env, check=True, timeout=120, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        node = subprocess.Popen(
            [sys.executable, "-c", _NODE, f"127.0.0.1:{port}", f"{tmp}/w"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        line = node.stdout.readline()
        assert line.startswith("node "), line + (node.stdout.read() if node.poll() is not None else "")
        yield f"127.0.0.1:{port}", markers, token
    finally:
        ray.shutdown()
        if node is not None:
            node.send_signal(signal.SIGTERM)
            try:
                node.wait(timeout=20)
            except subprocess.TimeoutExpired:
                node.kill()
        for pid in _own_processes(markers):
            os.kill(pid, signal.SIGTERM)
        time.sleep(2)
        for pid in _own_processes(markers):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


def test_one_worker_on_each_of_two_nodes(
    two_node_cluster, pretrain_snapshot, tiny_pretrain_overrides, monkeypatch
):
    address, markers, token = two_node_cluster
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", token)
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    p = load_params(
        overrides=[
            *tiny_pretrain_overrides,
            f"pretrain.ray_address={address}",
            "pretrain.num_workers=2",
            "pretrain.cpus_per_worker=1",
            "pretrain.batch_size=2",
            "pretrain.max_steps=3",
            "pretrain.checkpoint_every_steps=2",
        ]
    )
    import ray

    res = run_pretrain(p, str(pretrain_snapshot), name="two-nodes", register=False)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    assert res.global_step == 3
    assert res.attempts[0]["world_size"] == 2 and res.attempts[0]["nodes"] == 2  # one worker per node
    hist = MlflowClient(p.registry.tracking_uri).get_metric_history(res.run_id, "train/loss")
    assert [m.step for m in hist] == [1, 2, 3]
    assert _listeners(_own_processes(markers)) <= {"127.0.0.1", "::ffff:127.0.0.1"}  # loopback only
