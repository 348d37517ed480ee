"""Token layout of a batch of image sets: which token is which, its target patch and its ground position.

Tokens are flattened over the whole batch in the order set -> image -> present token group -> row ->
column (row-major cells). A *slab* is the ``h x w`` tokens of one (image, group). Every per-token
attribute is an index tensor, so everything downstream (embeddings, masking, packing, loss) is
vectorised; only this builder loops, over images and groups.

Missing bands: a token group with some bands absent is still tokenised. Its missing channels are
zero-filled (zero is the band mean in the normalised space), a learned per-band "missing" embedding is
added to its tokens, and the missing channels are excluded from the reconstruction target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from a2mae.models import geo
from a2mae.models.vocab import ModelInputError, Vocabulary
from a2mae.types import ImageSample

PERIODS = {"g": 0, "ng": 1, "na": 2}


@dataclass
class TokenLayout:
    """Index tensors describing the tokens of a batch (``N`` images, ``S`` slabs, ``T`` tokens).

    Attributes:
        num_sets: ``B``.
        patch_size: ``p``.
        img_set: ``[N]`` set of each image.
        img_sensor: ``[N]`` sensor index.
        img_hw: ``[N, 2]`` token grid (rows, cols).
        img_cell_start: ``[N]`` offset of each image's cells in the global cell array.
        img_has_corners: ``[N]`` bool, corners known and used for the location terms.
        img_gsd: ``[N]`` gsd_m (nominal sensor GSD where unknown).
        img_has_gsd: ``[N]`` bool.
        img_time: ``[N, 2]`` (year, day of year); zeros where unknown.
        img_has_time: ``[N]`` bool.
        img_period: ``[N]`` 0 = g, 1 = ng, 2 = na.
        img_affine: ``[N, 2, 3]`` float64 ground geometry ``(u, v) -> (x, y)`` metres from the set centre.
        set_centre: ``[B, 2]`` float64 (lat, lon), zero where unknown.
        set_has_centre: ``[B]`` bool.
        cell_xy: ``[Ncell, 2]`` float32 token-centre offsets (Eq. 1 + Eq. 2, nominal grid where no corners).
        cell_xy_nominal: ``[Ncell, 2]`` float32 offsets of the nominal north-up grid (metadata dropout).
        cell_rc: ``[Ncell, 2]`` (row, col) of each cell in its image.
        cell_img: ``[Ncell]`` image of each cell.
        slab_img: ``[S]`` image of each slab.
        slab_key: ``[S]`` (sensor, group) key.
        slab_start: ``[S]`` first token.
        slab_chan: ``[S, C_max]`` channel of the image for each band slot (-1 missing or no slot).
        slab_missing: ``[S, C_max]`` bool, slot exists but its band is missing.
        slab_band_row: ``[S, C_max]`` row of the missing-band table (0 where no slot).
        tok_slab: ``[T]``.
        tok_img: ``[T]``.
        tok_set: ``[T]`` (non-decreasing).
        tok_key: ``[T]``.
        tok_cell: ``[T]`` global cell index.
        patches: ``[T, C_max, p*p]`` float32 target pixels (missing channels zero).
        chan_valid: ``[T, C_max]`` bool, channel present.
        pix_valid: ``[T, p*p]`` bool valid pixels, or None when every pixel is valid.
    """

    num_sets: int
    patch_size: int
    img_set: torch.Tensor
    img_sensor: torch.Tensor
    img_hw: torch.Tensor
    img_cell_start: torch.Tensor
    img_has_corners: torch.Tensor
    img_gsd: torch.Tensor
    img_has_gsd: torch.Tensor
    img_time: torch.Tensor
    img_has_time: torch.Tensor
    img_period: torch.Tensor
    img_affine: torch.Tensor
    set_centre: torch.Tensor
    set_has_centre: torch.Tensor
    cell_xy: torch.Tensor
    cell_xy_nominal: torch.Tensor
    cell_rc: torch.Tensor
    cell_img: torch.Tensor
    slab_img: torch.Tensor
    slab_key: torch.Tensor
    slab_start: torch.Tensor
    slab_chan: torch.Tensor
    slab_missing: torch.Tensor
    slab_band_row: torch.Tensor
    tok_slab: torch.Tensor
    tok_img: torch.Tensor
    tok_set: torch.Tensor
    tok_key: torch.Tensor
    tok_cell: torch.Tensor
    patches: torch.Tensor
    chan_valid: torch.Tensor
    pix_valid: torch.Tensor | None

    @property
    def num_tokens(self) -> int:
        """``T``."""
        return int(self.tok_slab.numel())

    @property
    def num_images(self) -> int:
        """``N``."""
        return int(self.img_set.numel())

    def set_token_counts(self) -> torch.Tensor:
        """``[B]`` tokens per set."""
        return torch.bincount(self.tok_set, minlength=self.num_sets)


def patchify(pixels: torch.Tensor, p: int) -> torch.Tensor:
    """``[n, C, H, W] -> [n, h*w, C, p*p]`` (row-major tokens, channel-agnostic)."""
    n, c, hh, ww = pixels.shape
    h, w = hh // p, ww // p
    x = pixels.reshape(n, c, h, p, w, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n, h * w, c, p * p)


def unpatchify(patches: torch.Tensor, h: int, w: int, p: int) -> torch.Tensor:
    """``[h*w, C, p*p] -> [C, h*p, w*p]`` (inverse of :func:`patchify` for one image)."""
    c = patches.shape[1]
    x = patches.reshape(h, w, c, p, p).permute(2, 0, 3, 1, 4)
    return x.reshape(c, h * p, w * p)


def build_layout(
    images: list[ImageSample], set_index: torch.Tensor, num_sets: int, vocab: Vocabulary, patch_size: int
) -> TokenLayout:
    """Tokenise a flattened batch of image sets.

    Args:
        images: Images of all sets, set by set (``SetBatch.images``).
        set_index: ``[N]`` set of each image, non-decreasing.
        num_sets: ``B``.
        vocab: The model's vocabulary.
        patch_size: ``p``.

    Returns:
        The layout, on the device of the pixels.

    Raises:
        ModelInputError: Unknown sensor/band, wrong channel count, size not a multiple of ``p``, or
            images not grouped by set.
    """
    if not images:
        raise ModelInputError("empty batch: no image")
    dev = images[0].pixels.device
    p = patch_size
    set_index = set_index.to(dev, torch.long)
    if len(set_index) != len(images):
        raise ModelInputError(f"set_index has {len(set_index)} entries for {len(images)} images")
    if len(images) > 1 and bool((set_index[1:] < set_index[:-1]).any()):
        raise ModelInputError(
            "images must be grouped set by set (set_index non-decreasing); use collate_sets"
        )
    cmax = vocab.max_group_bands

    maps, hws = [], []
    for n, im in enumerate(images):
        m = im.meta
        if im.pixels.dim() != 3 or im.pixels.shape[0] != len(m.bands):
            raise ModelInputError(
                f"image {n} ({m.image_id or m.sensor}): pixels {tuple(im.pixels.shape)} do not match "
                f"[C={len(m.bands)}, H, W] for bands {list(m.bands)}"
            )
        hh, ww = im.pixels.shape[1:]
        if hh % p or ww % p or hh == 0 or ww == 0:
            raise ModelInputError(
                f"image {n} ({m.image_id or m.sensor}): size {hh}x{ww} is not a positive multiple of "
                f"the patch size {p}"
            )
        maps.append(vocab.channel_map(m.sensor, tuple(m.bands)))
        hws.append((hh // p, ww // p))

    # ------------------------------------------------------------------------------- slabs/tokens
    slab_img, slab_key, slab_chan, slab_len = [], [], [], []
    for n, cm in enumerate(maps):
        for k, chans in zip(cm.groups, cm.channels, strict=True):
            slab_img.append(n)
            slab_key.append(k)
            slab_chan.append(list(chans) + [-1] * (cmax - len(chans)))
            slab_len.append(hws[n][0] * hws[n][1])
    t_slab_img = torch.tensor(slab_img, dtype=torch.long, device=dev)
    t_slab_key = torch.tensor(slab_key, dtype=torch.long, device=dev)
    t_slab_chan = torch.tensor(slab_chan, dtype=torch.long, device=dev)
    t_slab_len = torch.tensor(slab_len, dtype=torch.long, device=dev)
    slot_exists = torch.tensor(
        [[s < len(vocab.key_bands[k]) for s in range(cmax)] for k in slab_key], dtype=torch.bool, device=dev
    )
    band_row = torch.tensor(
        [[vocab.band_row(k, s) if s < len(vocab.key_bands[k]) else 0 for s in range(cmax)] for k in slab_key],
        dtype=torch.long,
        device=dev,
    )
    slab_start = torch.cumsum(t_slab_len, 0) - t_slab_len
    num_tokens = int(t_slab_len.sum())
    tok_slab = torch.repeat_interleave(torch.arange(len(slab_img), device=dev), t_slab_len)
    tok_in_slab = torch.arange(num_tokens, device=dev) - slab_start[tok_slab]

    img_hw = torch.tensor(hws, dtype=torch.long, device=dev)
    img_cells = img_hw[:, 0] * img_hw[:, 1]
    img_cell_start = torch.cumsum(img_cells, 0) - img_cells
    tok_img = t_slab_img[tok_slab]

    # --------------------------------------------------------------------------------- patches
    patches = torch.empty(num_tokens, cmax, p * p, dtype=torch.float32, device=dev)
    pix_valid = None
    if any(im.valid is not None for im in images):
        pix_valid = torch.ones(num_tokens, p * p, dtype=torch.bool, device=dev)
    buckets: dict[tuple, list[int]] = {}
    for n, im in enumerate(images):
        buckets.setdefault((maps[n], tuple(im.pixels.shape)), []).append(n)
    slab_of = {(si, k): s for s, (si, k) in enumerate(zip(slab_img, slab_key, strict=True))}
    for (cm, _shape), members in buckets.items():
        px = torch.stack([images[n].pixels for n in members]).to(torch.float32)
        px = torch.cat([px, px.new_zeros(px.shape[0], 1, *px.shape[2:])], dim=1)  # zero channel at index C
        zero_c = px.shape[1] - 1
        hw = hws[members[0]][0] * hws[members[0]][1]
        for k, chans in zip(cm.groups, cm.channels, strict=True):
            idx = torch.tensor([c if c >= 0 else zero_c for c in chans] + [zero_c] * (cmax - len(chans)))
            pt = patchify(px.index_select(1, idx.to(dev)), p)  # [m, hw, cmax, pp]
            starts = torch.tensor([int(slab_start[slab_of[(n, k)]]) for n in members], device=dev)
            dest = (starts[:, None] + torch.arange(hw, device=dev)[None]).reshape(-1)
            patches[dest] = pt.reshape(-1, cmax, p * p)
        if pix_valid is not None:
            for n in members:
                v = images[n].valid
                if v is None:
                    continue
                pv = patchify(v.to(dev, torch.float32)[None, None], p).reshape(hw, p * p) > 0.5
                for k in cm.groups:
                    s0 = int(slab_start[slab_of[(n, k)]])
                    pix_valid[s0 : s0 + hw] = pv
    chan_valid = (t_slab_chan >= 0)[tok_slab]

    # -------------------------------------------------------------------------------- metadata
    img_sensor = torch.tensor([vocab.sensor_index(im.meta.sensor) for im in images], device=dev)
    has_corners = torch.tensor([im.meta.corners is not None for im in images], device=dev)
    corners = torch.tensor(
        [_corners(im, n) for n, im in enumerate(images)], dtype=torch.float64, device=dev
    ).reshape(len(images), 4, 2)
    gsd_known = [im.meta.gsd_m is not None and im.meta.gsd_m > 0 for im in images]
    gsd = torch.tensor(
        [
            float(im.meta.gsd_m) if ok else vocab.nominal_gsd(im.meta.sensor)
            for im, ok in zip(images, gsd_known, strict=True)
        ],  # type: ignore[arg-type]
        dtype=torch.float64,
        device=dev,
    )
    dts = [im.meta.datetime for im in images]
    img_time = torch.tensor(
        [[d.year, d.timetuple().tm_yday] if d is not None else [0, 0] for d in dts],
        dtype=torch.float32,
        device=dev,
    )
    period = torch.tensor([PERIODS.get(im.meta.period, 2) for im in images], dtype=torch.long, device=dev)

    # -------------------------------------------------------------------------------- geometry
    centre, has_centre = geo.set_centres(corners, has_corners, set_index, num_sets)
    img_centre = centre[set_index]
    extent = torch.stack([img_hw[:, 1] * p * gsd, img_hw[:, 0] * p * gsd], dim=1)
    affine = geo.nominal_affine(extent)
    if bool(has_corners.any()):
        cxy = geo.local_xy(corners, img_centre)
        fitted = geo.affine_from_corners(cxy)
        det = fitted[:, 0, 0] * fitted[:, 1, 1] - fitted[:, 0, 1] * fitted[:, 1, 0]
        ok = has_corners & (det.abs() > 1e-6)  # degenerate corners: nominal geometry
        affine = torch.where(ok[:, None, None], fitted, affine)
    n_cells = int(img_cells.sum())
    cell_xy = torch.empty(n_cells, 2, dtype=torch.float64, device=dev)
    cell_xy_nom = torch.empty(n_cells, 2, dtype=torch.float64, device=dev)
    cell_rc = torch.empty(n_cells, 2, dtype=torch.long, device=dev)
    for (h, w), members in _by_value(hws).items():
        mem = torch.tensor(members, device=dev)
        uv = geo.grid_uv(h, w, 1, dev)[:, 0][None].expand(len(members), h * w, 2)
        nom = geo.apply_affine(geo.nominal_affine(extent[mem]), uv)
        xy = nom.clone()
        hc = has_corners[mem]
        if bool(hc.any()):
            ll = geo.bilinear_latlon(corners[mem][hc], uv[hc])
            xy[hc] = geo.local_xy(ll, img_centre[mem][hc])
        dest = (img_cell_start[mem][:, None] + torch.arange(h * w, device=dev)[None]).reshape(-1)
        cell_xy[dest] = xy.reshape(-1, 2)
        cell_xy_nom[dest] = nom.reshape(-1, 2)
        rr = torch.arange(h * w, device=dev)
        cell_rc[dest] = torch.stack([rr // w, rr % w], dim=1).repeat(len(members), 1)

    return TokenLayout(
        num_sets=num_sets,
        patch_size=p,
        img_set=set_index,
        img_sensor=img_sensor,
        img_hw=img_hw,
        img_cell_start=img_cell_start,
        img_has_corners=has_corners & has_centre[set_index],
        img_gsd=gsd.to(torch.float32),
        img_has_gsd=torch.tensor(gsd_known, device=dev),
        img_time=img_time,
        img_has_time=torch.tensor([d is not None for d in dts], device=dev),
        img_period=period,
        img_affine=affine,
        set_centre=centre,
        set_has_centre=has_centre,
        cell_xy=cell_xy.to(torch.float32),
        cell_xy_nominal=cell_xy_nom.to(torch.float32),
        cell_rc=cell_rc,
        cell_img=torch.repeat_interleave(torch.arange(len(images), device=dev), img_cells),
        slab_img=t_slab_img,
        slab_key=t_slab_key,
        slab_start=slab_start,
        slab_chan=t_slab_chan,
        slab_missing=slot_exists & (t_slab_chan < 0),
        slab_band_row=band_row,
        tok_slab=tok_slab,
        tok_img=tok_img,
        tok_set=set_index[tok_img],
        tok_key=t_slab_key[tok_slab],
        tok_cell=img_cell_start[tok_img] + tok_in_slab,
        patches=patches,
        chan_valid=chan_valid,
        pix_valid=pix_valid,
    )


def _corners(im: ImageSample, n: int) -> list[float]:
    c = im.meta.corners
    if c is None:
        return [0.0] * 8
    if len(c) != 4 or any(len(pt) != 2 for pt in c):
        raise ModelInputError(
            f"image {n} ({im.meta.image_id or im.meta.sensor}): corners must be four (lat, lon) pairs "
            "UL, UR, LR, LL"
        )
    return [float(v) for pt in c for v in pt]


def _by_value(values: list[tuple[int, int]]) -> dict[tuple[int, int], list[int]]:
    out: dict[tuple[int, int], list[int]] = {}
    for i, v in enumerate(values):
        out.setdefault(v, []).append(i)
    return out
