"""Synthetic co-located image sets (tests, benchmarks, smoke runs; no I/O).

Every image of a set is a north-up chip centred on the same ground point at its sensor's GSD, as the
real STSSD sets are. Pixels are a smooth random field defined in *ground* coordinates (shared by the
images of a set, scaled per band, plus noise), so cross-image information is real and learnable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta

import torch

from a2mae.models.geo import EARTH_RADIUS_M
from a2mae.sensors.registry import SensorRegistry, get_registry
from a2mae.types import ImageMeta, ImageSample, ImageSetSample, SetBatch, collate_sets


def chip_corners(
    lat0: float, lon0: float, gsd_m: float, height: int, width: int
) -> tuple[tuple[float, float], ...]:
    """Corners (UL, UR, LR, LL) of a north-up chip centred on ``(lat0, lon0)`` (local tangent plane)."""
    half_x = gsd_m * width / 2
    half_y = gsd_m * height / 2
    dlat = math.degrees(half_y / EARTH_RADIUS_M)
    dlon = math.degrees(half_x / (EARTH_RADIUS_M * math.cos(math.radians(lat0))))
    return (
        (lat0 + dlat, lon0 - dlon),
        (lat0 + dlat, lon0 + dlon),
        (lat0 - dlat, lon0 + dlon),
        (lat0 - dlat, lon0 - dlon),
    )


def synthetic_image(
    sensor: str,
    *,
    size: int = 96,
    gsd_m: float | None = None,
    centre: tuple[float, float] | None = (45.0, 10.0),
    when: datetime | None = datetime(2021, 6, 15),
    period: str = "g",
    bands: Sequence[str] | None = None,
    field_seed: int = 0,
    generator: torch.Generator | None = None,
    registry: SensorRegistry | None = None,
    keep_metadata: bool = True,
) -> ImageSample:
    """One synthetic chip.

    Args:
        sensor: Sensor id.
        size: Pixels per side.
        gsd_m: GSD (default: the finest native GSD of the sensor's token groups).
        centre: (lat, lon) of the chip centre (None: no corners in the metadata).
        when: Acquisition time (None: unknown).
        period: g / ng / na.
        bands: Band subset (default: every token-group band).
        field_seed: Seed of the ground field (images of one set share it).
        generator: Generator for the pixel noise.
        registry: Sensor registry.
        keep_metadata: False drops gsd, corners and time from the metadata (pixels unchanged).

    Returns:
        The sample.
    """
    reg = registry or get_registry()
    s = reg.get(sensor)
    bands = tuple(bands) if bands is not None else s.pretrain_bands
    gsd = gsd_m if gsd_m is not None else min(s.bands[b].gsd_m for b in s.pretrain_bands)
    ground = _ground_field(size, gsd, field_seed)  # [size, size]
    scale = torch.tensor([0.5 + s.bands[b].center_nm / 2000.0 for b in bands])[:, None, None]
    noise = torch.randn(len(bands), size, size, generator=generator) * 0.1
    pixels = (ground[None] * scale + noise).to(torch.float32)
    corners = chip_corners(centre[0], centre[1], gsd, size, size) if centre is not None else None
    meta = ImageMeta(
        sensor=sensor,
        bands=bands,
        gsd_m=gsd if keep_metadata else None,
        corners=corners if keep_metadata else None,
        datetime=when if keep_metadata else None,
        period=period if keep_metadata else "na",  # type: ignore[arg-type]
        image_id=f"{sensor}-{field_seed}",
    )
    return ImageSample(pixels=pixels, meta=meta)


def _ground_field(size: int, gsd: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    freq = torch.rand(6, 2, generator=g) * 2 * math.pi / 1500.0  # wavelengths of ~1.5 km and up
    phase = torch.rand(6, generator=g) * 2 * math.pi
    amp = torch.rand(6, generator=g)
    c = (torch.arange(size, dtype=torch.float64) + 0.5 - size / 2) * gsd
    y, x = torch.meshgrid(-c, c, indexing="ij")
    arg = (
        freq[:, 0, None, None].double() * x
        + freq[:, 1, None, None].double() * y
        + phase[:, None, None].double()
    )
    return (amp[:, None, None].double() * torch.sin(arg)).sum(0).to(torch.float32)


def synthetic_set(
    sensors: Sequence[str],
    *,
    set_id: str = "set",
    size: int = 96,
    centre: tuple[float, float] | None = (45.0, 10.0),
    field_seed: int = 0,
    generator: torch.Generator | None = None,
    registry: SensorRegistry | None = None,
    keep_metadata: bool = True,
) -> ImageSetSample:
    """A co-located set with one image per entry of ``sensors`` (e.g. ``["S2", "S2", "L8", "L8"]``)."""
    images = []
    t0 = datetime(2021, 6, 15)
    for i, sensor in enumerate(sensors):
        period = "g" if i % 2 == 0 else "ng"
        when = t0 + timedelta(days=180 * (i % 2) + 3 * i)
        images.append(
            synthetic_image(
                sensor,
                size=size,
                centre=centre,
                when=when,
                period=period,
                field_seed=field_seed,
                generator=generator,
                registry=registry,
                keep_metadata=keep_metadata,
            )
        )
    return ImageSetSample(set_id=set_id, images=images)


def synthetic_batch(
    compositions: Sequence[Sequence[str]], *, size: int = 96, seed: int = 0, keep_metadata: bool = True
) -> SetBatch:
    """A batch of synthetic sets (one per composition), at different places and fields."""
    g = torch.Generator().manual_seed(seed)
    sets = [
        synthetic_set(
            comp,
            set_id=f"set{i}",
            size=size,
            centre=(40.0 + 0.7 * i, 5.0 + 1.3 * i),
            field_seed=seed * 1000 + i,
            generator=g,
            keep_metadata=keep_metadata,
        )
        for i, comp in enumerate(compositions)
    ]
    return collate_sets(sets)
