"""End to end with the real services of infra/ (S3 store, MLflow, Prefect server, Ray head, the
deployments' server): the pipeline deployment triggered through the Prefect API, the MLflow registry
and the DVC remote afterwards; then the S3 store killed mid-ingest."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.s3, pytest.mark.ray]


def _run(services, name: str, params: dict, timeout: float = 900):
    from prefect.deployments import run_deployment

    with services.prefect_settings():
        return run_deployment(name, parameters={"params": params}, timeout=timeout, poll_interval=2)


def _defaults(services, name: str) -> dict:
    from prefect import get_client

    with services.prefect_settings(), get_client(sync_client=True) as client:
        return dict(client.read_deployment_by_name(name).parameters["params"])


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_stack_is_healthy_on_loopback(services_stack):
    rows = services_stack.stack.status()
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]
    assert all(r.healthy for r in rows if r.name != "model"), rows
    env = services_stack.env
    for key in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL"):
        assert env[key].startswith("http://127.0.0.1:")
    assert env["RAY_ADDRESS"].startswith("127.0.0.1:")
    home = services_stack.stack.home
    for name in ("seaweedfs", "mlflow", "prefect", "ray", "flows"):
        assert list((home / name).glob("*.log")) and list((home / name).glob("*.pid")), name
    assert (home / "env").stat().st_mode & 0o077 == 0  # holds the S3 secret: owner only


def test_pipeline_deployment_end_to_end(services_stack, tmp_path):
    from mlflow.tracking import MlflowClient
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from a2mae.dvc import DvcWorkspace
    from flows.version import DVC_TAG

    mlflow = MlflowClient(services_stack.stack.mlflow.url)

    def versions(name: str) -> set[str]:
        return {v.version for v in mlflow.search_model_versions(f"name='{name}'")}

    model = "a2mae-classification"
    registered = {m.name for m in mlflow.search_registered_models()}
    before = {n: versions(n) if n in registered else set() for n in ("a2mae-encoder", model)}
    params = _defaults(services_stack, "retrain/pipeline")
    assert params["version"] == {"dvc_remote": "s3", "git_commit": True}  # the defaults round-trip
    params["pretrain"]["num_workers"] = 1  # Ray Train on the head
    params["force"] = True
    checkout = Path(services_stack.checkout)
    lock_before = (checkout / "dvc.lock").read_bytes() if (checkout / "dvc.lock").exists() else None
    run = _run(services_stack, "retrain/pipeline", params)
    assert run.state.is_completed(), run.state.message

    # MLflow registry: a new encoder version and a new fine-tuned version, evaluated; aliases set
    (new_encoder,) = versions("a2mae-encoder") - before["a2mae-encoder"]
    (new_model,) = versions(model) - before[model]
    challenger = mlflow.get_model_version(model, new_model)
    decision = challenger.tags["a2mae.eval.decision"]
    assert decision in ("first_champion", "promoted", "rejected")
    champion = mlflow.get_model_version_by_alias(model, "champion")
    encoder_champion = mlflow.get_model_version_by_alias("a2mae-encoder", "champion")
    if decision != "rejected":
        assert champion.version == new_model and encoder_champion.version == new_encoder
    ws = DvcWorkspace(services_stack.workspace)
    md5 = ws.out_hash("data/stssd")
    assert md5 and challenger.tags[DVC_TAG] == md5
    assert mlflow.get_model_version("a2mae-encoder", new_encoder).tags[DVC_TAG] == md5
    assert mlflow.get_run(challenger.run_id).data.tags[DVC_TAG] == md5
    assert encoder_champion.tags[DVC_TAG].endswith(".dir")

    # Prefect artifacts of the run: the summary, the snapshot table, links to MLflow
    with services_stack.prefect_settings(), get_client(sync_client=True) as client:
        subflow_runs = client.read_flow_runs()
        ids = [r.id for r in subflow_runs if r.parent_task_run_id or r.id == run.id]
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
        )
    kinds = {(a.key, a.type) for a in arts}
    assert ("retrain-summary", "markdown") in kinds and ("tile-snapshot", "table") in kinds
    links = [a for a in arts if a.key in ("pretrain-run", "finetune-run", "evaluate-model")]
    assert {a.key for a in links} == {"pretrain-run", "finetune-run", "evaluate-model"}
    assert all(f"]({services_stack.stack.mlflow.url}/#/" in str(a.data) for a in links)  # markdown links
    flows_log = (services_stack.stack.home / "flows" / "flows.log").read_text(errors="replace")
    assert "\x1b[" not in flows_log and "View run" not in flows_log  # a plain log file, links once

    # DVC with the defaults: the snapshot version is a commit of the services' workspace, its files are
    # on the S3 remote, and the user's checkout is untouched
    from a2mae.io.storage import S3Settings, list_files

    assert list_files("s3://a2mae-dvc/store", S3Settings.from_env(environ=services_stack.env))
    log = subprocess.run(
        ["git", "log", "-1", "--format=%s", "--", "dvc.lock"],
        cwd=services_stack.workspace,
        capture_output=True,
        text=True,
        check=True,
    )
    assert log.stdout.startswith("data: STSSD snapshot data/stssd")
    status = subprocess.run(["git", "status", "--porcelain"], cwd=checkout, capture_output=True, text=True)
    assert status.stdout == "" and not (checkout / "data" / "stssd").exists()
    assert ((checkout / "dvc.lock").read_bytes() if (checkout / "dvc.lock").exists() else None) == lock_before

    # ... so a fresh clone restores it with the documented commands, given only the S3 credentials
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(services_stack.workspace), str(clone)], check=True)
    creds = {k: services_stack.env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | creds
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    for cmd in (["dvc", "pull"], ["dvc", "pull", "-r", "s3"]):  # the default remote is the one pushed to
        got = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True, check=False)
        assert got.returncode == 0, got.stderr.strip().splitlines()[-1:]
    assert DvcWorkspace(clone).out_hash("data/stssd") == md5 and DvcWorkspace(clone).status_clean()
    assert _tree(clone / "data" / "stssd") == _tree(Path(services_stack.workspace) / "data" / "stssd")


def _find_subflow(services, parent_id, flow_name: str):
    from prefect import get_client

    with services.prefect_settings(), get_client(sync_client=True) as client:
        for r in client.read_flow_runs():
            if r.parent_task_run_id is None:
                continue
            flow = client.read_flow(r.flow_id)
            if flow.name == flow_name and r.start_time is not None:
                task = client.read_task_run(r.parent_task_run_id)
                if task.flow_run_id == parent_id:
                    return r
    return None


def _upload_scene(services, tmp_path: Path, prefix: str) -> str:
    """A new synthetic Sentinel-2 scene under ``prefix`` (returns the prefix)."""
    from datetime import UTC, datetime

    from a2mae.io.storage import S3Settings, put_tree
    from a2mae.testing.scenes import Place, SceneSpec, make_scenes

    folder = tmp_path / "scene"
    make_scenes(folder, [SceneSpec("S2", datetime(2021, 7, 1, 3, 5, tzinfo=UTC), 3600)], Place(seed=7))
    put_tree(folder, prefix, S3Settings.from_env(environ=services.env))
    return prefix + "/"


def test_s3_store_killed_mid_ingest_then_a_clean_rerun(services_stack, tmp_path):
    from prefect import get_client
    from prefect.deployments import run_deployment

    from a2mae.dvc import DvcWorkspace
    from a2mae.ingest.catalog import read_catalog
    from a2mae.services.daemon import running_pid, terminate

    stack = services_stack.stack
    prefix = _upload_scene(services_stack, tmp_path, "s3://a2mae-scenes/kill-test")
    params = _defaults(services_stack, "retrain/pipeline")
    params["pretrain"]["num_workers"] = 0
    params["ingest"]["sources"] = [*params["ingest"]["sources"], prefix]
    with services_stack.prefect_settings():
        run = run_deployment("retrain/on-new-imagery", parameters={"params": params}, timeout=0)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and _find_subflow(services_stack, run.id, "ingest") is None:
            time.sleep(0.3)
        assert running_pid(stack.s3) is not None
        terminate(stack.s3, timeout=10)  # the store dies while the pipeline is ingesting
        with services_stack.prefect_settings(), get_client(sync_client=True) as client:
            while not (state := client.read_flow_run(run.id).state).is_final():
                assert time.monotonic() < deadline + 300
                time.sleep(2)
            ingest = _find_subflow(services_stack, run.id, "ingest")
            tasks = client.read_task_runs()
        assert state.is_failed(), state
        message = state.message or ""
        assert prefix in message and "\n" not in message.strip()
        assert "AWS_ENDPOINT_URL" in message or "endpoint" in message.lower()
        attempts = [t.run_count for t in tasks if t.flow_run_id == ingest.id]
        assert max(attempts) == 3  # the I/O task was retried twice before giving up
    finally:
        stack.up(["s3"])  # the store comes back (same data folder, same S3 port)

    ws = DvcWorkspace(services_stack.workspace)
    rerun = _run(services_stack, "retrain/pipeline", params)
    assert rerun.state.is_completed(), rerun.state.message
    records = read_catalog(Path(services_stack.workspace) / "data" / "catalog.parquet")
    ids = [r.scene_id for r in records]
    assert len(ids) == len(set(ids)) and len({r.content_hash for r in records}) == len(records)
    assert ws.status_clean()  # the snapshot on disk is the one dvc.lock records: not corrupt
    snap = Path(services_stack.workspace) / "data"
    assert not [p for p in snap.iterdir() if p.name.startswith(".stssd.tmp")]  # no half-written copy
