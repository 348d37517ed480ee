"""Raster outputs written window by window: a disk-backed blend accumulator, then COGs.

Memory does not grow with the scene: blended sums live in a tiled temporary GeoTIFF
(:class:`Accumulator`; GDAL keeps only ``predict.gdal_cache_mb`` of its blocks in memory), each window
is added with a read-modify-write of its own pixels, and the final maps are computed block by block
into tiled temporary GeoTIFFs, then turned into COGs by ``rio-cogeo`` (overviews built through a
temporary file, ``in_memory=False``). Every COG is checked with ``rio_cogeo.cogeo.cog_validate``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from a2mae.predict.errors import PredictError

#: Class-map value of nodata pixels.
NODATA = 255
#: Quality layer values.
CLEAR, CLOUD = 0, 1
#: Side of the blocks the final maps are computed in.
BLOCK = 512

_PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
    (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (199, 199, 199),
    (219, 219, 141), (158, 218, 229),
)  # fmt: skip


def colormap(n: int) -> dict[int, tuple[int, int, int, int]]:
    """A colour per class index (repeating after 20) and transparent nodata."""
    cmap = {i: (*_PALETTE[i % len(_PALETTE)], 255) for i in range(n)}
    cmap[NODATA] = (0, 0, 0, 0)
    return cmap


def _open_scratch(path: Path, profile: dict[str, Any]) -> Any:
    """Open a scratch GeoTIFF (no georeference: it is never published) for reading and writing."""
    import warnings

    import rasterio

    profile.pop("crs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        return rasterio.open(path, "w+", **profile)


def _tiled_profile(
    crs: str | None, transform: Any, width: int, height: int, count: int, dtype: str, nodata: float | None
) -> dict[str, Any]:
    return {
        "driver": "GTiff",
        "crs": crs,
        "transform": transform,
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "BIGTIFF": "IF_SAFER",
    }


class Accumulator:
    """Weighted sums of window predictions on a grid, kept in a temporary tiled GeoTIFF.

    Band ``k < K`` holds ``sum(weight * value_k)``, band ``K`` the summed weight, so the blended value
    is ``sum / weight`` wherever a window was added.

    Args:
        path: Temporary file to create.
        height: Grid rows.
        width: Grid columns.
        channels: ``K``.
    """

    def __init__(self, path: Path, height: int, width: int, channels: int) -> None:
        from rasterio.transform import Affine

        self.k, self.height, self.width = channels, height, width
        profile = _tiled_profile(None, Affine.identity(), width, height, channels + 1, "float32", None)
        self.ds = _open_scratch(path, profile)

    def add(self, row0: int, col0: int, values: np.ndarray, weight: np.ndarray) -> None:
        """Add ``values [K, h, w]`` with ``weight [h, w]`` at ``(row0, col0)``."""
        from rasterio.windows import Window

        h, w = weight.shape
        win = Window(col0, row0, w, h)
        cur = self.ds.read(window=win)
        cur[: self.k] += values * weight
        cur[self.k] += weight
        self.ds.write(cur, window=win)

    def read(self, row0: int, col0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """``(blended values [K, h, w], summed weight [h, w])`` of a block."""
        from rasterio.windows import Window

        cur = self.ds.read(window=Window(col0, row0, w, h))
        weight = cur[self.k]
        return cur[: self.k] / np.maximum(weight, 1e-12), weight

    def close(self) -> None:
        """Close the file (the caller removes it)."""
        self.ds.close()


class FlagLayer:
    """A uint8 layer (nodata and cloud flags) on a grid, written window by window to a tiled GeoTIFF."""

    def __init__(self, path: Path, height: int, width: int) -> None:
        from rasterio.transform import Affine

        profile = _tiled_profile(None, Affine.identity(), width, height, 1, "uint8", None)
        self.ds = _open_scratch(path, profile)

    def set(self, row0: int, col0: int, nodata: np.ndarray, cloud: np.ndarray) -> None:
        """Write the flags of a window (``CLEAR``/``CLOUD``/``NODATA``)."""
        from rasterio.windows import Window

        h, w = nodata.shape
        q = np.where(nodata, NODATA, np.where(cloud, CLOUD, CLEAR)).astype(np.uint8)
        self.ds.write(q[None], window=Window(col0, row0, w, h))

    def read(self, row0: int, col0: int, h: int, w: int) -> np.ndarray:
        """The flags of a block ``[h, w]``."""
        from rasterio.windows import Window

        flags: np.ndarray = self.ds.read(1, window=Window(col0, row0, w, h))
        return flags

    def close(self) -> None:
        """Close the file."""
        self.ds.close()


def blocks(height: int, width: int, side: int = BLOCK) -> Iterator[tuple[int, int, int, int]]:
    """``(row0, col0, h, w)`` blocks covering a grid, row-major."""
    for r in range(0, height, side):
        for c in range(0, width, side):
            yield r, c, min(side, height - r), min(side, width - c)


class TiledWriter:
    """A tiled temporary GeoTIFF on the output grid, written block by block, then made a COG."""

    def __init__(
        self,
        path: Path,
        crs: str,
        transform: Any,
        width: int,
        height: int,
        count: int,
        dtype: str,
        nodata: float | None,
        cmap: Mapping[int, tuple[int, int, int, int]] | None = None,
    ) -> None:
        import rasterio
        from rasterio.transform import Affine

        self.path = path
        t = transform if isinstance(transform, Affine) else Affine(*transform)
        self.ds = rasterio.open(path, "w", **_tiled_profile(crs, t, width, height, count, dtype, nodata))
        if cmap is not None:  # before any pixel: the TIFF photometric tag cannot change afterwards
            self.ds.write_colormap(1, dict(cmap))

    def write(self, row0: int, col0: int, data: np.ndarray) -> None:
        """Write ``data [count, h, w]`` at ``(row0, col0)``."""
        from rasterio.windows import Window

        self.ds.write(data, window=Window(col0, row0, data.shape[2], data.shape[1]))

    def finish(self, tags: Mapping[str, str], descriptions: Sequence[str] = ()) -> Path:
        """Set tags and band descriptions; close; return the path."""
        self.ds.update_tags(**{k: str(v) for k, v in tags.items()})
        for i, d in enumerate(descriptions, start=1):
            self.ds.set_band_description(i, d)
        self.ds.close()
        return self.path


def to_cog(
    src: Path, dst: Path, nodata: float | None, resampling: Literal["nearest", "average"] = "nearest"
) -> Path:
    """Convert a tiled GeoTIFF to a validated COG (tags, descriptions and colour table carried over).

    Raises:
        PredictError: The result does not validate as a COG.
    """
    from rio_cogeo.cogeo import cog_translate, cog_validate
    from rio_cogeo.profiles import cog_profiles

    profile = dict(cog_profiles.get("deflate"))
    profile.update(blockxsize=256, blockysize=256, BIGTIFF="IF_SAFER")
    cog_translate(
        str(src),
        str(dst),
        profile,
        nodata=nodata,
        overview_resampling=resampling,
        in_memory=False,
        quiet=True,
        forward_band_tags=True,
    )
    valid, errors, _ = cog_validate(str(dst), quiet=True)
    if not valid:
        raise PredictError(f"{dst}: the written file is not a valid COG ({'; '.join(errors)[:200]})")
    return dst


def provenance_tags(
    provenance: Mapping[str, str], scene_ids: Sequence[str], extra: Mapping[str, Any]
) -> dict[str, str]:
    """GeoTIFF tags recording the model and the input scenes (``A2MAE_*``)."""
    tags = {f"A2MAE_{k.upper()}": v for k, v in provenance.items()}
    tags["A2MAE_SCENE_IDS"] = json.dumps(list(scene_ids))
    tags.update({f"A2MAE_{k.upper()}": v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()})
    return tags


def preview_png(cog: Path, dst: Path, max_side: int = 512) -> Path:
    """A small PNG of a class map in its colours (decimated read; overviews make it cheap)."""
    import rasterio
    from PIL import Image

    with rasterio.open(cog) as ds:
        f = max(1, int(np.ceil(max(ds.width, ds.height) / max_side)))
        a = ds.read(1, out_shape=(max(1, ds.height // f), max(1, ds.width // f)))
        try:
            cmap = ds.colormap(1)
        except ValueError:
            cmap = colormap(int(a[a != NODATA].max(initial=0)) + 1)
    lut = np.zeros((256, 4), np.uint8)
    for k, v in cmap.items():
        lut[k] = v
    Image.fromarray(lut[a], "RGBA").save(dst)
    return dst
