"""In-memory types exchanged between the dataset and the model (pure torch; no I/O).

The contract:

* :class:`ImageMeta` -- metadata of one image (chip) of a set; everything the model needs besides pixels.
* :class:`ImageSample` -- one normalised chip ``pixels [C, H, W]`` (float32) plus its metadata; ``C`` is
  ``len(meta.bands)`` in the order of ``meta.bands``.
* :class:`ImageSetSample` -- 1 to 4 co-located images (same ground centre) with a set id.
* :class:`SetBatch` -- what :func:`collate_sets` returns for a list of sets of
  mixed composition: the images flattened, with ``set_index`` telling which set each belongs to. The
  model groups images by ``(sensor, bands)`` for its patch embeddings and packs tokens per set.

Corners are the four pixel-edge corners of the chip in WGS84, ordered UL, UR, LR, LL, each
``(lat, lon)`` in degrees; ``None`` when unknown (the model then uses its "unknown metadata" path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import torch

Period = Literal["g", "ng", "na"]


@dataclass(frozen=True)
class ImageMeta:
    """Metadata of one image of a set.

    Attributes:
        sensor: Sensor id of the registry (``S2``, ``L8``, ``GF1``, ``GF2``, or a user-added one).
        bands: Band ids, in channel order.
        gsd_m: Ground sample distance of the chip in metres, or None when unknown.
        corners: ``((lat, lon) UL, UR, LR, LL)`` in degrees, or None when unknown.
        datetime: Acquisition time (UTC), or None when unknown.
        period: Growth period ``g``, non-growth ``ng`` or ``na``.
        image_id: Identifier of the chip (unique within a snapshot).
        product: Product level of the source scene (``L2A``, ``C2L2``, ...), if known.
    """

    sensor: str
    bands: tuple[str, ...]
    gsd_m: float | None = None
    corners: tuple[tuple[float, float], ...] | None = None
    datetime: datetime | None = None
    period: Period = "na"
    image_id: str = ""
    product: str | None = None


@dataclass
class ImageSample:
    """One normalised chip.

    Attributes:
        pixels: ``[C, H, W]`` float32, normalised per sensor and band.
        meta: Its metadata.
        valid: Optional ``[H, W]`` bool mask of valid (not nodata) pixels.
    """

    pixels: torch.Tensor
    meta: ImageMeta
    valid: torch.Tensor | None = None


@dataclass
class ImageSetSample:
    """A co-located image set: 1 to 4 chips centred on the same ground point."""

    set_id: str
    images: list[ImageSample]
    split: str = "train"


@dataclass
class SetBatch:
    """A batch of image sets of mixed composition.

    Attributes:
        images: All images of all sets, set by set.
        set_index: ``[N_img]`` int64, index of the set each image belongs to.
        set_ids: ``[B]`` set identifiers.
    """

    images: list[ImageSample]
    set_index: torch.Tensor
    set_ids: list[str] = field(default_factory=list)

    @property
    def num_sets(self) -> int:
        """Number of sets ``B``."""
        return len(self.set_ids)

    def to(self, device: torch.device | str) -> SetBatch:
        """Copy of the batch with every tensor on ``device``."""
        imgs = [
            ImageSample(
                pixels=im.pixels.to(device, non_blocking=True),
                meta=im.meta,
                valid=None if im.valid is None else im.valid.to(device, non_blocking=True),
            )
            for im in self.images
        ]
        return SetBatch(imgs, self.set_index.to(device), list(self.set_ids))


def collate_sets(samples: list[ImageSetSample]) -> SetBatch:
    """Collate image sets of different composition into a :class:`SetBatch`.

    Args:
        samples: Sets from the dataset.

    Returns:
        The flattened batch; images keep their own shapes and band lists.
    """
    images: list[ImageSample] = []
    index: list[int] = []
    for i, s in enumerate(samples):
        images.extend(s.images)
        index.extend([i] * len(s.images))
    return SetBatch(images, torch.tensor(index, dtype=torch.long), [s.set_id for s in samples])
