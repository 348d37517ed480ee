"""Reading chips from a scene: windowed reads, resampling onto the finest grid, QA, int16 encoding.

One :class:`ReadTask` holds the chips of a few neighbouring grid points (at most
``tile.chips_per_task`` chips, from one or more scenes); :func:`read_chips` is the function the
executor runs (in a local process or as a Ray task). Memory is bounded by the task: per scene, the
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
import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from a2mae.data.catalog import BandFile
from a2mae.errors import A2maeError
from a2mae.sensors import QASpec

#: Stored value of nodata pixels.
NODATA = -32768
#: Stored values are reflectance times this.
REFLECTANCE_SCALE = 10000.0


class ChipReadError(A2maeError):
    """A scene cannot be tiled (rotated grid, unreadable file, ...); the message names the scene."""


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
        spill: A local file to write the chips' bytes to, instead of returning them (local process
            pools: the bytes then never travel through a pipe; the writer copies them file to file).
    """

    chip: int
    scenes: tuple[SceneSource, ...]
    windows: tuple[tuple[int, int, int], ...]
    s3: object | None = None
    spill: str | None = None


@dataclass
class ChipData:
    """One chip read and encoded.

    Attributes:
        data: ``[C, H, W]`` int16 (little-endian, C order) as bytes; empty when spilled.
        digest: sha256 of the bytes (computed on the worker, so the writer never hashes pixels).
        nodata_fraction: Fraction of pixels that are nodata.
        cloud_fraction: Fraction of pixels flagged cloud by the QA layer.
        band_stats: Per band ``(count, sum, sum of squares, min, max)`` of the valid stored values
            (exact integers, so sums do not depend on the order they are added in).
        nbytes: Size of the bytes.
        spill_offset: Where the bytes are in the task's spill file (None: in ``data``).
    """

    data: bytes
    digest: bytes
    nodata_fraction: float
    cloud_fraction: float
    band_stats: list[tuple[int, int, int, int, int]]
    nbytes: int = 0
    spill_offset: int | None = None


def _axis_coords(offset0: int, n: int, grid_t: tuple, band_t: tuple, axis: int) -> np.ndarray:
    """Fractional pixel-centre coordinates of grid pixels ``offset0 ..`` in a band grid, one axis."""
    if axis == 0:  # columns: x = a * col + c
        a, c, ab, cb = grid_t[0], grid_t[2], band_t[0], band_t[2]
    else:  # rows: y = e * row + f
        a, c, ab, cb = grid_t[4], grid_t[5], band_t[4], band_t[5]
    ground = c + a * (offset0 + np.arange(n) + 0.5)
    return (ground - cb) / ab - 0.5


def _aligned_offset(grid_t: tuple, band_t: tuple) -> tuple[int, int] | None:
    """Integer (col, row) offset of the scene grid in a band grid when both coincide, else None."""
    a, _, c, _, e, f = grid_t
    ab, _, cb, _, eb, fb = band_t
    if not (math.isclose(a, ab, rel_tol=1e-9) and math.isclose(e, eb, rel_tol=1e-9)):
        return None
    dc, dr = (c - cb) / ab, (f - fb) / eb
    if abs(dc - round(dc)) > 1e-6 or abs(dr - round(dr)) > 1e-6:
        return None
    return round(dc), round(dr)


def _window(col: int, row: int, w: int, h: int):
    from rasterio.windows import Window

    return Window(col, row, w, h)


def _read(ds, indexes: list[int], col: int, row: int, w: int, h: int, fill: float) -> np.ndarray:
    inside = col >= 0 and row >= 0 and col + w <= ds.width and row + h <= ds.height
    if inside:
        return ds.read(indexes, window=_window(col, row, w, h))
    return ds.read(indexes, window=_window(col, row, w, h), boundless=True, fill_value=fill)


def _bilinear(
    reads: list[tuple[Any, list[int]]],
    size: tuple[int, int],
    cols_f: np.ndarray,
    rows_f: np.ndarray,
    nodata: list[float | None],
) -> tuple[np.ndarray, np.ndarray]:
    """Separable bilinear samples of bands sharing one grid, at fractional pixel-centre coordinates.

    Args:
        reads: ``(dataset, band indexes)`` per file, all on the same grid of ``size`` (width, height).
        size: Width and height of that grid.
        cols_f: Fractional column of each output column's pixel centre (integers are pixel centres).
        rows_f: Fractional row of each output row's pixel centre.
        nodata: Nodata DN per band (in the order of ``reads``), or None.

    Returns:
        ``[K, len(rows_f), len(cols_f)]`` float32 values, and the ``[rows, cols]`` mask of pixels with
        a nodata source pixel of non-zero weight. Outside the grid the edge pixels are replicated.
    """
    c0 = np.floor(cols_f).astype(np.int64)
    r0 = np.floor(rows_f).astype(np.int64)
    fx, fy = (cols_f - c0).astype(np.float32), (rows_f - r0).astype(np.float32)
    lo_c, hi_c = max(int(c0.min()), 0), min(int(c0.max()) + 1, size[0] - 1)
    lo_r, hi_r = max(int(r0.min()), 0), min(int(r0.max()) + 1, size[1] - 1)
    win = _window(lo_c, lo_r, hi_c - lo_c + 1, hi_r - lo_r + 1)
    src = np.concatenate([ds.read(idx, window=win) for ds, idx in reads]).astype(np.float32)
    ci0, ci1 = np.clip(c0, lo_c, hi_c) - lo_c, np.clip(c0 + 1, lo_c, hi_c) - lo_c
    ri0, ri1 = np.clip(r0, lo_r, hi_r) - lo_r, np.clip(r0 + 1, lo_r, hi_r) - lo_r

    def interp(a: np.ndarray) -> np.ndarray:  # [K, Hs, Ws] -> [K, h, w] (take + in-place: ~3x faster)
        tmp = np.take(a, ci0, axis=2)
        tmp *= 1 - fx
        tmp += np.take(a, ci1, axis=2) * fx
        out = np.take(tmp, ri0, axis=1)
        out *= (1 - fy)[:, None]
        out += np.take(tmp, ri1, axis=1) * fy[:, None]
        return out

    out = interp(src)
    m = _nodata_mask(src, nodata)
    if m is None:
        return out, np.zeros((rows_f.size, cols_f.size), bool)
    return out, interp(m[None].astype(np.float32))[0] > 0


def _nearest(ds, index: int, cols_f: np.ndarray, rows_f: np.ndarray) -> np.ndarray:
    ci = np.clip(np.floor(cols_f + 0.5).astype(np.int64), 0, ds.width - 1)
    ri = np.clip(np.floor(rows_f + 0.5).astype(np.int64), 0, ds.height - 1)
    lo_c, lo_r = int(ci.min()), int(ri.min())
    src = ds.read(index, window=_window(lo_c, lo_r, int(ci.max()) - lo_c + 1, int(ri.max()) - lo_r + 1))
    return np.take(np.take(src, ri - lo_r, axis=0), ci - lo_c, axis=1)


def _encode(dn: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """DNs -> stored int16 ``round((DN * scale + offset) * 10000)``, clipped to ``[-32767, 32767]``."""
    k, b = scale * REFLECTANCE_SCALE, offset * REFLECTANCE_SCALE
    if dn.dtype.kind == "u" and k == 1.0 and b == 0.0:
        return np.minimum(dn, 32767).astype("<i2")  # DNs are reflectance x 10000 already (S2, GF)
    v = dn.astype(np.float32, copy=dn.dtype != np.float32)
    if k != 1.0:
        v *= np.float32(k)
    if b != 0.0:
        v += np.float32(b)
    np.rint(v, out=v)
    np.clip(v, -32767, 32767, out=v)
    return v.astype("<i2")


def _nodata_mask(vals: np.ndarray, nodata: list[float | None]) -> np.ndarray | None:
    """``[H, W]`` mask of pixels equal to their band's nodata value in any band (None: no such pixel)."""
    mask = None
    for k, v in enumerate(nodata):
        if v is None:
            continue
        band = vals[k]
        if v < band.min() or v > band.max():  # one cheap pass rules most bands out
            continue
        m = band == v
        mask = m if mask is None else mask | m
    return mask


def _band_stats(chip: np.ndarray, bad: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    c = chip.shape[0]
    v = chip.reshape(c, -1) if not bad.any() else chip[:, ~bad]
    if v.shape[1] == 0:
        return [(0, 0, 0, 0, 0)] * c
    v = v.astype(np.int64)
    n = v.shape[1]
    sums, squares = v.sum(1), (v * v).sum(1)
    lo, hi = v.min(1), v.max(1)
    return [(n, int(sums[k]), int(squares[k]), int(lo[k]), int(hi[k])) for k in range(c)]


def _read_region(ds: dict, src: SceneSource, row0: int, col0: int, h: int, w: int):
    """Read, resample onto the finest grid, QA-check and encode a window of a scene.

    Returns:
        ``(encoded [C, h, w] int16, nodata mask [h, w], cloud mask [h, w])``.
    """
    t = src.transform
    grid_t = (t[0], 0.0, t[2] + t[0] * col0, 0.0, t[4], t[5] + t[4] * row0)
    enc = np.empty((len(src.bands), h, w), "<i2")
    bad = np.zeros((h, w), bool)
    grids: dict[tuple, list[int]] = {}
    for k, bf in enumerate(src.band_files):  # bands on one grid are read and resampled together
        if bf.transform[1] != 0 or bf.transform[3] != 0:
            raise ChipReadError(
                f"scene {src.scene_id}: {bf.uri}: rotated grids are not supported; warp it north-up"
            )
        grids.setdefault((bf.transform, bf.width, bf.height), []).append(k)
    for (band_t, bw, bh), ks in grids.items():
        by_file: dict[str, list[int]] = {}
        for k in ks:
            by_file.setdefault(src.band_files[k].uri, []).append(k)
        order = [k for kk in by_file.values() for k in kk]
        reads = [(ds[u], [src.band_files[k].index for k in kk]) for u, kk in by_file.items()]
        nod = [src.nodata[k] for k in order]
        off = _aligned_offset(grid_t, band_t)
        if off is not None:
            fill = next((v for v in nod if v is not None), 0)
            vals = np.concatenate([_read(d, idx, off[0], off[1], w, h, fill) for d, idx in reads])
            m = _nodata_mask(vals, nod)
            if m is not None:
                bad |= m
        else:
            cols_f = _axis_coords(0, w, grid_t, band_t, 0)
            rows_f = _axis_coords(0, h, grid_t, band_t, 1)
            vals, b = _bilinear(reads, (bw, bh), cols_f, rows_f, nod)
            bad |= b
        enc[order] = _encode(vals, src.scale, src.offset)
    cloud = np.zeros((h, w), bool)
    if src.qa_file is not None and src.qa is not None:
        qt = src.qa_file.transform
        qa = _nearest(
            ds[src.qa_file.uri],
            src.qa_file.index,
            _axis_coords(0, w, grid_t, qt, 0),
            _axis_coords(0, h, grid_t, qt, 1),
        )
        q_nodata, cloud = src.qa.masks(qa)
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


def _cached_open(uri: str, content: str):
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
    """Close the datasets this process keeps open between tasks."""
    while _OPEN:
        _, (stack, _) = _OPEN.popitem()
        stack.close()


def read_chips(task: ReadTask) -> list[ChipData]:
    """Read, resample, QA-check and encode the chips of one task (runs on a worker).

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
    by_scene: dict[int, list[int]] = {}
    for k, (pos, _, _) in enumerate(task.windows):
        by_scene.setdefault(pos, []).append(k)
    spill = open(task.spill, "wb") if task.spill else None  # noqa: SIM115  (closed below)
    with contextlib.ExitStack() as stack:
        if spill is not None:
            stack.enter_context(spill)
        stack.enter_context(raster_env(task.s3))  # type: ignore[arg-type]
        for pos in sorted(by_scene):
            src = task.scenes[pos]
            t = src.transform
            if t[1] != 0 or t[3] != 0:
                raise ChipReadError(
                    f"scene {src.scene_id}: rotated grids are not supported; warp it north-up"
                )
            ks = by_scene[pos]
            wins = [(task.windows[k][1], task.windows[k][2]) for k in ks]
            uris = sorted({bf.uri for bf in src.band_files} | ({src.qa_file.uri} if src.qa_file else set()))
            ds = {u: _cached_open(u, src.content_hash) for u in uris}
            where: dict[tuple[int, int], list[int]] = {}
            for k, win in zip(ks, wins, strict=True):
                where.setdefault(win, []).append(k)
            for (r0, c0, h, w), served in _regions(wins, chip):
                enc, bad, cloud = _read_region(ds, src, r0, c0, h, w)
                for row0, col0 in served:
                    i, j = row0 - r0, col0 - c0
                    sub = enc[:, i : i + chip, j : j + chip]
                    b = bad[i : i + chip, j : j + chip]
                    data = sub.tobytes()
                    offset = None
                    if spill is not None:
                        offset = spill.tell()
                        spill.write(data)
                    cd = ChipData(
                        data=data if spill is None else b"",
                        nbytes=len(data),
                        spill_offset=offset,
                        digest=hashlib.sha256(data).digest(),
                        nodata_fraction=float(b.mean()),
                        cloud_fraction=float(cloud[i : i + chip, j : j + chip].mean()),
                        band_stats=_band_stats(sub, b),
                    )
                    for k in where[(row0, col0)]:
                        out[k] = cd
    return out  # type: ignore[return-value]
