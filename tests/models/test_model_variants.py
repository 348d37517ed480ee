"""Variant registry, model config, no-weight-decay names and the `a2mae models` verb."""

from __future__ import annotations

import json

import pytest
import torch

from a2mae.cli import main
from a2mae.config import load_params
from a2mae.models import (
    A2MAEConfig,
    ModelConfigError,
    UnknownModelError,
    create_model,
    create_model_from_params,
    list_models,
    model_config,
)


def test_registry_lists_tiny_small_base_with_patch_and_tile_in_the_name():
    names = list_models()
    for size in ("tiny", "small", "base"):
        assert f"a2mae_vit_{size}_p8_t96" in names
    for name in names:
        c = model_config(name)
        assert f"_p{c.patch_size}_t{c.tile_size}" in name


@pytest.mark.parametrize("name", list_models())
def test_every_variant_constructs(name):
    with torch.device("meta"):
        model = create_model(name)
    n = sum(p.numel() for p in model.parameters())
    enc = sum(p.numel() for k, p in model.named_parameters() if k.startswith("blocks."))
    c = model.config
    assert enc == c.depth * (12 * c.embed_dim**2 + 13 * c.embed_dim)  # ViT blocks, MLP ratio 4
    assert n > enc
    if name == "a2mae_vit_base_p8_t96":
        assert 85e6 < enc < 86e6  # ViT-Base


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownModelError, match="a2mae_vit_tiny_p8_t96") as err:
        create_model("vit_gigantic")
    assert "vit_gigantic" in str(err.value) and "\n" not in str(err.value)


def test_bad_overrides():
    with pytest.raises(ModelConfigError, match="unknown option 'mask_ration'"):
        create_model("a2mae_vit_tiny_p8_t96", mask_ration=0.5)
    with pytest.raises(ModelConfigError, match="mask_ratio"):
        create_model("a2mae_vit_tiny_p8_t96", mask_ratio=1.5)
    with pytest.raises(ModelConfigError, match="divisible"):
        create_model("a2mae_vit_tiny_p8_t96", embed_dim=100, num_heads=3)


def test_config_defaults_match_params_yaml():
    """params.yaml is the source of defaults; the model config must agree with its model section."""
    model_params = load_params().model.model_dump()
    fields = A2MAEConfig.model_fields
    for key, value in model_params.items():
        assert key in fields, f"params.yaml model.{key} is not a model option"
        if key != "name":
            assert fields[key].default == value, key


def test_create_model_from_params_applies_every_key():
    p = load_params(overrides=["model.mask_ratio=0.6", "model.masking=independent"])
    with torch.device("meta"):
        model = create_model_from_params(p.model, depth=2)
    assert (
        model.config.mask_ratio == 0.6 and model.config.masking == "independent" and model.config.depth == 2
    )


def test_config_is_json_serialisable_and_rebuilds():
    c = model_config("a2mae_vit_small_p8_t96", sensors=["S2", "L8"])
    again = A2MAEConfig.model_validate(json.loads(json.dumps(c.model_dump(mode="json"))))
    assert again == c


def test_no_weight_decay_names():
    with torch.device("meta"):
        model = create_model("a2mae_vit_tiny_p8_t96", depth=1)
    names = model.no_weight_decay()
    params = dict(model.named_parameters())
    assert names <= set(params)
    assert {
        "mask_token",
        "meta_embed.band_missing",
        "meta_embed.spec.weight",
        "meta_embed.unknown_loc",
    } <= names
    assert "blocks.0.norm1.weight" in names and "blocks.0.attn.qkv.bias" in names
    assert "blocks.0.attn.qkv.weight" not in names and "patch_embed.proj.S2-VNIR.weight" not in names


def test_models_verb(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in rows]
    assert set(names) == set(list_models())
    base = rows[names.index("a2mae_vit_base_p8_t96")]
    assert base["patch"] == 8 and base["tile"] == 96 and 100 < base["params_m"] < 130
    assert main(["models"]) == 0
    assert "a2mae_vit_tiny_p8_t96" in capsys.readouterr().out


def test_tiny_variant_trains_a_step_at_full_size():
    from a2mae.testing.batches import synthetic_batch

    torch.manual_seed(0)
    model = create_model("a2mae_vit_tiny_p8_t96")
    out = model(synthetic_batch([["S2", "L8"], ["GF2"]]), generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.num_tokens == 144 * (3 + 2 + 1)
    assert model.patch_embed.proj["S2-VNIR"].weight.grad is not None
