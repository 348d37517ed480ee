"""Pre-training under Ray Train (slow): 2 workers + resume, a killed worker, a killed driver.

The acceptance tests of the distributed pre-training. Each starts a local Ray bound to 127.0.0.1 and uses
a tiny model on a tiny snapshot; see ``test_ray_two_node.py`` for the two-node cluster.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from a2mae.config import load_params
from a2mae.pretrain.run import run_pretrain

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def _local_ray():
    """Runs use a local Ray of this process (not a cluster from the environment); stopped at the end."""
    saved = os.environ.pop("RAY_ADDRESS", None)
    yield
    import ray

    ray.shutdown()
    if saved is not None:
        os.environ["RAY_ADDRESS"] = saved


@pytest.fixture(autouse=True)
def _no_env_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)


def _ray_params(overrides: list[str], *extra: str):
    return load_params(overrides=[*overrides, "pretrain.num_workers=2", "pretrain.batch_size=2", *extra])


def _history(uri: str, run_id: str, key: str = "train/loss") -> list[int]:
    return [m.step for m in MlflowClient(uri).get_metric_history(run_id, key)]


# --------------------------------------------------------------------------------------------------
def test_two_workers_then_resume_one_history_and_a_registered_encoder(
    pretrain_snapshot, tiny_pretrain_overrides
):
    snap = str(pretrain_snapshot)
    p1 = _ray_params(tiny_pretrain_overrides, "pretrain.max_steps=4", "pretrain.checkpoint_every_steps=2")
    first = run_pretrain(p1, snap, name="two-workers", register=False)
    assert first.global_step == 4 and first.attempts[0]["world_size"] == 2

    p2 = _ray_params(tiny_pretrain_overrides, "pretrain.max_steps=7", "pretrain.checkpoint_every_steps=2")
    second = run_pretrain(p2, snap, name="two-workers")
    assert second.run_id == first.run_id and second.resumed
    assert [(a["start_step"], a["world_size"]) for a in second.attempts] == [(0, 2), (4, 2)]
    assert second.global_step == 7 and second.registered_version == "1"

    uri = p2.registry.tracking_uri
    for key in ("train/loss", "train/lr", "train/images_per_s"):
        assert _history(uri, second.run_id, key) == list(range(1, 8)), key
    run = MlflowClient(uri).get_run(second.run_id)
    assert run.info.status == "FINISHED"
    assert any(k.startswith("system/") for k in run.data.metrics) or not p2.pretrain.system_metrics

    import mlflow.pyfunc

    from a2mae.checkpoint import load_checkpoint
    from a2mae.registry.encoder import load_encoder
    from a2mae.stssd.dataset import StssdDataset
    from a2mae.tracking.client import mlflow_uris

    reference, _ = load_checkpoint(Path(second.checkpoint) / "model.safetensors")
    loaded, meta = load_encoder("models:/a2mae-encoder/1", uri)
    assert meta["extra"]["global_step"] == 7
    ds = StssdDataset(pretrain_snapshot)
    images = [ds[i].images[-1] for i in range(4)]
    with torch.no_grad():
        want = reference.forward_features(images).pooled
        torch.testing.assert_close(loaded.forward_features(images).pooled, want, rtol=0, atol=0)
    with mlflow_uris(uri):
        got = mlflow.pyfunc.load_model("models:/a2mae-encoder/1").predict(images)
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------------
class _SlowDataset:
    """The real dataset, with a delay per read, so a test can act in the middle of a run."""

    def __init__(self, inner, delay_s: float) -> None:
        self.inner, self.delay_s = inner, delay_s
        self.stats, self.info = inner.stats, inner.info

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i):
        time.sleep(self.delay_s)
        return self.inner[i]


def _slow_dataset(snapshot, sections, delay_s):
    from a2mae.stssd.dataset import StssdDataset

    return _SlowDataset(StssdDataset(snapshot), delay_s)


@pytest.mark.s3
def test_killed_worker_recovers_from_its_last_checkpoint(
    pretrain_snapshot, tiny_pretrain_overrides, s3_store
):
    """Checkpoints on S3 (SeaweedFS): the restarted workers find the newest one there."""
    import ray
    from ray import cloudpickle
    from ray.util.state import list_actors

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # _slow_dataset travels to the workers
    every = 4
    p = _ray_params(
        tiny_pretrain_overrides,
        "pretrain.max_steps=20",
        f"pretrain.checkpoint_every_steps={every}",
        "pretrain.max_failures=2",
        f"pretrain.storage_path={s3_store.new_bucket()}/ray",
    )
    latest: dict = {}
    outcome: dict = {}

    def train():
        try:
            outcome["result"] = run_pretrain(
                p,
                str(pretrain_snapshot),
                name="fault",
                progress=latest.update,
                register=False,
                dataset_fn=functools.partial(_slow_dataset, delay_s=0.12),
            )
        except BaseException as err:  # surfaced below
            outcome["error"] = err

    t = threading.Thread(target=train, daemon=True)
    t.start()
    deadline = time.monotonic() + 240
    while latest.get("step", 0) < every + 2 and time.monotonic() < deadline and t.is_alive():
        time.sleep(0.05)
    assert latest.get("step", 0) >= every + 2, f"run did not progress: {latest} {outcome}"
    killed_at = latest["step"]
    workers = list_actors(  # our Ray's address: other Ray instances may run on this machine
        address=ray.get_runtime_context().gcs_address,
        filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
    )
    assert len(workers) == 2
    os.kill(workers[-1].pid, signal.SIGKILL)

    t.join(timeout=300)
    assert not t.is_alive() and "error" not in outcome, outcome.get("error")
    res = outcome["result"]
    assert res.global_step == 20 and len(res.attempts) == 2
    assert res.checkpoint.startswith("s3://") and res.checkpoint.endswith("/fault/checkpoint_00000020")
    resumed_from = res.attempts[1]["start_step"]
    assert resumed_from >= (killed_at // every) * every  # the last checkpoint before the kill ...
    assert killed_at - resumed_from <= every  # ... so at most one checkpoint interval is lost
    assert _history(p.registry.tracking_uri, res.run_id) == list(range(1, 21))
    assert ray.is_initialized()


# --------------------------------------------------------------------------------------------------
def _own_processes(marker: str) -> list[int]:
    """PIDs of processes whose command line holds ``marker`` (this test's Ray temp dir)."""
    import psutil

    out = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        if marker in cmd and proc.info["pid"] != os.getpid():
            out.append(proc.info["pid"])
    return out


def test_stopped_driver_restarted_with_the_same_name_continues(
    pretrain_snapshot, tiny_pretrain_overrides, tmp_path
):
    every = 5
    sets = [
        *tiny_pretrain_overrides,
        "pretrain.num_workers=1",
        "pretrain.batch_size=8",
        "pretrain.accum_steps=2",  # slower steps: the kill lands well before the end
        "pretrain.max_steps=30",
        f"pretrain.checkpoint_every_steps={every}",
        "pretrain.ray_dashboard=false",
    ]
    cmd = [
        sys.executable,
        "-m",
        "a2mae",
        "pretrain",
        "--snapshot",
        str(pretrain_snapshot),
        "--name",
        "driver",
        "--no-register",
    ]
    cmd += [arg for s in sets for arg in ("--set", s)]
    ray_tmp = tempfile.mkdtemp(prefix="a2r")  # short: Ray's socket paths must stay < 108 chars
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    run_dir = tmp_path / "runs" / "driver"
    log = (tmp_path / "first.log").open("w")
    try:
        first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        target = run_dir / f"checkpoint_{2 * every:08d}"
        while not target.is_dir() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert target.is_dir()
        first.send_signal(signal.SIGKILL)  # the whole run stops: the driver and, with it, its Ray
        first.wait(timeout=30)
        time.sleep(3)
        for pid in _own_processes(ray_tmp):  # anything Ray left behind is ours to stop
            os.kill(pid, signal.SIGKILL)
        done = sorted(p.name for p in run_dir.glob("checkpoint_*"))
        assert f"checkpoint_{30:08d}" not in done, "the run finished before it was stopped"

        second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    finally:
        log.close()
        for pid in _own_processes(ray_tmp):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert "run driver: 30/30 steps (resumed; 2 starts)" in second.stdout

    from a2mae.pretrain.state import read_train_state

    state = read_train_state(run_dir / f"checkpoint_{30:08d}")
    assert next(a["start_step"] for a in state.attempts) == 0
    assert state.attempts[1]["start_step"] >= 2 * every  # continued, not started over
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    runs = client.search_runs(
        [client.get_experiment_by_name("a2mae-pretrain").experiment_id],
        filter_string="tags.`a2mae.run_name` = 'driver'",
    )
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert _history(uri, runs[0].info.run_id) == list(range(1, 31))
