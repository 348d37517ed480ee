"""Training checkpoints (safetensors + JSON): round trip, completeness check, retention."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from a2mae.pretrain.context import LocalContext, checkpoint_name, checkpoint_step
from a2mae.pretrain.engine import Engine
from a2mae.pretrain.optim import build_optimizer
from a2mae.pretrain.state import (
    MODEL_FILE,
    TRAIN_STATE,
    TrainState,
    is_complete,
    load_training_checkpoint,
    save_training_checkpoint,
)
from a2mae.types import collate_sets

TINY = dict(depth=1, embed_dim=32, num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)


def _model():
    from a2mae.testing.models import build_model

    torch.manual_seed(0)
    return build_model("a2mae_vit_tiny_p8_t96", **TINY)


@pytest.fixture(scope="module")
def trained(pretrain_snapshot):
    """A tiny model and its optimiser after two real steps (so AdamW has moments)."""
    from a2mae.stssd.dataset import StssdDataset

    ds = StssdDataset(pretrain_snapshot)
    model = _model()
    opt = build_optimizer(model, 1e-3, 0.05)
    eng = Engine(model=model, optimizer=opt, lr_at=lambda s: 1e-3, sensors=model.sensor_ids)
    for step in (1, 2):
        eng.step([collate_sets([ds[i] for i in range(4 * step, 4 * step + 4)])], step=step)
    return model, opt, ds


def test_round_trip_restores_weights_optimiser_and_progress(trained, tmp_path: Path):
    model, opt, ds = trained
    state = TrainState(global_step=2, epoch=0, epoch_step=2, total_steps=9, attempts=[{"attempt": 1}])
    d = save_training_checkpoint(
        tmp_path / "ck", model=model, optimizer=opt, state=state, norm_stats=ds.stats, model_extra={"k": 1}
    )
    assert is_complete(d)
    # The model file is a stand-alone a2mae checkpoint (for fine-tuning and export).
    from a2mae.checkpoint import load_checkpoint

    alone, meta = load_checkpoint(d / MODEL_FILE)
    assert alone.config.depth == 1
    assert meta["extra"] == {"k": 1} and meta["norm_stats"] == ds.stats

    fresh = _model()
    fresh_opt = build_optimizer(fresh, 1e-3, 0.05)
    got = load_training_checkpoint(d, model=fresh, optimizer=fresh_opt)
    assert got == state
    for (k, v), w in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, rtol=0, atol=0, msg=k)
    sd_a, sd_b = opt.state_dict(), fresh_opt.state_dict()
    assert sd_a["param_groups"] == sd_b["param_groups"]
    assert sd_a["state"].keys() == sd_b["state"].keys() and sd_a["state"]
    for idx, st in sd_a["state"].items():
        for name, value in st.items():
            torch.testing.assert_close(value, sd_b["state"][idx][name], rtol=0, atol=0)


def test_truncated_or_partial_checkpoint_is_not_complete(trained, tmp_path: Path):
    model, opt, _ = trained
    d = save_training_checkpoint(tmp_path / "ck", model=model, optimizer=opt, state=TrainState())
    files = json.loads((d / TRAIN_STATE).read_text())["files"]
    assert set(files) == {MODEL_FILE, "optimizer.safetensors", "optimizer.json"}
    blob = (d / MODEL_FILE).read_bytes()
    (d / MODEL_FILE).write_bytes(blob[: len(blob) // 2])
    assert not is_complete(d)
    (d / MODEL_FILE).write_bytes(blob)
    assert is_complete(d)
    (d / TRAIN_STATE).unlink()
    assert not is_complete(d)


def test_local_context_keeps_the_newest_complete_checkpoints(trained, tmp_path: Path):
    model, opt, _ = trained
    ctx = LocalContext(tmp_path / "run", keep=2)
    with ctx.latest_checkpoint() as none:
        assert none is None
    for step in (2, 4, 6):
        src = save_training_checkpoint(
            tmp_path / f"tmp{step}", model=model, optimizer=opt, state=TrainState(global_step=step)
        )
        ctx.report({}, src, step)
    assert [s for s, _ in ctx.checkpoints()] == [4, 6]
    (tmp_path / "run" / checkpoint_name(8)).mkdir()  # an incomplete copy is ignored
    with ctx.latest_checkpoint() as d:
        assert d is not None and d.name == checkpoint_name(6)
    assert checkpoint_step("checkpoint_00000012") == 12 and checkpoint_step("checkpoint_2026") is None
