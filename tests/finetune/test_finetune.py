"""Fine-tuning: heads, lr decay, protocols, metrics, the three tasks end to end with MLflow, the report."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from a2mae import tasks
from a2mae.cli import main
from a2mae.config import load_params
from a2mae.finetune.encoder import EncoderHandle
from a2mae.finetune.metrics import TaskMetrics, confusion_png
from a2mae.finetune.optim import param_groups
from a2mae.finetune.run import FinetuneStage, compare_scratch, finetune
from a2mae.finetune.samples import make_change_pairs
from a2mae.models.downstream import DownstreamModel, ModelSpec
from a2mae.models.heads import UPerNetDecoder, pyramid_scales
from a2mae.registry.downstream import load_model
from a2mae.testing.models import build_model

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "depth": 2,
    "embed_dim": 32,
    "num_heads": 2,
    "decoder_embed_dim": 32,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
    "sensors": ["S2"],
}


def _tiny_model(task="classification", protocol="full", k=3, size=16) -> DownstreamModel:
    torch.manual_seed(0)
    enc = build_model("a2mae_vit_tiny_p8_t96", **TINY)
    bands = [b for kb in enc.vocab.key_bands for b in kb]
    spec = ModelSpec(
        task,
        [str(i) for i in range(k)],
        False,
        "S2",
        bands,
        [size, size],
        10.0,
        [1000.0] * 10,
        [300.0] * 10,
        protocol,
        16,
        255,
        "scratch",
        enc.config.model_dump(mode="json"),
        enc.sensor_entries,
    )
    return tasks.get(task).build_model(enc, spec)


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A (randomly initialised) tiny A²-MAE saved as an a2mae checkpoint: stands in for a pre-trained one."""
    from a2mae.checkpoint import save_checkpoint

    torch.manual_seed(1)
    model = build_model("a2mae_vit_tiny_p8_t96", **TINY)
    return save_checkpoint(tmp_path / "encoder.safetensors", model, norm_stats={}, extra={"step": 7})


# -------------------------------------------------------------------------------------------- heads
@settings(max_examples=12, deadline=None)
@given(levels=st.integers(1, 4), h=st.integers(1, 6), w=st.integers(1, 6), k=st.integers(2, 5))
def test_upernet_maps_any_token_grid_to_the_input_size(levels, h, w, k):
    dec = UPerNetDecoder(dim=8, levels=levels, channels=8, num_classes=k)
    maps = [torch.randn(2, 8, h, w) for _ in range(levels)]
    out = dec(maps, (h * 8, w * 8))
    assert out.shape == (2, k, h * 8, w * 8)
    assert len(pyramid_scales(levels)) == levels and pyramid_scales(levels)[-1] in (1.0, 0.5)


def test_layer_decay_and_protocols():
    full = _tiny_model(protocol="full")
    groups = param_groups(full, lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    depth = full.encoder.config.depth
    scales = sorted({g["lr_scale"] for g in groups})
    assert scales == [0.5 ** (depth + 1 - i) for i in range(depth + 2)]  # embeddings .. head
    assert all(g["weight_decay"] == 0.0 for g in groups if all(p.ndim < 2 for p in g["params"]))
    probe = _tiny_model(protocol="linear_probe")
    pg = param_groups(probe, 1e-3, 0.05, 0.5)
    assert sum(p.numel() for g in pg for p in g["params"]) == sum(p.numel() for p in probe.head.parameters())
    probe.train()
    assert probe.head.training and not probe.encoder.training  # frozen encoder: no dropout/drop-path


@pytest.mark.parametrize("protocol", ["linear_probe", "full"])
def test_linear_probe_freezes_the_encoder_full_updates_it(cls_dataset, protocol):
    from a2mae.finetune import engine
    from a2mae.finetune.datasets import open_dataset

    root = cls_dataset({"train": ["a", "b", "c", "a"], "test": ["a"]})
    ds = open_dataset("classification", root, "train", sensor="S2")
    model = _tiny_model(protocol=protocol)
    enc0 = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head0 = {k: v.clone() for k, v in model.head.state_dict().items()}
    log = engine.train(
        model,
        ds,
        steps=2,
        batch_size=2,
        lr=1e-2,
        weight_decay=0.0,
        layer_decay=0.75,
        warmup_fraction=0.0,
        seed=0,
    )
    assert log.steps == 2 and all(np.isfinite(log.losses))
    enc_changed = any(not torch.equal(enc0[k], v) for k, v in model.encoder.state_dict().items())
    assert enc_changed == (protocol == "full")
    assert any(not torch.equal(head0[k], v) for k, v in model.head.state_dict().items())


# ------------------------------------------------------------------------------------------ metrics
def test_metrics_known_values():
    m = TaskMetrics("single_label", 3)
    m.update(torch.eye(3)[[0, 1, 2, 0]] * 5, torch.tensor([0, 1, 1, 0]))
    r = m.compute()
    assert r["oa"] == pytest.approx(0.75)
    assert r["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert m.confusion().tolist() == [[2, 0, 0], [0, 1, 1], [0, 0, 0]]

    ml = TaskMetrics("multi_label", 3)
    logits = torch.tensor([[3.0, -3, 0], [-3, 3, 0], [3, 3, 0]])
    ml.update(logits, torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 0]]))
    assert ml.compute()["map"] == pytest.approx(1.0)  # class 2 has no positive: left out, not counted as 0

    seg = TaskMetrics("segmentation", 2, ignore_index=255)
    pred = torch.zeros(1, 2, 2, 2)
    pred[0, 1, 0, :] = 1  # top row class 1, bottom row class 0
    seg.update(pred, torch.tensor([[[1, 0], [0, 255]]]))
    rs = seg.compute()
    assert rs["miou"] == pytest.approx((1 / 2 + 1 / 2) / 2) and rs["oa"] == pytest.approx(2 / 3)

    cd = TaskMetrics("change_detection", 2)
    cd.update(pred, torch.tensor([[[1, 0], [1, 0]]]))  # TP 1, FP 1, FN 1
    rc = cd.compute()
    assert rc["change_f1"] == pytest.approx(1 / 2) and rc["change_iou"] == pytest.approx(1 / 3)
    png = confusion_png(np.array([[3, 1], [0, 2]]), ["a", "b"], "t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_multilabel_figures_per_class_curves_and_counts():
    ml = TaskMetrics("multi_label", 3)
    logits = torch.tensor([[3.0, -3, 0], [-3, 3, 0], [3, 3, 0], [-3, -3, -3]])
    target = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 0], [1, 0, 0]])
    ml.update(logits, target)
    counts = ml.label_confusion()  # columns TP, FP, FN, TN; positive above 0.5 (logit 0 is negative)
    assert counts.tolist() == [[2, 0, 1, 1], [2, 0, 0, 2], [0, 0, 0, 4]]
    curves = ml.pr_curves()
    assert [c[2] is None for c in curves] == [False, False, True]  # class 2: no positive, no AP
    assert curves[1][2] == pytest.approx(1.0) and 0 < curves[0][2] <= 1
    precision, recall, _ = curves[0]
    assert precision.shape == recall.shape and recall.max() == pytest.approx(1.0)
    figs = ml.figures(["forest", "water", "urban"], "multi-label on test")
    assert set(figs) == {"pr_curves.png", "label_confusion.png"}
    assert all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in figs.values())
    single = TaskMetrics("single_label", 2)
    single.update(torch.tensor([[2.0, 0], [0, 2]]), torch.tensor([0, 1]))
    assert set(single.figures(["a", "b"], "t")) == {"confusion.png"}
    assert TaskMetrics("multi_label", 2).figures(["a", "b"], "t") == {}


# ---------------------------------------------------------------------- the three tasks, end to end
def _data(task: str, tmp_path: Path) -> Path:
    if task == "classification":
        return REPO / "data" / "samples" / "bigearthnet"
    if task == "segmentation":
        return REPO / "data" / "samples" / "segmentation"
    make_change_pairs(tmp_path / "cd", n_train=4, n_val=1, n_test=2, size=32)
    return tmp_path / "cd"


@pytest.mark.parametrize("task", ["classification", "segmentation", "change_detection"])
def test_finetune_register_and_load_back(task, tmp_path, mlflow_tmp, downstream_params):
    p = downstream_params("finetune.protocol=full")
    o = finetune(p, task=task, data=_data(task, tmp_path), progress=False)
    assert o.steps == 2 and o.version is not None and o.version.name == f"a2mae-{task.replace('_', '-')}"
    assert 0.0 <= o.score <= 1.0 and o.metric in o.metrics
    x = torch.from_numpy(np.random.default_rng(0).uniform(0, 4000, (2, *_shape(o.model))).astype(np.float32))
    loaded = mlflow.pyfunc.load_model(o.version.model_uri)  # loader_module of the installed a2mae
    safe = load_model(o.version.model_uri)  # pickle-free rebuild from spec.json + safetensors
    with torch.no_grad():
        ref = o.model.eval()(x)
        assert torch.equal(safe(x), ref)
    assert np.array_equal(loaded.predict(x.numpy()), ref.numpy())
    c = mlflow.MlflowClient()
    mv = c.get_model_version(o.version.name, str(o.version.version))
    assert mv.tags["a2mae.split_hash"] == o.split_hash and mv.tags["a2mae.primary_metric"] == o.metric
    assert str(c.get_model_version_by_alias(o.version.name, "challenger").version) == str(mv.version)
    run = c.get_run(o.run_id)
    assert run.data.tags["a2mae.task"] == task and "a2mae.git_commit" in run.data.tags
    assert f"test_{o.metric}" in run.data.metrics
    assert len(c.get_metric_history(o.run_id, "train_loss")) == 2
    figures = {a.path for a in c.list_artifacts(o.run_id) if a.path.endswith(".png")}
    multilabel = task == "classification"  # the BigEarthNet samples are multi-label
    assert figures == ({"pr_curves.png", "label_confusion.png"} if multilabel else {"confusion.png"})
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith(f"Fine-tuning of {task} (full)") and o.split in note
    info = mlflow.models.get_model_info(o.version.model_uri)
    assert info.signature is not None and info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"][0] == -1


def _shape(model: DownstreamModel) -> tuple[int, ...]:
    c, (h, w) = len(model.spec.bands), model.spec.size
    return (2, c, h, w) if model.spec.task == "change_detection" else (c, h, w)


def test_finetune_from_registered_encoder_records_lineage(
    tmp_path, mlflow_tmp, downstream_params, tiny_checkpoint
):
    from a2mae.registry.encoder import log_encoder

    with mlflow.start_run() as run:
        pass
    _, version = log_encoder(
        mlflow_tmp, run.info.run_id, tiny_checkpoint, registered_name="a2mae-encoder", metadata={}, step=7
    )
    mlflow.MlflowClient().set_registered_model_alias("a2mae-encoder", "champion", version)
    p = downstream_params("finetune.encoder=models:/a2mae-encoder@champion", "finetune.max_steps=1")
    h = FinetuneStage.of(p).load_encoder(p.finetune.encoder)
    assert h.pretrained and h.info["registered_version"] == version and h.info["checkpoint"]["step"] == 7
    o = finetune(
        p,
        task="segmentation",
        data=REPO / "data" / "samples" / "segmentation",
        register=False,
        progress=False,
    )
    tags = mlflow.MlflowClient().get_run(o.run_id).data.tags
    assert tags["a2mae.encoder"] == "models:/a2mae-encoder@champion"
    assert (
        tags["a2mae.encoder_registered_version"] == version
        and tags["a2mae.encoder_run_id"] == run.info.run_id
    )
    assert o.version is None


def test_same_seed_same_budget_same_result(cls_dataset, downstream_params):
    root = cls_dataset({"train": ["a", "b", "a", "b"], "test": ["a", "b"]})
    p = downstream_params()
    runs = [finetune(p, task="classification", data=root, track=False, progress=False) for _ in range(2)]
    assert runs[0].metrics == runs[1].metrics and runs[0].final_loss == runs[1].final_loss


def test_compare_scratch_report(tmp_path, mlflow_tmp, downstream_params, tiny_checkpoint):
    p = downstream_params(
        f"finetune.encoder={tiny_checkpoint}", "finetune.max_steps=1", "finetune.protocol=full"
    )
    res = compare_scratch(
        p, task="segmentation", data=REPO / "data" / "samples" / "segmentation", progress=False
    )
    assert [(o.protocol, o.pretrained) for o in res.outcomes] == [
        ("linear_probe", True),
        ("linear_probe", False),
        ("full", True),
        ("full", False),
    ]
    assert len({o.steps for o in res.outcomes}) == 1 and len({o.split_hash for o in res.outcomes}) == 1
    text = res.report_path.read_text()
    assert "| protocol | metric | pre-trained | scratch | difference |" in text
    assert text.count("| linear_probe |") == 3 and text.count("| full |") == 3  # miou, oa, macro_f1
    pre = next(o for o in res.outcomes if o.protocol == "full" and o.pretrained)
    assert f"{pre.metrics['miou']:.4f}" in text
    arts = [a.path for a in mlflow.MlflowClient().list_artifacts(res.run_id)]
    assert "report.md" in arts
    registered = [o for o in res.outcomes if o.version is not None]
    assert len(registered) == 1 and registered[0].pretrained and registered[0].protocol == "full"


def test_cli_finetune_bad_inputs_are_one_line(tmp_path, capsys, mlflow_tmp):
    rc = main(["finetune", "--task", "segmentation", "--data", str(tmp_path / "missing"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "dataset folder not found" in err
    seg = str(REPO / "data" / "samples" / "segmentation")
    rc = main(
        ["finetune", "--task", "segmentation", "--data", seg, "--encoder", str(tmp_path / "nope.safetensors")]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "no such checkpoint file" in err
    rc = main(["finetune", "--task", "detection"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "finetune.task" in err and err.count("\n") == 0
    rc = main(["finetune", "--task", "change_detection"])
    assert rc == 2 and "no dataset for change_detection" in capsys.readouterr().err


def test_only_the_pickle_free_serialization_is_offered(mlflow_tmp):
    from a2mae.config import ConfigError
    from a2mae.registry.downstream import log_model
    from a2mae.registry.errors import RegistryError

    with mlflow.start_run(), pytest.raises(RegistryError, match=r"only 'safetensors' is offered"):
        log_model(_tiny_model(), None, "pickle")
    with pytest.raises(ConfigError, match=r"finetune\.serialization"):
        load_params(overrides=["finetune.serialization=pickle"])


def test_encoder_handle_scratch_uses_model_params(downstream_params):
    h = FinetuneStage.of(downstream_params()).load_encoder("scratch")
    assert not h.pretrained and h.model.config.depth == 2 and isinstance(h, EncoderHandle)


@pytest.mark.slow
def test_change_detection_learns_on_generated_pairs(tmp_path, downstream_params):
    """The siamese encoder + difference decoder actually learns: change F1 from 0 to well above chance."""
    make_change_pairs(tmp_path / "cd", n_train=16, n_val=1, n_test=4, size=32)
    setup = (
        "finetune.epochs=1000",
        "finetune.batch_size=8",
        "finetune.lr=3.0e-3",
        "finetune.decoder_channels=32",
        "finetune.protocol=full",
    )
    before = finetune(
        downstream_params(*setup), task="change_detection", data=tmp_path / "cd", track=False, progress=False
    )
    after = finetune(
        downstream_params(*setup, "finetune.max_steps=60"),
        task="change_detection",
        data=tmp_path / "cd",
        track=False,
        progress=False,
    )
    assert after.final_loss < 0.5 * before.final_loss
    assert after.metrics["change_f1"] > 0.5 > before.metrics["change_f1"]
