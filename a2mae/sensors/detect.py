"""Recognise the sensor and product of a scene from the registry's ``detect:`` rules (pure, no I/O).

The caller gathers :class:`SceneEvidence` (file names, band names found in them, STAC item properties,
Landsat MTL fields, GDAL tags, band count); :func:`detect_product` scores every product of every
sensor against it. The rule schema is :class:`DetectRules`, documented in ``docs/sensors.md``.

Scoring, per product:

* **vetoes** (the product is out): a STAC/MTL/tags clause whose keys are present but do not match; a
  band named in ``bands_none`` is present; a band name that is not a band or QA layer of the sensor
  is present; a single-file scene whose band count is not in ``band_count``.
* **evidence** (+1 each): a file name matches a ``filenames`` pattern; the ``stac``, ``mtl`` or ``tags``
  clause matches (at least one of its keys is present and all present keys match); a band of
  ``bands_any`` is present; every band name found belongs to the sensor.

The product with the highest score wins; a score of 0 means "unknown sensor" and a tie between
different products means "ambiguous". GeoTIFF tags ``A2MAE_SENSOR`` and ``A2MAE_PRODUCT`` name the
product explicitly and bypass the rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from a2mae.errors import A2maeError
from a2mae.sensors.registry import Sensor, SensorRegistry
from a2mae.sensors.rules import DetectRules, compile_pattern

#: GeoTIFF tags that name the sensor and product explicitly.
SENSOR_TAG = "A2MAE_SENSOR"
PRODUCT_TAG = "A2MAE_PRODUCT"

_RES_SUFFIX = re.compile(r"[_-]\d+m$", re.IGNORECASE)  # S2 L2A SAFE: T33UUP_..._B04_10m
_SPLIT = re.compile(r"[_\-.]")


class DetectionError(A2maeError):
    """No product, or more than one, matches a scene."""


def rules_of(sensor: Sensor, level: str) -> DetectRules:
    """Parsed detection rules of one product."""
    return DetectRules.model_validate(sensor.products[level].detect)


def qa_names(sensor: Sensor) -> set[str]:
    """Upper-case names of the QA layers of all products of ``sensor``."""
    return sensor.qa_layer_names()


# ------------------------------------------------------------------------------------ band tokens
def band_vocabulary(registry: SensorRegistry) -> frozenset[str]:
    """Upper-case band ids, aliases and QA layer names of every sensor: the names looked for in files."""
    names: set[str] = set()
    for sensor in registry:
        for band_id, band in sensor.bands.items():
            names.add(band_id.upper())
            names.update(a.upper() for a in band.aliases)
        names |= qa_names(sensor)
    return frozenset(names)


def split_band_token(stem: str, vocabulary: Iterable[str]) -> tuple[str, str] | None:
    """Split a file stem into ``(prefix, band token)`` when it ends in a known band name.

    The longest suffix (of ``_``/``-``/``.``-separated parts) that is in ``vocabulary`` wins, so
    ``LC08_..._T2_SR_B4`` gives ``("LC08_..._T2", "SR_B4")``. A resolution suffix such as ``_10m`` is
    dropped first.

    Args:
        stem: File name without extension.
        vocabulary: Upper-case band names (:func:`band_vocabulary`).

    Returns:
        The prefix (without the trailing separator) and the token as written, or None.
    """
    vocab = vocabulary if isinstance(vocabulary, set | frozenset) else set(vocabulary)
    base = _RES_SUFFIX.sub("", stem)
    cuts = [0] + [m.end() for m in _SPLIT.finditer(base)]
    for start in cuts:  # earliest cut = longest suffix
        token = base[start:]
        if token and token.upper() in vocab:
            return base[: max(start - 1, 0)], token
    return None


def canonical_band(sensor: Sensor, token: str) -> str | None:
    """The sensor's band id for a file token, the QA layer name (upper case) for a QA token, or None."""
    band = sensor.band_id(token)
    if band is not None:
        return band
    up = token.upper()
    return up if up in qa_names(sensor) else None


# --------------------------------------------------------------------------------------- evidence
@dataclass
class SceneEvidence:
    """What is known about a scene before its sensor is: names, sidecar metadata and raster header."""

    file_names: tuple[str, ...]
    band_tokens: tuple[str, ...] = ()
    stac: Mapping[str, Any] | None = None
    mtl: Mapping[str, str] | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    band_count: int | None = None
    single_file: bool = False


@dataclass(frozen=True)
class Detection:
    """The detected product with its score and the rules that matched."""

    sensor: str
    product: str
    score: int
    reasons: tuple[str, ...]


def _clause(rule: Mapping[str, str], source: Mapping[str, Any] | None) -> bool | None:
    """True: matches; False: contradicts (a present key does not match); None: nothing to compare."""
    if not rule or source is None:
        return None
    seen = False
    for key, pattern in rule.items():
        value = source.get(key)
        if value is None:
            # case-insensitive key lookup (tags and MTL keys vary in case between writers)
            low = key.lower()
            value = next((v for k, v in source.items() if str(k).lower() == low), None)
        if value is None:
            continue
        seen = True
        values = value if isinstance(value, list | tuple) else [value]
        if not any(compile_pattern(pattern).search(str(v)) for v in values):
            return False
    return True if seen else None


def score_product(sensor: Sensor, level: str, ev: SceneEvidence) -> tuple[int, list[str]] | None:
    """Score one product against the evidence.

    Returns:
        ``(score, reasons)``, or None when a veto rules the product out.
    """
    rules = rules_of(sensor, level)
    score, reasons = 0, []
    bands = [canonical_band(sensor, t) for t in ev.band_tokens]
    if any(b is None for b in bands):
        return None
    present = {b.upper() for b in bands if b is not None}
    if any((sensor.band_id(n) or n).upper() in present for n in rules.bands_none):
        return None
    if ev.single_file and rules.band_count and ev.band_count not in rules.band_count:
        return None
    for name, rule, source in (
        ("stac", rules.stac, _stac_view(ev.stac)),
        ("mtl", rules.mtl, ev.mtl),
        ("tags", rules.tags, ev.tags),
    ):
        verdict = _clause(rule, source)
        if verdict is False:
            return None
        if verdict:
            score += 1
            reasons.append(name)
    names = ev.file_names
    if rules.filenames and any(compile_pattern(p).search(n) for p in rules.filenames for n in names):
        score += 1
        reasons.append("filenames")
    if rules.bands_any and any((sensor.band_id(n) or n).upper() in present for n in rules.bands_any):
        score += 1
        reasons.append("bands_any")
    if present:
        score += 1
        reasons.append("band names")
    return score, reasons


def _stac_view(item: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if item is None:
        return None
    view = dict(item.get("properties") or {})
    for key in ("id", "collection"):
        if key in item:
            view[key] = item[key]
    return view


def detect_product(ev: SceneEvidence, registry: SensorRegistry, where: str) -> Detection:
    """Detect the sensor and product of a scene.

    Args:
        ev: The scene's evidence.
        registry: Sensors to try.
        where: The scene's file or folder, for messages.

    Returns:
        The winning product.

    Raises:
        DetectionError: Unknown sensor (nothing matches), an unknown explicit tag, or a tie.
    """
    explicit = _explicit(ev, registry, where)
    if explicit is not None:
        return explicit
    scored: list[Detection] = []
    for sensor in registry:
        for level in sensor.products:
            result = score_product(sensor, level, ev)
            if result is not None and result[0] > 0:
                scored.append(Detection(sensor.id, level, result[0], tuple(result[1])))
    if not scored:
        raise DetectionError(
            f"{where}: unknown sensor: no rule of the sensor registry matches this scene; add the sensor "
            f"in a sensor YAML file (docs/sensors.md) or tag the file {SENSOR_TAG}=<id> {PRODUCT_TAG}=<level>"
        )
    scored.sort(key=lambda d: -d.score)
    best = [d for d in scored if d.score == scored[0].score]
    if len(best) > 1:
        names = ", ".join(f"{d.sensor}/{d.product}" for d in best)
        raise DetectionError(
            f"{where}: ambiguous scene: matches {names} equally; add its STAC JSON or MTL sidecar, keep "
            f"the archive's file names, or tag the file {SENSOR_TAG}=<id> {PRODUCT_TAG}=<level>"
        )
    return best[0]


def _explicit(ev: SceneEvidence, registry: SensorRegistry, where: str) -> Detection | None:
    tags = {k.upper(): v for k, v in ev.tags.items()}
    sensor_id = tags.get(SENSOR_TAG)
    if sensor_id is None:
        return None
    if sensor_id not in registry:
        raise DetectionError(
            f"{where}: tag {SENSOR_TAG}={sensor_id!r} names an unknown sensor (known: "
            f"{', '.join(registry.ids)}); add it in a sensor YAML file (docs/sensors.md)"
        )
    sensor = registry.get(sensor_id)
    level = tags.get(PRODUCT_TAG) or (next(iter(sensor.products)) if len(sensor.products) == 1 else None)
    if level is None or level not in sensor.products:
        raise DetectionError(
            f"{where}: tag {PRODUCT_TAG}={level!r} is not a product of {sensor_id} "
            f"(known: {', '.join(sensor.products)})"
        )
    return Detection(sensor_id, level, 99, ("explicit tags",))


# ------------------------------------------------------------------------------- band assignment
def assign_stack(sensor: Sensor, level: str, count: int, descriptions: Sequence[str | None]) -> list[str]:
    """Band ids of a multi-band file, in file order.

    From the band descriptions when they all name bands of the sensor; else from the product's
    ``stacks`` of that length; else the sensor's bands in registry order when the count matches.

    Raises:
        DetectionError: Which band is which cannot be told.
    """
    if descriptions and all(descriptions):
        ids = [sensor.band_id(str(d)) for d in descriptions]
        if all(ids) and len(set(ids)) == len(ids):
            return [str(i) for i in ids]
    for stack in rules_of(sensor, level).stacks:
        if len(stack) == count:
            return [str(sensor.band_id(b)) for b in stack]
    if count == len(sensor.bands):
        return list(sensor.bands)
    raise DetectionError(
        f"cannot tell which of the {count} bands is which for {sensor.id}/{level}; set band descriptions "
        f"to band names, or add a {count}-band entry to products.{level}.detect.stacks (docs/sensors.md)"
    )
