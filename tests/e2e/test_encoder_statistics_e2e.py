"""A pre-trained encoder used as a user would: its pre-training statistics reach predict and fine-tune.

tile -> pretrain -> ``a2mae predict SCENE --model models:/a2mae-encoder/1`` (embeddings) -> ``a2mae
finetune --encoder models:/a2mae-encoder/1`` with the default ``finetune.normalization: auto``, all on
the real Sentinel-2 scene bundled in ``data/samples``, through the CLI.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest

from a2mae.cli import main

REPO = Path(__file__).resolve().parents[2]
S2_REAL = REPO / "data" / "samples" / "sentinel2_l2a_T29RKH_20200219"
SEGMENTATION = REPO / "data" / "samples" / "segmentation"


def _sets(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


@pytest.mark.slow
def test_pretrained_encoder_statistics_reach_predict_and_finetune(
    tmp_path, monkeypatch, tiny_pretrain_overrides, capsys
):
    from a2mae.finetune.encoder import load_encoder
    from a2mae.normstats import load_stats, stats_for
    from a2mae.predict.model import encoder_norm, resolve_model

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.chdir(tmp_path)
    common = [*tiny_pretrain_overrides, f"data.catalog={tmp_path / 'catalog.parquet'}"]

    # ingest + tile the real scene
    assert main(["ingest", str(S2_REAL), "--no-progress", *_sets(common)]) == 0, capsys.readouterr().err
    snap = tmp_path / "stssd"
    rc = main(["tile", "--out", str(snap), "--no-progress", *_sets([*common, "tile.workers=1"])])
    assert rc == 0, capsys.readouterr().err
    tiled = json.loads((snap / "stats.json").read_text())
    assert set(tiled["sensors"]) == {"S2"} and tiled["version"] == 2  # the whole document

    # pre-train; the checkpoint stores the snapshot's statistics document
    rc = main(["pretrain", "--snapshot", str(snap), *_sets([*common, "pretrain.max_steps=2"])])
    out, err = capsys.readouterr()
    assert rc == 0 and "registered: a2mae-encoder version 1" in out, err
    ckpt = Path(re.search(r"^checkpoint: (.+)$", out, re.M).group(1)) / "model.safetensors"
    assert load_stats(ckpt) == load_stats(snap)

    # predict: embeddings of the real scene, normalised with the pre-training statistics
    emb = tmp_path / "emb"
    args = [
        "predict",
        str(S2_REAL),
        "--model",
        "models:/a2mae-encoder/1",
        "--out",
        str(emb),
        "--workers",
        "1",
    ]
    rc = main([*args, *_sets(["predict.window=128", "predict.overlap=0"])])
    err = capsys.readouterr().err
    assert rc == 0, err
    (folder,) = [p for p in emb.iterdir() if p.is_dir()]
    table = pq.read_table(folder / "embeddings.parquet")
    vectors = np.stack(table.column("embedding").to_pylist())
    assert table.num_rows > 0 and np.isfinite(vectors).all() and vectors.std(0).max() > 0
    mlflow.set_tracking_uri(tracking)
    model = resolve_model("models:/a2mae-encoder/1", tracking, tmp_path / "w")
    bands = ["B02", "B03", "B04", "B08"]
    mean, std = encoder_norm(model, "S2", bands)  # predict reads reflectance x 10000
    want_mean = [tiled["sensors"]["S2"][b]["mean"] * 1e4 for b in bands]
    want_std = [tiled["sensors"]["S2"][b]["std"] * 1e4 for b in bands]
    np.testing.assert_allclose(mean, want_mean, rtol=1e-9)
    np.testing.assert_allclose(std, want_std, rtol=1e-9)
    assert stats_for(ckpt, "S2", bands, unit=1e-4) == (mean, std)

    # fine-tune with the default normalisation: a pre-trained encoder gets its own statistics
    rc = main(
        [
            "finetune",
            "--task",
            "segmentation",
            "--data",
            str(SEGMENTATION),
            "--encoder",
            "models:/a2mae-encoder/1",
            "--no-register",
            "--no-progress",
            "--json",
            *_sets(
                [
                    *common,
                    "finetune.max_steps=1",
                    "finetune.batch_size=4",
                    f"finetune.output={tmp_path / 'ft'}",
                ]
            ),
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    run_id = json.loads(out)["run_id"]
    run = mlflow.MlflowClient(tracking).get_run(run_id)
    assert run.data.params["normalization"] == "encoder"
    seg_bands = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"]  # the chips' order
    handle = load_encoder("models:/a2mae-encoder/1", _params(common))
    spec_mean, spec_std = _logged_spec(run_id, tracking, tmp_path)
    want = handle.norm_stats.mean_std("S2", seg_bands, unit=1e-4)  # the chips are DNs of S2 (x 1e-4)
    np.testing.assert_allclose(spec_mean, want[0], rtol=1e-6)
    np.testing.assert_allclose(spec_std, want[1], rtol=1e-6)


def _params(overrides: list[str]):
    from a2mae.config import load_params

    return load_params(overrides=overrides)


def _logged_spec(run_id: str, tracking: str, tmp_path: Path) -> tuple[list[float], list[float]]:
    """``(mean, std)`` of the fine-tuned model's spec, as logged with the run."""
    from a2mae.registry.downstream import copy_model_files
    from a2mae.registry.spec import read_spec

    mlflow.set_tracking_uri(tracking)
    spec = read_spec(copy_model_files(f"runs:/{run_id}/model", tmp_path / "logged"))
    return list(spec.mean), list(spec.std)
