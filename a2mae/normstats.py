"""Normalisation statistics: one typed object from ``a2mae tile`` to fine-tuning, prediction and benchmarks.

``a2mae tile`` measures per sensor and band the mean and standard deviation of the reflectance of a
snapshot's train split and writes them as ``stats.json``; pre-training normalises with them and stores the
same document in every checkpoint (``norm_stats`` in the checkpoint metadata). Whoever feeds that encoder
later (``a2mae finetune``, ``a2mae predict --model models:/a2mae-encoder/N``, ``a2mae benchmark``) reads
them back with :meth:`NormStats.from_doc` or :func:`stats_for` and normalises its inputs exactly as the
encoder saw them in pre-training.

The document (``version`` 2, the shape ``stats.json`` has always had)::

    {"version": 2, "units": "reflectance",
     "stored": {"dtype": "int16", "scale": 10000, "nodata": -32768},
     "sensors": {"S2": {"B02": {"mean": 0.12, "std": 0.03, "count": ..., "min": ..., "max": ...,
                                "computed_on": "train"}, ...}, ...}}

Older checkpoints hold either that document or the bare per-sensor mapping ``{"S2": {"B02": {"mean",
"std"}}}``; both load (the bare form is read as reflectance). Values are reflectance; callers whose
pixels are in other units pass ``unit`` (the reflectance of one pixel unit: ``1e-4`` for the encoder's
input of ``a2mae predict``, which reads reflectance x 10000) and get the statistics in their units.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from a2mae.errors import A2maeError

#: Version of the statistics document (``stats.json`` and checkpoints' ``norm_stats``).
VERSION = 2
#: Units the statistics are measured in.
UNITS = "reflectance"
#: Smallest standard deviation used to divide by (a constant band).
MIN_STD = 1e-6


class NormStatsError(A2maeError, ValueError):
    """Statistics missing for a sensor or band, or a statistics document that cannot be read."""


@dataclass(frozen=True)
class BandStats:
    """Statistics of one band (reflectance).

    Attributes:
        mean: Mean reflectance.
        std: Standard deviation of the reflectance.
        extra: Other recorded values (``count``, ``min``, ``max``, ``computed_on``), kept as written.
    """

    mean: float
    std: float
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_doc(self) -> dict[str, Any]:
        """The JSON form (``mean``, ``std`` and the extra values)."""
        return {**dict(self.extra), "mean": self.mean, "std": self.std}


@dataclass(frozen=True)
class NormStats:
    """Per-sensor, per-band normalisation statistics of a snapshot (and of the encoders trained on it).

    Attributes:
        sensors: ``{sensor: {band: BandStats}}``.
        version: Document version (:data:`VERSION`).
        units: What the values measure (``reflectance``).
        stored: How the snapshot stores chips (``dtype``, ``scale``, ``nodata``); empty when unknown.
    """

    sensors: Mapping[str, Mapping[str, BandStats]]
    version: int = VERSION
    units: str = UNITS
    stored: Mapping[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------------------- reading
    @classmethod
    def from_doc(cls, doc: NormStats | Mapping[str, Any] | None, source: str = "statistics") -> NormStats:
        """Read a statistics document (``stats.json``, a checkpoint's ``norm_stats``), old forms included.

        Args:
            doc: The whole document (``{"sensors": ..., "version": ...}``), a bare per-sensor mapping
                (older checkpoints), an empty mapping or None (no statistics), or a :class:`NormStats`.
            source: What to name in errors (a file or a model URI).

        Raises:
            NormStatsError: A band without a finite mean and a non-negative standard deviation, or
                a document of a newer version.
        """
        if isinstance(doc, NormStats):
            return doc
        if not doc:
            return cls({})
        whole = isinstance(doc.get("sensors"), Mapping)
        version = int(doc.get("version", VERSION)) if whole else VERSION
        if version > VERSION:
            raise NormStatsError(
                f"{source}: statistics version {version} is newer than this a2mae reads ({VERSION}); "
                "upgrade a2mae"
            )
        body: Mapping[str, Any] = doc["sensors"] if whole else doc
        sensors = {str(s): _bands_of(bands, f"{source}: {s}") for s, bands in body.items()}
        units = str(doc.get("units", UNITS)) if whole else UNITS
        stored = dict(doc.get("stored") or {}) if whole else {}
        return cls(sensors, version=version, units=units, stored=stored)

    def to_doc(self) -> dict[str, Any]:
        """The JSON document (the shape of ``stats.json``; stable key order when dumped sorted)."""
        return {
            "version": self.version,
            "units": self.units,
            "stored": dict(self.stored),
            "sensors": {s: {b: st.to_doc() for b, st in bands.items()} for s, bands in self.sensors.items()},
        }

    # ------------------------------------------------------------------------------- lookups
    def __bool__(self) -> bool:
        return any(self.sensors.values())

    def missing(self, sensor: str, bands: Sequence[str]) -> list[str]:
        """The bands of ``sensor`` among ``bands`` without statistics (in the given order)."""
        known = self.sensors.get(sensor, {})
        return [b for b in bands if b not in known]

    def covers(self, sensor: str, bands: Sequence[str]) -> bool:
        """Whether every band of ``bands`` of ``sensor`` has statistics."""
        return not self.missing(sensor, bands)

    def known_bands(self, sensor: str, bands: Sequence[str]) -> tuple[str, ...]:
        """The bands among ``bands`` (kept in that order) that ``sensor`` has statistics for."""
        known = self.sensors.get(sensor, {})
        return tuple(b for b in bands if b in known)

    def mean_std(
        self,
        sensor: str,
        bands: Sequence[str],
        *,
        unit: float = 1.0,
        offset: float = 0.0,
        source: str = "the encoder",
    ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-band ``(means, stds)`` of ``bands`` of ``sensor``, in pixel units.

        Args:
            sensor: Sensor id (``S2``, ``L8``, ...).
            bands: Band ids in channel order.
            unit: Reflectance of one pixel unit (``1e-4``: pixels are reflectance x 10000; ``1``:
                pixels are reflectance): reflectance = pixel x ``unit`` + ``offset``.
            offset: Reflectance of pixel value 0 (a product's offset; usually 0).
            source: What to name in the error (a model URI, a checkpoint).

        Returns:
            Two tuples of ``len(bands)`` floats; stds are at least :data:`MIN_STD` / ``unit``.

        Raises:
            NormStatsError: Some bands have no statistics (they are named, with the sensors that do).
        """
        missing = self.missing(sensor, bands)
        if missing:
            known = ", ".join(sorted(s for s, b in self.sensors.items() if b)) or "none"
            raise NormStatsError(
                f"{source} has no normalisation statistics for {sensor} bands {missing} (statistics for: "
                f"{known}); use data of a sensor and bands it was pre-trained on"
            )
        st = [self.sensors[sensor][b] for b in bands]
        return (
            tuple((s.mean - offset) / unit for s in st),
            tuple(max(s.std, MIN_STD) / unit for s in st),
        )


def _bands_of(bands: Any, where: str) -> dict[str, BandStats]:
    if not isinstance(bands, Mapping):
        raise NormStatsError(f"{where}: statistics must map band ids to {{mean, std}}; re-tile the snapshot")
    out: dict[str, BandStats] = {}
    for band, st in bands.items():
        try:
            mean, std = float(st["mean"]), float(st["std"])
        except (KeyError, TypeError, ValueError):
            raise NormStatsError(f"{where} {band}: no numeric mean and std; re-tile the snapshot") from None
        if not (math.isfinite(mean) and math.isfinite(std) and std >= 0):
            raise NormStatsError(f"{where} {band}: mean {mean}, std {std} unusable; re-tile the snapshot")
        extra = {k: v for k, v in st.items() if k not in ("mean", "std")}
        out[str(band)] = BandStats(mean, std, extra)
    return out


def stats_for(
    source: NormStats | Mapping[str, Any] | str | os.PathLike[str] | None,
    sensor: str,
    bands: Sequence[str],
    *,
    unit: float = 1.0,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band ``(means, stds)`` an encoder was pre-trained with, for ``bands`` of ``sensor``.

    The one function a consumer of an encoder needs (fine-tuning, prediction, the benchmark harness).

    Args:
        source: A checkpoint (``.safetensors``), a snapshot folder or its ``stats.json``, a statistics
            document or checkpoint metadata (``{"norm_stats": ...}``), or a :class:`NormStats`.
        sensor: Sensor id.
        bands: Band ids in channel order.
        unit: Reflectance of one pixel unit (see :meth:`NormStats.mean_std`).

    Returns:
        ``(means, stds)``, one value per band, in pixel units.

    Raises:
        NormStatsError: No statistics for some of the bands, or an unreadable document.
        CheckpointError: ``source`` is a path that is not a readable checkpoint.
    """
    name = str(source) if isinstance(source, str | os.PathLike) else "the encoder"
    return load_stats(source).mean_std(sensor, bands, unit=unit, source=name)


def load_stats(source: NormStats | Mapping[str, Any] | str | os.PathLike[str] | None) -> NormStats:
    """The statistics of a checkpoint, a snapshot (folder or ``stats.json``) or a document.

    ``source`` is what :func:`stats_for` takes.

    Raises:
        NormStatsError: Unreadable or invalid statistics.
        CheckpointError: A path that is neither a snapshot nor a readable checkpoint.
    """
    if source is None or isinstance(source, NormStats):
        return NormStats.from_doc(source)
    if isinstance(source, Mapping):
        if "norm_stats" in source:  # checkpoint metadata
            return NormStats.from_doc(source.get("norm_stats"), "checkpoint")
        return NormStats.from_doc(source)
    path = Path(source)
    if path.is_dir():
        path = path / "stats.json"
    if path.suffix == ".json":
        import json

        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise NormStatsError(f"{path}: unreadable statistics ({err}); re-tile the snapshot") from None
        return NormStats.from_doc(doc, str(path))
    from a2mae.checkpoint import read_checkpoint_meta

    return NormStats.from_doc(read_checkpoint_meta(path).get("norm_stats"), str(path))
