"""Geographic encoding: Eq. 1 (corners -> token lat/lon) and Eq. 2 (metric sin-cos from the set centre)."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from a2mae.models import geo
from a2mae.testing.batches import chip_corners, synthetic_batch

lat_st = st.floats(-70, 70)
lon_st = st.floats(-180, 180, exclude_max=True)
gsd_st = st.floats(1.0, 60.0)


def _code(lat0: float, lon0: float, gsd: float, size: int, x: float, y: float, dim: int = 64) -> torch.Tensor:
    """Eq. 2 code of ground point (x, y) metres from the centre, as seen in a chip of this GSD."""
    corners = torch.tensor(chip_corners(lat0, lon0, gsd, size, size), dtype=torch.float64)[None]
    half = gsd * size / 2
    uv = torch.tensor([[[(x + half) / (2 * half), (half - y) / (2 * half)]]], dtype=torch.float64)
    latlon = geo.bilinear_latlon(corners, uv)  # Eq. 1
    xy = geo.local_xy(latlon, torch.tensor([[lat0, lon0]], dtype=torch.float64))[:, 0]
    return geo.metric_pos_embed(xy, dim, 80.0)[0]


@settings(max_examples=40, deadline=None)
@given(lat_st, lon_st, gsd_st, gsd_st, st.floats(-0.45, 0.45), st.floats(-0.45, 0.45))
def test_same_ground_point_same_code_whatever_the_gsd(lat0, lon0, g1, g2, fx, fy):
    size = 96
    half = min(g1, g2) * size / 2  # the point lies inside both footprints
    x, y = fx * 2 * half, fy * 2 * half
    c1 = _code(lat0, lon0, g1, size, x, y)
    c2 = _code(lat0, lon0, g2, size, x, y)
    assert torch.allclose(c1, c2, atol=2e-4), (c1 - c2).abs().max()
    # and the code is that of the true ground offset (so it is the GSD-free Eq. 2 code)
    ref = geo.metric_pos_embed(torch.tensor([[x, y]]), 64, 80.0)[0]
    assert torch.allclose(c1, ref, atol=2e-4)


@settings(max_examples=25, deadline=None)
@given(lat_st, lon_st, gsd_st)
def test_eq1_reproduces_corners_and_centre(lat0, lon0, gsd):
    corners = torch.tensor(chip_corners(lat0, lon0, gsd, 96, 96), dtype=torch.float64)[None]
    uv = torch.tensor([[[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5]]], dtype=torch.float64)
    ll = geo.bilinear_latlon(corners, uv)[0]
    wrap = lambda d: (d + 180) % 360 - 180  # noqa: E731
    assert torch.allclose(ll[:4, 0], corners[0, :, 0], atol=1e-9)
    assert torch.allclose(wrap(ll[:4, 1] - corners[0, :, 1]), torch.zeros(4, dtype=torch.float64), atol=1e-9)
    assert abs(ll[4, 0] - lat0) < 1e-9 and abs(wrap(ll[4, 1] - lon0)) < 1e-9


def test_local_xy_is_metric():
    # 0.001 degree of latitude is ~111.19 m everywhere; of longitude ~111.19 * cos(lat) m.
    centre = torch.tensor([[60.0, 10.0]], dtype=torch.float64)
    pts = torch.tensor([[[60.001, 10.0], [60.0, 10.001]]], dtype=torch.float64)
    xy = geo.local_xy(pts, centre)[0]
    k = 6_371_000 * math.pi / 180 * 0.001
    assert abs(xy[0, 1] - k) < 1e-6 and abs(xy[0, 0]) < 1e-9
    assert abs(xy[1, 0] - k * math.cos(math.radians(60))) < 1e-6


def test_antimeridian_chip_and_set_centre():
    corners = torch.tensor(chip_corners(10.0, 179.999, 30.0, 96, 96), dtype=torch.float64)
    corners[:, 1] = (corners[:, 1] + 180) % 360 - 180  # east corners wrap to -179.99...
    ll = geo.bilinear_latlon(corners[None], torch.tensor([[[0.5, 0.5]]], dtype=torch.float64))[0, 0]
    assert abs(((ll[1] - 179.999) + 180) % 360 - 180) < 1e-9
    centre, has = geo.set_centres(corners[None], torch.tensor([True]), torch.tensor([0]), 1)
    assert bool(has[0]) and abs(((centre[0, 1] - 179.999) + 180) % 360 - 180) < 1e-9


def test_affine_roundtrip_and_nominal():
    xy = torch.tensor([[[-480.0, 480.0], [480.0, 480.0], [480.0, -480.0], [-480.0, -480.0]]])
    a = geo.affine_from_corners(xy)
    assert torch.allclose(a, geo.nominal_affine(torch.tensor([[960.0, 960.0]])))
    uv = torch.rand(1, 10, 2, dtype=torch.float64)
    back = geo.apply_affine(geo.invert_affine(a), geo.apply_affine(a, uv))
    assert torch.allclose(back, uv)


def test_s2_and_l8_tokens_over_the_same_ground_share_the_code():
    """In a real layout, the S2 token centred 120 m east/north of the centre and the L8 token there agree."""
    from a2mae.models.embed import MetaDrop
    from a2mae.testing.models import build_model

    model = build_model(
        "a2mae_vit_tiny_p8_t96",
        depth=1,
        embed_dim=64,
        num_heads=2,
        decoder_embed_dim=32,
        decoder_depth=1,
        decoder_num_heads=2,
    )
    batch = synthetic_batch([["S2", "L8"]])
    lay = model.tokenize(batch)
    xy = lay.cell_xy
    s2 = (lay.cell_img == 0).nonzero().squeeze(1)
    l8 = (lay.cell_img == 1).nonzero().squeeze(1)
    # S2 token centres are at odd multiples of 40 m; L8 ones at odd multiples of 120 m: they meet at +-120 m
    i_s2 = s2[((xy[s2] - torch.tensor([120.0, 120.0])).norm(dim=1)).argmin()]
    i_l8 = l8[((xy[l8] - torch.tensor([120.0, 120.0])).norm(dim=1)).argmin()]
    assert (xy[i_s2] - xy[i_l8]).norm() < 0.05
    pe = model.meta_embed.cell_pos(lay, torch.stack([i_s2, i_l8]), MetaDrop.none(2, torch.device("cpu")))
    assert torch.allclose(pe[0], pe[1], atol=1e-3)
