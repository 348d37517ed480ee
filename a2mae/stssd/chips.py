"""Reading chips from a scene: windowed reads, resampling onto the finest grid, QA, int16 encoding.

One :class:`ReadTask` holds the chips of a few neighbouring grid points (at most
``tile.chips_per_task`` chips, from one or more scenes); a shard task
(:func:`a2mae.stssd.packing.write_shard`) calls :func:`read_chips` batch by batch. Memory is bounded
by the batch: per scene, the
chips are read as one *region* (their bounding window, when it is at most twice the chips' area:
dense S2 and L8 chips) or chip by chip (sparse GF chips), band by band with a one-pixel margin for
bilinear resampling; never a whole scene.

Encoding (the snapshot's stored values): ``int16 = round((DN * scale + offset) * 10000)``, clipped to
``[-32767, 32767]``; ``-32768`` (:data:`NODATA`) marks pixels that are nodata in any band or in the
QA layer. Bands coarser than the scene's finest grid (Sentinel-2 20 m) are resampled onto it with
bilinear interpolation of the DNs (a pixel is nodata where any source pixel with non-zero weight is);
the QA layer is resampled with nearest neighbour.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from a2mae.errors import A2maeError
from a2mae.ingest.catalog import BandFile
from a2mae.sensors import QASpec
from a2mae.stssd.errors import ChipReadError as ChipReadError  # re-exported

if TYPE_CHECKING:
    from rasterio.windows import Window

#: A north-up affine ``(a, b, c, d, e, f)``.
Affine6 = tuple[float, float, float, float, float, float]


#: Stored value of nodata pixels.
NODATA = -32768
#: Stored values are reflectance times this.
REFLECTANCE_SCALE = 10000.0


class _Scratch(threading.local):
    """Reusable temporaries of this thread, one buffer per named slot, grown as needed.

    Resampling and encoding a region needs a few arrays of tens of MB. Allocating them afresh for
    every region makes a new process touch fresh pages again and again (the heap fragments around
    GDAL's cached blocks), and a fresh page costs a page fault; a slot reuses its pages instead.
    A slot's array is valid until the slot is asked for again.
    """

    def __init__(self) -> None:
        self.buffers: dict[str, np.ndarray] = {}

    def get(self, slot: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` and ``dtype`` in ``slot``'s buffer."""
        dtype = np.dtype(dtype)
        n = math.prod(shape) * dtype.itemsize
        buf = self.buffers.get(slot)
        if buf is None or buf.size < n:
            buf = self.buffers[slot] = np.empty(max(n, 1), np.uint8)
        out: np.ndarray = buf[:n].view(dtype).reshape(shape)
        return out

    def clear(self) -> None:
        """Free every slot."""
        self.buffers.clear()


_SCRATCH = _Scratch()


@dataclass(frozen=True)
class SceneSource:
    """How to read one scene's chips.

    Attributes:
        scene_id: Catalog scene id (for messages).
        content_hash: The catalog's content hash of the scene (keys the open-file cache).
        transform: Affine ``(a, b, c, d, e, f)`` of the scene's finest grid (the chip grid).
        bands: Band ids written, in output channel order.
        band_files: Where each of ``bands`` lives (same order).
        nodata: Nodata DN of each band (None: none).
        qa_file: The QA layer, or None.
        qa: How to decode ``qa_file``.
        scale: Reflectance scale of the DNs.
        offset: Reflectance offset of the DNs.
    """

    scene_id: str
    content_hash: str
    transform: tuple[float, float, float, float, float, float]
    bands: tuple[str, ...]
    band_files: tuple[BandFile, ...]
    nodata: tuple[float | None, ...]
    qa_file: BandFile | None
    qa: QASpec | None
    scale: float
    offset: float


@dataclass(frozen=True)
class ReadTask:
    """Chips to read: windows of one or more scenes.

    Attributes:
        chip: Chip side, pixels.
        scenes: The scenes involved.
        windows: ``(position in scenes, row0, col0)`` of each chip, in the scene's finest grid.
        s3: :class:`~a2mae.io.storage.S3Settings` for ``s3://`` scenes (None: from the environment).
        gdal_cache_mb: GDAL's block cache while reading, MB (None: GDAL's default, 5 % of RAM in
            every process). Decoded tiles are kept so that neighbouring regions do not decode them
            again (two rows of tiles of the scenes a task reads is enough); a bound keeps many
            workers within the machine's memory.
    """

    chip: int
    scenes: tuple[SceneSource, ...]
    windows: tuple[tuple[int, int, int], ...]
    s3: object | None = None
    gdal_cache_mb: int | None = None


@dataclass
class ChipData:
    """One chip read and encoded.

    Attributes:
        data: ``[C, H, W]`` int16 (little-endian), a strided view into the encoded region it was cut
            from (copied when written).
        nodata_fraction: Fraction of pixels that are nodata.
        cloud_fraction: Fraction of pixels flagged cloud by the QA layer.
        bad: ``[H, W]`` nodata mask (a view), for :func:`band_stats`.
    """

    data: np.ndarray
    nodata_fraction: float
    cloud_fraction: float
    bad: np.ndarray

    @property
    def nbytes(self) -> int:
        """Size of the stored chip, bytes."""
        return self.data.nbytes


def _axis_coords(offset0: int, n: int, grid_t: Affine6, band_t: Affine6, axis: int) -> np.ndarray:
    """Fractional pixel-centre coordinates of grid pixels ``offset0 ..`` in a band grid, one axis."""
    if axis == 0:  # columns: x = a * col + c
        a, c, ab, cb = grid_t[0], grid_t[2], band_t[0], band_t[2]
    else:  # rows: y = e * row + f
        a, c, ab, cb = grid_t[4], grid_t[5], band_t[4], band_t[5]
    ground = c + a * (offset0 + np.arange(n) + 0.5)
    coords: np.ndarray = (ground - cb) / ab - 0.5
    return coords


def _aligned_offset(grid_t: Affine6, band_t: Affine6) -> tuple[int, int] | None:
    """Integer (col, row) offset of the scene grid in a band grid when both coincide, else None."""
    a, _, c, _, e, f = grid_t
    ab, _, cb, _, eb, fb = band_t
    if not (math.isclose(a, ab, rel_tol=1e-9) and math.isclose(e, eb, rel_tol=1e-9)):
        return None
    dc, dr = (c - cb) / ab, (f - fb) / eb
    if abs(dc - round(dc)) > 1e-6 or abs(dr - round(dr)) > 1e-6:
        return None
    return round(dc), round(dr)


def _window(col: int, row: int, w: int, h: int) -> Window:
    from rasterio.windows import Window

    return Window(col, row, w, h)


def _read(
    ds: Any,
    indexes: list[int],
    col: int,
    row: int,
    w: int,
    h: int,
    fill: float,
    out: np.ndarray | None = None,
) -> np.ndarray:
    inside = col >= 0 and row >= 0 and col + w <= ds.width and row + h <= ds.height
    data: np.ndarray
    if inside:
        data = ds.read(indexes, window=_window(col, row, w, h), out=out)
        return data
    data = ds.read(indexes, window=_window(col, row, w, h), boundless=True, fill_value=fill)
    if out is None:
        return data
    out[...] = data
    return out


def _read_group(
    reads: list[tuple[Any, list[int]]], slot: str, col: int, row: int, w: int, h: int, fill: float
) -> np.ndarray:
    """A window of the bands of several files on one grid, stacked ``[K, h, w]``.

    Args:
        reads: ``(dataset, band indexes)`` per file.
        slot: :data:`_SCRATCH` slot of the result (read in place; valid until the slot is reused).
        col: Window column offset (may reach outside the grid: ``fill`` there).
        row: Window row offset.
        w: Window width.
        h: Window height.
        fill: Value outside the grid.
    """
    dtypes = {ds.dtypes[i - 1] for ds, idx in reads for i in idx}
    if len(dtypes) != 1:  # mixed types: let numpy choose the common one
        return np.concatenate([_read(ds, idx, col, row, w, h, fill) for ds, idx in reads])
    out = _SCRATCH.get(slot, (sum(len(idx) for _, idx in reads), h, w), dtypes.pop())
    k = 0
    for ds, idx in reads:
        _read(ds, idx, col, row, w, h, fill, out[k : k + len(idx)])
        k += len(idx)
    return out


def _two_phase(i0: np.ndarray, i1: np.ndarray, f: np.ndarray) -> list[tuple[int, int, np.float32]] | None:
    """The sampling of one axis as two interleaved runs, when it is an exact 2x upsampling.

    Returns:
        ``[(first source index, length, weight of the next pixel)]`` for the even and the odd
        outputs when each phase reads consecutive source pixels with one weight (``i1 = i0 + 1``);
        None otherwise (other ratios, edge clamping), for the gather path.
    """
    if f.size < 4 or f.size % 2:
        return None
    runs = []
    for p in (0, 1):
        a0, a1, w = i0[p::2], i1[p::2], f[p::2]
        if not (np.all(np.diff(a0) == 1) and np.array_equal(a1, a0 + 1) and np.all(w == w[0])):
            return None
        runs.append((int(a0[0]), a0.size, w[0]))
    return runs


@dataclass(frozen=True)
class _BilinearPlan:
    """Where a bilinear resampling reads (``window``) and how it weighs (one axis each)."""

    window: Any
    ci0: np.ndarray
    ci1: np.ndarray
    fx: np.ndarray
    ri0: np.ndarray
    ri1: np.ndarray
    fy: np.ndarray

    @classmethod
    def make(cls, size: tuple[int, int], cols_f: np.ndarray, rows_f: np.ndarray) -> _BilinearPlan:
        """Plan samples at fractional pixel-centre coordinates of a grid of ``size`` (width, height).

        Outside the grid the edge pixels are replicated.
        """
        c0 = np.floor(cols_f).astype(np.int64)
        r0 = np.floor(rows_f).astype(np.int64)
        fx, fy = (cols_f - c0).astype(np.float32), (rows_f - r0).astype(np.float32)
        lo_c, hi_c = max(int(c0.min()), 0), min(int(c0.max()) + 1, size[0] - 1)
        lo_r, hi_r = max(int(r0.min()), 0), min(int(r0.max()) + 1, size[1] - 1)
        return cls(
            _window(lo_c, lo_r, hi_c - lo_c + 1, hi_r - lo_r + 1),
            np.clip(c0, lo_c, hi_c) - lo_c,
            np.clip(c0 + 1, lo_c, hi_c) - lo_c,
            fx,
            np.clip(r0, lo_r, hi_r) - lo_r,
            np.clip(r0 + 1, lo_r, hi_r) - lo_r,
            fy,
        )

    def interp(self, a: np.ndarray, slot: str = "v") -> np.ndarray:
        """Separable bilinear samples ``[K, Hs, Ws]`` (the window) -> ``[K, rows, cols]`` float32.

        The result and the temporaries live in :data:`_SCRATCH` slots named after ``slot`` (valid
        until the next call with the same ``slot``).
        """
        k = a.shape[0]
        cols2, rows2 = _two_phase(self.ci0, self.ci1, self.fx), _two_phase(self.ri0, self.ri1, self.fy)
        tmp = _SCRATCH.get(f"{slot}.cols", (k, a.shape[1], self.fx.size), np.float32)
        if cols2 is None:  # gathers (take + in-place: ~3x faster than fancy indexing)
            np.take(a, self.ci0, axis=2, out=tmp)
            tmp *= 1 - self.fx
            nxt = np.take(a, self.ci1, axis=2, out=_SCRATCH.get(f"{slot}.next", tmp.shape, np.float32))
            nxt *= self.fx
            tmp += nxt
        else:  # 2x upsampling away from the edges (S2 20 m -> 10 m): strided slices, same arithmetic
            for p, (s, n, f) in enumerate(cols2):
                v = tmp[:, :, p::2]
                np.multiply(a[:, :, s : s + n], 1 - f, out=v)
                v += np.multiply(
                    a[:, :, s + 1 : s + 1 + n], f, out=_SCRATCH.get(f"{slot}.next", v.shape, np.float32)
                )
        out = _SCRATCH.get(f"{slot}.out", (k, self.fy.size, tmp.shape[2]), np.float32)
        if rows2 is None:
            np.take(tmp, self.ri0, axis=1, out=out)
            out *= (1 - self.fy)[:, None]
            nxt = np.take(tmp, self.ri1, axis=1, out=_SCRATCH.get(f"{slot}.next", out.shape, np.float32))
            nxt *= self.fy[:, None]
            out += nxt
        else:
            for p, (s, n, f) in enumerate(rows2):
                v = out[:, p::2, :]
                np.multiply(tmp[:, s : s + n, :], 1 - f, out=v)
                v += np.multiply(
                    tmp[:, s + 1 : s + 1 + n, :], f, out=_SCRATCH.get(f"{slot}.next", v.shape, np.float32)
                )
        return out


def _bilinear(
    raw: np.ndarray, plan: _BilinearPlan, nodata: list[float | None]
) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear samples of bands sharing one grid.

    Args:
        raw: ``[K, Hs, Ws]`` DNs of ``plan.window``.
        plan: Where to sample.
        nodata: Nodata DN per band, or None.

    Returns:
        ``[K, rows, cols]`` float32 values, and the ``[rows, cols]`` mask of pixels with a nodata
        source pixel of non-zero weight.
    """
    src = _SCRATCH.get("bilinear.src", raw.shape, np.float32)
    np.copyto(src, raw, casting="unsafe")
    m = _nodata_mask(raw, nodata)
    if m is not None and raw.dtype.kind == "f":  # NaN x 0 is NaN: no NaN may reach the weights
        np.copyto(src, 0, where=~np.isfinite(src))
    out = plan.interp(src, "values")
    if m is None:
        return out, np.zeros(out.shape[1:], bool)
    msrc = _SCRATCH.get("bilinear.mask", (1, *m.shape), np.float32)
    np.copyto(msrc[0], m, casting="unsafe")
    return out, plan.interp(msrc, "mask")[0] > 0


def _nearest(ds: Any, index: int, cols_f: np.ndarray, rows_f: np.ndarray) -> np.ndarray:
    ci = np.clip(np.floor(cols_f + 0.5).astype(np.int64), 0, ds.width - 1)
    ri = np.clip(np.floor(rows_f + 0.5).astype(np.int64), 0, ds.height - 1)
    lo_c, lo_r = int(ci.min()), int(ri.min())
    src = ds.read(index, window=_window(lo_c, lo_r, int(ci.max()) - lo_c + 1, int(ri.max()) - lo_r + 1))
    return np.take(np.take(src, ri - lo_r, axis=0), ci - lo_c, axis=1)


def _encode_into(enc: np.ndarray, channels: list[int], dn: np.ndarray, scale: float, offset: float) -> None:
    """Store DNs as int16 ``round((DN * scale + offset) * 10000)``, clipped to ``[-32767, 32767]``.

    Args:
        enc: ``[C, H, W]`` int16 output; band ``i`` of ``dn`` goes to channel ``channels[i]``.
        channels: Output channel of each band of ``dn``.
        dn: ``[K, H, W]`` DNs (integers, or float32 from resampling: modified in place).
        scale: Reflectance scale of the DNs.
        offset: Reflectance offset of the DNs.
    """
    k, b = scale * REFLECTANCE_SCALE, offset * REFLECTANCE_SCALE
    integer = dn.dtype.kind in "ui" and dn.dtype.itemsize <= 2
    for i, ch in enumerate(channels):
        dst = enc[ch]
        if integer and dn.dtype.kind == "u" and k == 1.0 and b == 0.0 and dn.dtype.itemsize == 1:
            np.copyto(dst, dn[i], casting="unsafe")  # 8-bit DNs with a declared scale 1e-4: all fit
        elif integer and dn.dtype.kind == "u" and k == 1.0 and b == 0.0:
            np.minimum(dn[i], 32767, out=dst, casting="unsafe")  # reflectance x 10000 already (S2, GF)
        elif integer and k == 1.0 and b == round(b):
            v = _SCRATCH.get("encode.int32", dn[i].shape, np.int32)  # S2 L2A baseline >= 04.00:
            np.copyto(v, dn[i], casting="unsafe")  # an integer offset, exact
            v += int(b)
            np.clip(v, -32767, 32767, out=v)
            np.copyto(dst, v, casting="unsafe")
        else:
            if dn.dtype == np.float32:
                v = dn[i]
            else:
                v = _SCRATCH.get("encode.float32", dn[i].shape, np.float32)
                np.copyto(v, dn[i], casting="unsafe")
            if k != 1.0:
                v *= np.float32(k)
            if b != 0.0:
                v += np.float32(b)
            np.rint(v, out=v)
            np.clip(v, -32767, 32767, out=v)
            with np.errstate(invalid="ignore"):  # NaN (nodata: overwritten with NODATA afterwards)
                np.copyto(dst, v, casting="unsafe")


def _nodata_mask(vals: np.ndarray, nodata: list[float | None]) -> np.ndarray | None:
    """``[H, W]`` mask of pixels that are nodata in any band (None: no such pixel).

    A pixel is nodata when it equals its band's nodata value, or, in float bands, when it is NaN or
    infinite (whether or not a nodata value is declared).
    """
    mask = None
    floats = vals.dtype.kind == "f"
    for k, v in enumerate(nodata):
        band = vals[k]
        m = None
        if floats:
            finite = np.isfinite(band)
            if not finite.all():
                m = ~finite
        # one cheap pass rules most bands out (not with NaN in the band: its min/max are NaN)
        if v is not None and not math.isnan(v) and (m is not None or band.min() <= v <= band.max()):
            eq = band == v
            m = eq if m is None else m | eq
        if m is not None:
            mask = m if mask is None else mask | m
    return mask


def band_stats(
    data: np.ndarray, bad: np.ndarray
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Sums of a chip's valid stored values, per band.

    Exact integers (so sums do not depend on the order they are added in): the sums run in float64
    BLAS dot products, exact in any order while every partial sum is an integer below 2**53, which
    holds for a chip (at most ``32767**2 * H * W`` < 2**53 for chips up to 2900 px a side).

    Args:
        data: ``[C, H, W]`` int16 chip (C-contiguous is fastest).
        bad: ``[H, W]`` nodata mask.

    Returns:
        ``(valid pixel count, sum [C], sum of squares [C], min [C], max [C])`` (int64 arrays), or
        None when no pixel is valid.
    """
    c = data.shape[0]
    v = data.reshape(c, -1) if not bad.any() else data[:, ~bad]  # [C, N]
    if v.shape[1] == 0:
        return None
    x = v.astype(np.float64)
    sums = (x @ np.ones(x.shape[1])).astype(np.int64)
    squares = np.array([row @ row for row in x]).astype(np.int64)  # BLAS dot: 2x faster than einsum
    return v.shape[1], sums, squares, v.min(1).astype(np.int64), v.max(1).astype(np.int64)


@dataclass
class _Fetched:
    """The raw pixels of one region (read by the reader thread, finished by the caller).

    Attributes:
        h: Region height, pixels of the finest grid.
        w: Region width.
        groups: Per grid of bands: ``(output channels, nodata per band, DNs, plan)``; ``plan`` is
            None when the grid coincides with the finest grid (``DNs`` is then ``[K, h, w]``), else
            ``DNs`` is the plan's window, resampled in :func:`_finish_region`.
        qa: ``[h, w]`` QA values on the finest grid (nearest neighbour), or None.
    """

    h: int
    w: int
    groups: list[tuple[list[int], list[float | None], np.ndarray, _BilinearPlan | None]]
    qa: np.ndarray | None


def _fetch_region(ds: dict[str, Any], src: SceneSource, row0: int, col0: int, h: int, w: int) -> _Fetched:
    """Read the pixels a window of a scene needs, per grid of bands (I/O and decoding only)."""
    t = src.transform
    grid_t = (t[0], 0.0, t[2] + t[0] * col0, 0.0, t[4], t[5] + t[4] * row0)
    grids: dict[tuple[Affine6, int, int], list[int]] = {}
    for k, bf in enumerate(src.band_files):  # bands on one grid are read and resampled together
        if bf.transform[1] != 0 or bf.transform[3] != 0:
            raise ChipReadError(
                f"scene {src.scene_id}: {bf.uri}: rotated grids are not supported; warp it north-up"
            )
        grids.setdefault((bf.transform, bf.width, bf.height), []).append(k)
    groups: list[tuple[list[int], list[float | None], np.ndarray, _BilinearPlan | None]] = []
    for g, ((band_t, bw, bh), ks) in enumerate(grids.items()):
        by_file: dict[str, list[int]] = {}
        for k in ks:
            by_file.setdefault(src.band_files[k].uri, []).append(k)
        order = [k for kk in by_file.values() for k in kk]
        reads = [(ds[u], [src.band_files[k].index for k in kk]) for u, kk in by_file.items()]
        nod = [src.nodata[k] for k in order]
        off = _aligned_offset(grid_t, band_t)
        if off is not None:
            fill = next((v for v in nod if v is not None), 0)
            vals = _read_group(reads, f"fetch.{g}", off[0], off[1], w, h, fill)
            groups.append((order, nod, vals, None))
        else:
            plan = _BilinearPlan.make(
                (bw, bh), _axis_coords(0, w, grid_t, band_t, 0), _axis_coords(0, h, grid_t, band_t, 1)
            )
            win = plan.window
            raw = _read_group(reads, f"fetch.{g}", win.col_off, win.row_off, win.width, win.height, 0)
            groups.append((order, nod, raw, plan))
    qa = None
    if src.qa_file is not None and src.qa is not None:
        qt = src.qa_file.transform
        qa = _nearest(
            ds[src.qa_file.uri],
            src.qa_file.index,
            _axis_coords(0, w, grid_t, qt, 0),
            _axis_coords(0, h, grid_t, qt, 1),
        )
    return _Fetched(h, w, groups, qa)


def _finish_region(src: SceneSource, f: _Fetched) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample onto the finest grid, QA-check and encode a fetched region.

    Returns:
        ``(encoded [C, h, w] int16, nodata mask [h, w], cloud mask [h, w])``.
    """
    enc = np.empty((len(src.bands), f.h, f.w), "<i2")
    bad = np.zeros((f.h, f.w), bool)
    for order, nod, vals, plan in f.groups:
        if plan is None:
            m = _nodata_mask(vals, nod)
            if m is not None:
                bad |= m
        else:
            vals, b = _bilinear(vals, plan, nod)
            bad |= b
        _encode_into(enc, order, vals, src.scale, src.offset)
    cloud = np.zeros((f.h, f.w), bool)
    if f.qa is not None and src.qa is not None:
        q_nodata, cloud = src.qa.masks(f.qa)
        bad |= q_nodata
        cloud &= ~bad
    enc[:, bad] = NODATA
    return enc, bad, cloud


def _regions(
    windows: list[tuple[int, int]], chip: int, block: int = 8
) -> list[tuple[tuple[int, int, int, int], list[tuple[int, int]]]]:
    """Read regions ``(row0, col0, h, w)`` covering chip windows, each with the windows it serves.

    Windows are bucketed by blocks of ``block`` chips (by their origin); a bucket is read as its
    bounding region when that is at most twice the area of its chips (dense S2 and overlapping L8
    chips), else chip by chip (sparse GF chips). Memory per region is bounded by the block size.
    """
    buckets: dict[tuple[int, int], list[tuple[int, int]]] = {}
    side = block * chip
    for r, c in sorted(set(windows)):
        buckets.setdefault((r // side, c // side), []).append((r, c))
    out: list[tuple[tuple[int, int, int, int], list[tuple[int, int]]]] = []
    for wins in buckets.values():
        r0 = min(r for r, _ in wins)
        c0 = min(c for _, c in wins)
        h = max(r for r, _ in wins) - r0 + chip
        w = max(c for _, c in wins) - c0 + chip
        if h * w <= 2 * len(wins) * chip * chip:
            out.append(((r0, c0, h, w), wins))
        else:
            out.extend(((r, c, chip, chip), [(r, c)]) for r, c in wins)
    return out


#: Open datasets of this process, least recently used first (reused across tasks: no re-open, and
#: GDAL's block cache keeps serving neighbouring regions). Keyed by URI and the scene's content hash,
#: so a changed file is opened afresh.
_OPEN: OrderedDict[tuple[str, str], tuple[contextlib.ExitStack, Any]] = OrderedDict()
_OPEN_MAX = 64


def _cached_open(uri: str, content: str) -> Any:  # a rasterio dataset
    from a2mae.io.raster import open_raster

    key = (uri, content)
    hit = _OPEN.get(key)
    if hit is not None:
        _OPEN.move_to_end(key)
        return hit[1]
    stack = contextlib.ExitStack()
    ds = stack.enter_context(open_raster(uri))
    _OPEN[key] = (stack, ds)
    while len(_OPEN) > _OPEN_MAX:
        _, (old, _) = _OPEN.popitem(last=False)
        old.close()
    return ds


def close_open_files() -> None:
    """Close the datasets this process keeps open between tasks; free this thread's temporaries."""
    while _OPEN:
        _, (stack, _) = _OPEN.popitem()
        stack.close()
    _SCRATCH.clear()


def _scene_regions(
    src: SceneSource, wins: list[tuple[int, int]], chip: int
) -> Iterator[tuple[tuple[int, int, int, int], np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int]]]]:
    """Read and encode the regions covering a scene's chip windows, one at a time.

    Yields:
        ``(region (row0, col0, h, w), encoded, nodata mask, cloud mask, windows served)``.

    Raises:
        ChipReadError: A file of the scene cannot be opened or read (the message names the scene,
            the file, and how to take the scene out of the catalog).
    """
    import rasterio

    uris = sorted({bf.uri for bf in src.band_files} | ({src.qa_file.uri} if src.qa_file else set()))
    fix = f"restore its files, or remove it from the catalog (`a2mae catalog rm {src.scene_id}`)"
    try:
        ds = {u: _cached_open(u, src.content_hash) for u in uris}
        for region, served in _regions(wins, chip):
            enc, bad, cloud = _finish_region(src, _fetch_region(ds, src, *region))
            yield region, enc, bad, cloud, served
    except ChipReadError:
        raise
    except A2maeError as err:
        raise ChipReadError(f"scene {src.scene_id}: {err}; {fix}") from None
    except rasterio.errors.RasterioIOError as err:
        detail = " ".join(str(err).split())[:200]
        raise ChipReadError(f"scene {src.scene_id}: cannot read its pixels ({detail}); {fix}") from None


def read_chips(task: ReadTask) -> list[ChipData]:
    """Read, resample, QA-check and encode the chips of one task.

    Args:
        task: Scenes and chip windows.

    Returns:
        One :class:`ChipData` per window, in the order of ``task.windows``.

    Raises:
        ChipReadError: A grid is rotated.
        A2maeError: A file cannot be opened (the message names it).
    """
    from a2mae.io.raster import raster_env

    chip = task.chip
    out: list[ChipData | None] = [None] * len(task.windows)
    where: dict[tuple[int, int, int], list[int]] = {}
    for k, win in enumerate(task.windows):
        where.setdefault(win, []).append(k)
    area = float(chip * chip)
    options = {} if task.gdal_cache_mb is None else {"GDAL_CACHEMAX": task.gdal_cache_mb << 20}
    with raster_env(task.s3, **options):  # type: ignore[arg-type]
        for pos in sorted({p for p, _, _ in task.windows}):
            src = task.scenes[pos]
            t = src.transform
            if t[1] != 0 or t[3] != 0:
                raise ChipReadError(
                    f"scene {src.scene_id}: rotated grids are not supported; warp it north-up"
                )
            wins = [(r, c) for p, r, c in task.windows if p == pos]
            for region, enc, bad, cloud, served in _scene_regions(src, wins, chip):
                r0, c0 = region[:2]
                for row0, col0 in served:
                    i, j = row0 - r0, col0 - c0
                    b = bad[i : i + chip, j : j + chip]
                    cd = ChipData(
                        data=enc[:, i : i + chip, j : j + chip],
                        nodata_fraction=np.count_nonzero(b) / area,
                        cloud_fraction=np.count_nonzero(cloud[i : i + chip, j : j + chip]) / area,
                        bad=b,
                    )
                    for k in where[(pos, row0, col0)]:
                        out[k] = cd
    return out  # type: ignore[return-value]


def read_region_dn(
    src: SceneSource, row0: int, col0: int, h: int, w: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A window of a scene on its finest grid in the files' own units (DNs, not encoded).

    The same reads and resampling as :func:`read_chips` (bands coarser than the finest grid
    bilinearly, the QA layer by nearest neighbour; per-pixel arithmetic, so a pixel's value does not
    depend on the window it is read in). For applying a model trained on chips in file units
    (:mod:`a2mae.predict`). Must run inside :func:`a2mae.io.raster.raster_env`.

    Args:
        src: The scene (``bands``/``band_files`` in the wanted channel order).
        row0: Window row offset on the finest grid.
        col0: Window column offset.
        h: Window height, pixels.
        w: Window width, pixels.

    Returns:
        ``(values [C, h, w] float32 DNs, nodata mask [h, w], cloud mask [h, w])``; the arrays are new.
    """
    uris = sorted({bf.uri for bf in src.band_files} | ({src.qa_file.uri} if src.qa_file else set()))
    ds = {u: _cached_open(u, src.content_hash) for u in uris}
    f = _fetch_region(ds, src, row0, col0, h, w)
    out = np.empty((len(src.bands), h, w), np.float32)
    bad = np.zeros((h, w), bool)
    for order, nod, vals, plan in f.groups:
        if plan is None:
            m = _nodata_mask(vals, nod)
        else:
            vals, m = _bilinear(vals, plan, nod)
        if m is not None:
            bad |= m
        for i, ch in enumerate(order):
            np.copyto(out[ch], vals[i], casting="unsafe")
    cloud = np.zeros((h, w), bool)
    if f.qa is not None and src.qa is not None:
        q_nodata, cloud = src.qa.masks(f.qa)
        bad |= q_nodata
        cloud = cloud & ~bad
    return out, bad, cloud
