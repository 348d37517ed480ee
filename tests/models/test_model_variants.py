"""Variant registry, model config, no-weight-decay names and the `a2mae models` verb."""

from __future__ import annotations

import functools
import json

import pytest
import torch

from a2mae.cli import main
from a2mae.config import ModelConfig, load_params
from a2mae.models import (
    A2MAEConfig,
    ModelConfigError,
    UnknownModelError,
    check_chip_size,
    create_model,
    create_model_from_params,
    list_models,
    model_config,
)
from a2mae.sensors import get_registry
from a2mae.testing.batches import synthetic_batch

SETTINGS = load_params().model
REGISTRY = get_registry()


def test_registry_lists_tiny_small_base_with_patch_and_tile_in_the_name():
    names = list_models()
    for size in ("tiny", "small", "base"):
        assert f"a2mae_vit_{size}_p8_t96" in names
    for name in names:
        c = model_config(name, SETTINGS)
        assert f"_p{c.patch_size}_t{c.tile_size}" in name


@pytest.mark.parametrize("name", list_models())
def test_every_variant_constructs(name):
    with torch.device("meta"):
        model = create_model(name, SETTINGS, REGISTRY)
    n = sum(p.numel() for p in model.parameters())
    enc = sum(p.numel() for k, p in model.named_parameters() if k.startswith("blocks."))
    c = model.config
    assert enc == c.depth * (12 * c.embed_dim**2 + 13 * c.embed_dim)  # ViT blocks, MLP ratio 4
    assert n > enc
    if name == "a2mae_vit_base_p8_t96":
        assert 85e6 < enc < 86e6  # ViT-Base


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownModelError, match="a2mae_vit_tiny_p8_t96") as err:
        create_model("vit_gigantic", SETTINGS, REGISTRY)
    assert "vit_gigantic" in str(err.value) and "\n" not in str(err.value)


def test_bad_overrides():
    with pytest.raises(ModelConfigError, match="unknown option 'mask_ration'"):
        create_model("a2mae_vit_tiny_p8_t96", SETTINGS, REGISTRY, mask_ration=0.5)
    with pytest.raises(ModelConfigError, match="mask_ratio"):
        create_model("a2mae_vit_tiny_p8_t96", SETTINGS, REGISTRY, mask_ratio=1.5)
    with pytest.raises(ModelConfigError, match="divisible"):
        create_model("a2mae_vit_tiny_p8_t96", SETTINGS, REGISTRY, embed_dim=100, num_heads=3)


def test_the_model_section_of_params_is_the_model_config():
    """One declaration per option: A2MAEConfig extends the params section and repeats no default."""
    assert issubclass(A2MAEConfig, ModelConfig)
    assert set(load_params().model.model_dump()) == set(ModelConfig.model_fields)
    for key in ModelConfig.model_fields:
        assert A2MAEConfig.model_fields[key].is_required(), f"A2MAEConfig repeats a default for {key}"
    with pytest.raises(ModelConfigError, match="mask_ratio"):  # no hidden default: settings are required
        model_config("a2mae_vit_tiny_p8_t96", SETTINGS.model_copy(update={"mask_ratio": None}))


def test_every_code_knob_is_a_parameter():
    for key in ("g_ref_m", "supersample", "stratified_anchor_mask", "norm_pix_loss", "mlp_ratio"):
        assert key in ModelConfig.model_fields
    p = load_params(overrides=["model.mlp_ratio=2.0", "model.drop_path_rate=0.1", "model.g_ref_m=40"])
    c = model_config(p.model.name, p.model)
    assert (c.mlp_ratio, c.drop_path_rate, c.g_ref_m) == (2.0, 0.1, 40.0)


def test_building_a_model_reads_no_file(monkeypatch):
    import builtins
    import pathlib

    def refuse(*args, **kwargs):
        raise AssertionError("a file was read while building a model")

    from a2mae.sensors import registry as sensor_registry

    monkeypatch.setattr(sensor_registry, "_cached", functools.lru_cache(sensor_registry.load_registry))
    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(pathlib.Path, "read_text", refuse)
    monkeypatch.setattr(pathlib.Path, "read_bytes", refuse)
    with torch.device("meta"):
        model = create_model("a2mae_vit_tiny_p8_t96", SETTINGS, REGISTRY, depth=1)
    assert model.config.depth == 1


def test_chip_size_must_be_a_multiple_of_the_patch():
    check_chip_size(SETTINGS, 96)
    with pytest.raises(ModelConfigError, match=r"tile.chip_size 100 is not a multiple of the patch size 8"):
        check_chip_size(SETTINGS, 100)
    with pytest.raises(ModelConfigError, match="patch size 16"):
        check_chip_size(SETTINGS, 40, patch_size=16)


def test_create_model_from_params_applies_every_key():
    p = load_params(overrides=["model.mask_ratio=0.6", "model.masking=independent"])
    with torch.device("meta"):
        model = create_model_from_params(p.model, REGISTRY, depth=2)
    assert (
        model.config.mask_ratio == 0.6 and model.config.masking == "independent" and model.config.depth == 2
    )


def test_config_is_json_serialisable_and_rebuilds():
    c = model_config("a2mae_vit_small_p8_t96", SETTINGS, sensors=["S2", "L8"])
    again = A2MAEConfig.model_validate(json.loads(json.dumps(c.model_dump(mode="json"))))
    assert again == c


def test_no_weight_decay_names():
    with torch.device("meta"):
        model = create_model("a2mae_vit_tiny_p8_t96", SETTINGS, REGISTRY, depth=1)
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
    torch.manual_seed(0)
    model = create_model("a2mae_vit_tiny_p8_t96", SETTINGS, REGISTRY)
    out = model(synthetic_batch([["S2", "L8"], ["GF2"]]), generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.num_tokens == 144 * (3 + 2 + 1)
    assert model.patch_embed.proj["S2-VNIR"].weight.grad is not None


@pytest.mark.parametrize("name", list_models())
def test_every_variant_runs_forward_and_backward_on_a_tiny_batch(name):
    """Each registered variant at its real width and depth: one set of two small chips."""
    torch.manual_seed(0)
    model = create_model(name, SETTINGS, REGISTRY, sensors=["S2", "L8"])
    out = model(synthetic_batch([["S2", "L8"]], size=16), generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    grads = [p.grad for p in model.blocks[-1].parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
