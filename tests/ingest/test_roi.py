"""Regions of interest: point-in-(multi)polygon tests (property-based) and canonical unions."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from a2mae.ingest.roi import contains, polygons_of, square_around, union_geojson

lons = st.floats(-170, 170)
lats = st.floats(-75, 75)
sides = st.floats(100, 50_000)


@settings(max_examples=60, deadline=None)
@given(lon=lons, lat=lats, side=sides, u=st.floats(-0.49, 0.49), v=st.floats(-0.49, 0.49))
def test_points_of_a_square_are_inside_and_points_beyond_it_outside(lon, lat, side, u, v):
    sq = square_around(lon, lat, side)
    (w, s), (e, _), (_, n) = sq[0][0], sq[0][1], sq[0][2]
    geo = {"type": "Polygon", "coordinates": sq}
    x, y = lon + u * (e - w), lat + v * (n - s)
    assert contains(geo, [x], [y])[0]
    assert not contains(geo, [e + (e - w) * 0.01], [lat])[0]
    assert not contains(geo, [lon], [s - (n - s) * 0.01])[0]


@settings(max_examples=30, deadline=None)
@given(lon=lons, lat=lats, side=sides)
def test_overlapping_polygons_of_a_union_do_not_cancel(lon, lat, side):
    a = square_around(lon, lat, side)
    b = square_around(lon, lat, side * 0.5)  # inside a: an even-odd rule over both would punch a hole
    roi = union_geojson([a, b])
    assert contains(roi, [lon], [lat])[0]
    assert len(polygons_of(json.loads(roi))) == 2
    assert union_geojson([b, a, a]) == roi  # canonical: order and duplicates do not matter


def test_holes_are_outside():
    outer = [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]
    hole = [[4, 4], [6, 4], [6, 6], [4, 6], [4, 4]]
    geo = {"type": "Polygon", "coordinates": [outer, hole]}
    got = contains(geo, np.array([1.0, 5.0, 11.0]), np.array([1.0, 5.0, 5.0]))
    assert got.tolist() == [True, False, False]
