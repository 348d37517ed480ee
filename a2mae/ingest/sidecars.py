"""Scene metadata besides the rasters: STAC item JSON, Landsat MTL (text or JSON), GDAL tags, file names.

Pure parsing (bytes in, dicts and datetimes out). The acquisition time of a scene is taken from the
first source that has it, in this order (see ``docs/ingest.md``):

1. STAC item ``properties.datetime`` (or ``start_datetime``),
2. MTL ``DATE_ACQUIRED`` + ``SCENE_CENTER_TIME``,
3. GDAL tags (:data:`DATETIME_TAGS`; never ``TIFFTAG_DATETIME``, which is when the file was written),
4. the first ``YYYYMMDD`` or ``YYYY-MM-DD`` date (optionally followed by ``HHMMSS`` or ``THHMMSS``) in
   a file name of the scene, not preceded or followed by another digit.

A date without a time means 00:00 UTC.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

DatetimeSource = Literal["tags", "filename", "stac", "mtl", "none"]

#: Tags read as acquisition time (case-insensitive), in order.
DATETIME_TAGS = (
    "ACQUISITION_DATETIME",
    "ACQUISITIONDATETIME",
    "ACQUISITION_DATE",
    "ACQUISITION_TIME",
    "DATE_ACQUIRED",
    "SENSING_TIME",
    "DATATAKE_SENSING_START",
    "DATETIME",
)

_FILENAME_DATE = re.compile(
    r"(?<!\d)((?:19|20)\d{2})(-?)(0[1-9]|1[0-2])\2(0[1-9]|[12]\d|3[01])"
    r"(?:T?(\d{2})(\d{2})(\d{2})\d*)?(?!\d)"
)
_MTL_LINE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*=\s*(.*?)\s*$")


# --------------------------------------------------------------------------------------------- MTL
def parse_mtl_text(text: str) -> dict[str, str]:
    """Parse a Landsat ``*_MTL.txt`` (ODL) file into a flat dict.

    Every field appears as ``GROUP.KEY`` (its innermost group) and as ``KEY`` (its first occurrence:
    a Collection-2 L2 MTL has ``PROCESSING_LEVEL`` = ``L2SP`` first and ``L1GT`` later, in the
    level-1 record).

    Args:
        text: File content.

    Returns:
        Field values without quotes.
    """
    out: dict[str, str] = {}
    groups: list[str] = []
    for line in text.splitlines():
        m = _MTL_LINE.match(line)
        if not m:
            continue
        key, value = m.group(1), m.group(2).strip().strip('"')
        if key == "GROUP":
            groups.append(value)
        elif key == "END_GROUP":
            if groups:
                groups.pop()
        else:
            if groups:
                out.setdefault(f"{groups[-1]}.{key}", value)
            out.setdefault(key, value)
    return out


def parse_mtl_json(doc: Mapping[str, Any]) -> dict[str, str] | None:
    """Flatten a Landsat ``*_MTL.json`` the way :func:`parse_mtl_text` does; None if it is not one."""
    root = doc.get("LANDSAT_METADATA_FILE") or doc.get("L1_METADATA_FILE")
    if not isinstance(root, Mapping):
        return None
    out: dict[str, str] = {}

    def walk(node: Mapping[str, Any], group: str | None) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, key)
            else:
                if group:
                    out.setdefault(f"{group}.{key}", str(value))
                out.setdefault(key, str(value))

    walk(root, None)
    return out


def is_stac_item(doc: Any) -> bool:
    """Whether a parsed JSON document is a STAC item."""
    return isinstance(doc, Mapping) and doc.get("type") == "Feature" and "stac_version" in doc


def parse_json(data: bytes) -> Any | None:
    """Parse JSON bytes, or None when they are not JSON."""
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


# ---------------------------------------------------------------------------------------- datetime
def parse_datetime(text: str) -> datetime | None:
    """Parse an ISO-8601-like date or date-time (``Z``, offsets, 7-digit fractions, ``YYYY:MM:DD``).

    Returns:
        An aware UTC datetime, or None when the text is not a date.
    """
    s = str(text).strip().strip('"')
    if not s:
        return None
    s = re.sub(r"^(\d{4}):(\d{2}):(\d{2})", r"\1-\2-\3", s)  # EXIF style
    s = re.sub(r"(\.\d{6})\d+", r"\1", s)  # more than microseconds
    s = re.sub(r"[zZ]$", "+00:00", s)
    if re.fullmatch(r"\d{8}", s):
        s = f"{s[:4]}-{s[4:6]}-{s[6:]}"
    try:
        dt = datetime.fromisoformat(s)
        return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    except (ValueError, OverflowError):  # not a date, or beyond year 1..9999 once in UTC
        return None


def datetime_from_stac(item: Mapping[str, Any]) -> datetime | None:
    """``properties.datetime`` (or ``start_datetime``) of a STAC item."""
    props = item.get("properties") or {}
    for key in ("datetime", "start_datetime"):
        if props.get(key):
            dt = parse_datetime(props[key])
            if dt is not None:
                return dt
    return None


def datetime_from_mtl(mtl: Mapping[str, str]) -> datetime | None:
    """``DATE_ACQUIRED`` plus ``SCENE_CENTER_TIME`` of an MTL."""
    date = mtl.get("DATE_ACQUIRED") or mtl.get("ACQUISITION_DATE")
    if not date:
        return None
    time = mtl.get("SCENE_CENTER_TIME") or mtl.get("SCENE_CENTER_SCAN_TIME")
    return parse_datetime(f"{date}T{time}" if time else date) or parse_datetime(date)


def datetime_from_tags(tags: Mapping[str, str]) -> datetime | None:
    """The first of :data:`DATETIME_TAGS` present in ``tags`` that parses as a date."""
    upper = {str(k).upper(): v for k, v in tags.items()}
    for key in DATETIME_TAGS:
        if key in upper:
            dt = parse_datetime(upper[key])
            if dt is not None:
                return dt
    return None


def datetime_from_names(names: Iterable[str]) -> datetime | None:
    """The first ``YYYYMMDD[THHMMSS]`` or ``YYYY-MM-DD`` date in the given file names."""
    for name in names:
        for m in _FILENAME_DATE.finditer(name):
            year, _, month, day, hh, mm, ss = m.groups()
            for clock in ((hh, mm, ss), (0, 0, 0)):  # an impossible time of day falls back to the date
                hour, minute, second = (int(c or 0) for c in clock)
                try:
                    return datetime(int(year), int(month), int(day), hour, minute, second, tzinfo=UTC)
                except ValueError:
                    continue
    return None


#: Acquisition times outside [EARLIEST, now + 1 day] are impossible for a satellite scene.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


class DateProblem(ValueError):
    """A metadata date that is present but not a possible acquisition time (the message says where)."""


def _stac_texts(stac: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    props = (stac or {}).get("properties") or {}
    if not isinstance(props, Mapping):
        return []
    return [(f"STAC properties.{k}", str(props[k])) for k in ("datetime", "start_datetime") if props.get(k)]


def _mtl_texts(mtl: Mapping[str, str] | None) -> list[tuple[str, str]]:
    keys = ("DATE_ACQUIRED", "ACQUISITION_DATE")
    return [(f"MTL {k}", str(mtl[k])) for k in keys if mtl and mtl.get(k)]


def _tag_texts(tags: Mapping[str, str]) -> list[tuple[str, str]]:
    upper = {str(k).upper(): v for k, v in tags.items()}
    return [(f"tag {k}", str(upper[k])) for k in DATETIME_TAGS if k in upper and str(upper[k]).strip()]


def check_dates(
    stac: Mapping[str, Any] | None,
    mtl: Mapping[str, str] | None,
    tags: Mapping[str, str],
    when: datetime | None,
    source: DatetimeSource,
    now: datetime | None = None,
) -> None:
    """Refuse metadata dates that are present but impossible (before 1970, in the future, or not a date).

    Args:
        stac: STAC item, or None.
        mtl: Parsed MTL, or None.
        tags: GDAL tags of the first file.
        when: The acquisition time chosen by :func:`acquisition_datetime`.
        source: Where ``when`` came from.
        now: The present (default: the clock), for the "in the future" test.

    Raises:
        DateProblem: The message names the field and its value.
    """
    now = now or datetime.now(UTC)
    groups = {"stac": _stac_texts(stac), "mtl": _mtl_texts(mtl), "tags": _tag_texts(tags)}
    for name, texts in groups.items():
        for field, text in texts:
            if parse_datetime(text) is None:
                raise DateProblem(f"{field} {text[:40]!r} is not a date; fix or remove it")
        if source == name:
            break  # sources after the chosen one are not used
    if when is not None and not (EARLIEST <= when <= now + timedelta(days=1)):
        raise DateProblem(
            f"acquisition time {when.isoformat()} (from {source}) is impossible for a satellite scene "
            f"(before {EARLIEST:%Y} or in the future); fix the metadata"
        )


def filename_disagreement(
    when: datetime | None, source: DatetimeSource, names: Iterable[str], tolerance_days: float = 1.0
) -> str | None:
    """A note when the chosen time (from metadata) and the first date in the file names differ by days.

    Returns:
        ``"... from stac disagrees with 2020-01-05 in the file name ..."``, or None when they agree,
        when the time came from the file names, or when the names hold no date.
    """
    if when is None or source in ("filename", "none"):
        return None
    names = list(names)
    named = datetime_from_names(names)
    if named is None or abs((named - when).total_seconds()) <= tolerance_days * 86400:
        return None
    name = next((n for n in names if _FILENAME_DATE.search(n)), "")
    return (
        f"acquisition date {when:%Y-%m-%d} (from {source}) disagrees with {named:%Y-%m-%d} in the file name "
        f"{name}; {source} is used, check the scene"
    )


def acquisition_datetime(
    stac: Mapping[str, Any] | None,
    mtl: Mapping[str, str] | None,
    tags: Mapping[str, str],
    names: Iterable[str],
) -> tuple[datetime | None, DatetimeSource]:
    """Acquisition time from the first source that has it (STAC, MTL, tags, file names).

    Returns:
        ``(datetime or None, source)`` with source ``"none"`` when nothing gave a date.
    """
    if stac is not None and (dt := datetime_from_stac(stac)) is not None:
        return dt, "stac"
    if mtl is not None and (dt := datetime_from_mtl(mtl)) is not None:
        return dt, "mtl"
    if (dt := datetime_from_tags(tags)) is not None:
        return dt, "tags"
    if (dt := datetime_from_names(names)) is not None:
        return dt, "filename"
    return None, "none"


# --------------------------------------------------------------------------------------- radiometry
def scale_offset_from_stac(item: Mapping[str, Any]) -> tuple[float, float] | None:
    """``raster:bands`` scale/offset of the STAC item's first spectral asset, when given.

    A spectral asset has ``eo:bands`` and the ``data`` or ``reflectance`` role (so aerosol or water
    vapour layers, which have their own scale, are not taken).
    """
    for asset in (item.get("assets") or {}).values():
        if not isinstance(asset, Mapping) or not asset.get("eo:bands"):
            continue
        if not {"data", "reflectance"} & set(asset.get("roles") or []):
            continue
        for band in asset.get("raster:bands") or []:
            if isinstance(band, Mapping) and "scale" in band:
                return float(band["scale"]), float(band.get("offset", 0.0))
    return None


def scale_offset_from_mtl(mtl: Mapping[str, str]) -> tuple[float, float] | None:
    """``REFLECTANCE_MULT_BAND_1`` / ``REFLECTANCE_ADD_BAND_1`` of an MTL (first occurrence)."""
    mult, add = mtl.get("REFLECTANCE_MULT_BAND_1"), mtl.get("REFLECTANCE_ADD_BAND_1")
    if mult is None or add is None:
        return None
    try:
        return float(mult), float(add)
    except ValueError:
        return None
