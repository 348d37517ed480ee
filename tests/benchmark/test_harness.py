"""The benchmark harness: arms, normalisation, dense samples, folds, probes, and the CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from a2mae.benchmark.arms.base import data_statistics, encoder_statistics
from a2mae.benchmark.arms.encoder import encoder_arm, scratch_arm
from a2mae.benchmark.arms.rcf import RCFArm
from a2mae.benchmark.data import IGNORE, TEST, TRAIN, BenchmarkError
from a2mae.benchmark.embed import embeddings
from a2mae.benchmark.layouts import read_data
from a2mae.benchmark.protocols.knn import knn_predict
from a2mae.benchmark.protocols.linear import linear_predict
from a2mae.benchmark.samples import fold_index
from a2mae.benchmark.splits import chip_folds
from a2mae.config import load_params
from a2mae.finetune.stage import FinetuneStage
from a2mae.testing.bench import tiny_checkpoint, write_change_pairs

FAST = [
    "benchmark.sensor=L8",
    "benchmark.chip_size=16",
    "benchmark.n_boot=50",
    "benchmark.seeds=1",
    "benchmark.rcf_features=16",
    "benchmark.rcf_modes=[gaussian]",
    "benchmark.block_m=480",
    "benchmark.normalization=dataset",
    "benchmark.max_pixels_per_class=200",
    "benchmark.linear_c=[0.1, 1.0]",
]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_change_pairs(tmp_path_factory.mktemp("cp") / "pairs", sites=2, size=64)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("enc") / "enc.safetensors")


def params(*over):
    return load_params(overrides=[*FAST, *over])


def test_encoder_statistics_reads_both_checkpoint_forms():
    doc = {
        "version": 2,
        "units": "reflectance",
        "sensors": {"S2": {"B02": {"mean": 0.1, "std": 0.02}, "B03": {"mean": 0.2, "std": 0.04}}},
    }
    mean, std = encoder_statistics(doc, "S2", ["B02", "B03"])
    assert np.allclose(mean, [1000, 2000]) and np.allclose(std, [200, 400])  # reflectance -> S2 DN (x 1e4)
    mean, std = encoder_statistics({"S2": {"B02": {"mean": 5, "std": 2}}}, "S2", ["B02"])
    assert mean.tolist() == [5] and std.tolist() == [2]
    assert (
        encoder_statistics(doc, "S2", ["B02", "B04"]) is None and encoder_statistics({}, "L8", ["B2"]) is None
    )


def test_encoder_without_statistics_is_one_line_exit_2(pairs, ckpt, tmp_path, capsys):
    from a2mae.cli import main

    rc = main(
        [
            "benchmark",
            str(pairs),
            "--encoder",
            str(ckpt),
            "--out",
            str(tmp_path / "o"),
            "--no-track",
            "--set",
            "benchmark.normalization=encoder",
            *[a for s in FAST[:-3] for a in ("--set", s)],
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no pre-training statistics for L8 bands" in err[0]


def test_arms_embed_with_their_own_shapes_and_scratch_differs(pairs, ckpt):
    p = params()
    data = read_data(pairs, p.benchmark)
    enc = encoder_arm(
        "encoder", str(ckpt), FinetuneStage.of(p), use_encoder_stats=p.benchmark.normalization == "encoder"
    )
    scr = scratch_arm(enc, 0)
    rcf = RCFArm("rcf-gaussian", patch=enc.patch, features=16, seed=0)
    ds = data_statistics(data)
    out = {}
    for arm in (enc, scr, rcf):
        arm.prepare(data, ds)
        emb, cached = embeddings(arm, data, None, 8, show=False)
        assert not cached and emb.tokens is not None
        assert emb.pooled.shape[:2] == (len(data.chips), 2) and emb.tokens.shape[-2:] == (2, 2)
        out[arm.name] = emb
    assert out["encoder"].pooled.shape[-1] == 32 and out["rcf-gaussian"].pooled.shape[-1] == 16
    assert not np.allclose(out["encoder"].pooled, out["scratch"].pooled)


def test_rcf_is_torchgeo_seeded_at_least_1_and_reproducible(pairs):
    from torchgeo.models import RCF

    data = read_data(pairs, params().benchmark)
    a, b = RCFArm("rcf", features=16, seed=0), RCFArm("rcf", features=16, seed=0)
    for arm in (a, b):
        arm.prepare(data, data_statistics(data))
    assert isinstance(a.rcf, RCF) and a.lineage["seed"] == "1"
    assert torch.equal(a.rcf.weights, b.rcf.weights)
    x = a.normalise(data.chips[0].pixels[:1])
    pooled, maps = a.forward(x, data.chips[0].metas[:1])
    y = torch.nn.functional.conv2d(x, a.rcf.weights, bias=a.rcf.biases)
    assert torch.allclose(
        pooled[0, 8:], (1 - (y + 1)).clamp_min(0).mean((-2, -1))[0], atol=1e-5
    )  # relu(1 - conv)
    assert maps.shape == (1, 16, 2, 2)


def test_cache_hit_returns_the_same_embeddings(pairs, tmp_path):
    data = read_data(pairs, params().benchmark)
    arm = RCFArm("rcf", features=16, seed=0)
    arm.prepare(data, data_statistics(data))
    e1, c1 = embeddings(arm, data, tmp_path, 8, show=False)
    e2, c2 = embeddings(arm, data, tmp_path, 8, show=False)
    assert (c1, c2) == (False, True) and np.array_equal(e1.tokens, e2.tokens)


def test_no_test_pixel_lies_inside_a_training_chip(pairs):
    data = read_data(pairs, params().benchmark)
    for seed in range(3):
        folds = chip_folds(data, 480.0, (0.6, 0.2, 0.2), seed)
        ix_test = fold_index(data, folds, TEST, "pixel", 8, 10_000, seed)
        train_boxes = [data.chips[i].bounds for i in np.flatnonzero(folds == TRAIN)]
        for x, y in zip(ix_test.x_m, ix_test.y_m, strict=True):
            assert not any(b[0] < x < b[2] and b[1] < y < b[3] for b in train_boxes)


def test_pixel_protocol_keeps_more_samples_than_token_protocol(pairs):
    data = read_data(pairs, params().benchmark)
    folds = chip_folds(data, 480.0, (0.6, 0.2, 0.2), 0)
    pix = fold_index(data, folds, TEST, "pixel", 8, 10_000, 0)
    tok = fold_index(data, folds, TEST, "token", 8, 10_000, 0)
    n_labelled = sum(int((data.chips[i].label != IGNORE).sum()) for i in np.flatnonzero(folds == TEST))
    assert len(pix) == n_labelled and 0 < len(tok) < len(pix)
    capped = fold_index(data, folds, TEST, "pixel", 8, 5, 0)
    assert np.bincount(capped.y).max() <= 5


def test_knn_and_linear_separate_separable_data():
    rng = np.random.default_rng(0)
    centres = np.eye(3, 8) * 5
    y = rng.integers(0, 3, 300)
    x = centres[y] + rng.normal(0, 1, (300, 8))
    p = knn_predict(x[:200], y[:200], x[200:], y[200:], 5, "single-label", 3)
    assert (p.y_pred == y[200:]).mean() > 0.95 and p.y_score.shape == (100, 3)
    from a2mae.benchmark.metrics import metrics_for

    sel = metrics_for("single-label", 3)["accuracy"]
    q, c = linear_predict(
        (x[:150], y[:150]), (x[150:200], y[150:200]), (x[200:], y[200:]), [0.001, 1.0], sel, "single-label", 3
    )
    assert (q.y_pred == y[200:]).mean() > 0.95 and c == 1.0
    noise = knn_predict(
        rng.normal(size=(200, 8)), y[:200], rng.normal(size=(100, 8)), y[200:], 5, "single-label", 3
    )
    assert (noise.y_pred == y[200:]).mean() < 0.6


def test_too_small_split_is_one_line(pairs):
    data = read_data(pairs, params().benchmark)
    with pytest.raises(BenchmarkError, match="too small to probe"):
        chip_folds(data, 1e6, (0.6, 0.2, 0.2), 0)


def test_cli_end_to_end_writes_results_parquet(pairs, ckpt, tmp_path, capsys):
    from a2mae.cli import main

    out = tmp_path / "out"
    sets = [a for s in FAST for a in ("--set", s)]
    rc = main(
        [
            "benchmark",
            str(pairs),
            "--encoder",
            str(ckpt),
            "--out",
            str(out),
            "--baselines",
            "scratch,rcf",
            "--protocols",
            "knn,linear",
            "--fractions",
            "0.5,1.0",
            "--json",
            "--set",
            f"benchmark.cache={tmp_path / 'cache'}",
            "--set",
            f"registry.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            *sets,
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    doc = json.loads(captured.out)
    assert doc["layout"] == "change-pair" and doc["run_id"]
    df = pd.read_parquet(out / "results.parquet")
    assert list(df.columns) == [
        "arm",
        "protocol",
        "fraction",
        "seed",
        "metric",
        "value",
        "ci_low",
        "ci_high",
        "n_test",
        "n_blocks",
    ]
    assert set(df.arm) == {"encoder", "scratch", "rcf-gaussian"} and set(df.protocol) == {
        "knn5",
        "knn20",
        "linear",
    }
    assert set(df.metric) == {"f1_changed", "iou_changed", "ap_changed"} and set(df.fraction) == {0.5, 1.0}
    assert (
        (df.ci_low <= df.value + 1e-9).all()
        and (df.value <= df.ci_high + 1e-9).all()
        and (df.n_blocks >= 1).all()
    )
    md = (out / "benchmark.md").read_text()
    assert "differences below" in md and "not resolvable" in md and "encoder − rcf-gaussian" in md
    assert (out / "score_vs_fraction.png").stat().st_size > 1000
    import mlflow

    run = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(doc["run_id"])
    assert (
        run.data.tags["a2mae.data_hash"] == doc["data_hash"] and "a2mae.arm.encoder.source" in run.data.tags
    )
