"""Build the bundled downstream sample datasets, and generate change-detection pairs.

* :func:`prepare_bigearthnet` -- BigEarthNet v2 patches (``.npz`` with one array per band) and their
  ``labels.csv`` -> the "folder of chips + labels CSV" layout: one GeoTIFF per patch with the ten
  tokenised Sentinel-2 bands, the 20 m bands resampled (bilinear) onto the 10 m grid of 120 px. The
  patches have no georeference here, so the GeoTIFFs carry none (the encoder's metadata-unknown path).
* :func:`prepare_scl_segmentation` -- a Sentinel-2 L2A scene with its scene-classification layer
  (SCL) -> image/mask chip pairs: the ten bands on the grid of the finest band present (200 m bands
  resampled bilinear, SCL nearest) and the mask from :data:`SCL_CLASSES`.
* :func:`prepare_landsat_cd` -- the real Landsat TM/ETM+ change sets of Taizhou and Nanjing (ENVI, 8-bit
  DNs) -> tagged GeoTIFF pairs and their reference change rasters.
* :func:`prepare_eolearn_landcover` -- the real eo-learn Slovenia patch -> land-cover segmentation chips.
* :func:`make_change_pairs` -- **generated** before/after/label GeoTIFFs (no open real
  change-detection set is available offline).

Run ``python -m a2mae.finetune.samples --help`` for the command line.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

from a2mae.finetune.chips import SENSOR_TAG, DatasetError
from a2mae.io.atomic import atomic_path
from a2mae.sensors import get_registry

BIGEARTHNET_CLASSES: tuple[str, ...] = (
    "Urban fabric",
    "Industrial or commercial units",
    "Arable land",
    "Permanent crops",
    "Pastures",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland and sparsely vegetated areas",
    "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland, shrub",
    "Beaches, dunes, sands",
    "Inland wetlands",
    "Coastal wetlands",
    "Inland waters",
    "Marine waters",
)

#: Segmentation classes from the Sentinel-2 L2A SCL values. SCL 0 (no data) and 1 (saturated or
#: defective) become the ignore index.
SCL_CLASSES: dict[str, tuple[int, ...]] = {
    "clear": (2, 4, 5, 6, 7, 11),  # dark area, vegetation, not vegetated, water, unclassified, snow
    "cloud_or_shadow": (3, 8, 9),  # cloud shadow, cloud medium / high probability
    "cirrus": (10,),  # thin cirrus
}
SCL_IGNORE = (0, 1)


def s2_bands() -> tuple[str, ...]:
    """The ten tokenised Sentinel-2 bands in token-group order."""
    return get_registry().get("S2").pretrain_bands


def write_chip(
    path: Path,
    data: np.ndarray,
    bands: Sequence[str] | None,
    *,
    crs: CRS | str | None = None,
    transform: rasterio.Affine | None = None,
    sensor: str | None = "S2",
    nodata: float | None = None,
) -> None:
    """Write ``data [C, H, W]`` (or ``[H, W]``) as a deflate GeoTIFF, atomically.

    Args:
        path: Target file.
        data: Pixels.
        bands: Band ids written as band descriptions (None for masks).
        crs: CRS, or None for a chip without georeference.
        transform: Geotransform (with ``crs``).
        sensor: Written as the ``A2MAE_SENSOR`` tag (None: no tag).
        nodata: Nodata value.
    """
    arr = data[None] if data.ndim == 2 else data
    profile = {
        "driver": "GTiff",
        "height": arr.shape[1],
        "width": arr.shape[2],
        "count": arr.shape[0],
        "dtype": arr.dtype.name,
        "compress": "deflate",
        "predictor": 2 if arr.dtype.kind in "ui" else 3,
    }
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    if nodata is not None:
        profile["nodata"] = nodata
    with atomic_path(path) as tmp:
        with warnings.catch_warnings(), rasterio.open(tmp, "w", **profile) as dst:
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dst.write(arr)
            if bands is not None:
                for i, b in enumerate(bands, 1):
                    dst.set_band_description(i, b)
            if sensor:
                dst.update_tags(**{SENSOR_TAG: sensor})
        tmp.chmod(0o644)


# ------------------------------------------------------------------------------------- BigEarthNet
def _upsample(arr: np.ndarray, size: int) -> np.ndarray:
    if arr.shape[-1] == size:
        return arr.astype(np.float32)
    t = torch.from_numpy(arr.astype(np.float32))[None, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()


def prepare_bigearthnet(src: str | Path, out: str | Path, size: int = 120) -> int:
    """Convert BigEarthNet v2 ``.npz`` patches and ``labels.csv`` to chips + labels CSV.

    Args:
        src: Folder with ``labels.csv`` and ``patches/<patch_id>.npz`` (keys ``S2_B02`` ...).
        out: Output folder (``images/``, ``labels.csv``, ``classes.txt``).
        size: Output chip side (the 10 m grid of the patches: 120 px).

    Returns:
        Number of chips written.

    Raises:
        DatasetError: Missing inputs.
    """
    src, out = Path(src), Path(out)
    labels = src / "labels.csv"
    if not labels.is_file():
        raise DatasetError(f"{labels}: not found (expected a BigEarthNet v2 labels.csv)")
    bands = s2_bands()
    rows = list(csv.DictReader(labels.open(newline="")))
    (out / "images").mkdir(parents=True, exist_ok=True)
    out_rows = []
    for r in rows:
        pid = r["patch_id"]
        f = src / "patches" / f"{pid}.npz"
        if not f.is_file():
            raise DatasetError(f"{f}: patch listed in {labels} not found")
        with np.load(f) as z:
            stack = np.stack([_upsample(z[f"S2_{b}"], size) for b in bands])
        write_chip(out / "images" / f"{pid}.tif", np.rint(stack).clip(0, 65535).astype(np.uint16), bands)
        out_rows.append(
            {
                "image": f"images/{pid}.tif",
                "labels": r["labels"],
                "split": r["split"],
                "country": r["country"],
                "snow": r["snow"],
                "cloud_or_shadow": r["cloud_or_shadow"],
            }
        )
    with atomic_path(out / "labels.csv") as tmp:
        with tmp.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(out_rows[0]))
            w.writeheader()
            w.writerows(out_rows)
        tmp.chmod(0o644)
    with atomic_path(out / "classes.txt") as tmp:
        tmp.write_text("\n".join(BIGEARTHNET_CLASSES) + "\n")
        tmp.chmod(0o644)
    return len(out_rows)


# ------------------------------------------------------------------------------- SCL segmentation
def scl_to_classes(scl: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Map SCL values to :data:`SCL_CLASSES` indices (``ignore_index`` for SCL 0/1 and unknown)."""
    out = np.full(scl.shape, ignore_index, dtype=np.uint8)
    for i, values in enumerate(SCL_CLASSES.values()):
        out[np.isin(scl, values)] = i
    return out


def _find_band(scene: Path, band: str) -> Path:
    for suf in (".tif", ".TIF", ".tiff"):
        p = scene / f"{band}{suf}"
        if p.is_file():
            return p
    found = sorted(scene.glob(f"*_{band}.[tT][iI][fF]"))
    if found:
        return found[0]
    raise DatasetError(f"{scene}: band file {band}.tif not found")


def prepare_scl_segmentation(
    scene: str | Path,
    out: str | Path,
    chip: int = 64,
    min_cloud: float = 0.02,
    clear_chips: int = 10,
    seed: int = 0,
) -> dict[str, int]:
    """Cut a Sentinel-2 L2A scene and its SCL into segmentation chip pairs.

    Chips lie on a regular grid; kept are every chip with at least ``min_cloud`` cloud/shadow/cirrus
    pixels plus ``clear_chips`` cloud-free chips drawn at random (seeded). Splits interleave over the
    grid: ``(row + 2*col) % 5 == 0`` -> test, ``== 1`` -> val, else train.

    Args:
        scene: Folder with ``B02.tif`` ... ``B12.tif`` and ``SCL.tif`` (one file per band).
        out: Output folder (``<split>/images``, ``<split>/masks``, ``classes.txt``).
        chip: Chip side in pixels of the output grid.
        min_cloud: Cloud fraction that makes a chip "cloudy".
        clear_chips: Number of clear chips to add.
        seed: Random seed of the clear-chip draw.

    Returns:
        Chips written per split.

    Raises:
        DatasetError: A band file is missing.
    """
    scene, out = Path(scene), Path(out)
    bands = s2_bands()
    files = {b: _find_band(scene, b) for b in (*bands, "SCL")}
    with rasterio.open(files[bands[0]]) as ref:  # B02: the finest grid present
        shape, crs, transform = (ref.height, ref.width), ref.crs, ref.transform
    stack = []
    for b in bands:
        with rasterio.open(files[b]) as src:
            stack.append(src.read(1, out_shape=shape, resampling=Resampling.bilinear))
    pixels = np.stack(stack).astype(np.uint16)
    with rasterio.open(files["SCL"]) as src:
        mask = scl_to_classes(src.read(1, out_shape=shape, resampling=Resampling.nearest))
    rng = np.random.default_rng(seed)
    rows, cols = shape[0] // chip, shape[1] // chip
    cloudy: list[tuple[int, int]] = []
    clear: list[tuple[int, int]] = []
    for i in range(rows):
        for j in range(cols):
            m = mask[i * chip : (i + 1) * chip, j * chip : (j + 1) * chip]
            if (m == 255).mean() > 0.05:
                continue
            (cloudy if ((m == 1) | (m == 2)).mean() >= min_cloud else clear).append((i, j))
    picked = cloudy + [
        clear[k] for k in sorted(rng.choice(len(clear), min(clear_chips, len(clear)), replace=False))
    ]
    counts = {"train": 0, "val": 0, "test": 0}
    names = list(SCL_CLASSES)
    for i, j in picked:
        split = {0: "test", 1: "val"}.get((i + 2 * j) % 5, "train")
        sl = np.s_[i * chip : (i + 1) * chip, j * chip : (j + 1) * chip]
        t = transform @ rasterio.Affine.translation(j * chip, i * chip)
        name = f"{scene.name}_r{i:02d}c{j:02d}"
        write_chip(
            out / split / "images" / f"{name}.tif", pixels[(slice(None), *sl)], bands, crs=crs, transform=t
        )
        write_chip(out / split / "masks" / f"{name}.tif", mask[sl], None, crs=crs, transform=t, sensor=None)
        counts[split] += 1
    with atomic_path(out / "classes.txt") as tmp:
        tmp.write_text("\n".join(names) + "\n")
        tmp.chmod(0o644)
    return counts


# ---------------------------------------------------------------------------------- change pairs
def _smooth_field(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    coarse = torch.from_numpy(
        rng.random((1, 1, max(2, size // scale), max(2, size // scale)), dtype=np.float32)
    )
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0, 0].numpy()


def make_change_pairs(
    out: str | Path,
    n_train: int = 8,
    n_val: int = 2,
    n_test: int = 4,
    size: int = 64,
    seed: int = 0,
    gsd_m: float = 10.0,
) -> dict[str, int]:
    """Generate an OSCD/LEVIR-style change-detection set of Sentinel-2-like pairs (synthetic).

    Each pair is a smooth multi-band "landscape" (``before``) and the same landscape with a few
    rectangular patches replaced by another material and a small radiometric shift (``after``); the
    label marks the replaced patches. Chips are georeferenced (UTM zone 32N, ``gsd_m`` pixels).

    Args:
        out: Output folder (``<split>/A``, ``<split>/B``, ``<split>/label``).
        n_train: Train pairs.
        n_val: Validation pairs.
        n_test: Test pairs.
        size: Chip side in pixels.
        seed: Random seed.
        gsd_m: Pixel size, metres.

    Returns:
        Pairs written per split.
    """
    out = Path(out)
    bands = s2_bands()
    rng = np.random.default_rng(seed)
    base_refl = np.linspace(0.05, 0.35, len(bands), dtype=np.float32)[:, None, None]
    counts = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        for k in range(n):
            land = _smooth_field(rng, size, 8)
            before = base_refl * (0.6 + 0.8 * land)[None] + rng.normal(0, 0.005, (len(bands), size, size))
            after = before * rng.uniform(0.95, 1.05) + rng.normal(0, 0.005, before.shape)
            label = np.zeros((size, size), dtype=np.uint8)
            for _ in range(int(rng.integers(1, 4))):
                h, w = rng.integers(size // 8, size // 3, 2)
                y, x = rng.integers(0, size - h), rng.integers(0, size - w)
                material = rng.uniform(0.02, 0.5, (len(bands), 1, 1))
                after[:, y : y + h, x : x + w] = material + rng.normal(0, 0.005, (len(bands), h, w))
                label[y : y + h, x : x + w] = 1
            t = from_origin(
                500_000 + 10_000 * k, 5_000_000 - 10_000 * ("train", "val", "test").index(split), gsd_m, gsd_m
            )
            name = f"pair_{split}_{k:03d}"
            for folder, arr in (("A", before), ("B", after)):
                dn = np.rint(arr * 10_000).clip(1, 65535).astype(np.uint16)
                write_chip(out / split / folder / f"{name}.tif", dn, bands, crs="EPSG:32632", transform=t)
            write_chip(
                out / split / "label" / f"{name}.tif", label, None, crs="EPSG:32632", transform=t, sensor=None
            )
        counts[split] = n
    return counts


# --------------------------------------------------------------------- Landsat change pairs (real)
#: The Taizhou / Nanjing change sets: ``site: ((ENVI file, output name, acquisition date), ...)``.
LANDSAT_CD_SITES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "Taizhou": (
        ("2000TM", "L71119038_03820000317_Taizhou", "2000-03-17"),
        ("2003TM", "L71119038_03820030206_Taizhou", "2003-02-06"),
    ),
    "Nanjing": (
        ("LT51200382000124BJC00_Nanjing", "LT51200382000124BJC00_Nanjing", "2000-05-03"),
        ("LT51200382002193BJC00_Nanjing", "LT51200382002193BJC00_Nanjing", "2002-07-12"),
    ),
}
LANDSAT_CD_BANDS = ("B1", "B2", "B3", "B4", "B5", "B7")


def prepare_landsat_cd(src: str | Path, out: str | Path) -> dict[str, int]:
    """The Landsat Taizhou / Nanjing change sets (ENVI, 8-bit DNs) -> GeoTIFF pairs + ``reference.tif``.

    Each date becomes one deflate GeoTIFF, pixel values unchanged (uint8 DNs, bands 1-5 and 7 described
    ``B1`` .. ``B7``), tagged ``A2MAE_SENSOR=TM``, ``A2MAE_PRODUCT=L1`` and ``ACQUISITION_DATETIME`` (the
    date of the scene's MTL name or scene id), so that ``a2mae ingest`` reads them as Landsat TM/ETM+ L1
    (``a2mae/sensors/landsat_tm.yaml``). ``reference.tif`` (1 changed, 0 unchanged, 255 unlabelled) is
    copied unchanged.

    Returns:
        Labelled pixels per site.
    """
    src, out = Path(src), Path(out)
    labelled: dict[str, int] = {}
    for site, dates in LANDSAT_CD_SITES.items():
        for envi, name, date in dates:
            with rasterio.open(src / site / envi) as ds:
                data, crs, transform = ds.read(), ds.crs, ds.transform
            if data.dtype != np.uint8 or data.shape[0] != len(LANDSAT_CD_BANDS):
                raise DatasetError(
                    f"{src / site / envi}: expected 6 bands of uint8 DNs, got {data.shape} {data.dtype}"
                )
            target = out / site / f"{name}.tif"
            write_chip(target, data, LANDSAT_CD_BANDS, crs=crs, transform=transform, sensor="TM", nodata=0)
            with rasterio.open(target, "r+") as dst:
                dst.update_tags(A2MAE_PRODUCT="L1", ACQUISITION_DATETIME=f"{date}T00:00:00Z")
        shutil.copyfile(src / site / "reference.tif", out / site / "reference.tif")
        with rasterio.open(out / site / "reference.tif") as ref:
            labelled[site] = int((ref.read(1) != 255).sum())
    return labelled


# ----------------------------------------------------------------- eo-learn Slovenia land cover (real)
#: Band order of ``REFERENCE_SCENES.npy`` (all 13 Sentinel-2 L1C bands, Sentinel Hub's order).
EOLEARN_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
#: LULC codes of the patch -> class names (eo-learn's Slovenia land-cover legend).
EOLEARN_CLASSES: dict[int, str] = {
    0: "no_data",
    1: "cultivated_land",
    2: "forest",
    3: "grassland",
    4: "shrubland",
    8: "artificial_surface",
}


def _eolearn_dates(src: Path, scenes: np.ndarray) -> list[str]:
    """The acquisition time of each reference scene: the patch's timestamp whose NDVI layer it matches.

    ``REFERENCE_SCENES.npy`` records no dates; each scene's NDVI, ``(B08 - B04) / (B08 + B04)``, equals
    one of the patch's per-date NDVI layers to float precision, which gives its date (and confirms the
    band order and the grid).

    Raises:
        DatasetError: A scene matches no NDVI layer.
    """
    import json

    ndvi = np.load(src / "TestEOPatch" / "data" / "NDVI.npy")[..., 0]  # [T, H, W]
    stamps = json.loads((src / "TestEOPatch" / "timestamps.json").read_text())
    out = []
    for i, s in enumerate(scenes):
        mine = (s[..., 7] - s[..., 3]) / (s[..., 7] + s[..., 3])
        err = np.nanmean(np.abs(ndvi - mine[None]), axis=(1, 2))
        k = int(np.nanargmin(err))
        if not err[k] < 1e-4:
            raise DatasetError(
                f"{src}: reference scene {i} matches no NDVI layer of the patch (best {err[k]:.4f})"
            )
        out.append(stamps[k] + "Z")
    return out


def prepare_eolearn_landcover(src: str | Path, out: str | Path, chip: int = 32) -> dict[str, int]:
    """The eo-learn test EOPatch (Slovenia) -> land-cover segmentation chips in the fine-tuning layout.

    The 5 reference scenes (13 bands, float reflectance) are written as uint16 DN = reflectance x 10000
    (S2 L1C units) on the patch's grid (``bbox.geojson``, EPSG:32633), tagged with their dates (see
    :func:`_eolearn_dates`); the timeless ``LULC`` mask gives
    the labels (``no_data`` becomes the ignore index 255). The top-left ``3 chip x 3 chip`` pixels are
    cut into 9 chips per scene; chips of one location go to one split (locations 0-4 train, 5-6 val,
    7-8 test), so no location is in two splits.

    Returns:
        Chips per split.
    """
    import json

    src, out = Path(src), Path(out)
    scenes = np.load(src / "REFERENCE_SCENES.npy")  # [T, H, W, 13] float32 reflectance
    lulc = np.load(src / "TestEOPatch" / "mask_timeless" / "LULC.npy")[..., 0]  # [H, W] uint16
    box = json.loads((src / "TestEOPatch" / "bbox.geojson").read_text())
    xs = [c[0] for c in box["coordinates"][0]]
    ys = [c[1] for c in box["coordinates"][0]]
    h, w = lulc.shape
    transform = from_origin(min(xs), max(ys), (max(xs) - min(xs)) / w, (max(ys) - min(ys)) / h)
    codes = sorted(EOLEARN_CLASSES)[1:]
    mask = np.full(lulc.shape, 255, np.uint8)
    for k, code in enumerate(codes):
        mask[lulc == code] = k
    dates = _eolearn_dates(src, scenes)
    counts = {"train": 0, "val": 0, "test": 0}
    for loc in range(9):
        r, c = (loc // 3) * chip, (loc % 3) * chip
        split = "train" if loc < 5 else "val" if loc < 7 else "test"
        t = transform * rasterio.Affine.translation(c, r)
        for i, scene in enumerate(scenes):
            name = f"slovenia_{dates[i][:10].replace('-', '')}_r{r // chip}c{c // chip}"
            dn = np.clip(np.round(scene[r : r + chip, c : c + chip].transpose(2, 0, 1) * 10000), 1, 65535)
            image = out / split / "images" / f"{name}.tif"
            write_chip(image, dn.astype(np.uint16), EOLEARN_BANDS, crs="EPSG:32633", transform=t)
            with rasterio.open(image, "r+") as dst:
                dst.update_tags(ACQUISITION_DATETIME=dates[i])
            write_chip(out / split / "masks" / f"{name}.tif", mask[r : r + chip, c : c + chip], None,
                       crs="EPSG:32633", transform=t, sensor=None)  # fmt: skip
            counts[split] += 1
    (out / "classes.txt").write_text("".join(f"{EOLEARN_CLASSES[c]}\n" for c in codes))
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``bigearthnet SRC OUT``, ``scl SCENE OUT`` or ``change OUT``."""
    ap = argparse.ArgumentParser(prog="python -m a2mae.finetune.samples", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bigearthnet", help="BigEarthNet v2 npz patches -> chips + labels.csv")
    b.add_argument("src")
    b.add_argument("out")
    s = sub.add_parser("scl", help="S2 L2A scene + SCL -> segmentation chip pairs")
    s.add_argument("scene")
    s.add_argument("out")
    s.add_argument("--chip", type=int, default=64)
    lc = sub.add_parser("landsat-cd", help="Landsat Taizhou/Nanjing ENVI pairs -> GeoTIFF pairs + reference")
    lc.add_argument("src")
    lc.add_argument("out")
    eo = sub.add_parser("eolearn", help="eo-learn Slovenia EOPatch -> land-cover segmentation chips")
    eo.add_argument("src")
    eo.add_argument("out")
    c = sub.add_parser("change", help="generated before/after/label pairs")
    c.add_argument("out")
    c.add_argument("--size", type=int, default=64)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--force", action="store_true", help="replace an existing output folder")
    a = ap.parse_args(argv)
    if a.cmd == "bigearthnet":
        print(f"{prepare_bigearthnet(a.src, a.out)} chips written to {a.out}")
    elif a.cmd == "landsat-cd":
        print(f"labelled pixels per site: {prepare_landsat_cd(a.src, a.out)} in {a.out}")
    elif a.cmd == "eolearn":
        print(f"chips per split: {prepare_eolearn_landcover(a.src, a.out)} in {a.out}")
    elif a.cmd == "scl":
        print(f"chips per split: {prepare_scl_segmentation(a.scene, a.out, chip=a.chip)} in {a.out}")
    else:
        if Path(a.out).exists() and a.force:
            shutil.rmtree(a.out)
        print(f"pairs per split: {make_change_pairs(a.out, size=a.size, seed=a.seed)} in {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
