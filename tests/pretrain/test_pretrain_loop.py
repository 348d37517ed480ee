"""The training loop in this process (``pretrain.num_workers=0``): resume, step history, registration.

The same loop runs in every Ray Train worker; the Ray runs are in ``test_ray_pretrain.py`` (slow).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from a2mae.config import load_params
from a2mae.pretrain.run import run_pretrain


@pytest.fixture(autouse=True)
def _no_env_tracking(monkeypatch):
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)


def _params(overrides, *extra):
    return load_params(overrides=[*overrides, *extra])


def _history(uri: str, run_id: str, key: str = "train/loss") -> list[int]:
    return [m.step for m in MlflowClient(uri).get_metric_history(run_id, key)]


class _Stop(KeyboardInterrupt):
    """Raised from the progress callback: a Ctrl-C in the middle of a run."""


def _stop_at(step: int):
    def progress(info):
        if info.get("event") == "step" and info["step"] == step:
            raise _Stop

    return progress


def test_resume_continues_the_run_and_registers_a_loadable_encoder(
    pretrain_snapshot, tiny_pretrain_overrides
):
    p1 = _params(tiny_pretrain_overrides, "pretrain.max_steps=3", "pretrain.checkpoint_every_steps=2")
    first = run_pretrain(p1, str(pretrain_snapshot), name="resume")
    assert (first.global_step, first.registered_version, first.resumed) == (3, "1", False)

    p2 = _params(tiny_pretrain_overrides, "pretrain.max_steps=5", "pretrain.checkpoint_every_steps=2")
    second = run_pretrain(p2, str(pretrain_snapshot), name="resume")
    assert second.run_id == first.run_id and second.resumed
    assert [a["start_step"] for a in second.attempts] == [0, 3]
    assert (second.global_step, second.registered_version) == (5, "2")

    uri = p2.registry.tracking_uri
    for key in ("train/loss", "train/lr", "train/sets_per_s"):
        assert _history(uri, second.run_id, key) == [1, 2, 3, 4, 5], key
    client = MlflowClient(uri, registry_uri=uri)
    run = client.get_run(second.run_id)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["a2mae.snapshot_id"] not in ("", "unknown") and tags["a2mae.git_commit"]
    assert tags["a2mae.snapshot_dvc_hash"] == "none"  # not DVC-tracked
    assert run.data.params["pretrain.batch_size"] == "4" and run.data.params["model.mask_ratio"] == "0.75"
    assert any(k.startswith("train/loss_per_sensor/") for k in run.data.metrics)

    # The registered version loads (a2mae and pyfunc) and reproduces the checkpoint's encoder outputs.
    import mlflow.pyfunc

    from a2mae.checkpoint import load_checkpoint
    from a2mae.registry.encoder import load_encoder
    from a2mae.stssd.dataset import StssdDataset
    from a2mae.tracking.client import mlflow_uris

    reference, _ = load_checkpoint(Path(second.checkpoint) / "model.safetensors")
    loaded, meta = load_encoder("models:/a2mae-encoder/2", uri)
    assert meta["extra"]["global_step"] == 5
    mv = client.get_model_version("a2mae-encoder", "2")
    assert mv.run_id == second.run_id
    with mlflow_uris(uri):
        info = mlflow.models.get_model_info("models:/a2mae-encoder/2")
        pyfunc = mlflow.pyfunc.load_model("models:/a2mae-encoder/2")
        local = Path(mlflow.artifacts.download_artifacts("models:/a2mae-encoder/2"))
    assert info.metadata["global_step"] == 5 and "S2" in info.metadata["sensors"]
    assert "torch==2.13.0" in (local / "requirements.txt").read_text()
    ds = StssdDataset(pretrain_snapshot)
    images = [ds[i].images[0] for i in range(3)]
    with torch.no_grad():
        want = reference.forward_features(images).pooled
        torch.testing.assert_close(loaded.forward_features(images).pooled, want, rtol=0, atol=0)
    torch.testing.assert_close(torch.from_numpy(pyfunc.predict(images)), want, rtol=1e-6, atol=1e-6)


def test_interrupted_run_resumes_exactly_where_it_stopped(pretrain_snapshot, tiny_pretrain_overrides):
    common = [*tiny_pretrain_overrides, "pretrain.max_steps=4", "pretrain.checkpoint_every_steps=2"]
    p = load_params(overrides=common)
    straight = run_pretrain(p, str(pretrain_snapshot), name="straight", register=False)

    with pytest.raises(_Stop):
        run_pretrain(p, str(pretrain_snapshot), name="stopped", progress=_stop_at(3), register=False)
    uri = p.registry.tracking_uri
    client = MlflowClient(uri)
    stopped_run = client.search_runs(
        [client.get_experiment_by_name(p.pretrain.experiment).experiment_id],
        filter_string="tags.`a2mae.run_name` = 'stopped'",
    )[0]
    assert stopped_run.info.status == "FAILED"
    assert _history(uri, stopped_run.info.run_id) == [1, 2, 3]

    resumed = run_pretrain(p, str(pretrain_snapshot), name="stopped", register=False)
    assert resumed.run_id == stopped_run.info.run_id
    assert [a["start_step"] for a in resumed.attempts] == [0, 2]  # from the checkpoint of step 2
    assert _history(uri, resumed.run_id) == [1, 2, 3, 4]  # step 3 replayed but not logged twice
    assert resumed.registered_version is None

    # Deterministic: the interrupted-and-resumed run ends with exactly the weights of the straight run.
    from safetensors.torch import load_file

    a = load_file(str(Path(straight.checkpoint) / "model.safetensors"))
    b = load_file(str(Path(resumed.checkpoint) / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert [m.value for m in client.get_metric_history(straight.run_id, "train/loss")] == [
        m.value for m in client.get_metric_history(resumed.run_id, "train/loss")
    ]


def test_short_runs_log_figures_at_the_first_and_last_step_and_describe_themselves(
    pretrain_snapshot, tiny_pretrain_overrides
):
    from a2mae.pretrain.loop import images_at
    from a2mae.tracking.context import NOTE_TAG, run_context

    assert [s for s in range(1, 251) if images_at(s, 250, 100)] == [1, 100, 200, 250]
    assert [s for s in range(1, 21) if images_at(s, 20, 100)] == [1, 20]  # the demo's 20 steps
    assert not any(images_at(s, 20, 0) for s in range(1, 21))

    p = _params(tiny_pretrain_overrides, "pretrain.max_steps=3", "pretrain.log_images_every_steps=100")
    link = {"a2mae.prefect.flow_run_url": "http://127.0.0.1:4200/runs/flow-run/abc"}
    with run_context(link, "Prefect flow run [brave-cat](http://127.0.0.1:4200/runs/flow-run/abc)"):
        res = run_pretrain(p, str(pretrain_snapshot), name="figures", register=False)
    client = MlflowClient(p.registry.tracking_uri)
    shown = [a.path for a in client.list_artifacts(res.run_id, "reconstructions")]
    steps = sorted({Path(f).name.split("_")[1] for f in shown})
    assert steps == ["00000001", "00000003"] and all(f.endswith(".png") for f in shown)
    tags = client.get_run(res.run_id).data.tags
    assert tags["a2mae.prefect.flow_run_url"].endswith("/runs/flow-run/abc")
    note = tags[NOTE_TAG]
    assert note.startswith("A²-MAE pre-training of `") and "[brave-cat](http://" in note
