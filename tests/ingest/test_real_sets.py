"""The real multi-date and labelled sets in ``data/samples``: they ingest, tile and read as documented."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio

from a2mae.config import load_params
from a2mae.ingest.run import ingest
from a2mae.samples import sample_path

LANDSAT_DATES = {
    "L71119038_03820000317_Taizhou.tif": "2000-03-17",
    "L71119038_03820030206_Taizhou.tif": "2003-02-06",
    "LT51200382000124BJC00_Nanjing.tif": "2000-05-03",
    "LT51200382002193BJC00_Nanjing.tif": "2002-07-12",
}


def test_landsat_change_pairs_ingest_as_tm_l1_with_their_dates(tmp_path):
    root = sample_path("landsat_cd")
    files = sorted(root.glob("*/L*.tif"))
    assert sorted(p.name for p in files) == sorted(LANDSAT_DATES)
    report = ingest([str(p) for p in files], tmp_path / "cat.parquet", load_params(), progress=False)
    assert len(report.added) == 4 and not report.failed
    for rec in report.added:
        name = rec.source.rsplit("/", 1)[-1]
        assert (rec.sensor, rec.product) == ("TM", "L1")
        assert rec.bands == ("B1", "B2", "B3", "B4", "B5", "B7")
        assert rec.datetime.date().isoformat() == LANDSAT_DATES[name]
        assert rec.scale == pytest.approx(1 / 255) and rec.offset == 0.0  # 8-bit DNs, relative (no MTL)
        assert rec.gsd_m == pytest.approx(30.0)


@pytest.mark.parametrize("site, changed, unchanged", [("Taizhou", 4227, 17163), ("Nanjing", 2363, 12393)])
def test_landsat_reference_labels_are_on_the_image_grid(site, changed, unchanged):
    folder = sample_path("landsat_cd") / site
    (first, second) = sorted(folder.glob("L*.tif"))
    with (
        rasterio.open(folder / "reference.tif") as ref,
        rasterio.open(first) as a,
        rasterio.open(second) as b,
    ):
        labels = ref.read(1)
        assert ref.transform == a.transform == b.transform and ref.crs == a.crs == b.crs
        assert ref.nodata == 255 and a.dtypes[0] == "uint8" and a.count == 6
        pa, pb = a.read().astype(float), b.read().astype(float)
    assert (labels == 1).sum() == changed and (labels == 0).sum() == unchanged
    # the labels mean something on these pixels: date 2 regressed on date 1 (band by band) leaves larger
    # residuals where "changed" (a flipped or shifted mask loses the contrast)
    res = np.zeros(labels.shape)
    for x, y in zip(pa, pb, strict=True):
        slope, icpt = np.polyfit(x.ravel(), y.ravel(), 1)
        res += (y - (slope * x + icpt)) ** 2
    res = np.sqrt(res)
    assert res[labels == 1].mean() > 2.5 * res[labels == 0].mean()
    assert res[np.flipud(labels) == 1].mean() < 1.5 * res[np.flipud(labels) == 0].mean()


def test_oscd_pairs_ingest_with_the_dates_of_dates_txt_and_tile_into_two_date_sets(tmp_path):
    from a2mae.stssd.run import tile
    from a2mae.stssd.snapshot import set_mix

    root = sample_path("oscd")
    assert (root / "train.txt").read_text().strip().split(",") == [
        "aguasclaras",
        "bercy",
        "bordeaux",
        "paris",
        "rennes",
    ]
    params = load_params(overrides=["tile.workers=1"])
    report = ingest(
        [str(root / "bercy"), str(root / "aguasclaras")], tmp_path / "c.parquet", params, progress=False
    )
    dates = sorted(r.datetime.date().isoformat() for r in report.added)
    # aguasclaras' older file names hold the processing time (2016-12-27); its STAC sidecar, dates.txt's date
    assert dates == ["2015-09-16", "2016-11-30", "2017-08-29", "2017-10-15"]
    assert {(r.sensor, r.product, len(r.bands)) for r in report.added} == {("S2", "L1C", 13)}
    tile(tmp_path / "c.parquet", tmp_path / "stssd", params, progress=False)
    mix = set_mix(tmp_path / "stssd")
    assert mix.multi_date >= 20  # bercy 8 + aguasclaras 16 two-date sets (docs: data/samples/README.md)
    rows = pq.read_table(tmp_path / "stssd" / "manifest.parquet", columns=["sensor"]).column("sensor")
    assert set(rows.to_pylist()) == {"S2"}


def test_slovenia_land_cover_reads_as_a_segmentation_set():
    from a2mae.finetune.datasets import open_dataset

    root = sample_path("landcover")
    classes = (root / "classes.txt").read_text().split()
    assert classes == ["cultivated_land", "forest", "grassland", "shrubland", "artificial_surface"]
    sizes = {}
    for split in ("train", "val", "test"):
        ds = open_dataset("segmentation", root, split, sensor="S2")
        sizes[split] = len(ds)
        s = ds[0]
        assert ds.info.bands[:4] == ("B01", "B02", "B03", "B04") and len(ds.info.bands) == 13
        assert s.pixels.shape == (13, 32, 32) and ds.info.size == (32, 32)
        labels = s.target.numpy()
        assert set(np.unique(labels)) <= {0, 1, 2, 3, 4, 255}
        assert s.metas[0].datetime is not None and s.metas[0].gsd_m == pytest.approx(10.0, abs=0.1)
    assert sizes == {"train": 25, "val": 10, "test": 10}
    # no location in two splits: each split's chip names (row/column) are its own
    locs = {
        split: {p.stem.rsplit("_", 1)[1] for p in (root / split / "images").glob("*.tif")} for split in sizes
    }
    assert (
        not (locs["train"] & locs["val"])
        and not (locs["train"] & locs["test"])
        and not (locs["val"] & locs["test"])
    )
