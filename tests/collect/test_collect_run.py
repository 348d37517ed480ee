"""``collect`` against an in-memory STAC API (the searches are replaced; the real server: test_stac_e2e)."""

from __future__ import annotations

import json

import pytest

from a2mae.collect import run as run_mod
from a2mae.collect.mapping import CollectError, load_mapping
from a2mae.collect.search import _passes
from a2mae.config import load_params
from a2mae.ingest.catalog import read_catalog
from a2mae.ingest.roi import polygons_of
from a2mae.sensors import get_registry
from a2mae.testing.stac import stac_item


class FakeAPI:
    """Items per collection; a search returns those whose bbox holds the location's centre."""

    def __init__(self, items):
        self.items = items
        self.calls = 0

    def search(self, client, task, cfg):
        self.calls += 1
        lon, lat = task.location.lon, task.location.lat
        out = []
        for it in self.items.get(task.cmap.collection, []):
            w, s, e, n = it["bbox"]
            if w <= lon <= e and s <= lat <= n:
                out.append(it)
        return [it for it in out if _passes(it, task, cfg)]  # the limits the real search applies


@pytest.fixture
def api(monkeypatch, synthetic_scenes):
    _, records, _ = synthetic_scenes
    reg = get_registry()
    maps = {m: load_mapping(m, reg) for m in ("sentinel-2-l2a", "landsat-c2-l2")}
    items = {m.collection: [] for m in maps.values()}
    for r in records:
        if r.sensor == "S2":
            items["sentinel-2-l2a"].append(
                stac_item(r, maps["sentinel-2-l2a"], lambda u: "s3://b/" + u[-30:])
            )
        elif r.sensor == "L8":
            items["landsat-c2-l2"].append(
                stac_item(r, maps["landsat-c2-l2"], lambda u: "https://h/" + u[-30:])
            )
    fake = FakeAPI(items)
    monkeypatch.setattr(run_mod, "open_client", lambda url, timeout: object())
    monkeypatch.setattr(run_mod, "search_items", fake.search)
    return fake, records


def _centre(rec):
    return sum(c[1] for c in rec.corners) / 4, sum(c[0] for c in rec.corners) / 4


def _locations(tmp_path, points):
    path = tmp_path / f"loc-{'-'.join(i for i, _ in points)}.geojson"
    feats = [
        {"type": "Feature", "id": i, "geometry": {"type": "Point", "coordinates": list(p)}} for i, p in points
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def _params(*more):
    return load_params(
        None, ["collect.start=2020-01-01", "collect.end=2020-12-31", "collect.workers=2", *more]
    )


def test_collect_merges_rows_unites_regions_and_is_idempotent(tmp_path, api):
    fake, records = api
    lon, lat = _centre(next(r for r in records if r.sensor == "S2"))
    loc = _locations(tmp_path, [("a", (lon, lat))])
    cat = tmp_path / "cat.parquet"
    rep = run_mod.collect(_params(), stac_url="http://x", locations=loc, catalog=cat, progress=False)
    rows = read_catalog(cat)
    # growth and non-growth scenes of both sensors at the place
    assert sorted((r.sensor, r.period) for r in rows) == [
        ("L8", "g"),
        ("L8", "ng"),
        ("S2", "g"),
        ("S2", "ng"),
    ]
    assert len(rep.added) == 4 and not rep.failed and not rep.empty and rep.searches == fake.calls
    assert all(len(polygons_of(json.loads(r.roi_geojson))) == 1 for r in rows)

    again = run_mod.collect(_params(), stac_url="http://x", locations=loc, catalog=cat, progress=False)
    assert (len(again.added), len(again.updated), len(again.present)) == (0, 0, 4)

    near = _locations(tmp_path, [("b", (lon + 0.003, lat + 0.002))])  # a second location: regions grow
    more = run_mod.collect(_params(), stac_url="http://x", locations=near, catalog=cat, progress=False)
    assert len(more.updated) == 4 and not more.added
    assert all(len(polygons_of(json.loads(r.roi_geojson))) == 2 for r in read_catalog(cat))


def test_cloud_limit_cap_and_empty_locations(tmp_path, api):
    _, records = api
    lon, lat = _centre(records[0])
    loc = _locations(tmp_path, [("a", (lon, lat)), ("sea", (-30.0, 0.0))])
    with pytest.raises(CollectError, match=r"collect\.max_scenes=2 is below"):  # the first location needs 4
        run_mod.collect(
            _params("collect.max_scenes=2"),
            stac_url="http://x",
            locations=loc,
            catalog=tmp_path / "c.parquet",
        )
    two = _locations(tmp_path, [("a", (lon, lat)), ("a2", (lon + 0.001, lat))])
    rep = run_mod.collect(
        _params("collect.max_scenes=5"), stac_url="http://x", locations=two, catalog=tmp_path / "e.parquet"
    )
    assert not rep.capped and len(rep.added) == 4  # the same 4 scenes serve both: within the cap
    rep = run_mod.collect(
        _params(), stac_url="http://x", locations=loc, catalog=tmp_path / "c.parquet", progress=False
    )
    assert rep.empty == ["sea"] and len(rep.added) == 4
    with pytest.raises(CollectError, match=r"no scene at any of 1 location\(s\).*collect.max_cloud_cover"):
        run_mod.collect(
            _params(),
            stac_url="http://x",
            locations=_locations(tmp_path, [("sea", (-30.0, 0.0))]),
            catalog=tmp_path / "d.parquet",
            progress=False,
        )
    assert not (tmp_path / "d.parquet").exists()


def test_collect_needs_a_stac_url(tmp_path):
    with pytest.raises(CollectError, match=r"set collect\.stac_url or pass --stac"):
        run_mod.collect(_params(), catalog=tmp_path / "c.parquet")


def test_cli_collect_one_line_errors(tmp_path):
    from typer.testing import CliRunner

    from a2mae.cli import app

    res = CliRunner().invoke(
        app, ["collect", "--stac", "http://127.0.0.1:9", "--catalog", str(tmp_path / "c")]
    )
    assert res.exit_code != 0
    assert "cannot open the STAC API (nothing answers there)" in str(res.exception or res.output)
