"""Geographic encoding (docs/model.md): Eq. 1 token geolocation, Eq. 2 metric sin-cos, global and GSD terms.

All functions are pure tensor maths. Geographic coordinates are handled in float64 (a float32 longitude
near 100 degrees has a resolution of about a metre); encodings are returned in float32.

* Eq. 1: the (lat, lon) of a point at normalised image coordinates ``(u, v)`` (u along columns, v down
  the rows, both in [0, 1] over the pixel-edge extent) is the bilinear interpolation of the four corners.
* Eq. 2: east/north offsets ``(x, y)`` in metres of that point from the set centre ``(lat0, lon0)``
  (local equirectangular projection), divided by ``G_ref`` and encoded with the MAE 2-D sin-cos. A
  ground point therefore gets the same code whatever the GSD of the image it is seen in.
"""

from __future__ import annotations

import math

import torch

EARTH_RADIUS_M = 6_371_000.0


# ------------------------------------------------------------------------------------------ sin-cos
def sincos_1d(pos: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """MAE 1-D sin-cos encoding.

    Args:
        pos: Positions ``[N]``; computed in float64 when given float64, else in float32.
        dim: Output width (even).
        temperature: Longest wavelength factor.

    Returns:
        ``[N, dim]`` float32: ``sin(pos * w_k)`` for ``k < dim/2`` then ``cos(pos * w_k)``, with
        ``w_k = temperature ** (-k / (dim/2))``.
    """
    if dim % 2:
        raise ValueError(f"sin-cos width must be even, got {dim}")
    half = dim // 2
    dtype = torch.float64 if pos.dtype == torch.float64 else torch.float32
    omega = temperature ** (-torch.arange(half, dtype=torch.float64, device=pos.device) / half)
    out = pos.to(dtype)[:, None] * omega.to(dtype)[None]
    return torch.cat([out.sin(), out.cos()], dim=1).to(torch.float32)


def sincos_2d(x: torch.Tensor, y: torch.Tensor, dim: int) -> torch.Tensor:
    """2-D sin-cos (Eq. 2 layout): first half encodes ``x``, second half ``y``.

    Args:
        x: ``[N]`` first coordinate (already scaled, e.g. metres / G_ref).
        y: ``[N]`` second coordinate.
        dim: Output width, a multiple of 4.

    Returns:
        ``[N, dim]`` float32.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos width must be a multiple of 4, got {dim}")
    return torch.cat([sincos_1d(x, dim // 2), sincos_1d(y, dim // 2)], dim=1)


def multi_freq(values: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Sin/cos of ``values * freqs``.

    Args:
        values: ``[N, K]``.
        freqs: ``[F]``.

    Returns:
        ``[N, 2*K*F]`` float32.
    """
    arg = values.to(torch.float64)[:, :, None] * freqs.to(torch.float64)[None, None]
    return torch.cat([arg.sin().flatten(1), arg.cos().flatten(1)], dim=1).to(torch.float32)


# ------------------------------------------------------------------------------------------- Eq. 1
def grid_uv(h: int, w: int, supersample: int = 1, device: torch.device | None = None) -> torch.Tensor:
    """Normalised coordinates of token centres (or of ``supersample x supersample`` points per token).

    Args:
        h: Token rows.
        w: Token columns.
        supersample: Points per token side.
        device: Output device.

    Returns:
        ``[h*w, s*s, 2]`` float64 ``(u, v)``, tokens in row-major order.
    """
    s = supersample
    off = (torch.arange(s, dtype=torch.float64, device=device) + 0.5) / s
    ii = torch.arange(h, dtype=torch.float64, device=device)
    jj = torch.arange(w, dtype=torch.float64, device=device)
    v = (ii[:, None] + off[None]) / h  # [h, s]
    u = (jj[:, None] + off[None]) / w  # [w, s]
    vv = v[:, None, :, None].expand(h, w, s, s)
    uu = u[None, :, None, :].expand(h, w, s, s)
    return torch.stack([uu, vv], dim=-1).reshape(h * w, s * s, 2)


def bilinear_latlon(corners: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Eq. 1: bilinear interpolation of the four corners.

    Args:
        corners: ``[N, 4, 2]`` (lat, lon) of UL, UR, LR, LL in degrees.
        uv: ``[N, P, 2]`` normalised ``(u, v)`` points of each image.

    Returns:
        ``[N, P, 2]`` float64 (lat, lon) in degrees.
    """
    c = corners.to(torch.float64)
    ul, ur, lr, ll = c[:, 0:1], c[:, 1:2], c[:, 2:3], c[:, 3:4]  # [N, 1, 2]
    u = uv[..., 0:1].to(torch.float64)
    v = uv[..., 1:2].to(torch.float64)
    # Unwrap longitudes of the corners next to UL so a chip across the antimeridian interpolates correctly.
    ur, lr, ll = (_unwrap_lon(x, ul) for x in (ur, lr, ll))
    return (1 - u) * (1 - v) * ul + u * (1 - v) * ur + u * v * lr + (1 - u) * v * ll


def _unwrap_lon(pt: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    dlon = _wrap180(pt[..., 1] - ref[..., 1])
    return torch.stack([pt[..., 0], ref[..., 1] + dlon], dim=-1)


def _wrap180(dlon: torch.Tensor) -> torch.Tensor:
    return torch.remainder(dlon + 180.0, 360.0) - 180.0


# ------------------------------------------------------------------------------------------- Eq. 2
def local_xy(latlon: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """East/north offsets in metres from a centre (Eq. 2, local equirectangular).

    Args:
        latlon: ``[N, P, 2]`` (lat, lon) degrees.
        centre: ``[N, 2]`` (lat0, lon0) degrees, one per image (its set centre).

    Returns:
        ``[N, P, 2]`` float64 ``(x east, y north)`` in metres.
    """
    lat0 = centre[:, None, 0].to(torch.float64)
    lon0 = centre[:, None, 1].to(torch.float64)
    k = EARTH_RADIUS_M * math.pi / 180.0
    x = k * torch.cos(torch.deg2rad(lat0)) * _wrap180(latlon[..., 1] - lon0)
    y = k * (latlon[..., 0] - lat0)
    return torch.stack([x, y], dim=-1)


def metric_pos_embed(xy: torch.Tensor, dim: int, g_ref_m: float) -> torch.Tensor:
    """PE_loc of Eq. 2.

    Args:
        xy: ``[N, 2]`` ground offsets ``(x, y)`` in metres from the set centre.
        dim: Embedding width (multiple of 4).
        g_ref_m: Reference distance ``G_ref`` in metres.

    Returns:
        ``[N, dim]`` float32.
    """
    return sincos_2d(xy[:, 0] / g_ref_m, xy[:, 1] / g_ref_m, dim)


def set_centres(
    corners: torch.Tensor, has_corners: torch.Tensor, set_index: torch.Tensor, num_sets: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre of each set: the mean of the centres of its images that have corners.

    Args:
        corners: ``[N_img, 4, 2]`` (lat, lon), any value where unknown.
        has_corners: ``[N_img]`` bool.
        set_index: ``[N_img]`` set of each image.
        num_sets: ``B``.

    Returns:
        ``(centre [B, 2] float64, has [B] bool)``; centre is 0 where no image of the set has corners.
    """
    c = corners.to(torch.float64)
    n = len(set_index)
    ul_lon = c[:, 0, 1]
    img_lat = c[:, :, 0].mean(1)
    img_lon = ul_lon + _wrap180(c[:, :, 1] - ul_lon[:, None]).mean(1)
    # Longitudes are averaged relative to the first image of the set that has corners (antimeridian-safe).
    idx = torch.arange(n, device=c.device)
    first = torch.full((num_sets,), n, dtype=torch.long, device=c.device).scatter_reduce(
        0, set_index, torch.where(has_corners, idx, torch.full_like(idx, n)), reduce="amin"
    )
    has = first < n
    ref_lon = img_lon[first.clamp(max=n - 1)]
    rel_lon = _wrap180(img_lon - ref_lon[set_index])
    w = has_corners.to(torch.float64)
    zeros = torch.zeros(num_sets, dtype=torch.float64, device=c.device)
    cnt = zeros.index_add(0, set_index, w).clamp(min=1)
    lat0 = zeros.index_add(0, set_index, img_lat * w) / cnt
    lon0 = _wrap180(ref_lon + zeros.index_add(0, set_index, rel_lon * w) / cnt)
    centre = torch.stack([lat0, lon0], dim=-1)
    return torch.where(has[:, None], centre, torch.zeros_like(centre)), has


# ------------------------------------------------------------------------------------ image affine
def affine_from_corners(xy: torch.Tensor) -> torch.Tensor:
    """Least-squares affine ``(u, v) -> (x, y)`` through the four corners.

    Args:
        xy: ``[N, 4, 2]`` corner offsets (UL, UR, LR, LL) in metres.

    Returns:
        ``[N, 2, 3]`` float64 ``A`` with ``[x, y] = A @ [u, v, 1]``.
    """
    xy = xy.to(torch.float64)
    ul, ur, lr, ll = xy[:, 0], xy[:, 1], xy[:, 2], xy[:, 3]
    a_u = ((ur + lr) - (ul + ll)) / 2  # d(x,y)/du
    a_v = ((ll + lr) - (ul + ur)) / 2  # d(x,y)/dv
    a_0 = xy.mean(1) - a_u / 2 - a_v / 2
    return torch.stack([a_u, a_v, a_0], dim=-1)


def nominal_affine(extent_xy: torch.Tensor) -> torch.Tensor:
    """Affine of a north-up chip centred on its set centre.

    Args:
        extent_xy: ``[N, 2]`` ground width and height in metres.

    Returns:
        ``[N, 2, 3]`` float64.
    """
    e = extent_xy.to(torch.float64)
    a = torch.zeros(len(e), 2, 3, dtype=torch.float64, device=e.device)
    a[:, 0, 0] = e[:, 0]
    a[:, 0, 2] = -e[:, 0] / 2
    a[:, 1, 1] = -e[:, 1]
    a[:, 1, 2] = e[:, 1] / 2
    return a


def apply_affine(a: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """``[N, P, 2]`` points ``A @ [u, v, 1]`` for ``A [N, 2, 3]`` and ``uv [N, P, 2]``."""
    return torch.einsum("nij,npj->npi", a[:, :, :2], uv.to(a.dtype)) + a[:, None, :, 2]


def invert_affine(a: torch.Tensor) -> torch.Tensor:
    """Inverse ``(x, y) -> (u, v)`` of ``[N, 2, 3]`` affines (non-degenerate)."""
    p, q, r, s = a[:, 0, 0], a[:, 0, 1], a[:, 1, 0], a[:, 1, 1]
    det = p * s - q * r  # closed-form 2 x 2 inverse (a batched LAPACK call costs more here)
    inv = torch.stack([torch.stack([s, -q], -1), torch.stack([-r, p], -1)], -2) / det[:, None, None]
    return torch.cat([inv, -(inv @ a[:, :, 2:])], dim=-1)


# ---------------------------------------------------------------------------- other metadata terms
GLOBAL_FREQS = 2.0 ** torch.arange(8, dtype=torch.float64)
GLOBAL_FEAT_DIM = 3 + 2 * 3 * len(GLOBAL_FREQS)
GSD_FREQS = 2.0 ** torch.linspace(-3, 3, 32, dtype=torch.float64)
GSD_FEAT_DIM = 2 * len(GSD_FREQS)
YEAR_DIM = 64
DOY_HARMONICS = 8
TIME_FEAT_DIM = YEAR_DIM + 2 * DOY_HARMONICS


def global_features(centre: torch.Tensor) -> torch.Tensor:
    """Inputs of E_global: 3-D unit vector of (lat0, lon0) plus its sin/cos at 2^0..2^7.

    Args:
        centre: ``[N, 2]`` (lat, lon) degrees.

    Returns:
        ``[N, 51]`` float32.
    """
    lat = torch.deg2rad(centre[:, 0].to(torch.float64))
    lon = torch.deg2rad(centre[:, 1].to(torch.float64))
    vec = torch.stack([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()], dim=1)
    return torch.cat([vec.to(torch.float32), multi_freq(vec, GLOBAL_FREQS.to(vec.device))], dim=1)


def gsd_features(geo_gsd_m: torch.Tensor, g_ref_m: float) -> torch.Tensor:
    """Inputs of E_gsd: ``log(Geo_GSD / G_ref)`` at 32 frequencies (Geo_GSD = gsd_m x patch size).

    Args:
        geo_gsd_m: ``[N]`` ground size of one token in metres (positive).
        g_ref_m: Reference distance.

    Returns:
        ``[N, 64]`` float32.
    """
    val = torch.log(geo_gsd_m.to(torch.float64).clamp(min=1e-3) / g_ref_m)
    return multi_freq(val[:, None], GSD_FREQS.to(val.device))


def time_features(year: torch.Tensor, doy: torch.Tensor) -> torch.Tensor:
    """Inputs of E_time: sin-cos of ``year - 2013`` (fractional) and annual harmonics of the day of year.

    Args:
        year: ``[N]`` calendar year (float).
        doy: ``[N]`` day of year, 1..366.

    Returns:
        ``[N, 80]`` float32.
    """
    t = year.to(torch.float64) - 2013.0 + (doy.to(torch.float64) - 1) / 366.0
    yr = sincos_1d(t, YEAR_DIM, temperature=100.0)
    k = torch.arange(1, DOY_HARMONICS + 1, dtype=torch.float64, device=doy.device)
    phase = 2 * math.pi * doy.to(torch.float64) / 366.0
    return torch.cat([yr, multi_freq(phase[:, None], k)], dim=1)
