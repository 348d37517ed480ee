"""StssdDataset over a snapshot: values, metadata, normalisation, collate, sharding, splits, s3://."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import torch
from rasterio.windows import Window
from torch.utils.data import DataLoader

from a2mae.config import load_params
from a2mae.executor import start_method
from a2mae.stssd.dataset import StssdDataset
from a2mae.stssd.run import tile
from a2mae.stssd.snapshot import SnapshotError
from a2mae.types import ImageSetSample, SetBatch, collate_sets


def _source_reflectance(row: dict, rec, band: str) -> np.ndarray | None:
    """Reflectance of ``band`` at the chip window read straight from the scene file (same grid only)."""
    bf = next(b for b in rec.band_files if b.band == band)
    if bf.gsd_m != rec.gsd_m:
        return None
    with rasterio.open(bf.uri) as ds:
        dn = ds.read(bf.index, window=Window(row["col0"], row["row0"], row["width"], row["height"]))
    return dn * rec.scale + rec.offset


def test_values_round_trip_to_the_source_pixels(tiny_snapshot, synthetic_scenes):
    recs = {r.scene_id: r for r in synthetic_scenes[1]}
    rows = {r["image_id"]: r for r in pq.read_table(tiny_snapshot / "manifest.parquet").to_pylist()}
    ds = StssdDataset(tiny_snapshot, split=None, clip_sigma=None)
    assert len(ds) == len({r["set_id"] for r in rows.values()})
    compared = 0
    for i in range(len(ds)):
        sample = ds[i]
        assert isinstance(sample, ImageSetSample)
        for im in sample.images:
            row = rows[im.meta.image_id]
            refl = ds.denormalise(im.pixels, im.meta.sensor, im.meta.bands).double().numpy()
            for k, band in enumerate(im.meta.bands):
                src = _source_reflectance(row, recs[row["scene_id"]], band)
                if src is None:  # S2 20 m bands: resampled, checked in test_tiling
                    continue
                # int16 quantisation of reflectance (1e-4) plus float32 normalisation round off
                np.testing.assert_allclose(refl[k], src, atol=0.5e-4 + 1e-6)
                compared += 1
    assert compared > 50


def test_metadata_matches_the_manifest_and_the_model_contract(tiny_snapshot, synthetic_scenes):
    recs = {r.scene_id: r for r in synthetic_scenes[1]}
    rows = {r["image_id"]: r for r in pq.read_table(tiny_snapshot / "manifest.parquet").to_pylist()}
    ds = StssdDataset(tiny_snapshot, split="train")
    seen = set()
    for i in range(len(ds)):
        s = ds[i]
        assert s.split == "train" and 1 <= len(s.images) <= 4
        for im in s.images:
            row = rows[im.meta.image_id]
            rec = recs[row["scene_id"]]
            m = im.meta
            assert m.sensor == rec.sensor and m.product == rec.product and m.period == rec.period
            assert m.datetime == rec.datetime and m.gsd_m == rec.gsd_m
            assert m.bands == tuple(row["bands"])
            assert im.pixels.shape == (len(m.bands), 96, 96) and im.pixels.dtype == torch.float32
            assert im.valid is not None and im.valid.shape == (96, 96) and bool(im.valid.all())
            assert len(m.corners) == 4 and m.corners[0] == pytest.approx(tuple(row["corners"][:2]))
            # chip corners, not the scene's: the chip is 96 px of the scene's GSD across
            (ul_lat, ul_lon), (ur_lat, ur_lon) = m.corners[:2]
            width_m = np.hypot(
                (ur_lon - ul_lon) * 111_320 * np.cos(np.radians(ul_lat)), (ur_lat - ul_lat) * 110_574
            )
            assert width_m == pytest.approx(96 * rec.gsd_m, rel=0.01)
            seen.add(m.sensor)
    assert seen == {"S2", "L8", "GF1", "GF2"}


def test_default_normalisation_clips_at_two_sigma_and_standardises(tiny_snapshot):
    ds = StssdDataset(tiny_snapshot)
    stats = json.loads((tiny_snapshot / "stats.json").read_text())["sensors"]
    per_band: dict[tuple[str, str], list[np.ndarray]] = {}
    for i in range(len(ds)):
        for im in ds[i].images:
            x = im.pixels.numpy()
            assert x.min() >= -2.0 - 1e-5 and x.max() <= 2.0 + 1e-5
            for k, b in enumerate(im.meta.bands):
                per_band.setdefault((im.meta.sensor, b), []).append(x[k].ravel())
    for (sensor, band), xs in per_band.items():
        assert stats[sensor][band]["computed_on"] == "train"
        assert abs(np.concatenate(xs).mean()) < 0.5  # train statistics centre the train split
    raw = StssdDataset(tiny_snapshot, normalise=False)[0].images[0].pixels
    assert 0 < float(raw.mean()) < 1  # reflectance


def test_collate_batches_sets_of_mixed_composition(tiny_snapshot):
    ds = StssdDataset(tiny_snapshot)
    loader = DataLoader(ds, batch_size=4, shuffle=False, collate_fn=collate_sets)
    batches = list(loader)
    assert sum(b.num_sets for b in batches) == len(ds)
    b = batches[0]
    assert isinstance(b, SetBatch)
    assert b.set_index.tolist() == sorted(b.set_index.tolist())
    assert len(b.images) == len(b.set_index) and b.set_index.max().item() == b.num_sets - 1
    channels = {im.pixels.shape[0] for bb in batches for im in bb.images}
    assert channels == {10, 6, 4}  # S2, L8, GF in one epoch


def test_dataloader_workers_read_the_same_values(tiny_snapshot):
    ds = StssdDataset(tiny_snapshot)
    clone = pickle.loads(pickle.dumps(ds))
    for i in range(len(ds)):
        for a, b in zip(ds[i].images, clone[i].images, strict=True):
            assert torch.equal(a.pixels, b.pixels)
    ctx = start_method()  # spawn once a Prefect flow ran in this test session (threads left behind)
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_sets, multiprocessing_context=ctx)
    ids = [sid for batch in loader for sid in batch.set_ids]
    assert ids == ds.set_ids


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_are_disjoint_equal_and_cover_the_sets(tiny_snapshot, world):
    ds = StssdDataset(tiny_snapshot, split=None)
    parts = [ds.shard(r, world) for r in range(world)]
    ids = [[p[i].set_id for i in range(len(p))] for p in parts]
    flat = [x for part in ids for x in part]
    assert len(flat) == len(set(flat))  # no set read twice in an epoch
    assert len({len(p) for p in parts}) == 1  # lockstep
    assert len(flat) == len(ds) - len(ds) % world
    keep = ds.shard(0, world, drop_remainder=False)
    assert len(keep) == len(range(0, len(ds), world))
    with pytest.raises(ValueError):
        ds.shard(world, world)


def test_splits_partition_the_sets_and_stats_come_from_train(synthetic_scenes, tmp_path):
    over = [
        "tile.workers=1",
        "tile.split.block_m=960",
        "tile.split.val_fraction=0.3",
        "tile.split.test_fraction=0.3",
    ]
    chosen = None
    for seed in range(20):  # a seed that puts the four grid points in all three splits
        out = tmp_path / f"s{seed}"
        s = tile(
            synthetic_scenes[2],
            out,
            load_params(overrides=[*over, f"tile.split.seed={seed}"]),
            progress=False,
        )
        if all(s.counts["sets_per_split"][k] > 0 for k in ("train", "val", "test")):
            chosen = out
            break
    assert chosen is not None
    parts = {k: StssdDataset(chosen, split=k) for k in ("train", "val", "test")}
    all_ids = StssdDataset(chosen, split=None).set_ids
    assert sorted(x for p in parts.values() for x in p.set_ids) == sorted(all_ids)
    for k, p in parts.items():
        assert all(p[i].split == k for i in range(len(p)))
    stats = json.loads((chosen / "stats.json").read_text())["sensors"]
    train_sensors = {im.meta.sensor for i in range(len(parts["train"])) for im in parts["train"][i].images}
    for sensor, bands in stats.items():
        expect = "train" if sensor in train_sensors else "all"
        assert {b["computed_on"] for b in bands.values()} == {expect}
    only_l8 = StssdDataset(chosen, split=None, sensors=["L8"])
    assert {im.meta.sensor for i in range(len(only_l8)) for im in only_l8[i].images} == {"L8"}


def test_bad_snapshot_paths_give_clear_errors(tmp_path, tiny_snapshot):
    with pytest.raises(SnapshotError, match="not a snapshot"):
        StssdDataset(tmp_path)
    with pytest.raises(SnapshotError, match="unknown split"):
        StssdDataset(tiny_snapshot, split="training")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "snapshot.json").write_text("{nope")
    with pytest.raises(SnapshotError, match="not valid JSON"):
        StssdDataset(broken)


@pytest.mark.s3
def test_dataset_reads_a_snapshot_on_s3(s3_store, tiny_snapshot):
    from a2mae.io.storage import put_tree

    uri = f"{s3_store.new_bucket()}/snapshots/stssd"
    put_tree(tiny_snapshot, uri, s3_store.settings())
    local = StssdDataset(tiny_snapshot, split=None)
    remote = StssdDataset(uri, split=None, s3=s3_store.settings())
    assert len(remote) == len(local) > 0
    for i in range(len(local)):
        a, b = local[i], remote[i]
        assert a.set_id == b.set_id
        for x, y in zip(a.images, b.images, strict=True):
            assert x.meta == y.meta and torch.equal(x.pixels, y.pixels)
    # s3 datasets pickle to DataLoader workers (the filesystem is re-opened in each process)
    ctx = start_method()
    loader = DataLoader(
        remote, batch_size=3, num_workers=2, collate_fn=collate_sets, multiprocessing_context=ctx
    )
    assert [sid for batch in loader for sid in batch.set_ids] == remote.set_ids
    with pytest.raises(SnapshotError, match="not a snapshot"):
        StssdDataset(f"{s3_store.new_bucket()}/stssd", s3=s3_store.settings())


def test_source_reflectance_helper_uses_the_scene_grid(synthetic_scenes):
    # guards the round-trip test: a coarser band must be skipped, a same-grid band read
    rec = next(r for r in synthetic_scenes[1] if r.sensor == "S2")
    row = {"col0": 0, "row0": 0, "width": 4, "height": 4}
    assert _source_reflectance(row, rec, "B05") is None
    assert _source_reflectance(row, rec, "B04").shape == (4, 4)
    assert Path(rec.band_files[0].uri).exists()
