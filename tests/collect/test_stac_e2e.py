"""STSSD gathered from STAC, offline: collect then tile against a local STAC API and the S3 store.

The catalog served (stac-fastapi-pgstac, started by the project) holds items of generated co-located
Sentinel-2 L2A and Landsat-8 C2 L2 scenes (COGs with sensor-like noise) and of the two bundled real
scenes; their assets are COGs in the S3 store: Sentinel-2 as ``s3://`` hrefs (signed ``/vsis3/``),
Landsat as plain ``http://`` URLs of a public bucket (unsigned ``/vsicurl/``). Every remote byte goes
through a counting proxy.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from a2mae.testing.scenes import Place, SceneSpec

pytestmark = [pytest.mark.slow, pytest.mark.s3]

REPO = Path(__file__).resolve().parents[2]
PLACE = Place(lat=30.5, lon=114.3, seed=3)
SAMPLES = REPO / "data" / "samples"
S2_REAL = SAMPLES / "sentinel2_l2a_T29RKH_20200219"
L8_REAL = SAMPLES / "landsat8_c2l2_p001r062_20201031"
TILE = ["tile.chip_size=96", "tile.grid_m=960", "tile.shard_max_mb=8"]


def _specs() -> list[SceneSpec]:
    from datetime import UTC, datetime

    def d(m: int, day: int) -> datetime:
        return datetime(2020, m, day, 3, 5, 41, tzinfo=UTC)

    return [  # scenes much larger than a location, so that only a part of each is read
        SceneSpec("S2", d(6, 15), 11520, subpixel=(0.3, 0.6)),
        SceneSpec("S2", d(12, 12), 11520, shift_m=(200, -100), subpixel=(0.3, 0.6)),
        SceneSpec("L8", d(6, 20), 23040, shift_m=(-150, 90), subpixel=(0.45, 0.2)),
        SceneSpec("L8", d(12, 7), 23040, shift_m=(120, -60), subpixel=(0.45, 0.2)),
    ]


def _real_item(rec, cmap, href) -> dict:
    """The bundled real Earth Search item of the S2 sample, its assets pointed at our copies."""
    item = json.loads((S2_REAL / "S2A_29RKH_20200219_0_L2A.json").read_text())
    assets = {}
    for bf in [*rec.band_files, rec.qa_file]:
        keys = cmap.bands.get(bf.band, cmap.qa if bf is rec.qa_file else ())
        key = next(k for k in keys if k in item["assets"])
        assets[key] = {
            **item["assets"][key],
            "href": href(bf.uri),
            "proj:shape": [bf.height, bf.width],
            "proj:transform": list(bf.transform),
        }
    return {**item, "assets": assets, "links": []}


class Published:
    """What the fixture put into the store and the STAC API."""

    def __init__(self, root, proxy, stac, local_of, locations, generated):
        self.root = root
        self.proxy = proxy
        self.stac = stac
        self.local_of = local_of  # remote href -> local path
        self.locations = locations
        self.generated = generated  # local records of the generated scenes (noisy COGs)


@pytest.fixture(scope="module")
def published(tmp_path_factory, s3_store, stac_api):
    from a2mae.collect.mapping import load_mapping
    from a2mae.config import load_params
    from a2mae.ingest.run import ingest
    from a2mae.sensors import get_registry
    from a2mae.testing.countproxy import CountingProxy
    from a2mae.testing.scenes import make_scenes
    from a2mae.testing.stac import cog_scene, stac_collection, stac_item, upload_scene

    root = tmp_path_factory.mktemp("stac-data")
    registry = get_registry()
    maps = {m: load_mapping(m, registry) for m in ("sentinel-2-l2a", "landsat-c2-l2")}
    made = make_scenes(root / "gen", _specs(), PLACE)
    generated = [cog_scene(r, root / "cogs" / r.sensor, noise=40.0, seed=k) for k, r in enumerate(made)]
    real = ingest([str(S2_REAL), str(L8_REAL)], root / "real.parquet", load_params(), progress=False).added
    proxy = CountingProxy(s3_store.endpoint_url).start()
    local_of: dict[str, str] = {}
    items: dict[str, list[dict]] = {m.collection: [] for m in maps.values()}
    for rec in [*generated, *real]:
        if rec.sensor == "S2":  # signed s3:// hrefs
            cmap = maps["sentinel-2-l2a"]
            up = upload_scene(rec, f"{s3_store.uri}/cogs/{rec.scene_id}", s3_store.settings())
            href = {u: r for u, r in up.items()}
        else:  # plain http:// URLs of a public bucket (not the S3 endpoint's spelling: read via /vsicurl/)
            cmap = maps["landsat-c2-l2"]
            up = upload_scene(rec, f"s3://{s3_store.PUBLIC_BUCKET}/cogs/{rec.scene_id}", s3_store.settings())
            href = {u: r.replace("s3://", f"http://localhost:{proxy.port}/") for u, r in up.items()}
        local_of.update({h: u for u, h in href.items()})
        real_s2 = rec in real and rec.sensor == "S2"
        items[cmap.collection].append(
            _real_item(rec, cmap, href.__getitem__) if real_s2 else stac_item(rec, cmap, href.__getitem__)
        )
    for cmap in maps.values():
        stac_api.add_collection(stac_collection(cmap))
        stac_api.add_items(cmap.collection, items[cmap.collection])
    s2_real, l8_real = sorted(real, key=lambda r: r.sensor != "S2")
    features = [
        {
            "type": "Feature",
            "id": "wuhan",
            "geometry": {"type": "Point", "coordinates": [PLACE.lon, PLACE.lat]},
        },
        {"type": "Feature", "id": "sahara", "geometry": _box(s2_real, 15000)},
        {"type": "Feature", "id": "amazon", "geometry": _point(l8_real)},
        {"type": "Feature", "id": "sea", "geometry": {"type": "Point", "coordinates": [-30.0, 0.5]}},
    ]
    locations = root / "locations.geojson"
    locations.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    yield Published(root, proxy, stac_api, local_of, locations, generated)
    proxy.stop()


def _point(rec) -> dict:
    lat = sum(c[0] for c in rec.corners) / 4
    lon = sum(c[1] for c in rec.corners) / 4
    return {"type": "Point", "coordinates": [lon, lat]}


def _box(rec, half_m: float) -> dict:
    from a2mae.ingest.roi import square_around

    lon, lat = _point(rec)["coordinates"]
    return {"type": "Polygon", "coordinates": square_around(lon, lat, 2 * half_m)}


def _params(*more: str):
    from a2mae.config import load_params

    return load_params(
        None,
        [
            "collect.start=2020-01-01",
            "collect.end=2020-12-31",
            "collect.max_cloud_cover=20",
            "collect.workers=2",
            *TILE,
            *more,
        ],
    )


@pytest.fixture(scope="module")
def collected(published, tmp_path_factory):
    from a2mae.collect.run import collect

    catalog = tmp_path_factory.mktemp("collected") / "catalog.parquet"
    report = collect(
        _params(), stac_url=published.stac.url, locations=published.locations, catalog=catalog, progress=False
    )
    return report, catalog


def test_collect_writes_the_best_remote_scenes_per_location_and_period(collected, published):
    from a2mae.ingest.catalog import read_catalog

    report, catalog = collected
    rows = read_catalog(catalog)
    assert report.searches > 0 and not report.failed
    # wuhan: S2 and L8 in the growth and the non-growth period; sahara: the real S2 (February: ng)
    assert sorted((r.sensor, r.period) for r in rows) == [
        ("L8", "g"),
        ("L8", "ng"),
        ("S2", "g"),
        ("S2", "ng"),
        ("S2", "ng"),
    ]
    # amazon: the real Landsat scene is 99.9 % cloudy (above collect.max_cloud_cover); sea: nothing there
    assert sorted(report.empty) == ["amazon", "sea"]
    for r in rows:
        uris = [bf.uri for bf in (*r.band_files, r.qa_file)]
        if r.sensor == "S2":
            assert all(u.startswith("s3://") for u in uris)
        else:
            assert all(u.startswith("http://localhost:") for u in uris)
        assert r.roi_geojson is not None and r.datetime_source == "stac"
    # the same run again adds nothing
    from a2mae.collect.run import collect

    again = collect(
        _params(), stac_url=published.stac.url, locations=published.locations, catalog=catalog, progress=False
    )
    assert not again.added and not again.updated and len(again.present) == 5


def test_collected_rows_match_what_ingest_reads_from_the_same_files(collected, published, tmp_path):
    """The STAC mapping gives the grids, radiometry, time and period ingest reads from the files."""
    from a2mae.config import load_params
    from a2mae.ingest.catalog import read_catalog
    from a2mae.ingest.run import ingest

    _, catalog = collected
    remote = {(r.sensor, r.datetime): r for r in read_catalog(catalog)}
    sources = [str(Path(r.source)) for r in published.generated]
    local = ingest(sources, tmp_path / "local.parquet", load_params(), progress=False).added
    assert len(local) == 4
    for rec in local:
        got = remote[(rec.sensor, rec.datetime)]
        for key in (
            "crs",
            "transform",
            "width",
            "height",
            "gsd_m",
            "bounds",
            "corners",
            "footprint_wkt",
            "bands",
            "period",
            "scale",
            "offset",
            "product",
        ):
            assert getattr(got, key) == getattr(rec, key), key
        strip = {"uri"}
        assert [b.model_dump(exclude=strip) for b in got.band_files] == [
            b.model_dump(exclude=strip) for b in rec.band_files
        ]
        assert got.qa_file.model_dump(exclude=strip) == rec.qa_file.model_dump(exclude=strip)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _chips(snapshot: Path) -> dict[str, bytes]:
    from a2mae.stssd.dataset import StssdDataset

    ds = StssdDataset(snapshot)
    out = {}
    for i in range(len(ds)):
        rows, chips = ds.read_stored(i)
        for r, c in zip(rows, chips, strict=True):
            out[r["image_id"]] = c.tobytes()
    return out


def test_tile_reads_only_the_chip_windows_and_matches_local_tiling(
    collected, published, tmp_path, monkeypatch
):
    """Remote tiling: less than 1.5x the compressed bytes of the chip windows, never a whole file;
    its chips are byte-identical to those tiled from the same files on disk."""
    from a2mae.ingest.catalog import read_catalog, write_catalog
    from a2mae.stssd.run import tile
    from a2mae.testing.stac import chip_windows, window_tile_bytes, with_uris

    _, catalog = collected
    proxy = published.proxy
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)  # /vsis3/ through the proxy too
    proxy.reset()
    remote = tile(catalog, tmp_path / "remote", _params("tile.workers=2"), progress=False)
    stats = proxy.stats()
    monkeypatch.undo()

    rows = read_catalog(catalog)
    local_catalog = tmp_path / "local.parquet"
    write_catalog([with_uris(r, published.local_of) for r in rows], local_catalog)
    local = tile(local_catalog, tmp_path / "local", _params("tile.workers=1"), progress=False)

    # byte-identical chips (and shards: the same plan packs the same bytes)
    assert remote.counts["chips"] > 30 and remote.counts == local.counts
    assert _chips(tmp_path / "remote") == _chips(tmp_path / "local")
    shards = sorted(p.name for p in (tmp_path / "remote" / "shards").iterdir())
    assert shards and all(
        _digest(tmp_path / "remote" / "shards" / s) == _digest(tmp_path / "local" / "shards" / s)
        for s in shards
    )

    # bytes: the compressed COG tiles the chip windows touch, of the files tiling reads
    windows = chip_windows(rows, _params())
    need = window_tile_bytes(windows, 96, published.local_of)
    fetched, yardstick = stats["bytes"], sum(need.values())
    print(f"remote bytes {fetched}, chip-window tiles {yardstick}, ratio {fetched / yardstick:.3f}")
    assert 0 < fetched < 1.5 * yardstick, (fetched, yardstick)
    per_scene: dict[str, int] = {}  # bytes fetched per scene folder (never a whole scene)
    for _method, path, _rng, status, nbytes in stats["requests"]:
        assert status in (200, 206), (path, status)
        folder = path.rsplit("/", 1)[0]
        per_scene[folder] = per_scene.get(folder, 0) + nbytes
    size: dict[str, int] = {}
    for href, local_path in published.local_of.items():
        path = href[len("s3:/") :] if href.startswith("s3://") else "/" + href.split("/", 3)[3]
        folder = path.rsplit("/", 1)[0]
        size[folder] = size.get(folder, 0) + Path(local_path).stat().st_size
    print({k.rsplit("/", 1)[1]: f"{v / size[k]:.3f}" for k, v in per_scene.items()})
    generated = [k for k in per_scene if "_2020061" in k or "_2020062" in k or "_202012" in k]
    assert len(generated) == 4 and all(per_scene[k] < 0.5 * size[k] for k in generated), per_scene


def test_an_unreadable_remote_asset_is_one_line_and_skip_bad_goes_on(collected, tmp_path, published):
    from a2mae.errors import A2maeError
    from a2mae.ingest.catalog import read_catalog, write_catalog
    from a2mae.stssd.run import tile

    _, catalog = collected
    rows = read_catalog(catalog)
    victim = next(r for r in rows if r.sensor == "L8" and r.period == "g")
    gone = victim.band_files[3].uri.rsplit("/", 1)[0] + "/GONE_SR_B4.TIF"
    broken = [
        r
        if r is not victim
        else r.model_copy(
            update={
                "band_files": tuple(
                    b.model_copy(update={"uri": gone}) if b.band == "B4" else b for b in r.band_files
                )
            }
        )
        for r in rows
    ]
    bad_catalog = tmp_path / "bad.parquet"
    write_catalog(broken, bad_catalog)

    with pytest.raises(A2maeError) as err:
        tile(bad_catalog, tmp_path / "out", _params("tile.workers=1"), progress=False)
    line = str(err.value)
    assert "\n" not in line and gone in line and "404" in line and "--skip-bad" in line
    assert not (tmp_path / "out").exists()

    s = tile(bad_catalog, tmp_path / "out", _params("tile.workers=1"), progress=False, skip_bad=True)
    assert len(s.skipped) == 1 and s.skipped[0].startswith(victim.scene_id) and gone in s.skipped[0]
    import pyarrow.parquet as pq

    scenes = set(
        pq.read_table(tmp_path / "out" / "manifest.parquet", columns=["scene_id"])["scene_id"].to_pylist()
    )
    assert victim.scene_id not in scenes and len(scenes) == 4


def test_remote_reads_retry_transient_errors(published):
    """Three 503s in a row (a throttling store) are retried with backoff; the pixels arrive intact."""
    import rasterio
    from rasterio.windows import Window

    from a2mae.io.raster import open_raster, raster_env
    from a2mae.io.storage import S3Settings

    href, path = next((h, p) for h, p in published.local_of.items() if h.startswith("http://"))
    with rasterio.open(path) as ds:
        want = ds.read(1, window=Window(100, 100, 64, 64))
    published.proxy.fail_next(3)
    with raster_env(S3Settings(anonymous=True)), open_raster(href) as ds:
        got = ds.read(1, window=Window(100, 100, 64, 64))
    assert np.array_equal(got, want)
    assert sum(1 for r in published.proxy.stats()["requests"] if r[3] == 503) >= 3


def test_collect_flow_and_the_stac_watcher(prefect_harness, published, tmp_path):
    """The collect flow writes the catalog; the watcher reports each item over the locations once, and
    a newly published item on its next run."""
    from a2mae.collect.mapping import load_mapping
    from a2mae.ingest.catalog import read_catalog
    from a2mae.sensors import get_registry
    from a2mae.testing.stac import stac_item
    from flows.collect import collect_flow
    from flows.params import CollectParams, WatchParams
    from flows.watch import watch_scenes

    sets = [
        f"collect.stac_url={published.stac.url}",
        f"collect.locations={published.locations}",
        "collect.start=2020-01-01",
        "collect.end=2020-12-31",
        "collect.workers=2",
    ]
    out = collect_flow(CollectParams(project_dir=str(tmp_path), overrides=sets))
    assert len(out["added"]) == 5 and sorted(out["empty"]) == ["amazon", "sea"]
    assert len(read_catalog(tmp_path / "data" / "catalog.parquet")) == 5

    form = WatchParams(project_dir=str(tmp_path), stac=True, state_dir=str(tmp_path / "w"), overrides=sets)
    first = watch_scenes(form)
    # the 4 generated scenes and the real S2 (the real Landsat scene is above the cloud limit): the
    # collect flow above put them into the catalog already, which the watcher sees by content hash
    assert (
        first["new"] == [] and len(first["known"]) == 5 and all(n.startswith("stac:") for n in first["known"])
    )
    assert watch_scenes(form)["new"] == []
    wuhan_s2 = next(
        r for r in read_catalog(tmp_path / "data" / "catalog.parquet") if r.sensor == "S2" and r.period == "g"
    )
    cmap = load_mapping("sentinel-2-l2a", get_registry())
    from datetime import UTC, datetime, timedelta

    # acquired yesterday, published now: the next run (searching from its last run minus the lookback) sees it
    fresh = wuhan_s2.model_copy(update={"datetime": datetime.now(UTC) - timedelta(days=1)})
    published.stac.add_items(cmap.collection, [stac_item(fresh, cmap, lambda u: u, item_id="S2_NEW")])
    assert watch_scenes(form)["new"] == [f"stac:{cmap.collection}/S2_NEW"]
