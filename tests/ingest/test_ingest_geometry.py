"""Grid geometry and QA masks used by ingest, property-tested against rasterio/pyproj."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

from a2mae.ingest.scene_geometry import crs_string, is_all_nodata, pixel_size_m, wgs84_geometry
from a2mae.sensors.registry import QASpec

GEOD = Geod(ellps="WGS84")


@settings(max_examples=25, deadline=None)
@given(
    zone=st.integers(1, 60),
    south=st.booleans(),
    x0=st.floats(200_000, 700_000),
    y0=st.floats(100_000, 9_000_000),
    res=st.sampled_from([3.2, 8.0, 10.0, 20.0, 30.0, 60.0]),
    width=st.integers(1, 2000),
    height=st.integers(1, 2000),
)
def test_corners_match_rasterio_within_1m(zone, south, x0, y0, res, width, height):
    crs = CRS.from_epsg((32700 if south else 32600) + zone)
    t = Affine.translation(x0, y0) @ Affine.scale(res, -res)
    corners, wkt, (clat, _) = wgs84_geometry(crs, t, width, height)
    xs = [x0, x0 + res * width, x0 + res * width, x0]
    ys = [y0, y0, y0 - res * height, y0 - res * height]
    lons, lats = warp_transform(crs, "EPSG:4326", xs, ys)
    for (lat, lon), tlat, tlon in zip(corners, lats, lons, strict=True):
        assert GEOD.inv(lon, lat, tlon, tlat)[2] < 1.0
    ring = [tuple(map(float, p.split())) for p in wkt[len("POLYGON ((") : -2].split(", ")]
    assert len(ring) == 4 * 8 + 1 and ring[0] == ring[-1]
    # Within the outline's latitudes, not the corners': near a pole an edge bulges poleward, so the
    # centre of a wide strip can lie south of all four corners (zone 1 S, y0=100 km, 2000 x 1 px).
    ring_lats = [lat for _, lat in ring]
    assert min(ring_lats) - 1e-9 <= clat <= max(ring_lats) + 1e-9
    assert pixel_size_m(crs, t, width, height) == pytest.approx(res)


def test_pixel_size_in_feet_and_degrees():
    feet = CRS.from_epsg(2263)  # NY Long Island, US survey feet
    t = Affine.translation(1_000_000, 200_000) @ Affine.scale(10, -10)
    assert pixel_size_m(feet, t, 100, 100) == pytest.approx(3.048006, rel=1e-6)
    geo = CRS.from_epsg(4326)
    t = Affine.translation(10.0, 45.0) @ Affine.scale(1e-4, -1e-4)
    size = pixel_size_m(geo, t, 100, 100)
    # 1e-4 degree: ~11.1 m north-south, ~7.9 m east-west at 45N
    assert size == pytest.approx((11.13 * 7.87) ** 0.5, rel=0.01)
    assert crs_string(geo) == "EPSG:4326"
    assert crs_string(CRS.from_proj4("+proj=utm +zone=33 +ellps=intl +units=m")).startswith(
        ("PROJCS", "PROJCRS")
    )


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(st.integers(0, 2**16 - 1), min_size=1, max_size=64),
    nodata_bits=st.sets(st.integers(0, 15), max_size=2),
    cloud_bits=st.sets(st.integers(0, 15), max_size=4),
)
def test_qa_bit_masks(values, nodata_bits, cloud_bits):
    qa = QASpec(band="QA", nodata_bits=tuple(nodata_bits), cloud_bits=tuple(cloud_bits))
    arr = np.array(values, dtype=np.uint16)
    nodata, cloud = qa.masks(arr)
    for v, n, c in zip(values, nodata, cloud, strict=True):
        assert n == any(v >> b & 1 for b in nodata_bits)
        assert c == (not n and any(v >> b & 1 for b in cloud_bits))


def test_qa_value_masks_scl():
    qa = QASpec(band="SCL", nodata_values=(0, 1), cloud_values=(3, 8, 9, 10))
    nodata, cloud = qa.masks(np.arange(12, dtype=np.uint8))
    assert nodata.nonzero()[0].tolist() == [0, 1]
    assert cloud.nonzero()[0].tolist() == [3, 8, 9, 10]


def test_all_nodata():
    assert is_all_nodata(np.zeros((3, 3), np.uint16), 0)
    assert not is_all_nodata(np.array([0, 1], np.uint16), 0)
    assert not is_all_nodata(np.zeros(3, np.uint16), None)
    assert is_all_nodata(np.full(3, np.nan, np.float32), None)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.integers(0, 65535), min_size=1, max_size=50),
    offset=st.integers(0, 14),
    width=st.integers(1, 2),
    lo=st.integers(1, 3),
)
def test_qa_bit_field_masks(values, offset, width, lo):
    from a2mae.sensors import BitField

    lo = min(lo, (1 << width) - 1)
    qa = QASpec(band="QA", nodata_bits=(0,), cloud_fields=(BitField(offset=offset, width=width, min=lo),))
    arr = np.array(values, dtype=np.uint16)
    n, c = qa.masks(arr)
    for v, nn, cc in zip(values, n, c, strict=True):
        assert nn == bool(v & 1)
        assert cc == (not nn and ((v >> offset) & ((1 << width) - 1)) >= lo)
