"""Reading chips from a scene: windowed reads, resampling onto the finest grid, QA, int16 encoding.

One :class:`ReadTask` holds one scene and a bounded list of chip windows (``tile.chips_per_task``);
:func:`read_chips` is the function the executor runs (in a local process or as a Ray task). Memory
is bounded by the task: every band is read per chip window (plus a one-pixel margin for bilinear
resampling), never a whole scene; the files stay open for the task so GDAL's block cache serves
neighbouring windows.

Encoding (the snapshot's stored values): ``int16 = round((DN * scale + offset) * 10000)``, clipped to
``[-32767, 32767]``; ``-32768`` (:data:`NODATA`) marks pixels that are nodata in any band or in the
QA layer. Bands coarser than the scene's finest grid (Sentinel-2 20 m) are resampled onto it with
bilinear interpolation of the DNs (a pixel is nodata where any source pixel with non-zero weight is);
the QA layer is resampled with nearest neighbour.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np

from a2mae.data.catalog import BandFile
from a2mae.errors import A2maeError

#: Stored value of nodata pixels.
NODATA = -32768
#: Stored values are reflectance times this.
REFLECTANCE_SCALE = 10000.0


class ChipReadError(A2maeError):
    """A scene cannot be tiled (rotated grid, unreadable file, ...); the message names the scene."""


@dataclass(frozen=True)
class QADecode:
    """How to decode a QA layer: values or bits meaning nodata or cloud."""

    nodata_values: tuple[int, ...] = ()
    cloud_values: tuple[int, ...] = ()
    nodata_bits: tuple[int, ...] = ()
    cloud_bits: tuple[int, ...] = ()

    def masks(self, qa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(nodata, cloud)`` boolean masks of a QA array."""
        q = qa.astype(np.int64)
        nodata = np.isin(q, self.nodata_values) if self.nodata_values else np.zeros(q.shape, bool)
        cloud = np.isin(q, self.cloud_values) if self.cloud_values else np.zeros(q.shape, bool)
        for b in self.nodata_bits:
            nodata |= ((q >> b) & 1).astype(bool)
        for b in self.cloud_bits:
            cloud |= ((q >> b) & 1).astype(bool)
        return nodata, cloud & ~nodata


@dataclass(frozen=True)
class ReadTask:
    """Chips to read from one scene.

    Attributes:
        scene_id: Catalog scene id (for messages).
        transform: Affine ``(a, b, c, d, e, f)`` of the scene's finest grid (the chip grid).
        bands: Band ids written, in output channel order.
        band_files: Where each of ``bands`` lives (same order).
        nodata: Nodata DN of each band (None: none).
        qa_file: The QA layer, or None.
        qa: How to decode ``qa_file``.
        scale: Reflectance scale of the DNs.
        offset: Reflectance offset of the DNs.
        chip: Chip side, pixels.
        windows: ``(row0, col0)`` of each chip, in the scene's finest grid.
    """

    scene_id: str
    transform: tuple[float, float, float, float, float, float]
    bands: tuple[str, ...]
    band_files: tuple[BandFile, ...]
    nodata: tuple[float | None, ...]
    qa_file: BandFile | None
    qa: QADecode | None
    scale: float
    offset: float
    chip: int
    windows: tuple[tuple[int, int], ...]
    s3: object | None = None


@dataclass
class ChipData:
    """One chip read and encoded.

    Attributes:
        row0: Window row in the scene's finest grid.
        col0: Window column.
        data: ``[C, H, W]`` int16 (little-endian, C order) as bytes.
        nodata_fraction: Fraction of pixels that are nodata.
        cloud_fraction: Fraction of pixels flagged cloud by the QA layer.
        band_stats: Per band ``(count, sum, sum of squares, min, max)`` of the valid stored values
            (exact integers, so sums do not depend on the order they are added in).
    """

    row0: int
    col0: int
    data: bytes
    nodata_fraction: float
    cloud_fraction: float
    band_stats: list[tuple[int, int, int, int, int]]


def _axis_coords(offset0: int, n: int, chip_t: tuple, band_t: tuple, axis: int) -> np.ndarray:
    """Fractional pixel-centre coordinates of chip pixels in a band grid along one axis."""
    if axis == 0:  # columns: x = a * col + c
        a, c, ab, cb = chip_t[0], chip_t[2], band_t[0], band_t[2]
    else:  # rows: y = e * row + f
        a, c, ab, cb = chip_t[4], chip_t[5], band_t[4], band_t[5]
    ground = c + a * (offset0 + np.arange(n) + 0.5)
    return (ground - cb) / ab - 0.5


def _aligned_offset(chip_t: tuple, band_t: tuple) -> tuple[int, int] | None:
    """Integer (col, row) offset of the chip grid in a band grid when both coincide, else None."""
    a, _, c, _, e, f = chip_t
    ab, _, cb, _, eb, fb = band_t
    if not (math.isclose(a, ab, rel_tol=1e-9) and math.isclose(e, eb, rel_tol=1e-9)):
        return None
    dc, dr = (c - cb) / ab, (f - fb) / eb
    if abs(dc - round(dc)) > 1e-6 or abs(dr - round(dr)) > 1e-6:
        return None
    return round(dc), round(dr)


def _read(ds, indexes: list[int], col: int, row: int, w: int, h: int, fill: float) -> np.ndarray:
    from rasterio.windows import Window

    inside = col >= 0 and row >= 0 and col + w <= ds.width and row + h <= ds.height
    win = Window(col, row, w, h)
    if inside:
        return ds.read(indexes, window=win)
    return ds.read(indexes, window=win, boundless=True, fill_value=fill)


def _bilinear(ds, indexes, cols_f, rows_f, nodata: list[float | None]) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear samples of bands at fractional pixel-centre coordinates; also the nodata mask."""
    c0 = np.floor(cols_f).astype(np.int64)
    r0 = np.floor(rows_f).astype(np.int64)
    fx, fy = cols_f - c0, rows_f - r0
    cmin, cmax = int(c0.min()), int(c0.max()) + 1
    rmin, rmax = int(r0.min()), int(r0.max()) + 1
    # Clamp to the raster (edge pixels replicate); read only the needed window.
    lo_c, hi_c = max(cmin, 0), min(cmax, ds.width - 1)
    lo_r, hi_r = max(rmin, 0), min(rmax, ds.height - 1)
    src = ds.read(indexes, window=_window(lo_c, lo_r, hi_c - lo_c + 1, hi_r - lo_r + 1)).astype(np.float64)
    ci0 = np.clip(c0, lo_c, hi_c) - lo_c
    ci1 = np.clip(c0 + 1, lo_c, hi_c) - lo_c
    ri0 = np.clip(r0, lo_r, hi_r) - lo_r
    ri1 = np.clip(r0 + 1, lo_r, hi_r) - lo_r
    wx = fx[None, :]
    wy = fy[:, None]
    out = np.empty((len(indexes), rows_f.size, cols_f.size))
    bad = np.zeros((rows_f.size, cols_f.size), bool)
    for k in range(len(indexes)):
        s = src[k]
        top = s[np.ix_(ri0, ci0)] * (1 - wx) + s[np.ix_(ri0, ci1)] * wx
        bot = s[np.ix_(ri1, ci0)] * (1 - wx) + s[np.ix_(ri1, ci1)] * wx
        out[k] = top * (1 - wy) + bot * wy
        if nodata[k] is not None:
            m = (s == nodata[k]).astype(np.float64)
            mt = m[np.ix_(ri0, ci0)] * (1 - wx) + m[np.ix_(ri0, ci1)] * wx
            mb = m[np.ix_(ri1, ci0)] * (1 - wx) + m[np.ix_(ri1, ci1)] * wx
            bad |= (mt * (1 - wy) + mb * wy) > 0
    return out, bad


def _window(col: int, row: int, w: int, h: int):
    from rasterio.windows import Window

    return Window(col, row, w, h)


def _nearest(ds, index: int, cols_f: np.ndarray, rows_f: np.ndarray) -> np.ndarray:
    ci = np.clip(np.floor(cols_f + 0.5).astype(np.int64), 0, ds.width - 1)
    ri = np.clip(np.floor(rows_f + 0.5).astype(np.int64), 0, ds.height - 1)
    lo_c, lo_r = int(ci.min()), int(ri.min())
    src = ds.read(index, window=_window(lo_c, lo_r, int(ci.max()) - lo_c + 1, int(ri.max()) - lo_r + 1))
    return src[np.ix_(ri - lo_r, ci - lo_c)]


def _encode(dn: np.ndarray, bad: np.ndarray, scale: float, offset: float) -> np.ndarray:
    v = np.rint((dn * scale + offset) * REFLECTANCE_SCALE)
    out = np.clip(v, -32767, 32767).astype("<i2")
    out[:, bad] = NODATA
    return out


def _band_stats(chip: np.ndarray, bad: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    good = ~bad
    n = int(good.sum())
    out = []
    for band in chip:
        if n == 0:
            out.append((0, 0, 0, 0, 0))
            continue
        v = band[good].astype(np.int64)
        out.append((n, int(v.sum()), int((v * v).sum()), int(v.min()), int(v.max())))
    return out


def read_chips(task: ReadTask) -> list[ChipData]:
    """Read, resample, QA-check and encode the chips of one task (runs on a worker).

    Args:
        task: One scene and its chip windows.

    Returns:
        One :class:`ChipData` per window, in the order of ``task.windows``.

    Raises:
        ChipReadError: A grid is rotated or a file cannot be read.
    """
    from a2mae.io.raster import open_raster, raster_env

    t = task.transform
    if t[1] != 0 or t[3] != 0:
        raise ChipReadError(f"scene {task.scene_id}: rotated grids are not supported; warp it north-up")
    chip = task.chip
    uris = sorted({bf.uri for bf in task.band_files} | ({task.qa_file.uri} if task.qa_file else set()))
    out: list[ChipData] = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(raster_env(task.s3))  # type: ignore[arg-type]
        ds = {u: stack.enter_context(open_raster(u)) for u in uris}
        for row0, col0 in task.windows:
            chip_t = (t[0], 0.0, t[2] + t[0] * col0, 0.0, t[4], t[5] + t[4] * row0)
            dn = np.empty((len(task.bands), chip, chip))
            bad = np.zeros((chip, chip), bool)
            # Bands sharing a file and a grid are read in one call.
            groups: dict[tuple, list[int]] = {}
            for k, bf in enumerate(task.band_files):
                groups.setdefault((bf.uri, bf.transform), []).append(k)
            for (uri, band_t), ks in groups.items():
                src = ds[uri]
                idx = [task.band_files[k].index for k in ks]
                nod = [task.nodata[k] for k in ks]
                if band_t[1] != 0 or band_t[3] != 0:
                    raise ChipReadError(f"scene {task.scene_id}: {uri}: rotated grids are not supported")
                off = _aligned_offset(chip_t, band_t)
                if off is not None:
                    fill = next((v for v in nod if v is not None), 0)
                    vals = _read(src, idx, off[0], off[1], chip, chip, fill).astype(np.float64)
                    for j, v in enumerate(nod):
                        if v is not None:
                            bad |= vals[j] == v
                else:
                    cols_f = _axis_coords(0, chip, chip_t, band_t, 0)
                    rows_f = _axis_coords(0, chip, chip_t, band_t, 1)
                    vals, b = _bilinear(src, idx, cols_f, rows_f, nod)
                    bad |= b
                dn[ks] = vals
            cloud = np.zeros((chip, chip), bool)
            if task.qa_file is not None and task.qa is not None:
                qt = task.qa_file.transform
                qa = _nearest(
                    ds[task.qa_file.uri],
                    task.qa_file.index,
                    _axis_coords(0, chip, chip_t, qt, 0),
                    _axis_coords(0, chip, chip_t, qt, 1),
                )
                q_nodata, cloud = task.qa.masks(qa)
                bad |= q_nodata
                cloud &= ~bad
            enc = _encode(dn, bad, task.scale, task.offset)
            out.append(
                ChipData(
                    row0=row0,
                    col0=col0,
                    data=enc.tobytes(),
                    nodata_fraction=float(bad.mean()),
                    cloud_fraction=float(cloud.mean()),
                    band_stats=_band_stats(enc, bad),
                )
            )
    return out
