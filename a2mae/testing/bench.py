"""Small generated datasets in every layout ``a2mae benchmark`` reads, and a tiny encoder checkpoint.

The change in the generated pairs is real in the pixels (a changed rectangle gets another material), so
a probe can learn it; OSCD-layout change maps are generated because OSCD's own are not redistributable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

TM_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7")  # L8 band ids standing in for Landsat TM B1-5, 7
TINY = {
    "depth": 1,
    "embed_dim": 32,
    "num_heads": 2,
    "decoder_embed_dim": 32,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
}


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    x0: float = 500_000.0,
    y0: float = 4_000_000.0,
    res: float = 30.0,
    crs: str = "EPSG:32633",
    descriptions: tuple[str, ...] | None = None,
    nodata: float | None = None,
) -> Path:
    """Write ``data`` ``[C, H, W]`` (or ``[H, W]``) as a GeoTIFF on a north-up grid."""
    arr = data if data.ndim == 3 else data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=arr.shape[2],
        height=arr.shape[1],
        count=arr.shape[0],
        dtype=arr.dtype,
        crs=crs,
        transform=from_origin(x0, y0, res, res),
        nodata=nodata,
    ) as dst:
        dst.write(arr)
        if descriptions:
            for i, d in enumerate(descriptions, 1):
                dst.set_band_description(i, d)
    return path


def _landscape(rng: np.random.Generator, c: int, h: int, w: int) -> np.ndarray:
    base = rng.uniform(40, 120, (c, 1, 1))
    field = np.cumsum(np.cumsum(rng.normal(0, 1, (h, w)), 0), 1)
    field = (field - field.mean()) / (field.std() + 1e-6)
    out: np.ndarray = (base + 8 * field[None] + rng.normal(0, 2, (c, h, w))).astype(np.float32)
    return out


def change_pair_arrays(seed: int, c: int = 6, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Before ``[C, H, W]``, after, and a sparse reference (1 changed, 0 unchanged, 255 unlabelled)."""
    rng = np.random.default_rng(seed)
    a = _landscape(rng, c, size, size)
    b = a + rng.normal(0, 2, a.shape).astype(np.float32)
    ref = np.full((size, size), 255, np.uint8)
    changed = np.zeros((size, size), bool)
    for _ in range(6):
        r, col = rng.integers(0, size - 10, 2)
        changed[r : r + 8, col : col + 8] = True
    b[:, changed] = rng.uniform(150, 200, (c, 1))
    labelled = rng.random((size, size)) < 0.5
    ref[labelled & changed] = 1
    ref[labelled & ~changed] = 0
    return a, b, ref


def write_change_pairs(root: Path, sites: int = 2, size: int = 64) -> Path:
    """``root/<site>/{t1.tif, t2.tif, reference.tif}`` with L8 band names."""
    for s in range(sites):
        a, b, ref = change_pair_arrays(s, size=size)
        d = root / f"site{s}"
        kw = {"x0": 500_000.0 + s * 10_000, "descriptions": TM_BANDS}
        write_raster(d / "t1.tif", a, **kw)  # type: ignore[arg-type]
        write_raster(d / "t2.tif", b, **kw)  # type: ignore[arg-type]
        write_raster(d / "reference.tif", ref, x0=kw["x0"], nodata=255)  # type: ignore[arg-type]
    return root


def write_oscd(
    root: Path,
    cities: tuple[str, ...] = ("alpha", "beta", "gamma"),
    test: tuple[str, ...] = ("gamma",),
    size: int = 48,
) -> Path:
    """The OSCD layout with per-band GeoTIFFs (10 m and 20 m) in EPSG:4326 and generated ``cm`` maps (1/2)."""
    from a2mae.benchmark.layouts.oscd import IMAGES, LABELS

    img = root / IMAGES
    img.mkdir(parents=True, exist_ok=True)
    (img / "train.txt").write_text(",".join(c for c in cities if c not in test))
    (img / "test.txt").write_text(",".join(test))
    bands20 = {"B05", "B06", "B07", "B8A", "B11", "B12"}
    for i, city in enumerate(cities):
        a, b, ref = change_pair_arrays(10 + i, c=10, size=size)
        lon0 = 2.0 + i * 0.2
        for k, arr in ((1, a), (2, b)):
            for j, band in enumerate(("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")):
                px = arr[j]
                res = 0.0001
                if band in bands20:
                    px, res = px.reshape(size // 2, 2, size // 2, 2).mean((1, 3)), 0.0002
                write_raster(
                    img / city / f"imgs_{k}" / f"S2A_TILE_{band}.tif",
                    px.astype(np.uint16),
                    x0=lon0,
                    y0=48.8,
                    res=res,
                    crs="EPSG:4326",
                )
        (img / city / "dates.txt").write_text("date_1: 20160101\ndate_2: 20170101\n")
        cm = np.where(ref == 1, 2, 1).astype(np.uint8)  # OSCD: 1 unchanged, 2 changed (every pixel labelled)
        lab = LABELS[1] if city in test else LABELS[0]
        write_raster(
            root / lab / city / "cm" / f"{city}-cm.tif", cm, x0=lon0, y0=48.8, res=0.0001, crs="EPSG:4326"
        )
    return root


def tiny_checkpoint(
    path: Path,
    sensors: tuple[str, ...] = ("S2", "L8"),
    seed: int = 0,
    norm_stats: dict[str, object] | None = None,
) -> Path:
    """A tiny a2mae encoder checkpoint (weights moved off the initialisation so it differs from scratch)."""
    import torch

    from a2mae.checkpoint import save_checkpoint
    from a2mae.testing.models import build_model

    torch.manual_seed(seed + 100)
    m = build_model("a2mae_vit_tiny_p8_t96", sensors=list(sensors), mask_ratio=0.75, **TINY)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return save_checkpoint(path, m.eval(), norm_stats=norm_stats or {})
