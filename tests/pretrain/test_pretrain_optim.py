"""Optimiser parameter groups, learning-rate scaling and the cosine schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from a2mae.pretrain.optim import BETAS, build_optimizer, param_groups, scaled_lr
from a2mae.pretrain.schedule import CosineSchedule


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 8)
        self.norm = nn.LayerNorm(8)
        self.pos_table = nn.Parameter(torch.zeros(10, 8))
        self.cls_token = nn.Parameter(torch.zeros(1, 8))
        self.emb = nn.Embedding(5, 8)
        self.frozen = nn.Parameter(torch.zeros(3, 3), requires_grad=False)

    def no_weight_decay(self) -> set[str]:
        return {"pos_table", "emb"}


def _names(model: nn.Module, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_decay_groups_follow_the_mae_rules():
    m = _Net()
    groups = {g["name"]: g for g in param_groups(m, 0.05)}
    assert _names(m, groups["decay"]) == {"proj.weight"}
    assert _names(m, groups["no_decay"]) == {
        "proj.bias",
        "norm.weight",
        "norm.bias",
        "pos_table",
        "cls_token",
        "emb.weight",
    }
    assert groups["decay"]["weight_decay"] == 0.05 and groups["no_decay"]["weight_decay"] == 0.0


def test_real_model_every_trainable_parameter_in_exactly_one_group():
    from a2mae.testing.models import build_model

    m = build_model(
        "a2mae_vit_tiny_p8_t96",
        depth=1,
        embed_dim=32,
        num_heads=2,
        decoder_embed_dim=32,
        decoder_depth=1,
        decoder_num_heads=2,
    )
    groups = {g["name"]: g for g in param_groups(m, 0.1)}
    decay, no_decay = _names(m, groups["decay"]), _names(m, groups["no_decay"])
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert decay | no_decay == trainable and not decay & no_decay
    assert set(m.no_weight_decay()) & trainable <= no_decay
    params = dict(m.named_parameters())
    assert all(params[n].ndim >= 2 for n in decay)
    assert {n for n in trainable if params[n].ndim < 2} <= no_decay
    assert decay, "the encoder and decoder weight matrices are decayed"


def test_adamw_betas_and_linear_lr_scaling():
    opt = build_optimizer(_Net(), lr=1e-3, weight_decay=0.05)
    assert isinstance(opt, torch.optim.AdamW)
    assert all(tuple(g["betas"]) == BETAS == (0.9, 0.95) for g in opt.param_groups)
    assert scaled_lr(1.5e-4, 256) == pytest.approx(1.5e-4)
    assert scaled_lr(1.5e-4, 64) == pytest.approx(1.5e-4 / 4)


def test_schedule_values():
    s = CosineSchedule(peak_lr=1.0, total_steps=110, warmup_steps=10, min_lr=0.1)
    assert s(1) == pytest.approx(0.1)  # warm-up 1/10 of peak
    assert s(5) == pytest.approx(0.5)
    assert s(10) == pytest.approx(1.0)  # peak at the end of warm-up
    assert s(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert s(110) == pytest.approx(0.1)  # last step at min_lr
    assert s(500) == pytest.approx(0.1) and s(0) == pytest.approx(0.1)  # clamped
    assert CosineSchedule.from_fraction(2.0, 100, 0.05).warmup_steps == 5
    assert CosineSchedule(1.0, 4, 0)(1) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    with pytest.raises(ValueError):
        CosineSchedule(1.0, 0)
    with pytest.raises(ValueError):
        CosineSchedule(1.0, 5, 6)


@settings(max_examples=60, deadline=None)
@given(
    peak=st.floats(1e-6, 1.0),
    total=st.integers(1, 400),
    frac=st.floats(0.0, 0.9),
    min_ratio=st.floats(0.0, 1.0),
)
def test_schedule_is_bounded_rises_then_falls(peak, total, frac, min_ratio):
    s = CosineSchedule.from_fraction(peak, total, frac, min_lr=peak * min_ratio)
    values = [s(i) for i in range(1, total + 1)]
    eps = 1e-12
    assert all(min(s.min_lr, peak) - eps <= v <= peak + eps for v in values[s.warmup_steps :])
    assert all(0 < v <= peak + eps for v in values[: s.warmup_steps])
    warm, decay = values[: s.warmup_steps], values[s.warmup_steps :]
    assert all(a <= b + eps for a, b in itertools.pairwise(warm))
    assert all(a >= b - eps for a, b in itertools.pairwise(decay))
    assert values[-1] == pytest.approx(s.min_lr if total > s.warmup_steps else peak)
