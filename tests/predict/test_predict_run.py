"""``a2mae predict`` on generated and bundled real scenes: georeference, exact maps, seams, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
import torch
from rio_cogeo.cogeo import cog_validate

from a2mae.cli import main
from a2mae.predict.errors import PredictError
from a2mae.predict.geoparquet import read_polygon_wkb
from a2mae.predict.model import from_module
from a2mae.predict.run import predict
from a2mae.predict.windows import starts
from a2mae.testing.models import BandThresholdTestModel, spec_for, tiny_downstream

REPO = Path(__file__).resolve().parents[2]
S2_REAL = REPO / "data" / "samples" / "sentinel2_l2a_T29RKH_20200219"
L8_REAL = REPO / "data" / "samples" / "landsat8_c2l2_p001r062_20201031"
SEG_BANDS = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"]


def _threshold(task: str, bands=("B04",), thr=1000.0, sensor="S2"):
    spec = spec_for(
        task, bands, ["low", "high"] if task != "change_detection" else ["same", "changed"], sensor=sensor
    )
    return from_module(
        BandThresholdTestModel(spec, 0, thr), name="threshold-test-model", version="7", run_id="r1"
    )


def _band(rec, band: str) -> np.ndarray:
    bf = next(b for b in rec.band_files if b.band == band)
    with rasterio.open(bf.uri) as ds:
        return ds.read(bf.index).astype(np.float64)


def _one_output(out: Path) -> Path:
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return folder


# ------------------------------------------------------------------------- exact maps, georeference
def test_threshold_test_model_gives_exactly_the_expected_map_on_a_generated_scene(
    s2_pair, predict_params, tmp_path
):
    (june, _, _), _ = s2_pair
    rep = predict(
        [june.source], tmp_path / "out", predict_params(), model=_threshold("segmentation"), progress=False
    )
    folder = _one_output(tmp_path / "out")
    with rasterio.open(folder / "classmap.tif") as ds:
        got = ds.read(1)
        assert ds.crs.to_string() == june.crs and tuple(ds.transform)[:6] == pytest.approx(june.transform)
        assert (ds.width, ds.height) == (june.width, june.height)
        assert json.loads(ds.tags()["A2MAE_CLASS_NAMES"]) == ["low", "high"]
        assert ds.tags()["A2MAE_MODEL_VERSION"] == "7" and ds.tags()["A2MAE_RUN_ID"] == "r1"
        (scene_id,) = json.loads(ds.tags()["A2MAE_SCENE_IDS"])
        assert scene_id == folder.name and scene_id.startswith("S2_L2A_20200615_")
        assert ds.colormap(1)[1][:3] != ds.colormap(1)[0][:3] and ds.nodata == 255
    b04 = _band(june, "B04")
    with rasterio.open(folder / "quality.tif") as q:
        quality = q.read(1)
    nodata = quality == 255
    assert nodata[:, :7].all() and not nodata[:, 20:].any()  # the generated nodata columns
    assert (quality == 1).sum() > 100  # the generated cloud disc is carried through
    want = np.where(nodata, 255, (b04 > 1000).astype(np.uint8))
    np.testing.assert_array_equal(got, want)
    assert 0 < (want == 1).mean() < 1
    for name in ("classmap.tif", "quality.tif"):
        assert cog_validate(str(folder / name), quiet=True)[0]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["model"]["model_name"] == "threshold-test-model" and rep.windows > 4


def test_change_map_of_a_shifted_pair_is_aligned_on_the_ground(s2_pair, predict_params, tmp_path):
    (june, _, dec), _ = s2_pair
    model = _threshold("change_detection", thr=900.0)
    predict([june.source, dec.source], tmp_path / "cd", predict_params(), model=model, progress=False)
    folder = _one_output(tmp_path / "cd")
    assert folder.name.startswith("S2_L2A_20200615_") and "__S2_L2A_20201215_" in folder.name
    with rasterio.open(folder / "change.tif") as ds:
        got, t = ds.read(1), ds.transform
        dc = round((dec.transform[2] - june.transform[2]) / 10)  # the after scene lies east and south
        dr = round((june.transform[5] - dec.transform[5]) / 10)
        assert dc > 10 and dr > 5 and (ds.width, ds.height) == (360 - dc, 360 - dr)  # the overlap
        assert (t.c, t.f) == pytest.approx((june.transform[2] + 10 * dc, june.transform[5] - 10 * dr))
        assert json.loads(ds.tags()["A2MAE_SCENE_IDS"]) == folder.name.split("__")
    before = _band(june, "B04")[dr:, dc:]
    after = _band(dec, "B04")[: 360 - dr, : 360 - dc]
    want = ((before > 900) != (after > 900)).astype(np.uint8)
    ok = got != 255
    assert ok.mean() > 0.9
    np.testing.assert_array_equal(got[ok], want[ok])


def test_classification_chips_as_geoparquet(s2_pair, predict_params, tmp_path):
    (june, _, _), _ = s2_pair
    model = _threshold("classification")
    predict([june.source], tmp_path / "cls", predict_params(), model=model, progress=False)
    f = pq.read_table(_one_output(tmp_path / "cls") / "chips.parquet")
    geo = json.loads(f.schema.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    assert geo["columns"]["geometry_scene"]["crs"]["id"]["code"] == int(june.crs.split(":")[1])
    rows = f.to_pylist()
    assert len(rows) == len({(r["row"], r["col"]) for r in rows}) == 36  # 6 x 6 chips of 64 px in 360 px
    b04 = _band(june, "B04")
    a, _, c, _, e, fy = june.transform
    for r in rows:
        want = "high" if b04[r["row"] : r["row"] + 64, r["col"] : r["col"] + 64].mean() > 1000 else "low"
        assert r["label"] == want and r["model_version"] == "7" and r["sensor"] == "S2"
        ring = read_polygon_wkb(r["geometry_scene"])
        assert ring[0] == pytest.approx((c + a * r["col"], fy + e * r["row"]))
        lon, lat = read_polygon_wkb(r["geometry"])[0]
        assert 113 < lon < 116 and 29 < lat < 32  # near Wuhan
        assert len(r["scores"]) == 2


# -------------------------------------------------------------------------------------- no seams
def test_blending_leaves_no_seam(s2_pair, predict_params, tmp_path):
    """At a window edge the blended prediction equals the prediction of a window centred there."""
    (june, _, _), _ = s2_pair
    net = tiny_downstream("segmentation", k=3, seed=1)
    p = predict_params("predict.probabilities=true", "predict.window=64", "predict.overlap=32")
    predict([june.source], tmp_path / "seg", p, model=from_module(net), progress=False)
    with rasterio.open(_one_output(tmp_path / "seg") / "probabilities.tif") as ds:
        probs = ds.read().astype(np.float64) / 100
    from a2mae.predict.infer import BatchTask, run_batch
    from a2mae.predict.scenes import single_job
    from a2mae.sensors import get_registry

    job = single_job(june, from_module(net), get_registry(), 64)
    # Pixel (128, 64) lies on the edges of the windows starting at row 128 and at column 64 (stride 32);
    # the window starting at (96, 32) is centred on it.
    centred = BatchTask(
        from_module(net), job.sources, job.crs, job.transform, ((96, 32),), 64, "S2", job.bands, job.datetime
    )
    ref = run_batch(centred).probs[0]  # [K, 64, 64]
    got = probs[:, 126:131, 62:67]
    want = ref[:, 30:35, 30:35]
    np.testing.assert_allclose(got, want, atol=0.02)
    # and across that window edge the blended map is as smooth as the model itself
    jump = np.abs(probs[:, 96:160, 64] - probs[:, 96:160, 63]).max()
    inside = np.abs(probs[:, 96:160, 48] - probs[:, 96:160, 47]).max()
    assert jump <= inside + 0.03


# -------------------------------------------------------------------------- the bundled real scenes
def test_segmentation_on_the_real_sentinel2_scene(predict_params, tmp_path):
    model = _threshold("segmentation", bands=("B08", "B04"), thr=2500.0)
    predict(
        [str(S2_REAL)],
        tmp_path / "real",
        predict_params("predict.window=128", "predict.overlap=0"),
        model=model,
        progress=False,
    )
    folder = _one_output(tmp_path / "real")
    with rasterio.open(folder / "classmap.tif") as ds, rasterio.open(S2_REAL / "B08.tif") as src:
        assert ds.crs == src.crs and ds.transform == src.transform and ds.shape == src.shape
        got, b08 = ds.read(1), src.read(1).astype(float)
    ok = got != 255
    np.testing.assert_array_equal(got[ok], (b08 > 2500)[ok])
    assert (folder / "preview.png").read_bytes()[:4] == b"\x89PNG"


def test_classification_on_the_real_landsat_scene_and_bad_band_sets(predict_params, tmp_path):
    model = _threshold("classification", bands=("B5",), thr=10000.0, sensor="L8")
    predict([str(L8_REAL)], tmp_path / "l8", predict_params("predict.window=96"), model=model, progress=False)
    rows = pq.read_table(_one_output(tmp_path / "l8") / "chips.parquet").to_pylist()
    assert len(rows) == len(starts(386, 96, 0)) * len(starts(379, 96, 0)) == 20  # the last row/column snaps
    assert {r["label"] for r in rows} <= {"low", "high"}
    with pytest.raises(PredictError, match=r"is L8 but .* was trained on S2"):
        predict(
            [str(L8_REAL)], tmp_path / "x", predict_params(), model=_threshold("segmentation"), progress=False
        )
    s2_model = _threshold("segmentation", bands=("B04", "B10"))
    with pytest.raises(PredictError, match=r"lacks bands \['B10'\]"):
        predict([str(S2_REAL)], tmp_path / "x", predict_params(), model=s2_model, progress=False)
    assert not (tmp_path / "x").exists()


def test_embeddings_of_the_encoder_on_the_real_scene(tmp_path, predict_params, mlflow_tmp):
    from a2mae.checkpoint import save_checkpoint
    from a2mae.predict.model import resolve_model
    from a2mae.registry.encoder import log_encoder
    from a2mae.testing.models import tiny_encoder

    enc = tiny_encoder()
    stats = {"S2": {b: {"mean": 0.15, "std": 0.08} for b in ["B02", "B03", "B04", "B08"]}}  # reflectance
    ckpt = save_checkpoint(tmp_path / "enc.safetensors", enc, norm_stats=stats)
    import mlflow

    with mlflow.start_run() as run:
        run_id = run.info.run_id
    log_encoder(mlflow_tmp, run_id, ckpt, registered_name="a2mae-encoder", metadata={}, step=1)
    model = resolve_model("models:/a2mae-encoder/1", mlflow_tmp, tmp_path / "w")
    assert model.task == "embeddings" and model.run_id == run_id
    p = predict_params("predict.window=128", "predict.overlap=0", "predict.dense_embeddings=true")
    predict([str(S2_REAL)], tmp_path / "emb", p, model=model, progress=False)
    folder = _one_output(tmp_path / "emb")
    table = pq.read_table(folder / "embeddings.parquet")
    kind = table.schema.field("embedding").type
    assert pa.types.is_fixed_size_list(kind) and kind.list_size == 32 and kind.value_type == pa.float32()
    assert table.num_rows == 9 * 9 and table.column("model_name")[0].as_py() == "a2mae-encoder"
    assert not np.isnan(np.stack(table.column("embedding").to_pylist())).any()
    with rasterio.open(folder / "embeddings.tif") as ds, rasterio.open(S2_REAL / "B04.tif") as src:
        assert ds.count == 32 and ds.res == (800.0, 800.0) and ds.crs == src.crs
        assert (ds.transform.c, ds.transform.f) == (src.transform.c, src.transform.f)
    assert cog_validate(str(folder / "embeddings.tif"), quiet=True)[0]


# ----------------------------------------------------------------------------------- bad input
def test_bad_input_gives_one_line_and_writes_nothing(s2_pair, predict_params, tmp_path, monkeypatch, capsys):
    (june, far, _), _ = s2_pair
    p = predict_params()
    with pytest.raises(PredictError, match="do not overlap"):
        predict([june.source, far.source], tmp_path / "a", p, model=_threshold("change_detection"))
    with pytest.raises(PredictError, match="smaller than one window"):
        predict(
            [june.source],
            tmp_path / "a",
            predict_params("predict.window=512", "predict.overlap=0"),
            model=_threshold("segmentation"),
        )
    (tmp_path / "exists").mkdir()
    with pytest.raises(PredictError, match="already exists; pass --overwrite"):
        predict([june.source], tmp_path / "exists", p, model=_threshold("segmentation"))
    from a2mae.predict import rasters

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rasters, "to_cog", full)
    with pytest.raises(PredictError, match="disk full"):
        predict([june.source], tmp_path / "a", p, model=_threshold("segmentation"), progress=False)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["exists"]  # no output, no staging folder left


def test_cli_one_line_errors(tmp_path, mlflow_tmp, capsys, monkeypatch):
    rc = main(
        [
            "predict",
            str(S2_REAL),
            "--model",
            "models:/a2mae-segmentation@champion",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "not in the model registry" in err and err.count("\n") == 0
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    rc = main(["predict", str(S2_REAL), "--model", "models:/m/1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "unreachable" in err and err.count("\n") == 0
    assert not (tmp_path / "o").exists()


def test_registered_champion_through_the_cli(s2_pair, tmp_path, mlflow_tmp, capsys):
    import mlflow

    from a2mae.registry.downstream import log_model

    (june, _, _), _ = s2_pair
    net = tiny_downstream("segmentation", bands=SEG_BANDS, k=2)
    with mlflow.start_run():
        log_model(net, "a2mae-segmentation")
    mlflow.MlflowClient().set_registered_model_alias("a2mae-segmentation", "champion", "1")
    out = tmp_path / "cli"
    args = ["predict", june.source, "--model", "models:/a2mae-segmentation@champion", "--out", str(out),
            "--set", "predict.window=128", "--set", "predict.overlap=32", "--workers", "2"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    assert "classmap.tif" in capsys.readouterr().out
    with rasterio.open(_one_output(out) / "classmap.tif") as ds:
        assert (
            ds.tags()["A2MAE_MODEL_NAME"] == "a2mae-segmentation" and ds.tags()["A2MAE_MODEL_VERSION"] == "1"
        )
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--workers", "1"]) == 0
    with torch.no_grad():
        assert net is not None


@pytest.mark.slow
def test_ray_data_actors_give_the_same_map_as_local_processes(s2_pair, predict_params, tmp_path):
    (june, _, _), _ = s2_pair
    model = _threshold("segmentation")
    predict([june.source], tmp_path / "local", predict_params(), model=model, progress=False)
    p = predict_params("predict.executor=ray", "predict.workers=2")
    predict([june.source], tmp_path / "ray", p, model=model, progress=False)
    a, b = (rasterio.open(_one_output(tmp_path / k) / "classmap.tif").read(1) for k in ("local", "ray"))
    np.testing.assert_array_equal(a, b)
