"""Locations (files and generated), search intervals per growth period, the choice of scenes."""

from __future__ import annotations

import json
import struct
from datetime import UTC, date, datetime

import numpy as np
import pytest

from a2mae.collect.locations import generate_locations, parse_wkb, read_locations
from a2mae.collect.mapping import CollectError, load_mapping
from a2mae.collect.search import choose, period_intervals
from a2mae.config import load_params
from a2mae.ingest.roi import contains
from a2mae.sensors import get_registry


def _fc(*features):
    return {"type": "FeatureCollection", "features": list(features)}


def test_geojson_points_and_polygons(tmp_path):
    poly = [[[10.0, 45.0], [10.2, 45.0], [10.2, 45.1], [10.0, 45.1], [10.0, 45.0]]]
    path = tmp_path / "loc.geojson"
    path.write_text(
        json.dumps(
            _fc(
                {"type": "Feature", "id": "a", "geometry": {"type": "Point", "coordinates": [7.5, 46.5]}},
                {
                    "type": "Feature",
                    "properties": {"id": "b"},
                    "geometry": {"type": "Polygon", "coordinates": poly},
                },
                {
                    "type": "Feature",
                    "geometry": {"type": "MultiPoint", "coordinates": [[0, 50], [1, 51, 200]]},
                },
            )
        )
    )
    locs = read_locations(path, 2880)
    assert [x.id for x in locs] == ["a", "b", "loc-2-0", "loc-2-1"]
    a = locs[0]
    _, s, _, n = a.bbox  # a 2880 m square around the point
    assert (n - s) * 111_320 == pytest.approx(2880, rel=1e-3)
    assert contains(json.dumps(a.geometry), [7.5], [46.5])[0]
    assert locs[1].polygon == poly and locs[1].lat == pytest.approx(45.05)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            _fc({"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}}),
            "LineString",
        ),
        (
            _fc({"type": "Feature", "geometry": {"type": "Point", "coordinates": [500000, 4200000]}}),
            "not longitude",
        ),
        (_fc({"type": "Feature", "properties": {}}), "feature 0 has no geometry"),
        (
            _fc(
                *[
                    {"type": "Feature", "id": "x", "geometry": {"type": "Point", "coordinates": [0, k]}}
                    for k in (1, 2)
                ]
            ),
            "ids repeat (x)",
        ),
        (_fc(), "holds no location"),
    ],
)
def test_bad_location_files_are_one_line(tmp_path, doc, expected):
    path = tmp_path / "loc.geojson"
    path.write_text(json.dumps(doc))
    with pytest.raises(CollectError) as err:
        read_locations(path, 1000)
    assert expected in str(err.value) and str(path) in str(err.value)


def _wkb_point(x, y, z=None):
    if z is None:
        return struct.pack("<BIdd", 1, 1, x, y)
    return struct.pack("<BIddd", 1, 1001, x, y, z)


def _wkb_polygon(ring, big=False):
    o = ">" if big else "<"
    body = struct.pack(o + "I", len(ring)) + b"".join(struct.pack(o + "dd", *p) for p in ring)
    return struct.pack(o + "BII", 0 if big else 1, 3, 1) + body


def test_geoparquet_points_and_polygons(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    ring = [(10.0, 45.0), (10.1, 45.0), (10.1, 45.1), (10.0, 45.0)]
    blobs = [_wkb_point(7.5, 46.5), _wkb_point(8.0, 47.0, 500.0), _wkb_polygon(ring, big=True)]
    meta = {"primary_column": "geom", "columns": {"geom": {"encoding": "WKB"}}, "version": "1.1.0"}
    table = pa.table({"id": ["p", "pz", "poly"], "geom": blobs}).replace_schema_metadata(
        {"geo": json.dumps(meta)}
    )
    pq.write_table(table, tmp_path / "loc.parquet")
    locs = read_locations(tmp_path / "loc.parquet", 1000)
    assert [x.id for x in locs] == ["p", "pz", "poly"]
    assert (locs[1].lon, locs[1].lat) == (8.0, 47.0)
    assert locs[2].polygon == [[list(p) for p in ring]]
    with pytest.raises(CollectError, match="truncated"):
        parse_wkb(blobs[0][:10])


def test_generated_locations_are_deterministic_stratified_and_in_the_bbox():
    a = generate_locations(200, seed=7, size_m=1000)
    assert a == generate_locations(200, seed=7, size_m=1000) and a != generate_locations(
        200, seed=8, size_m=1000
    )
    lat = np.array([x.lat for x in a])
    # equal-area strata: each hemisphere, and each band of equal area, holds about its share
    assert 80 <= (lat > 0).sum() <= 120
    s = np.sin(np.radians(lat))
    counts = np.histogram(s, bins=4, range=(-1, 1))[0]
    assert counts.min() >= 35, counts
    box = [5.0, 44.0, 12.0, 48.0]
    inside = generate_locations(30, seed=1, size_m=1000, bbox=box)
    assert len(inside) == 30 and all(5 <= x.lon <= 12 and 44 <= x.lat <= 48 for x in inside)
    with pytest.raises(CollectError, match=r"collect\.bbox"):
        generate_locations(3, seed=0, size_m=1000, bbox=[12, 44, 5, 48])


def _growth():
    return load_params().data.growth_period


def test_search_intervals_follow_the_growth_rule():
    iv = period_intervals(date(2023, 1, 1), date(2023, 12, 31), 45.0, _growth())
    days = {k: [(a.date().isoformat(), b.date().isoformat()) for a, b in v] for k, v in iv.items()}
    assert days == {
        "ng": [("2023-01-01", "2023-03-31"), ("2023-10-01", "2023-12-31")],
        "g": [("2023-04-01", "2023-09-30")],
    }
    south = period_intervals(date(2023, 2, 10), date(2023, 5, 20), -35.0, _growth())  # shifted by six months
    assert {k: [(a.date().isoformat(), b.date().isoformat()) for a, b in v] for k, v in south.items()} == {
        "g": [("2023-02-10", "2023-03-31")],
        "ng": [("2023-04-01", "2023-05-20")],
    }
    tropics = period_intervals(date(2023, 1, 1), date(2023, 12, 31), 5.0, _growth())
    assert list(tropics) == ["na"] and len(tropics["na"]) == 1
    assert tropics["na"][0][1] == datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC)


def _item(i, when, cloud, collection):
    return {"id": i, "collection": collection, "properties": {"datetime": when, "eo:cloud_cover": cloud}}


def test_choice_takes_least_cloud_then_the_closest_date():
    reg = get_registry()
    s2, l8 = load_mapping("sentinel-2-l2a", reg), load_mapping("landsat-c2-l2", reg)
    cfg = load_params(overrides=["collect.cloud_step=5", "collect.scenes_per_period=1"]).collect
    g = period_intervals(date(2023, 1, 1), date(2023, 12, 31), 45.0, _growth())["g"]
    cands = {
        s2.collection: [
            _item("s2-cloudy", "2023-07-01T10:00:00Z", 30.0, s2.collection),
            _item("s2-far", "2023-04-02T10:00:00Z", 1.0, s2.collection),  # same 5 % step, farther from July
            _item("s2-best", "2023-06-25T10:00:00Z", 3.0, s2.collection),
        ],
        l8.collection: [
            _item("l8-july", "2023-07-20T10:00:00Z", 2.0, l8.collection),
            _item("l8-june", "2023-06-27T10:00:00Z", 4.0, l8.collection),  # closest to the chosen S2 date
        ],
    }
    got = [it["id"] for _, it in choose(cands, [s2, l8], g, cfg)]
    assert got == ["s2-best", "l8-june"]
    cfg2 = load_params(overrides=["collect.scenes_per_period=2"]).collect
    assert [it["id"] for _, it in choose(cands, [s2, l8], g, cfg2)][:2] == ["s2-best", "s2-far"]
    assert choose({}, [s2, l8], g, cfg) == []
