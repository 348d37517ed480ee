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
from typing import NamedTuple

import torch

from a2mae.models import geo
from a2mae.models.vocab import ChannelMap, ModelInputError, Vocabulary
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
    set_index = _check_batch(images, set_index)
    dev = set_index.device
    p = patch_size
    maps, hws = _channel_maps(images, vocab, p)
    slabs = _slab_table(maps, hws, vocab, dev)
    tok_slab, tok_in_slab = _token_index(slabs.length, slabs.start)
    img_hw = torch.tensor(hws, dtype=torch.long, device=dev)
    img_cells = img_hw[:, 0] * img_hw[:, 1]
    img_cell_start = torch.cumsum(img_cells, 0) - img_cells
    tok_img = slabs.img[tok_slab]
    patches = _gather_patches(images, maps, hws, slabs, vocab.max_group_bands, p)
    pix_valid = _gather_valid(images, maps, hws, slabs, p)
    meta = _image_metadata(images, vocab, dev)
    centre, has_centre = geo.set_centres(meta.corners, meta.has_corners, set_index, num_sets)
    img_centre = centre[set_index]
    extent = torch.stack([img_hw[:, 1] * p * meta.gsd, img_hw[:, 0] * p * meta.gsd], dim=1)
    affine = _image_affine(extent, meta, img_centre)
    cell_xy, cell_xy_nom, cell_rc = _cell_geometry(hws, extent, meta, img_centre, img_cell_start)
    return TokenLayout(
        num_sets=num_sets,
        patch_size=p,
        img_set=set_index,
        img_sensor=meta.sensor,
        img_hw=img_hw,
        img_cell_start=img_cell_start,
        img_has_corners=meta.has_corners & has_centre[set_index],
        img_gsd=meta.gsd.to(torch.float32),
        img_has_gsd=meta.has_gsd,
        img_time=meta.time,
        img_has_time=meta.has_time,
        img_period=meta.period,
        img_affine=affine,
        set_centre=centre,
        set_has_centre=has_centre,
        cell_xy=cell_xy.to(torch.float32),
        cell_xy_nominal=cell_xy_nom.to(torch.float32),
        cell_rc=cell_rc,
        cell_img=torch.repeat_interleave(torch.arange(len(images), device=dev), img_cells),
        slab_img=slabs.img,
        slab_key=slabs.key,
        slab_start=slabs.start,
        slab_chan=slabs.chan,
        slab_missing=slabs.slot_exists & (slabs.chan < 0),
        slab_band_row=slabs.band_row,
        tok_slab=tok_slab,
        tok_img=tok_img,
        tok_set=set_index[tok_img],
        tok_key=slabs.key[tok_slab],
        tok_cell=img_cell_start[tok_img] + tok_in_slab,
        patches=patches,
        chan_valid=(slabs.chan >= 0)[tok_slab],
        pix_valid=pix_valid,
    )


# ---------------------------------------------------------------------------------------- input checks
def _check_batch(images: list[ImageSample], set_index: torch.Tensor) -> torch.Tensor:
    """Check that there are images and that ``set_index`` (``[N]``) groups them set by set.

    Args:
        images: ``N`` images.
        set_index: ``[N]`` set of each image.

    Returns:
        ``[N]`` long ``set_index`` on the device of the pixels.

    Raises:
        ModelInputError: No image, wrong length, or images not grouped set by set.
    """
    if not images:
        raise ModelInputError("empty batch: no image")
    set_index = set_index.to(images[0].pixels.device, torch.long)
    if len(set_index) != len(images):
        raise ModelInputError(f"set_index has {len(set_index)} entries for {len(images)} images")
    # Tokens are laid out set by set: tok_set must be non-decreasing for the per-set segment ops.
    if len(images) > 1 and bool((set_index[1:] < set_index[:-1]).any()):
        raise ModelInputError(
            "images must be grouped set by set (set_index non-decreasing); use collate_sets"
        )
    return set_index


def _channel_maps(
    images: list[ImageSample], vocab: Vocabulary, p: int
) -> tuple[list[ChannelMap], list[tuple[int, int]]]:
    """Check each image's shape and map its bands onto the vocabulary's token groups.

    Args:
        images: ``N`` images, pixels ``[C, H, W]``.
        vocab: The model's vocabulary.
        p: Patch size.

    Returns:
        ``(maps, hws)``: per image its channel map and its token grid ``(H / p, W / p)``.

    Raises:
        ModelInputError: Unknown sensor/band, channel count not matching the bands, or a size that is
            not a positive multiple of ``p``.
    """
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
    return maps, hws


# ------------------------------------------------------------------------------------- slabs and tokens
class _Slabs(NamedTuple):
    """Per-slab tables of a batch (``S`` slabs, ``C_max`` band slots); see :class:`TokenLayout`."""

    img: torch.Tensor  # [S] image of each slab
    key: torch.Tensor  # [S] (sensor, group) key
    chan: torch.Tensor  # [S, C_max] image channel of each band slot, -1 missing or no slot
    length: torch.Tensor  # [S] tokens (h * w)
    start: torch.Tensor  # [S] first token
    slot_exists: torch.Tensor  # [S, C_max] bool, the group has a band in that slot
    band_row: torch.Tensor  # [S, C_max] row of the missing-band table (0 where no slot)
    slab_of: dict[tuple[int, int], int]  # (image, key) -> slab (`index` would shadow tuple.index)


def _slab_table(
    maps: list[ChannelMap], hws: list[tuple[int, int]], vocab: Vocabulary, dev: torch.device
) -> _Slabs:
    """One slab per (image, present token group), in image then group order.

    Args:
        maps: Per image its channel map.
        hws: Per image its token grid ``(h, w)``.
        vocab: The model's vocabulary.
        dev: Device of the tables.

    Returns:
        The slab tables (``[S]`` and ``[S, C_max]`` tensors).
    """
    cmax = vocab.max_group_bands
    slab_img, slab_key, slab_chan, slab_len = [], [], [], []
    for n, cm in enumerate(maps):
        for k, chans in zip(cm.groups, cm.channels, strict=True):
            slab_img.append(n)
            slab_key.append(k)
            slab_chan.append(list(chans) + [-1] * (cmax - len(chans)))
            slab_len.append(hws[n][0] * hws[n][1])
    t_slab_len = torch.tensor(slab_len, dtype=torch.long, device=dev)
    slot_exists = torch.tensor(
        [[s < len(vocab.key_bands[k]) for s in range(cmax)] for k in slab_key], dtype=torch.bool, device=dev
    )
    band_row = torch.tensor(
        [[vocab.band_row(k, s) if s < len(vocab.key_bands[k]) else 0 for s in range(cmax)] for k in slab_key],
        dtype=torch.long,
        device=dev,
    )
    return _Slabs(
        img=torch.tensor(slab_img, dtype=torch.long, device=dev),
        key=torch.tensor(slab_key, dtype=torch.long, device=dev),
        chan=torch.tensor(slab_chan, dtype=torch.long, device=dev),
        length=t_slab_len,
        start=torch.cumsum(t_slab_len, 0) - t_slab_len,
        slot_exists=slot_exists,
        band_row=band_row,
        slab_of={(si, k): s for s, (si, k) in enumerate(zip(slab_img, slab_key, strict=True))},
    )


def _token_index(slab_len: torch.Tensor, slab_start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab of each token and its position in the slab, without a loop over slabs.

    Args:
        slab_len: ``[S]`` tokens per slab.
        slab_start: ``[S]`` first token of each slab.

    Returns:
        ``(tok_slab [T], tok_in_slab [T])``; ``tok_in_slab`` is the token's row-major cell in its image.
    """
    num_tokens = int(slab_len.sum())
    tok_slab = torch.repeat_interleave(torch.arange(len(slab_len), device=slab_len.device), slab_len)
    return tok_slab, torch.arange(num_tokens, device=slab_len.device) - slab_start[tok_slab]


# -------------------------------------------------------------------------------------------- patches
def _gather_patches(
    images: list[ImageSample],
    maps: list[ChannelMap],
    hws: list[tuple[int, int]],
    slabs: _Slabs,
    cmax: int,
    p: int,
) -> torch.Tensor:
    """Target pixels of every token, band slots in group order: ``N x [C, H, W] -> [T, C_max, p*p]``.

    Args:
        images: ``N`` images.
        maps: Per image its channel map.
        hws: Per image its token grid ``(h, w)``.
        slabs: Slab tables.
        cmax: ``C_max``, band slots per token.
        p: Patch size.

    Returns:
        ``[T, C_max, p*p]`` float32; missing bands and empty slots are zero (the band mean).
    """
    dev = images[0].pixels.device
    num_tokens = int(slabs.length.sum())
    patches = torch.empty(num_tokens, cmax, p * p, dtype=torch.float32, device=dev)
    # Images with the same bands and size are patchified in one stacked call per group, not one by one.
    for (cm, _shape), members in _buckets(images, maps).items():
        px = torch.stack([images[n].pixels for n in members]).to(torch.float32)
        px = torch.cat([px, px.new_zeros(px.shape[0], 1, *px.shape[2:])], dim=1)  # zero channel at index C
        zero_c = px.shape[1] - 1
        hw = hws[members[0]][0] * hws[members[0]][1]
        for k, chans in zip(cm.groups, cm.channels, strict=True):
            idx = torch.tensor([c if c >= 0 else zero_c for c in chans] + [zero_c] * (cmax - len(chans)))
            pt = patchify(px.index_select(1, idx.to(dev)), p)  # [m, hw, cmax, pp]
            starts = torch.tensor([int(slabs.start[slabs.slab_of[(n, k)]]) for n in members], device=dev)
            dest = (starts[:, None] + torch.arange(hw, device=dev)[None]).reshape(-1)
            patches[dest] = pt.reshape(-1, cmax, p * p)
    return patches


def _gather_valid(
    images: list[ImageSample], maps: list[ChannelMap], hws: list[tuple[int, int]], slabs: _Slabs, p: int
) -> torch.Tensor | None:
    """Valid-pixel mask of every token: ``N x [H, W] -> [T, p*p]`` bool (None when no image has one).

    Args:
        images: ``N`` images; ``valid`` is an optional ``[H, W]`` mask.
        maps: Per image its channel map.
        hws: Per image its token grid ``(h, w)``.
        slabs: Slab tables.
        p: Patch size.

    Returns:
        ``[T, p*p]`` bool (True for images without a mask), or None when every pixel is valid.
    """
    if not any(im.valid is not None for im in images):
        return None  # the loss then skips the per-pixel weighting
    dev = images[0].pixels.device
    pix_valid = torch.ones(int(slabs.length.sum()), p * p, dtype=torch.bool, device=dev)
    for n, im in enumerate(images):
        if im.valid is None:
            continue
        hw = hws[n][0] * hws[n][1]
        pv = patchify(im.valid.to(dev, torch.float32)[None, None], p).reshape(hw, p * p) > 0.5
        for k in maps[n].groups:  # every group of the image shares its pixel mask
            s0 = int(slabs.start[slabs.slab_of[(n, k)]])
            pix_valid[s0 : s0 + hw] = pv
    return pix_valid


def _buckets(
    images: list[ImageSample], maps: list[ChannelMap]
) -> dict[tuple[ChannelMap, tuple[int, ...]], list[int]]:
    """Images grouped by (channel map, pixel shape), in first-seen order."""
    buckets: dict[tuple[ChannelMap, tuple[int, ...]], list[int]] = {}
    for n, im in enumerate(images):
        buckets.setdefault((maps[n], tuple(im.pixels.shape)), []).append(n)
    return buckets


# ------------------------------------------------------------------------------------ metadata, geometry
class _ImageMeta(NamedTuple):
    """Per-image metadata tensors (``N`` images); unknown values are filled, flagged by ``has_*``."""

    sensor: torch.Tensor  # [N] sensor index
    corners: torch.Tensor  # [N, 4, 2] float64 (lat, lon) UL, UR, LR, LL; zeros where unknown
    has_corners: torch.Tensor  # [N] bool
    gsd: torch.Tensor  # [N] float64 gsd_m, nominal sensor GSD where unknown
    has_gsd: torch.Tensor  # [N] bool
    time: torch.Tensor  # [N, 2] float32 (year, day of year); zeros where unknown
    has_time: torch.Tensor  # [N] bool
    period: torch.Tensor  # [N] long 0 = g, 1 = ng, 2 = na


def _image_metadata(images: list[ImageSample], vocab: Vocabulary, dev: torch.device) -> _ImageMeta:
    """Collect sensor, corners, GSD, time and period of every image into ``[N, ...]`` tensors.

    Args:
        images: ``N`` images.
        vocab: The model's vocabulary (sensor indices, nominal GSDs).
        dev: Device of the tensors.

    Returns:
        The metadata tensors.

    Raises:
        ModelInputError: Corners that are not four (lat, lon) pairs.
    """
    sensor = torch.tensor([vocab.sensor_index(im.meta.sensor) for im in images], device=dev)
    has_corners = torch.tensor([im.meta.corners is not None for im in images], device=dev)
    corners = torch.tensor(
        [_corners(im, n) for n, im in enumerate(images)], dtype=torch.float64, device=dev
    ).reshape(len(images), 4, 2)
    gsd_known = [im.meta.gsd_m is not None and im.meta.gsd_m > 0 for im in images]
    gsd = torch.tensor(
        [
            float(im.meta.gsd_m) if ok and im.meta.gsd_m is not None else vocab.nominal_gsd(im.meta.sensor)
            for im, ok in zip(images, gsd_known, strict=True)
        ],
        dtype=torch.float64,
        device=dev,
    )
    dts = [im.meta.datetime for im in images]
    img_time = torch.tensor(
        [[d.year, d.timetuple().tm_yday] if d is not None else [0, 0] for d in dts],
        dtype=torch.float32,
        device=dev,
    )
    return _ImageMeta(
        sensor=sensor,
        corners=corners,
        has_corners=has_corners,
        gsd=gsd,
        has_gsd=torch.tensor(gsd_known, device=dev),
        time=img_time,
        has_time=torch.tensor([d is not None for d in dts], device=dev),
        period=torch.tensor([PERIODS.get(im.meta.period, 2) for im in images], dtype=torch.long, device=dev),
    )


def _image_affine(extent: torch.Tensor, meta: _ImageMeta, img_centre: torch.Tensor) -> torch.Tensor:
    """Ground geometry of each image: ``(u, v) -> (x, y)`` metres from its set centre, ``[N, 2, 3]``.

    Args:
        extent: ``[N, 2]`` float64 ground size (x, y) in metres of the nominal north-up grid.
        meta: Image metadata (corners).
        img_centre: ``[N, 2]`` float64 (lat, lon) of each image's set centre.

    Returns:
        ``[N, 2, 3]`` float64: fitted to the corners where known, else the nominal north-up grid.
    """
    affine = geo.nominal_affine(extent)
    if bool(meta.has_corners.any()):
        fitted = geo.affine_from_corners(geo.local_xy(meta.corners, img_centre))
        det = fitted[:, 0, 0] * fitted[:, 1, 1] - fitted[:, 0, 1] * fitted[:, 1, 0]
        ok = meta.has_corners & (det.abs() > 1e-6)  # degenerate corners: nominal geometry
        affine = torch.where(ok[:, None, None], fitted, affine)
    return affine


def _cell_geometry(
    hws: list[tuple[int, int]],
    extent: torch.Tensor,
    meta: _ImageMeta,
    img_centre: torch.Tensor,
    img_cell_start: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ground offset and grid position of every token cell (Eq. 1 + Eq. 2), vectorised per grid size.

    Args:
        hws: Per image its token grid ``(h, w)``.
        extent: ``[N, 2]`` float64 ground size (x, y) in metres.
        meta: Image metadata (corners).
        img_centre: ``[N, 2]`` float64 (lat, lon) of each image's set centre.
        img_cell_start: ``[N]`` offset of each image's cells.

    Returns:
        ``(cell_xy [Ncell, 2] float64, cell_xy_nominal [Ncell, 2] float64, cell_rc [Ncell, 2] long)``:
        offsets from the bilinear corners (nominal grid where none), offsets of the nominal grid, and
        (row, col) of each cell.
    """
    dev = extent.device
    n_cells = sum(h * w for h, w in hws)
    cell_xy = torch.empty(n_cells, 2, dtype=torch.float64, device=dev)
    cell_xy_nom = torch.empty(n_cells, 2, dtype=torch.float64, device=dev)
    cell_rc = torch.empty(n_cells, 2, dtype=torch.long, device=dev)
    # One batched pass per distinct grid size (usually one or two), not per image.
    for (h, w), members in _by_value(hws).items():
        mem = torch.tensor(members, device=dev)
        uv = geo.grid_uv(h, w, 1, dev)[:, 0][None].expand(len(members), h * w, 2)
        nom = geo.apply_affine(geo.nominal_affine(extent[mem]), uv)
        xy = nom.clone()
        hc = meta.has_corners[mem]
        if bool(hc.any()):
            # Token centres through the bilinear corner model, so skewed/rotated chips are exact.
            ll = geo.bilinear_latlon(meta.corners[mem][hc], uv[hc])
            xy[hc] = geo.local_xy(ll, img_centre[mem][hc])
        dest = (img_cell_start[mem][:, None] + torch.arange(h * w, device=dev)[None]).reshape(-1)
        cell_xy[dest] = xy.reshape(-1, 2)
        cell_xy_nom[dest] = nom.reshape(-1, 2)
        rr = torch.arange(h * w, device=dev)
        cell_rc[dest] = torch.stack([rr // w, rr % w], dim=1).repeat(len(members), 1)
    return cell_xy, cell_xy_nom, cell_rc


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
