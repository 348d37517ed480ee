"""The model's vocabulary of sensors, token groups and bands, derived from the sensor registry.

A model is built for a list of sensors. Each ``(sensor, token group)`` pair is a *key*: it owns a patch
embedding and a decoder head. Group *types* (VNIR, RedEdge, SWIR, ...) are shared across sensors for the
spectral-group embedding, so semantically equivalent bands align.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from a2mae.errors import A2maeError
from a2mae.sensors.registry import Sensor, SensorRegistry


class ModelInputError(A2maeError, ValueError):
    """A batch does not fit the model (unknown sensor or band, bad shape, no usable band)."""


@dataclass(frozen=True)
class ChannelMap:
    """Where the channels of one image's band list go, per token group of its sensor.

    Attributes:
        groups: Key indices of the groups with at least one present band, in the sensor's group order.
        channels: Per such group, for each band slot of the group, the channel of the image holding it
            (``-1``: the band is missing).
    """

    groups: tuple[int, ...]
    channels: tuple[tuple[int, ...], ...]


@dataclass
class Vocabulary:
    """Sensors, keys, group types and bands known to a model.

    Attributes:
        sensors: Registry entries, in model order.
        keys: ``(sensor_id, group)`` pairs, sensor by sensor in registry group order.
        key_bands: Band ids of each key's group.
        group_types: Distinct group names across sensors (shared E_spec entries).
        key_type: Group-type index of each key.
        key_sensor: Sensor index of each key.
        band_keys: ``(sensor_id, band)`` of every tokenised band (rows of the missing-band table).
        max_group_bands: Largest group size ``C_max``.
    """

    sensors: list[Sensor]
    keys: list[tuple[str, str]] = field(default_factory=list)
    key_bands: list[tuple[str, ...]] = field(default_factory=list)
    group_types: list[str] = field(default_factory=list)
    key_type: list[int] = field(default_factory=list)
    key_sensor: list[int] = field(default_factory=list)
    band_keys: list[tuple[str, str]] = field(default_factory=list)
    max_group_bands: int = 0
    _cache: dict[tuple[str, tuple[str, ...]], ChannelMap] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, registry: SensorRegistry, sensor_ids: list[str] | None) -> Vocabulary:
        """Vocabulary of ``sensor_ids`` (all registered sensors when None)."""
        ids = list(registry.ids) if sensor_ids is None else list(sensor_ids)
        if not ids:
            raise ModelInputError("a model needs at least one sensor (config field 'sensors')")
        voc = cls(sensors=[registry.get(i) for i in ids])
        for si, s in enumerate(voc.sensors):
            for group, bands in s.token_groups.items():
                if group not in voc.group_types:
                    voc.group_types.append(group)
                voc.keys.append((s.id, group))
                voc.key_bands.append(tuple(bands))
                voc.key_type.append(voc.group_types.index(group))
                voc.key_sensor.append(si)
                voc.band_keys.extend((s.id, b) for b in bands)
        voc.max_group_bands = max(len(b) for b in voc.key_bands)
        return voc

    @property
    def sensor_ids(self) -> list[str]:
        """Sensor ids in model order."""
        return [s.id for s in self.sensors]

    def sensor_index(self, sensor_id: str) -> int:
        """Index of a sensor; raises :class:`ModelInputError` naming the known ones."""
        for i, s in enumerate(self.sensors):
            if s.id == sensor_id:
                return i
        raise ModelInputError(
            f"image of sensor {sensor_id!r}: the model was built for {', '.join(self.sensor_ids)}; "
            "create it with sensors=[...] including this one"
        )

    def nominal_gsd(self, sensor_id: str) -> float:
        """Finest native GSD of a sensor's tokenised bands (used when an image has no gsd_m)."""
        s = self.sensors[self.sensor_index(sensor_id)]
        return min(s.bands[b].gsd_m for bands in s.token_groups.values() for b in bands)

    def channel_map(self, sensor_id: str, bands: tuple[str, ...]) -> ChannelMap:
        """Map an image's band list onto the sensor's token groups (cached).

        Bands outside every token group are ignored. Groups with no present band are skipped.

        Raises:
            ModelInputError: Unknown sensor or band, a band listed twice, or no tokenised band at all.
        """
        ck = (sensor_id, tuple(bands))
        hit = self._cache.get(ck)
        if hit is not None:
            return hit
        s = self.sensors[self.sensor_index(sensor_id)]
        canon: list[str] = []
        for b in bands:
            bid = s.band_id(b)
            if bid is None:
                raise ModelInputError(
                    f"image of sensor {sensor_id}: unknown band {b!r} (known: {', '.join(s.bands)})"
                )
            if bid in canon:
                raise ModelInputError(f"image of sensor {sensor_id}: band {bid} listed twice in {bands}")
            canon.append(bid)
        groups: list[int] = []
        chans: list[tuple[int, ...]] = []
        for k, (sid, _group) in enumerate(self.keys):
            if sid != sensor_id:
                continue
            slots = tuple(canon.index(b) if b in canon else -1 for b in self.key_bands[k])
            if any(c >= 0 for c in slots):
                groups.append(k)
                chans.append(slots)
        if not groups:
            raise ModelInputError(
                f"image of sensor {sensor_id} with bands {list(bands)}: no band of any token group "
                f"({'; '.join(f'{g}: {list(b)}' for g, b in s.token_groups.items())})"
            )
        cm = ChannelMap(tuple(groups), tuple(chans))
        self._cache[ck] = cm
        return cm

    def band_row(self, key: int, slot: int) -> int:
        """Row of the missing-band table for band ``slot`` of key ``key``."""
        sid = self.keys[key][0]
        return self.band_keys.index((sid, self.key_bands[key][slot]))
