"""Radiometry by the file's real encoding: which ``(scale, offset)`` turns a scene's pixels into reflectance.

The rule (``docs/ingest.md``, "Radiometry"), decided once per scene at ingest and stored in the catalog
record's ``scale`` and ``offset`` (``reflectance = value * scale + offset``; tile applies exactly that):

1. The spectral bands of a scene share one kind of pixel: integers or floats. Complex or boolean
   pixels, and a mix of integer and float bands, are refused.
2. **Integer pixels** are digital numbers (DNs): the scale and offset come from the STAC item, else
   the MTL, else the file's own GDAL scale/offset (``gdal_edit.py -scale -offset``), else the sensor
   registry's product. **8-bit** pixels (uint8/int8, e.g. a JPEG-compressed or visual export) hold no
   DNs of a 16-bit product, so they need a scale declared by a sidecar or the file itself; without one
   the scene is refused. A product shipped as 8-bit pixels (``dn_bits: 8`` in its sensor file, NAIP)
   takes the registry's scale.
3. **Float pixels** with a scale declared by the file itself are DNs too (the file's scale/offset).
   Without one, a band whose sampled values all lie in ``[-1, 2]`` is **reflectance already**
   (scale 1, offset 0); larger values are DNs stored as floats (scale as for integers, rule 2).
4. NaN and infinities are always nodata (whether or not the file declares a nodata value). The
   registry's nodata DN applies to integer files only.
5. Whatever cannot be mapped is refused: when more than half of the sampled valid pixels would fall
   outside the range the snapshot stores (``|reflectance| <= 3.2767``), the scale does not fit the data.

Pure functions: the scene reader passes headers' encodings and a decimated sample of the finest band.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Largest reflectance the snapshot stores (int16 / 10000).
STORABLE = 3.2767
#: Float pixels whose valid sample lies in this range are reflectance already (no scale applied).
FLOAT_REFLECTANCE_RANGE = (-1.0, 2.0)
#: A scene is refused when more than this share of its sampled pixels maps outside ``STORABLE``.
MAX_UNMAPPABLE = 0.5


class RadiometryRefused(ValueError):
    """The scene's pixels cannot be mapped to reflectance; the message says why (no file name)."""


@dataclass(frozen=True)
class FileEncoding:
    """How one file stores its pixels.

    Attributes:
        name: File name, for messages ("" for a single-file scene, whose path the message starts with).
        dtype: numpy dtype name of its pixels.
        scale: The file's own GDAL scale of the band (None when it declares none, i.e. 1).
        offset: The file's own GDAL offset (None when it declares none, i.e. 0).
    """

    name: str
    dtype: str
    scale: float | None = None
    offset: float | None = None

    @property
    def declared(self) -> tuple[float, float] | None:
        """``(scale, offset)`` the file declares, or None."""
        if self.scale is None and self.offset is None:
            return None
        return (1.0 if self.scale is None else self.scale, 0.0 if self.offset is None else self.offset)


@dataclass(frozen=True)
class Radiometry:
    """The chosen mapping and where it came from (``stac``, ``mtl``, ``file``, ``registry``, ``float``)."""

    scale: float
    offset: float
    source: str
    floats: bool


def file_declared(scale: float | None, offset: float | None) -> tuple[float | None, float | None]:
    """A GDAL band scale/offset as declared values: (1, 0), GDAL's default, declares nothing."""
    s = None if scale is None or scale == 1.0 or not math.isfinite(scale) else float(scale)
    o = None if offset is None or offset == 0.0 or not math.isfinite(offset) else float(offset)
    if s is None and o is None:
        return None, None
    return s, o


def _who(name: str) -> str:
    return f"{name}: " if name else ""


def _kind(encodings: Sequence[FileEncoding]) -> str:
    """``"int"`` or ``"float"`` for the scene's bands (refuses complex, boolean and mixed pixels)."""
    kinds: dict[str, str] = {}
    for enc in encodings:
        k = np.dtype(enc.dtype).kind
        if k not in "uif":
            raise RadiometryRefused(
                f"{_who(enc.name)}{enc.dtype} pixels hold no reflectance; export integer DNs or float "
                "reflectance"
            )
        kinds.setdefault("float" if k == "f" else "int", enc.name)
    if len(kinds) > 1:
        raise RadiometryRefused(
            f"bands mix integer ({kinds['int'] or 'some bands'}) and float ({kinds['float'] or 'others'}) "
            "pixels; export all bands of a scene with one encoding"
        )
    return next(iter(kinds))


def _declared_by_files(encodings: Sequence[FileEncoding]) -> tuple[float, float] | None:
    found = {enc.declared for enc in encodings} - {None}
    if len(found) > 1:
        names = ", ".join(sorted(enc.name for enc in encodings if enc.declared is not None)[:3])
        raise RadiometryRefused(
            f"files declare different scales/offsets ({names}); export the bands with one radiometric scale"
        )
    return next(iter(found), None)


def valid_values(sample: np.ndarray, nodata: float | None) -> np.ndarray:
    """The sample's values that are not nodata, NaN or infinite, as float64."""
    v = np.asarray(sample).ravel().astype(np.float64)
    keep = np.isfinite(v)
    if nodata is not None and math.isfinite(nodata):
        keep &= v != nodata
    return v[keep]


def choose(
    encodings: Sequence[FileEncoding],
    sample: np.ndarray,
    nodata: float | None,
    sidecar: tuple[tuple[float, float], str] | None,
    registry: tuple[float, float],
    registry_bits: int = 16,
) -> Radiometry:
    """The scene's ``(scale, offset)`` to reflectance, by the rule of this module's docstring.

    Args:
        encodings: The spectral bands' files.
        sample: A decimated read of the finest band.
        nodata: That band's nodata value (None: none).
        sidecar: ``((scale, offset), "stac" | "mtl")`` from a sidecar, or None.
        registry: The registry product's ``(scale, offset)``.
        registry_bits: The width of the registry product's DNs (``dn_bits``: 8 or 16).

    Returns:
        The mapping.

    Raises:
        RadiometryRefused: The pixels cannot be mapped (the message says why and what to do).
    """
    kind = _kind(encodings)
    by_files = _declared_by_files(encodings)
    values = valid_values(sample, nodata)
    if kind == "float":
        if by_files is not None:
            result = Radiometry(*by_files, "file", True)
        elif values.size and _within(values, FLOAT_REFLECTANCE_RANGE):
            result = Radiometry(1.0, 0.0, "float", True)
        else:
            (s, o), src = sidecar if sidecar is not None else (registry, "registry")
            result = Radiometry(s, o, src, True)
    else:
        small = min(np.dtype(e.dtype).itemsize for e in encodings) == 1
        if sidecar is not None:
            result = Radiometry(*sidecar[0], sidecar[1], False)
        elif by_files is not None:
            result = Radiometry(*by_files, "file", False)
        elif small and registry_bits > 8:
            name = next(e.name for e in encodings if np.dtype(e.dtype).itemsize == 1)
            raise RadiometryRefused(
                f"{_who(name)}8-bit pixels hold none of the product's DNs (the registry's scale "
                f"{registry[0]:g} is for its 16-bit DNs); export the original DNs or float reflectance, or "
                "declare the scale (gdal_edit.py -scale S -offset O)"
            )
        else:
            result = Radiometry(*registry, "registry", False)
    _check_mappable(values, result)
    return result


def _within(values: np.ndarray, bounds: tuple[float, float]) -> bool:
    return bool(values.min() >= bounds[0] and values.max() <= bounds[1])


def _check_mappable(values: np.ndarray, r: Radiometry) -> None:
    if not values.size:
        return
    refl = values * r.scale + r.offset
    outside = float(np.mean(np.abs(refl) > STORABLE))
    if outside > MAX_UNMAPPABLE:
        raise RadiometryRefused(
            f"{outside:.0%} of the sampled pixels map outside the storable reflectance range "
            f"(+-{STORABLE}) with scale {r.scale:g} and offset {r.offset:g} (from {r.source}; values "
            f"{values.min():g}..{values.max():g}); fix the scale in the sidecar or the file, or convert "
            "the scene to DNs or reflectance"
        )
