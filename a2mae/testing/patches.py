"""Synthetic pre-chipped archives: folders of small per-band GeoTIFF patches, as BigEarthNet ships them.

BigEarthNet cuts each Sentinel-2 tile into 1200 m patches, one folder per patch,
``S2A_MSIL2A_20170613T101031_<row>_<col>/`` holding ``..._<row>_<col>_B02.tif`` and so on: the 10 m
bands at 120 px, the 20 m bands at 60 px, the 60 m bands at 20 px. :func:`make_patch_archive`
writes such folders on a regular layout of adjacent patches (or with a gap between them), with any
band GSDs and patch size, so tests and the ingest benchmark can make tens of thousands of them. The
pixels are a smooth field (never all nodata), the georeferencing exact; the file names carry the
acquisition time and ``MSIL2A``, so ingest recognises Sentinel-2 L2A patches.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

#: BigEarthNet v1 band layout: band -> GSD (metres) in a 1200 m patch.
BIGEARTHNET_BANDS: dict[str, float] = {
    "B01": 60.0,
    "B02": 10.0,
    "B03": 10.0,
    "B04": 10.0,
    "B05": 20.0,
    "B06": 20.0,
    "B07": 20.0,
    "B08": 10.0,
    "B8A": 20.0,
    "B09": 60.0,
    "B11": 20.0,
    "B12": 20.0,
}


@dataclass(frozen=True)
class PatchLayout:
    """Where the patches lie and what they hold.

    Attributes:
        bands: Band id -> GSD in metres (every band covers the same ground square).
        extent_m: Side of a patch on the ground, metres (each band has ``extent_m / gsd`` pixels).
        rows: Patch rows of the layout.
        cols: Patch columns of the layout.
        origin: Upper-left corner of the first patch in ``crs`` (easting, northing), metres.
        gap_m: Ground between neighbouring patches (0: adjacent, as BigEarthNet cuts a tile).
        crs: The patches' CRS (a UTM zone).
        when: Acquisition time (in the file names).
    """

    bands: Mapping[str, float]
    extent_m: float = 1200.0
    rows: int = 4
    cols: int = 4
    origin: tuple[float, float] = (399_960.0 + 370.0, 5_800_020.0 - 130.0)
    gap_m: float = 0.0
    crs: str = "EPSG:32633"
    when: datetime = datetime(2017, 6, 13, 10, 10, 31, tzinfo=UTC)


def make_patch_archive(root: Path, layout: PatchLayout, *, seed: int = 0) -> list[Path]:
    """Write one folder of per-band patch GeoTIFFs per patch of ``layout``.

    Each band's file is encoded once (deflate GeoTIFF, a smooth field of the seed) and written for
    every patch with its own origin patched into the GeoTIFF tie point, so tens of thousands of
    patch folders take seconds; the patches of one band then hold the same pixels.

    Args:
        root: Folder to write into (created).
        layout: Bands, patch size and placement.
        seed: Seed of the pixel field.

    Returns:
        The patch folders, row by row.
    """
    root.mkdir(parents=True, exist_ok=True)
    stamp = layout.when.strftime("%Y%m%dT%H%M%S")
    templates = {band: _template(band, gsd, layout, seed) for band, gsd in layout.bands.items()}
    step = layout.extent_m + layout.gap_m
    folders = []
    for r in range(layout.rows):
        for c in range(layout.cols):
            name = f"S2A_MSIL2A_{stamp}_{r}_{c}"
            folder = root / name
            folder.mkdir(exist_ok=True)
            origin = struct.pack("<dd", layout.origin[0] + c * step, layout.origin[1] - r * step)
            for band, (data, at) in templates.items():
                (folder / f"{name}_{band}.tif").write_bytes(data[:at] + origin + data[at + 16 :])
            folders.append(folder)
    return folders


#: Origin written into the templates, then found and replaced in their bytes.
_SENTINEL = (123_456.789_012_5, 7_654_321.098_765_5)


def _template(band: str, gsd: float, layout: PatchLayout, seed: int) -> tuple[bytes, int]:
    """A band's GeoTIFF bytes at the sentinel origin, and the offset of the origin's two doubles."""
    from rasterio.io import MemoryFile
    from rasterio.transform import from_origin

    n = round(layout.extent_m / gsd)
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, size=2)
    xs = gsd * (np.arange(n) + 0.5)
    field = np.sin(xs[None, :] / 300 + phase[0]) + np.cos(xs[:, None] / 400 + phase[1])
    dn = (1500 + 600 * field + 40 * int(band[1:3].rstrip("A"))).astype(np.uint16)
    profile = {
        "driver": "GTiff",
        "width": n,
        "height": n,
        "count": 1,
        "dtype": "uint16",
        "crs": layout.crs,
        "transform": from_origin(*_SENTINEL, gsd, gsd),
        "nodata": 0,
        "compress": "deflate",
    }
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(dn, 1)
        data = bytes(mem.read())
    at = data.find(struct.pack("<dd", *_SENTINEL))
    if at < 0 or data.find(struct.pack("<dd", *_SENTINEL), at + 1) >= 0:
        raise RuntimeError("GeoTIFF tie point not found once in the template")
    return data, at
