"""An offline STAC catalog for tests and benchmarks: COGs in the S3 store, items in a local STAC API.

* :func:`cog_scene` rewrites a scene's files as COGs (256 px tiles, deflate, overviews), optionally
  with sensor-like noise added to the spectral bands, so that tiles compress as real imagery does
  (the synthetic ground field alone compresses to almost nothing, which would make every remote read
  look like header overhead);
* :func:`upload_scene` puts them into a bucket;
* :func:`stac_item` and :func:`stac_collection` describe a scene the way Earth Search or Planetary
  Computer do (assets keyed by the collection file's first asset key, ``proj:*``, ``raster:bands``,
  ``eo:bands``, ``eo:cloud_cover``, ``platform``);
* :func:`window_tile_bytes` is the yardstick of remote reads: the compressed bytes of the TIFF tiles
  that the chip windows of a catalog touch, per file.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from a2mae.collect.mapping import CollectionMap
from a2mae.ingest.catalog import BandFile, SceneRecord

#: Tile side of the COGs written here (Sentinel-2 and Landsat archives use 512 or 1024).
COG_BLOCK = 256


def write_cog(
    path: Path, data: np.ndarray, crs: str, transform: Sequence[float], nodata: float | None
) -> None:
    """Write ``data [C, H, W]`` as a COG (GDAL's COG driver: tiled, deflate + predictor, overviews)."""
    import rasterio
    from affine import Affine

    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype.name,
        crs=crs,
        transform=Affine(*transform[:6]),
        nodata=nodata,
        blocksize=COG_BLOCK,
        compress="DEFLATE",
        predictor=2,
        overview_resampling="nearest",
    ) as dst:
        dst.write(data)


def cog_scene(rec: SceneRecord, out_dir: Path, noise: float = 0.0, seed: int = 0) -> SceneRecord:
    """Rewrite a scene's files as COGs under ``out_dir/<scene folder>/`` (same file names).

    Args:
        rec: The scene (local files).
        out_dir: Where the copies go.
        noise: Standard deviation of the Gaussian noise added to spectral DNs (0: exact copies of the
            pixels; QA layers and nodata pixels are never changed).
        seed: Seed of the noise.

    Returns:
        The record with the copies' paths.
    """
    import rasterio

    rng = np.random.default_rng(seed)
    folder = out_dir / Path(rec.source).name
    moved: dict[str, str] = {}
    files = [*rec.band_files, *([rec.qa_file] if rec.qa_file else [])]
    for bf in files:
        if bf.uri in moved:
            continue
        with rasterio.open(bf.uri) as src:
            data = src.read()
            crs, t, nodata = src.crs.to_string(), tuple(src.transform)[:6], src.nodata
        if noise and bf is not rec.qa_file and data.dtype.kind == "u":
            valid = data != (nodata if nodata is not None else -1)
            noisy = data.astype(np.float64) + rng.normal(0.0, noise, data.shape)
            data = np.where(valid, np.clip(np.rint(noisy), 1, np.iinfo(data.dtype).max), data).astype(
                data.dtype
            )
        dst = folder / Path(bf.uri).name
        write_cog(dst, data, crs, t, nodata)
        moved[bf.uri] = str(dst.resolve())
    src_dir = Path(rec.source)
    if src_dir.is_dir():  # sidecars (MTL, STAC JSON) go along, so that ingest reads the copy alike
        for extra in src_dir.iterdir():
            if extra.is_file() and str(extra.resolve()) not in moved:
                shutil.copy2(extra, folder / extra.name)
    return with_uris(rec, moved, source=str(folder.resolve()))


def with_uris(rec: SceneRecord, uris: Mapping[str, str], source: str | None = None) -> SceneRecord:
    """``rec`` with its files' URIs replaced through ``uris`` (others unchanged)."""

    def swap(bf: BandFile | None) -> BandFile | None:
        return None if bf is None else bf.model_copy(update={"uri": uris.get(bf.uri, bf.uri)})

    update: dict[str, Any] = {
        "band_files": tuple(swap(b) for b in rec.band_files),
        "qa_file": swap(rec.qa_file),
    }
    if source is not None:
        update["source"] = source
    return rec.model_copy(update=update)


def upload_scene(rec: SceneRecord, prefix: str, settings: Any) -> dict[str, str]:
    """Copy a scene's local files to ``prefix`` (``s3://bucket/path``); ``{local path: s3 URI}``."""
    from a2mae.io.storage import s3_filesystem, split_s3

    fs = s3_filesystem(settings)
    out: dict[str, str] = {}
    for bf in [*rec.band_files, *([rec.qa_file] if rec.qa_file else [])]:
        if bf.uri in out:
            continue
        uri = f"{prefix.rstrip('/')}/{Path(bf.uri).name}"
        bucket, key = split_s3(uri)
        fs.put_file(bf.uri, f"{bucket}/{key}")
        out[bf.uri] = uri
    return out


def stac_collection(cmap: CollectionMap, description: str = "a2mae test collection") -> dict[str, Any]:
    """A minimal STAC collection document for ``cmap.collection``."""
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": cmap.collection,
        "description": description,
        "license": "proprietary",
        "links": [],
        "extent": {
            "spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
            "temporal": {"interval": [["2000-01-01T00:00:00Z", None]]},
        },
    }


def _epsg(crs: str) -> int:
    from rasterio.crs import CRS

    epsg = CRS.from_user_input(crs).to_epsg()
    if epsg is None:
        raise ValueError(f"{crs!r} has no EPSG code")
    return int(epsg)


def _asset(bf: BandFile, href: str, rec: SceneRecord, spectral: bool) -> dict[str, Any]:
    band: dict[str, Any] = {"data_type": bf.dtype}
    if bf.nodata is not None:
        band["nodata"] = bf.nodata
    if spectral:
        band.update(scale=rec.scale, offset=rec.offset)
    asset: dict[str, Any] = {
        "href": href,
        "type": "image/tiff; application=geotiff; profile=cloud-optimized",
        "proj:shape": [bf.height, bf.width],
        "proj:transform": list(bf.transform),
        "raster:bands": [band],
        "roles": ["data", "reflectance"] if spectral else ["data"],
    }
    if spectral:
        asset["eo:bands"] = [{"name": bf.band}]
        asset["gsd"] = bf.gsd_m
    return asset


def stac_item(
    rec: SceneRecord,
    cmap: CollectionMap,
    href: Callable[[str], str],
    item_id: str | None = None,
    properties: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A STAC item of a scene, as a public catalog would serve it.

    Args:
        rec: The scene (its catalog row: grids, time, radiometry).
        cmap: The collection file (asset keys, platforms, the cloud-cover property).
        href: Maps a file of the scene to its asset URL.
        item_id: Item id (default: the scene id).
        properties: Extra or overriding item properties.
    """
    ring = [[lon, lat] for lat, lon in rec.corners]
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    props: dict[str, Any] = {
        "datetime": rec.datetime.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if rec.datetime else None,
        "platform": cmap.platforms[0] if cmap.platforms else "unknown",
        "proj:epsg": _epsg(rec.crs),
    }
    if rec.cloud_fraction is not None:
        props[cmap.cloud_cover] = round(rec.cloud_fraction * 100, 4)
    props.update(properties or {})
    assets = {cmap.bands[bf.band][0]: _asset(bf, href(bf.uri), rec, True) for bf in rec.band_files}
    if rec.qa_file is not None and cmap.qa:
        assets[cmap.qa[0]] = _asset(rec.qa_file, href(rec.qa_file.uri), rec, False)
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [],
        "id": item_id or rec.scene_id,
        "collection": cmap.collection,
        "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
        "bbox": [min(lons), min(lats), max(lons), max(lats)],
        "properties": props,
        "assets": assets,
        "links": [],
    }


# -------------------------------------------------------------------------------------- yardstick
def window_in(
    bf: BandFile, grid_t: Sequence[float], row0: int, col0: int, chip: int
) -> tuple[int, int, int, int]:
    """``(col0, row0, col1, row1)`` (inclusive) of the pixels of ``bf`` a chip window of ``grid_t`` needs.

    The window is taken in ground coordinates and widened by one pixel of ``bf`` (the bilinear or
    nearest-neighbour margin a coarser band needs), clipped to the file.
    """
    a, _, c, _, e, f = grid_t
    x0, x1 = c + a * col0, c + a * (col0 + chip)
    y0, y1 = f + e * row0, f + e * (row0 + chip)
    ba, _, bc, _, be, bf_ = bf.transform
    cols = sorted(((x0 - bc) / ba, (x1 - bc) / ba))
    rows = sorted(((y0 - bf_) / be, (y1 - bf_) / be))
    c0, c1 = max(0, math.floor(cols[0]) - 1), min(bf.width - 1, math.ceil(cols[1]))
    r0, r1 = max(0, math.floor(rows[0]) - 1), min(bf.height - 1, math.ceil(rows[1]))
    return c0, r0, c1, r1


def _tiles_of_window(
    bf: BandFile, grid_t: Sequence[float], row0: int, col0: int, chip: int, block: tuple[int, int]
) -> set[tuple[int, int]]:
    """The ``(x, y)`` tile indices of ``bf``'s COG that a chip window of the grid ``grid_t`` touches."""
    c0, r0, c1, r1 = window_in(bf, grid_t, row0, col0, chip)
    bh, bw = block
    return {(tx, ty) for tx in range(c0 // bw, c1 // bw + 1) for ty in range(r0 // bh, r1 // bh + 1)}


def window_tile_bytes(
    windows: Sequence[tuple[SceneRecord, Sequence[tuple[int, int]]]], chip: int, local: Mapping[str, str]
) -> dict[str, int]:
    """Compressed bytes of the COG tiles each file's chip windows touch (``{file URI: bytes}``).

    Args:
        windows: Per scene (on its chip grid, :func:`a2mae.stssd.run.on_chip_grid`, with only the band
            files tiling reads), the ``(row0, col0)`` of its chip windows.
        chip: Chip side, pixels.
        local: ``{file URI: local path}`` of a local copy of each file (tile sizes are read there).
    """
    import rasterio

    out: dict[str, int] = {}
    for rec, wins in windows:
        for bf in [*rec.band_files, *([rec.qa_file] if rec.qa_file else [])]:
            with rasterio.open(local[bf.uri]) as ds:
                tiles: set[tuple[int, int]] = set()
                for row0, col0 in wins:
                    tiles |= _tiles_of_window(bf, rec.transform, row0, col0, chip, ds.block_shapes[0])
                sizes = [int(ds.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=1) or 0) for x, y in tiles]
            out[bf.uri] = out.get(bf.uri, 0) + sum(sizes)
    return out


def copy_tree(src: Path, dst: Path) -> Path:
    """Copy a folder (the bundled real scenes are COGs already)."""
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst


def chip_windows(
    records: Sequence[SceneRecord], params: Any
) -> list[tuple[SceneRecord, list[tuple[int, int]]]]:
    """The chip windows ``a2mae tile`` reads, per scene: the plan's windows on each scene's chip grid.

    Returns:
        ``(scene on its chip grid, with only the band files tiling reads; [(row0, col0), ...])``.
    """
    from a2mae.sensors import get_registry
    from a2mae.stssd.grouping import plan_sets
    from a2mae.stssd.run import kept_bands, on_chip_grid

    registry = get_registry(params.data.sensor_files)
    plan = plan_sets([on_chip_grid(r, registry, params.tile) for r in records], params.tile)
    out = []
    for k, wins in plan.windows_by_scene().items():
        rec = plan.records[k]
        keep = set(kept_bands(rec, registry, params.tile))
        rec = rec.model_copy(update={"band_files": tuple(b for b in rec.band_files if b.band in keep)})
        out.append((rec, [(w.row0, w.col0) for w in wins]))
    return out
