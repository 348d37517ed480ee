"""The GPU recipe's switches, checked on CPU: params/gpu.yaml loads, attention is SDPA, bf16 autocast runs."""

from __future__ import annotations

from pathlib import Path

import torch

from a2mae.config import load_params
from a2mae.models import layers
from a2mae.testing.batches import synthetic_batch
from a2mae.testing.models import build_model

REPO = Path(__file__).resolve().parents[2]
SMALL = {
    "depth": 2,
    "embed_dim": 64,
    "num_heads": 2,
    "decoder_embed_dim": 32,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
}


def test_the_gpu_overlay_changes_only_what_it_names():
    base, gpu = load_params(), load_params(REPO / "params" / "gpu.yaml")
    assert gpu.model.name == "a2mae_vit_base_p8_t96" and gpu.pretrain.bf16 and gpu.pretrain.use_gpu
    assert gpu.pretrain.batch_size == 256 and gpu.pretrain.num_workers == 1
    assert gpu.tile == base.tile and gpu.data == base.data  # the corpus is the same as on CPU
    assert gpu.model.mask_ratio == base.model.mask_ratio


def test_attention_runs_through_sdpa_and_the_model_trains_under_bf16_autocast(monkeypatch):
    seen: list[torch.dtype] = []
    real = torch.nn.functional.scaled_dot_product_attention

    def counting(q, k, v, *a, **kw):
        seen.append(q.dtype)
        return real(q, k, v, *a, **kw)

    monkeypatch.setattr(layers.F, "scaled_dot_product_attention", counting)
    torch.manual_seed(0)
    model = build_model("a2mae_vit_tiny_p8_t96", **SMALL)
    batch = synthetic_batch([["S2", "L8"], ["S2"], ["GF2", "S2"]], size=48)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # on CUDA: a2mae.pretrain.engine.autocast_context
        out = model(batch, generator=torch.Generator().manual_seed(0))
    out.loss.float().backward()
    assert len(seen) >= SMALL["depth"] + SMALL["decoder_depth"]  # every encoder and decoder block
    assert set(seen) == {torch.bfloat16}  # attention computed in bf16 under autocast
    assert torch.isfinite(out.loss.float())
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
