"""A²-MAE forward pass: shapes for mixed sets, band subsets, missing metadata, gradients, features."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from a2mae.models import ModelInputError
from a2mae.models.layers import Packer, bucket_order
from a2mae.testing.batches import synthetic_batch, synthetic_image, synthetic_set
from a2mae.testing.models import build_model
from a2mae.types import ImageSample, SetBatch, collate_sets

SMALL = {
    "depth": 2,
    "embed_dim": 64,
    "num_heads": 2,
    "decoder_embed_dim": 32,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
}
GROUPS = {"S2": 3, "L8": 2, "GF1": 1, "GF2": 1}


def small_model(**kw):
    torch.manual_seed(0)
    return build_model("a2mae_vit_tiny_p8_t96", **{**SMALL, **kw})


@pytest.fixture(scope="module")
def model():
    return small_model()


sets_st = st.lists(
    st.lists(st.sampled_from(["S2", "L8", "GF1", "GF2"]), min_size=1, max_size=4).filter(
        lambda c: len(set(c)) <= 3
    ),
    min_size=1,
    max_size=3,
)


@settings(max_examples=10, deadline=None)
@given(sets_st, st.sampled_from(["aligned", "complementary", "independent"]))
def test_shapes_for_sets_of_1_to_4_images_from_1_to_3_sensors(comps, policy):
    model = small_model(masking=policy)
    batch = synthetic_batch(comps, size=32)
    out = model(batch, generator=torch.Generator().manual_seed(0))
    n_tok = sum(GROUPS[s] * 16 for c in comps for s in c)
    assert out.num_tokens == n_tok and out.mask.shape == (n_tok,)
    assert out.pred.shape == (n_tok, 4, 64)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert set(out.loss_per_sensor) <= {s for c in comps for s in c}
    assert 0 < out.num_visible_tokens <= n_tok and out.num_decoder_tokens == n_tok
    assert out.anchor.shape == (len(comps),)
    recon = model.reconstruct(batch, out)
    assert len(recon) == len(batch.images)
    for (tgt, inp, rec), im in zip(recon, batch.images, strict=True):
        assert tgt.shape == inp.shape == rec.shape == im.pixels.shape


def test_band_subsets_and_untokenised_bands(model):
    s2 = synthetic_image("S2", bands=["B02", "B03", "B04", "B11"], size=48)  # RedEdge absent, SWIR half
    gf = synthetic_image("GF2", bands=["B1", "B2", "B3"], size=48)  # RGB only
    l8 = synthetic_image("L8", bands=["B1", "B6", "B7"], size=48)  # coastal is in no group: ignored
    batch = collate_sets([dataclasses.replace(synthetic_set(["S2"], size=48), images=[s2, gf, l8])])
    lay = model.tokenize(batch)
    assert lay.num_tokens == 36 * (2 + 1 + 1)  # S2: VNIR + SWIR; GF2: VNIR; L8: SWIR
    out = model(batch, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    # missing bands are excluded from the target, and their "missing" vectors learn
    assert int(lay.chan_valid.sum(1).max()) == 3
    grad = model.meta_embed.band_missing.grad
    rows = {model.vocab.band_keys.index(k) for k in [("S2", "B12"), ("GF2", "B4"), ("S2", "B08")]}
    assert all(grad[r].abs().sum() > 0 for r in rows)
    # the zero-filled channel of the GF2 image is not reconstructed into a real channel
    recon = model.reconstruct(batch, out)
    assert recon[1][2].shape == (3, 48, 48)


def test_missing_metadata_runs_and_trains_the_unknown_path():
    model = small_model(metadata_dropout=0.0)
    batch = synthetic_batch([["S2", "L8"], ["GF1"]], size=48, keep_metadata=False)
    out = model(batch, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    for emb in (model.meta_embed, model.decoder_meta_embed):
        for prm in (emb.unknown_loc, emb.unknown_gsd, emb.unknown_time):
            assert prm.grad is not None and prm.grad.abs().sum() > 0


def test_gradients_reach_every_embedding_table():
    """A batch with every sensor, band subsets and metadata dropout p=0.5 reaches every table row."""
    model = small_model(metadata_dropout=0.5)
    model.train()
    comps = [["S2", "L8", "GF1", "GF2", "NAIP", "TM"], ["S2", "L8"], ["GF2", "S2"], ["L8", "GF1"]]
    batch = synthetic_batch(comps, size=48)
    partial = [
        ("S2", ["B02", "B05", "B11"]),
        ("S2", ["B03", "B06", "B12"]),
        ("L8", ["B2", "B6"]),
        ("L8", ["B3", "B7"]),
        ("GF1", ["B1"]),
        ("GF1", ["B4"]),
        ("GF2", ["B4"]),
        ("GF2", ["B1"]),
        ("NAIP", ["B", "G"]),
        ("NAIP", ["R", "NIR"]),
        ("TM", ["B1", "B5"]),
        ("TM", ["B3", "B7"]),
    ]
    for i, (sensor, bands) in enumerate(partial):
        batch.images.append(synthetic_image(sensor, bands=bands, size=48))
        batch.set_index = torch.cat([batch.set_index, torch.tensor([4 + i // 2])])
    batch.set_ids += [f"partial{i}" for i in range(len(partial) // 2)]
    out = model(batch, generator=torch.Generator().manual_seed(3))
    out.loss.backward()
    no_grad = [
        n
        for n, p in model.named_parameters()
        if ("embed" in n or "mask_token" in n or "heads" in n) and (p.grad is None or p.grad.abs().sum() == 0)
    ]
    assert not no_grad, no_grad
    for emb in (model.meta_embed, model.decoder_meta_embed):
        for table in (emb.band_missing, emb.spec.weight, emb.sensor.weight, emb.period.weight):
            assert bool((table.grad.abs().sum(1) > 0).all()), "a row of an embedding table got no gradient"


def test_packed_attention_equals_per_set_attention(model):
    """Packing sets of different lengths (runs of equal length) changes nothing versus one set at a time."""
    blk = model.blocks[0].eval()
    lens = [5, 9, 5, 3, 9]
    tok_set = torch.repeat_interleave(torch.arange(5), torch.tensor(lens))
    tokens, lengths = bucket_order(tok_set, torch.arange(len(tok_set)), 5)
    x = torch.randn(len(tok_set), 64)
    out = blk(x[tokens], Packer(lengths))
    ref = torch.cat([blk(x[tok_set == b], Packer(torch.tensor([lens[b]]))) for b in range(5)])
    back = torch.empty_like(out)
    back[tokens] = out
    assert torch.allclose(back, ref, atol=1e-5)
    with pytest.raises(ValueError, match="adjacent"):
        Packer(torch.tensor([5, 9, 5]))


def test_fixed_seed_gives_identical_outputs(model):
    batch = synthetic_batch([["S2", "L8"], ["GF2", "S2"]], size=48)
    model.eval()
    o1 = model(batch, generator=torch.Generator().manual_seed(7))
    o2 = model(batch, generator=torch.Generator().manual_seed(7))
    assert torch.equal(o1.mask, o2.mask) and torch.equal(o1.loss, o2.loss)
    o3 = model(batch, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(o1.mask, o3.mask)


def test_decoder_token_cap():
    model = small_model(decoder_token_cap=200)
    batch = synthetic_batch([["S2", "S2", "L8", "L8"], ["GF1"]], size=48)
    out = model(batch, generator=torch.Generator().manual_seed(0))
    lay = out.layout
    per_set = torch.bincount(lay.tok_set[out.decoded], minlength=2)
    assert int(per_set[0]) == 200 and int(per_set[1]) == 36  # capped set / small set untouched
    assert bool(out.decoded[~out.mask].all())  # every visible token reaches the decoder
    assert torch.isfinite(out.loss)


def test_forward_features_single_images_pairs_and_sets(model):
    model.eval()
    d = model.config.embed_dim
    with_meta = [synthetic_image(s, size=48) for s in ("S2", "L8", "GF2")]
    no_meta = [synthetic_image(s, size=64, keep_metadata=False) for s in ("S2", "GF1")]
    f = model.forward_features(with_meta)
    assert f.pooled.shape == (3, d) and len(f.maps) == len(model.config.feature_blocks)
    assert all(m.shape == (3, d, 6, 6) for m in f.maps)
    f = model.forward_features(no_meta)
    assert f.pooled.shape == (2, d) and f.maps[-1].shape == (2, d, 8, 8)
    pairs = [(synthetic_image("S2", size=48), synthetic_image("S2", size=48, when=None)) for _ in range(2)]
    for joint in (False, True):
        f = model.forward_features(pairs, joint=joint)
        assert f.pooled.shape == (2, 2, d) and f.maps[0].shape == (2, 2, d, 6, 6)
    # siamese: a pair's features are those of each image alone
    alone = model.forward_features([pairs[0][1]]).pooled[0]
    assert torch.allclose(model.forward_features(pairs).pooled[0, 1], alone, atol=1e-5)
    sb = synthetic_batch([["S2", "L8"], ["GF1"]], size=48)
    f = model.forward_features(sb)
    assert f.pooled.shape == (3, d) and f.maps[-1].shape == (3, d, 6, 6)


def test_forward_features_rejects_mixed_sizes(model):
    with pytest.raises(ModelInputError, match="one size"):
        model.forward_features([synthetic_image("S2", size=48), synthetic_image("S2", size=64)])


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (ImageSample(torch.zeros(4, 48, 48), synthetic_image("S2", size=48).meta), "do not match"),
        (synthetic_image("S2", size=44), "multiple of the patch size"),
        (synthetic_image("S2", size=48, bands=["B01"]), "no band of any token group"),
    ],
)
def test_bad_images_give_one_line_errors(model, image, match):
    batch = SetBatch([image], torch.tensor([0]), ["x"])
    with pytest.raises(ModelInputError, match=match) as err:
        model(batch)
    assert "\n" not in str(err.value)


def test_unknown_sensor_and_band_errors():
    model = small_model(sensors=["S2"])
    gf = synthetic_image("GF2", size=48)
    with pytest.raises(ModelInputError, match="built for S2"):
        model(SetBatch([gf], torch.tensor([0]), ["x"]))
    im = synthetic_image("S2", size=48)
    bad = ImageSample(im.pixels[:1], dataclasses.replace(im.meta, bands=("B99",)))
    with pytest.raises(ModelInputError, match="unknown band 'B99'"):
        model(SetBatch([bad], torch.tensor([0]), ["x"]))


def test_images_must_be_grouped_by_set(model):
    batch = synthetic_batch([["S2"], ["L8"]], size=48)
    batch.set_index = torch.tensor([1, 0])
    with pytest.raises(ModelInputError, match="set by set"):
        model(batch)


def test_metadata_dropout_replaces_metadata_by_the_unknown_path():
    """Dropping everything gives the same embeddings as images that never had metadata."""
    from a2mae.models.embed import MetaDrop

    model = small_model()
    known = model.tokenize(synthetic_batch([["S2", "L8"]], size=48))
    unknown = model.tokenize(synthetic_batch([["S2", "L8"]], size=48, keep_metadata=False))
    tokens = torch.arange(known.num_tokens)
    all_dropped = MetaDrop(*(torch.ones(2, dtype=torch.bool),) * 3)
    e1 = model.meta_embed(known, tokens, all_dropped)
    e2 = model.meta_embed(unknown, tokens, MetaDrop.none(2, torch.device("cpu")))
    assert torch.allclose(e1, e2, atol=1e-5)
    assert not torch.allclose(e1, model.meta_embed(known, tokens, MetaDrop.none(2, torch.device("cpu"))))


def test_a_few_steps_reduce_the_loss():
    model = small_model(metadata_dropout=0.0)
    batch = synthetic_batch([["S2", "L8"], ["GF2", "S2"]], size=32)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(15):
        out = model(batch, generator=torch.Generator().manual_seed(step % 3))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses


def test_a_set_id_without_images_is_harmless(model):
    batch = synthetic_batch([["S2", "L8"], ["GF1"]], size=32)
    batch.set_index = torch.tensor([0, 0, 2])
    batch.set_ids = ["a", "empty", "c"]
    out = model(batch, generator=torch.Generator().manual_seed(0))
    assert out.anchor[1] == -1 and out.anchor[0] in (0, 1) and out.anchor[2] == 2
    assert torch.isfinite(out.loss)
