"""Checkpoints: safetensors weights + JSON metadata; exact round trip; never unpickles."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from a2mae.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_meta, save_checkpoint
from a2mae.testing.batches import synthetic_batch, synthetic_image
from a2mae.testing.models import build_model

SMALL = {
    "depth": 2,
    "embed_dim": 64,
    "num_heads": 2,
    "decoder_embed_dim": 32,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
}
NORM = {"S2": {"B02": {"mean": 0.1, "std": 0.05}}, "L8": {"B2": {"mean": 0.09, "std": 0.04}}}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model("a2mae_vit_tiny_p8_t96", sensors=["S2", "L8", "GF2"], mask_ratio=0.6, **SMALL)
    # move weights away from the initialisation so the round trip is meaningful
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return m.eval()


def test_round_trip_reproduces_outputs_exactly(tmp_path, model):
    path = save_checkpoint(tmp_path / "enc", model, norm_stats=NORM, extra={"step": 12, "dvc_md5": "abc"})
    assert path.name == "enc.safetensors" and path.is_file()
    loaded, meta = load_checkpoint(path)
    assert meta["variant"] == "a2mae_vit_tiny_p8_t96" and meta["norm_stats"] == NORM
    assert meta["extra"] == {"step": 12, "dvc_md5": "abc"} and meta["a2mae_version"]
    assert set(meta["sensors"]) == {"S2", "L8", "GF2"} and meta["config"]["mask_ratio"] == 0.6
    assert loaded.config == model.config and not loaded.training
    batch = synthetic_batch([["S2", "L8"], ["GF2", "S2"]], size=48)
    o1 = model(batch, generator=torch.Generator().manual_seed(5))
    o2 = loaded(batch, generator=torch.Generator().manual_seed(5))
    assert torch.equal(o1.loss, o2.loss) and torch.equal(o1.pred, o2.pred)
    imgs = [synthetic_image("S2", size=48), synthetic_image("GF2", size=48, keep_metadata=False)]
    f1, f2 = model.forward_features(imgs), loaded.forward_features(imgs)
    assert torch.equal(f1.pooled, f2.pooled) and all(
        torch.equal(a, b) for a, b in zip(f1.maps, f2.maps, strict=True)
    )


def test_loading_does_not_need_the_local_registry(tmp_path, model, monkeypatch):
    path = save_checkpoint(tmp_path / "m.safetensors", model, norm_stats={})
    from a2mae.sensors import registry as sensor_registry

    def boom(*a, **k):
        raise AssertionError("the local registry was consulted")

    monkeypatch.setattr(sensor_registry, "get_registry", boom)
    monkeypatch.setattr(sensor_registry, "load_registry", boom)
    loaded, _ = load_checkpoint(path)
    assert loaded.sensor_ids == ["S2", "L8", "GF2"]


def test_metadata_is_plain_json_in_the_header(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.safetensors", model, norm_stats=NORM)
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + header_len])
    doc = json.loads(header["__metadata__"]["a2mae"])
    assert doc["format"] == "a2mae-checkpoint" and doc["config"]["name"] == "a2mae_vit_tiny_p8_t96"
    assert read_checkpoint_meta(path)["variant"] == doc["variant"]


def test_errors(tmp_path, model):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(junk)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(CheckpointError, match="not an a2mae checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(tmp_path / "x", model, norm_stats={"bad": object()})
    assert not list(tmp_path.glob("x*"))  # nothing half-written
    # weights that do not fit the config
    path = save_checkpoint(tmp_path / "m", model, norm_stats={})
    meta = read_checkpoint_meta(path)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("heads.")}
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad), metadata={"a2mae": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(bad)
