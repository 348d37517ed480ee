"""The plain-MAE arm: pre-trained in-process on a snapshot with independent masking and no geo encoding."""

from __future__ import annotations

import pytest

from a2mae.benchmark.arms.encoder import EncoderArm
from a2mae.benchmark.arms.mae import mae_arm, mae_params
from a2mae.benchmark.data import BenchmarkError
from a2mae.config import load_params, params_to_flat
from a2mae.finetune.encoder import EncoderHandle
from a2mae.pretrain.run import PretrainStage
from a2mae.testing.bench import TINY
from a2mae.testing.models import build_model


def _like() -> EncoderArm:
    m = build_model("a2mae_vit_tiny_p8_t96", sensors=["S2", "L8", "GF1", "GF2"], mask_ratio=0.75, **TINY)
    return EncoderArm("encoder", handle=EncoderHandle(m, "x"))


def test_mae_params_switch_off_what_a2mae_adds():
    base = load_params(overrides=["benchmark.mae_steps=7"])
    p, name = mae_params(base.benchmark, PretrainStage.of(base), _like())
    assert p.model.masking == "independent" and p.model.geo_encoding is False
    assert (
        p.pretrain.max_steps == 7
        and p.pretrain.num_workers == 0
        and p.pretrain.model_overrides["embed_dim"] == 32
    )
    assert (
        name.startswith("benchmark-mae-")
        and mae_params(base.benchmark.model_copy(update={"mae_steps": 8}), PretrainStage.of(base), _like())[1]
        != name
    )
    # the flattened lineage is that of the parameters with the plain MAE's model and pre-training
    full = base.model_copy(update={"model": p.model, "pretrain": p.pretrain})
    assert p.flat == params_to_flat(full) and p.flat["pretrain.run_name"] == name


def test_mae_arm_without_snapshot_is_one_line(tmp_path):
    with pytest.raises(BenchmarkError, match="is not a snapshot"):
        p = load_params(overrides=[f"benchmark.mae_snapshot={tmp_path}"])
        mae_arm(p.benchmark, PretrainStage.of(p), _like())


@pytest.mark.slow
def test_mae_arm_pretrains_on_a_snapshot(tiny_snapshot, tiny_pretrain_overrides):
    over = [*tiny_pretrain_overrides, "benchmark.mae_steps=2", f"benchmark.mae_snapshot={tiny_snapshot}"]
    p = load_params(overrides=over)
    arm = mae_arm(p.benchmark, PretrainStage.of(p), _like())
    assert arm.name == "mae" and arm.lineage["steps"] == "2" and arm.model.config.geo_encoding is False
    assert arm.model.config.masking == "independent"
