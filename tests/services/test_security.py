"""Nobody gets in (slow): the real services and each executor, checked in the kernel's socket table.

Every listener of the processes the project starts (the services of ``infra/``, a local Ray for tiling,
Ray Train workers) is on loopback; the S3 store gives nothing to anonymous requests on any of its
ports (HTTP, gRPC, its Unix sockets); Ray refuses calls without the token; Prefect refuses foreign
web pages; MLflow refuses foreign host names.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from a2mae.testing.sockets import exposed, listeners, listeners_task, process_tree

pytestmark = [pytest.mark.slow, pytest.mark.s3, pytest.mark.ray]

MARKER = b"a2mae-security-test-marker-7f3c"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _request(method: str, url: str, data: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with _OPENER.open(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read() if err.fp is not None else b""
    except OSError as err:
        return type(err).__name__, b""


def _unix_http(path: str, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _stack_pids(stack) -> list[int]:
    pids = [r.pid for r in stack.status() if r.pid]
    assert len(pids) == 5, stack.status()
    return pids


def test_services_listen_on_loopback_only(services_stack):
    tree = process_tree(*_stack_pids(services_stack.stack))
    found = listeners(tree)
    ports = {x.port for x in found}
    stack = services_stack.stack
    for port in (stack.s3.s3_port, stack.mlflow.port, stack.prefect.port, stack.ray.port):
        assert port in ports  # the check sees the services' sockets
    assert not exposed(tree), [str(x) for x in exposed(tree)]


def test_credentials_are_owner_only(services_stack):
    home = services_stack.stack.home
    secrets = [home / "env", home / "stack.json", home / "ray" / "auth_token", home / "seaweedfs" / "s3.json"]
    secrets += [p for p in (home / "seaweedfs" / "security").rglob("*") if p.is_file()]
    for path in secrets:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    token = (home / "ray" / "auth_token").read_text().strip()
    logs = "".join(p.read_text(errors="replace") for p in home.glob("*/*.log"))
    assert token not in logs and services_stack.env["AWS_SECRET_ACCESS_KEY"] not in logs


def test_s3_store_gives_nothing_to_anonymous_requests(services_stack):
    from a2mae.io.storage import s3_filesystem

    store = services_stack.stack.s3
    fs = s3_filesystem(store.settings())
    bucket = store.create_bucket("a2mae-sec-test")[len("s3://") :]
    fs.pipe(f"{bucket}/secret.txt", MARKER)
    ports = dict(store.ports)
    assert set(ports) == {"master", "volume", "filer", "s3", "admin"}
    paths = [
        f"/buckets/{bucket}/secret.txt",
        f"/buckets/{bucket}/",
        f"/{bucket}/secret.txt",
        f"/{bucket}",
        "/dir/assign",
        "/dir/lookup?volumeId=1",
        "/vol/status",
        "/vol/grow?count=1",
        "/1,0123456789",
    ]
    for comp, port in ports.items():
        base = f"http://127.0.0.1:{port}"
        for path in paths:
            status, body = _request("GET", base + path)
            assert MARKER not in body and status not in (200, 201, 202, 204), (comp, path, status)
        for method in ("PUT", "POST", "DELETE"):
            for path in (f"/buckets/{bucket}/secret.txt", f"/{bucket}/secret.txt", "/1,0123456789"):
                status, _ = _request(method, base + path, data=b"anonymous" if method != "DELETE" else None)
                assert status not in (200, 201, 202, 204), (comp, method, path, status)
        for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):  # weed's own Unix sockets
            got = _unix_http(str(sock), f"GET /buckets/{bucket}/secret.txt HTTP/1.0\r\n\r\n".encode())
            assert MARKER not in got and b" 200 " not in got.split(b"\r\n", 1)[0], sock
    assert fs.cat(f"{bucket}/secret.txt") == MARKER  # still there, unchanged
    assert fs.ls(bucket, refresh=True) == [f"{bucket}/secret.txt"]  # nothing added


def test_s3_store_grpc_needs_the_store_certificate(services_stack):
    import grpc

    store = services_stack.stack.s3
    tls = store.security_dir / "tls"
    good = grpc.ssl_channel_credentials(
        (tls / "ca.crt").read_bytes(), (tls / "service.key").read_bytes(), (tls / "service.crt").read_bytes()
    )
    no_cert = grpc.ssl_channel_credentials((tls / "ca.crt").read_bytes())
    opts = [("grpc.ssl_target_name_override", "localhost")]
    for comp, port in store.ports.items():
        target = f"127.0.0.1:{port + 10000}"
        for label, channel in (
            ("plaintext", grpc.insecure_channel(target)),
            ("TLS without a client certificate", grpc.secure_channel(target, no_cert, opts)),
        ):
            with channel:
                call = channel.unary_unary("/master_pb.Seaweed/GetMasterConfiguration")
                with pytest.raises(grpc.RpcError) as err:
                    call(b"", timeout=5)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE, (comp, label)
    with grpc.secure_channel(f"127.0.0.1:{store.ports['master'] + 10000}", good, opts) as channel:
        channel.unary_unary("/master_pb.Seaweed/GetMasterConfiguration")(b"", timeout=10)  # ours: allowed


def test_ray_head_refuses_calls_without_the_token(services_stack):
    import grpc

    ray = services_stack.stack.ray
    token = ray.token_path.read_text().strip()
    with grpc.insecure_channel(ray.address) as channel:
        call = channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId")
        for metadata in (None, [("authorization", "Bearer " + "0" * 64)]):
            with pytest.raises(grpc.RpcError) as err:
                call(b"", timeout=10, metadata=metadata)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        call(b"", timeout=10, metadata=[("authorization", f"Bearer {token}")])
    dashboard = f"http://127.0.0.1:{ray.ports['dashboard']}"
    assert _request("GET", f"{dashboard}/api/version")[0] == 401
    assert _request("POST", f"{dashboard}/api/jobs/", data=b'{"entrypoint": "id"}')[0] == 401
    auth = {"Authorization": f"Bearer {token}"}
    assert _request("GET", f"{dashboard}/api/version", headers=auth)[0] == 200


def test_prefect_and_mlflow_refuse_foreign_pages(services_stack):
    stack = services_stack.stack
    api = stack.prefect.api_url
    body = json.dumps({"limit": 1}).encode()
    assert _request("POST", f"{api}/flows/filter", body)[0] == 200  # a client (no Origin)
    own = {"Origin": stack.prefect.url}
    assert _request("POST", f"{api}/flows/filter", body, own)[0] == 200  # the UI
    evil = {"Origin": "http://evil.example.com"}
    assert _request("POST", f"{api}/flows/", b'{"name": "evil"}', evil)[0] == 403
    assert _request("POST", f"{api}/flows/filter", body, {"Origin": "http://localhost:1"})[0] == 403
    assert _request("GET", f"{api}/flows/filter", headers={"Host": "evil.example.com"})[0] == 403
    search = f"{stack.mlflow.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _request("GET", search)[0] == 200
    assert _request("GET", search, headers={"Host": f"evil.example.com:{stack.mlflow.port}"})[0] == 403


def test_executors_listen_on_loopback_only(services_stack, monkeypatch):
    import ray

    from a2mae.executor import run_tasks

    ray.shutdown()
    for result in run_tasks(listeners_task, range(4), executor="local", workers=2):
        assert all(x["loopback"] for x in result[1])
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    tasks = run_tasks(listeners_task, range(4), executor="ray", workers=2)
    first = next(tasks)  # the local Ray is up now
    tree = process_tree(os.getpid())
    assert not exposed(tree), [str(x) for x in exposed(tree)]
    assert any("gcs_server" in x.command for x in listeners(tree))  # its GCS was seen
    import grpc

    gcs = ray.get_runtime_context().gcs_address
    with grpc.insecure_channel(gcs) as channel, pytest.raises(grpc.RpcError) as err:
        channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId")(b"", timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED  # the local Ray has a token too
    rest = list(tasks)
    assert sorted([first[0], *(i for i, _ in rest)]) == [0, 1, 2, 3] and not ray.is_initialized()

    for key, value in services_stack.env.items():  # the services' Ray, joined with the handed token
        monkeypatch.setenv(key, value)
    assert sorted(i for i, _ in run_tasks(listeners_task, range(3), executor="ray", workers=2)) == [0, 1, 2]


def test_ray_train_workers_listen_on_loopback_only_and_quietly(services_stack, tmp_path, capfd, monkeypatch):
    """A 2-worker DDP run on a local Ray while the services' Ray runs: no listener beyond loopback (the
    default TCPStore rendezvous listens on every interface), and none of Ray Train's state-API noise
    ("Found multiple active Ray instances", "Failed to query Ray Train Controller actor state")."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from a2mae.pretrain.ray_backend import LoopbackTorchConfig
    from a2mae.services.ray_driver import start_local
    from a2mae.testing.sockets import report_listeners_loop

    ray.shutdown()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    folders = set(Path(tempfile.gettempdir()).glob("a2mae-rdzv-*"))
    local = start_local(2, dashboard=False, log_to_driver=True)
    try:
        result = TorchTrainer(
            report_listeners_loop,
            train_loop_config={"out": str(tmp_path)},
            torch_config=LoopbackTorchConfig(),
            scaling_config=ScalingConfig(num_workers=2),
            run_config=RunConfig(name="sockets", storage_path=str(tmp_path / "runs")),
        ).fit()
    finally:
        ray.shutdown()
        local.close()
    assert result.error is None
    reports = {p.name: json.loads(p.read_text()) for p in tmp_path.glob("rank*.json")}
    assert set(reports) == {"rank0.json", "rank1.json"}
    for name, found in reports.items():
        assert found and all(x["loopback"] for x in found), (name, found)
    out = capfd.readouterr()
    text = out.out + out.err
    assert "Found multiple active Ray instances" not in text
    assert "Failed to query Ray Train Controller actor state" not in text
    assert set(Path(tempfile.gettempdir()).glob("a2mae-rdzv-*")) == folders  # the rendezvous folder is gone
