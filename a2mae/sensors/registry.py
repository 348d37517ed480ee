"""Typed view of the sensor registry YAML files."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from a2mae.errors import A2maeError
from a2mae.io.yamlsafe import YamlError, load_file
from a2mae.sensors.rules import check_rules

BUILTIN_PATH = Path(__file__).with_name("builtin.yaml")
#: The built-in sensor files, read in this order before the user's (each of the shape of a user file).
BUILTIN_FILES = (
    BUILTIN_PATH,
    Path(__file__).with_name("naip.yaml"),
    Path(__file__).with_name("landsat_tm.yaml"),
)
ENV_VAR = "A2MAE_SENSOR_FILES"


class SensorRegistryError(A2maeError, ValueError):
    """A sensor file is unreadable or invalid, or a sensor, product or band is unknown."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Band(_Strict):
    """One spectral band of a sensor."""

    center_nm: float = Field(gt=0, description="Centre wavelength in nanometres.")
    bandwidth_nm: float = Field(gt=0, description="Full width at half maximum in nanometres.")
    gsd_m: float = Field(gt=0, description="Native ground sample distance in metres.")
    group: str = Field(description="Spectral group: VNIR, RedEdge, SWIR, Coastal, Cirrus, TIR, Pan, ...")
    aliases: tuple[str, ...] = Field(default=(), description="Other names of the band in file names/tags.")


class BitField(_Strict):
    """A multi-bit field of a QA value (e.g. a 2-bit confidence); it matches when its value >= ``min``."""

    offset: int = Field(ge=0, le=62, description="Lowest bit of the field.")
    width: int = Field(ge=1, le=8, description="Number of bits.")
    min: int = Field(ge=1, description="Smallest field value that matches.")


class QASpec(_Strict):
    """Quality layer of a product: which values, bits or bit fields mean no data or cloud."""

    band: str
    nodata_values: tuple[int, ...] = ()
    cloud_values: tuple[int, ...] = ()
    nodata_bits: tuple[int, ...] = ()
    cloud_bits: tuple[int, ...] = ()
    cloud_fields: tuple[BitField, ...] = ()

    def masks(self, values: Any) -> tuple[Any, Any]:
        """``(nodata, cloud)`` boolean masks of QA ``values`` (any integer array); cloud excludes nodata.

        8- and 16-bit layers are decoded through lookup tables built once per spec (one gather per
        pixel).
        """
        import numpy as np

        values = np.asarray(values)
        if values.dtype in (np.uint8, np.uint16):
            nodata_lut, cloud_lut = _qa_luts(self, values.dtype.itemsize * 8)
            return nodata_lut[values], cloud_lut[values]
        return self._decode(values.astype(np.int64))

    def _decode(self, v: Any) -> tuple[Any, Any]:
        import numpy as np

        nodata = np.isin(v, self.nodata_values)
        cloud = np.isin(v, self.cloud_values)
        for bit in self.nodata_bits:
            nodata |= (v >> bit) & 1 == 1
        for bit in self.cloud_bits:
            cloud |= (v >> bit) & 1 == 1
        for f in self.cloud_fields:
            cloud |= (v >> f.offset) & ((1 << f.width) - 1) >= f.min
        return nodata, cloud & ~nodata


@functools.lru_cache(maxsize=64)
def _qa_luts(spec: QASpec, bits: int) -> tuple[Any, Any]:
    """``(nodata, cloud)`` lookup tables of every ``bits``-bit code of a QA spec (read-only)."""
    import numpy as np

    nodata, cloud = spec._decode(np.arange(1 << bits, dtype=np.int64))
    nodata.flags.writeable = cloud.flags.writeable = False
    return nodata, cloud


class Product(_Strict):
    """A processing level of a sensor (radiometry and detection rules)."""

    scale: float = Field(description="reflectance = DN * scale + offset")
    offset: float = 0.0
    dn_bits: Literal[8, 16] = Field(
        16,
        description="Width of the product's DNs: 8 for products shipped as 8-bit pixels (NAIP); 16 for "
        "the rest (12-bit sensors included). 8-bit files of a 16-bit product are refused at ingest.",
    )
    nodata: float | None = 0
    qa: QASpec | None = None
    detect: dict[str, Any] = Field(default_factory=dict, description="Rules to recognise a scene.")


class Sensor(_Strict):
    """A sensor (instrument family) with its bands, token groups and products."""

    id: str
    name: str
    platforms: tuple[str, ...] = ()
    token_groups: dict[str, tuple[str, ...]]
    bands: dict[str, Band]
    products: dict[str, Product]
    _band_index: dict[str, str] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check_groups(self) -> Sensor:
        grouped: dict[str, str] = {}
        for group, names in self.token_groups.items():
            for name in names:
                if name not in self.bands:
                    raise ValueError(f"token group {group!r} names unknown band {name!r}")
                if name in grouped:
                    raise ValueError(
                        f"band {name!r} is listed twice in token_groups ({grouped[name]}, {group})"
                    )
                grouped[name] = group
        _check_band_names(self.bands)
        if not self.products:
            raise ValueError("needs at least one product")
        check_rules(self.products, {b.upper() for b in self.bands} | self.qa_layer_names(), self.band_id)
        return self

    def qa_layer_names(self) -> set[str]:
        """Upper-case names of the QA layers of all products."""
        return {p.qa.band.upper() for p in self.products.values() if p.qa is not None}

    @property
    def pretrain_bands(self) -> tuple[str, ...]:
        """Bands used for pre-training, in token-group order (others are dropped)."""
        return tuple(b for names in self.token_groups.values() for b in names)

    def band_id(self, name: str) -> str | None:
        """Canonical band id for a name or alias (case-insensitive), or None."""
        index = self._band_index
        if index is None:  # built on first use: ingest looks up every file's band name
            index = {}
            for band_id, band in self.bands.items():
                for alias in (band_id, *band.aliases):
                    index.setdefault(alias.lower(), band_id)
            self._band_index = index
        return index.get(name.lower())

    def product(self, level: str) -> Product:
        """The product of this sensor at ``level``.

        Raises:
            SensorRegistryError: The level is unknown for this sensor.
        """
        try:
            return self.products[level]
        except KeyError:
            raise SensorRegistryError(
                f"sensor {self.id} has no product {level!r} (known: {', '.join(self.products)})"
            ) from None

    def group_of(self, band: str) -> str | None:
        """Token group containing ``band``, or None when the band is not tokenised."""
        for group, names in self.token_groups.items():
            if band in names:
                return group
        return None


def _check_band_names(bands: dict[str, Band]) -> None:
    """Every band id and alias names one band (case-insensitively): no alias repeats or clashes.

    Raises:
        ValueError: ``bands.<id>.aliases: ...`` naming the clash.
    """
    owner: dict[str, str] = {}
    for band_id in bands:
        if band_id.lower() in owner:
            raise ValueError(f"bands: {band_id!r} and {owner[band_id.lower()]!r} differ only in case")
        owner[band_id.lower()] = band_id
    for band_id, band in bands.items():
        for alias in band.aliases:
            other = owner.get(alias.lower())
            if other is not None and other != band_id:
                what = "the id of band" if other.lower() == alias.lower() else "an alias of band"
                raise ValueError(f"bands.{band_id}.aliases: {alias!r} is already {what} {other!r}")
            owner[alias.lower()] = band_id


class SensorRegistry:
    """All sensors known to this process, keyed by id."""

    def __init__(self, sensors: Iterable[Sensor], sources: Sequence[str] = ()) -> None:
        self._sensors = {s.id: s for s in sensors}
        self.sources = tuple(sources)

    def __contains__(self, sensor_id: object) -> bool:
        return sensor_id in self._sensors

    def __iter__(self) -> Iterator[Sensor]:
        return iter(self._sensors.values())

    def __len__(self) -> int:
        return len(self._sensors)

    @property
    def ids(self) -> tuple[str, ...]:
        """Sensor ids in registry order."""
        return tuple(self._sensors)

    def get(self, sensor_id: str) -> Sensor:
        """The sensor with this id.

        Raises:
            SensorRegistryError: Unknown id; the message lists the known ones.
        """
        try:
            return self._sensors[sensor_id]
        except KeyError:
            raise SensorRegistryError(
                f"unknown sensor {sensor_id!r} (known: {', '.join(self._sensors)}); "
                "add it in a sensor YAML file (docs/sensors.md)"
            ) from None

    def to_dict(self, ids: Iterable[str] | None = None) -> dict[str, Any]:
        """Plain-data form of (some of) the registry, e.g. to store in a checkpoint."""
        chosen = self._sensors if ids is None else {i: self.get(i) for i in ids}
        return {i: s.model_dump(mode="json", exclude={"id"}) for i, s in chosen.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> SensorRegistry:
        """Build a registry from the plain-data form written by :meth:`to_dict`."""
        return cls(_parse_sensors(data, source), [source])


def _parse_sensors(data: Any, source: str) -> list[Sensor]:
    if not isinstance(data, dict):
        raise SensorRegistryError(f"{source}: expected a mapping of sensor ids")
    sensors = []
    for sensor_id, body in data.items():
        if not isinstance(body, dict):
            raise SensorRegistryError(f"{source}: sensors.{sensor_id}: expected a mapping")
        try:
            sensors.append(Sensor(id=str(sensor_id), **body))
        except ValidationError as err:
            first = err.errors()[0]
            loc = "".join(f".{p}" for p in first["loc"])
            msg = str(first["msg"]).removeprefix("Value error, ")  # a check of the whole sensor
            raise SensorRegistryError(f"{source}: sensors.{sensor_id}{loc}: {msg}") from None
    return sensors


def _read_file(path: Path) -> list[Sensor]:
    try:
        doc = load_file(path)
    except YamlError as err:
        raise SensorRegistryError(f"sensor file {err}") from None
    if not isinstance(doc, dict) or "sensors" not in doc:
        raise SensorRegistryError(f"{path}: a sensor file needs a top-level 'sensors:' mapping")
    return _parse_sensors(doc["sensors"], str(path))


def load_registry(extra_files: Sequence[str | os.PathLike[str]] = ()) -> SensorRegistry:
    """Load the built-in sensor files plus user sensor files (later files replace earlier sensors).

    Args:
        extra_files: User sensor YAML files; ``$A2MAE_SENSOR_FILES`` entries are appended.

    Returns:
        The merged registry.
    """
    files = [*BUILTIN_FILES, *(Path(f) for f in extra_files)]
    env = os.environ.get(ENV_VAR, "")
    files += [Path(f) for f in env.split(os.pathsep) if f]
    merged: dict[str, Sensor] = {}
    for f in files:
        for s in _read_file(f):
            merged[s.id] = s
    return SensorRegistry(merged.values(), [str(f) for f in files])


@functools.lru_cache(maxsize=8)
def _cached(extra: tuple[str, ...], env: str) -> SensorRegistry:
    return load_registry(extra)


def get_registry(extra_files: Sequence[str | os.PathLike[str]] = ()) -> SensorRegistry:
    """Cached :func:`load_registry` (keyed on the files and ``$A2MAE_SENSOR_FILES``)."""
    return _cached(tuple(str(f) for f in extra_files), os.environ.get(ENV_VAR, ""))
