"""The ``detect:`` rules of a sensor product (schema and validation; pure, no I/O).

How the rules are scored against a scene is :mod:`a2mae.sensors.detect`; the keys are documented in
``docs/sensors.md``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class DetectRules(BaseModel):
    """Schema of a product's ``detect:`` mapping in a sensor YAML file.

    All keys are optional. Patterns are Python regular expressions matched with ``re.search``,
    case-insensitively.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    filenames: tuple[str, ...] = Field(
        default=(), description="Evidence: any file name of the scene (bands and sidecars) matches one."
    )
    stac: dict[str, str] = Field(
        default_factory=dict,
        description="STAC item key -> pattern (keys: properties, plus 'id' and 'collection').",
    )
    mtl: dict[str, str] = Field(
        default_factory=dict,
        description="Landsat MTL field -> pattern ('KEY' is its first occurrence, 'GROUP.KEY' one group).",
    )
    tags: dict[str, str] = Field(default_factory=dict, description="GDAL dataset tag -> pattern.")
    bands_any: tuple[str, ...] = Field(default=(), description="Evidence: one of these bands/QA is present.")
    bands_none: tuple[str, ...] = Field(
        default=(), description="Veto: none of these bands/QA may be present."
    )
    band_count: tuple[int, ...] = Field(
        default=(), description="Single-file scenes only: the allowed numbers of bands."
    )
    stacks: tuple[tuple[str, ...], ...] = Field(
        default=(),
        description="Band order of a multi-band file without band descriptions, chosen by band count.",
    )

    @field_validator("filenames")
    @classmethod
    def _check_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            compile_pattern(pattern)
        return value

    @field_validator("stac", "mtl", "tags")
    @classmethod
    def _check_mapping(cls, value: dict[str, str]) -> dict[str, str]:
        for key, pattern in value.items():
            if not isinstance(pattern, str):
                raise ValueError(f"{key}: expected a pattern string")
            compile_pattern(pattern)
        return value

    @field_validator("band_count")
    @classmethod
    def _check_counts(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(n < 1 for n in value):
            raise ValueError("band counts must be >= 1")
        return value


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A case-insensitive regular expression; ValueError naming the pattern when it is invalid."""
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as err:
        raise ValueError(f"invalid regular expression {pattern!r}: {err}") from None


def check_rules(products: Mapping[str, Any], known: set[str], band_id: Callable[[str], str | None]) -> None:
    """Validate every product's ``detect`` rules against the sensor's band and QA layer names.

    Args:
        products: Product level -> product (with its ``detect`` mapping).
        known: Upper-case band ids and QA layer names of the sensor.
        band_id: The sensor's canonical band id of a name or alias (None: unknown).

    Raises:
        ValueError: The first problem, as ``products.<level>.detect.<key>: ...``.
    """
    for level, product in products.items():
        where = f"products.{level}.detect"
        try:
            rules = DetectRules.model_validate(product.detect)
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{where}.{loc}: {first['msg']}") from None
        for key in ("bands_any", "bands_none"):
            for name in getattr(rules, key):
                if name.upper() not in known and band_id(name) is None:
                    raise ValueError(f"{where}.{key}: unknown band or QA layer {name!r}")
        for stack in rules.stacks:
            seen: dict[str, str] = {}
            for name in stack:
                bid = band_id(name)
                if bid is None:
                    raise ValueError(f"{where}.stacks: unknown band {name!r}")
                if bid in seen:
                    twice = "" if seen[bid] == name else f" ({seen[bid]!r} and {name!r})"
                    raise ValueError(
                        f"{where}.stacks: {list(stack)} lists band {bid} twice{twice}; one band per position"
                    )
                seen[bid] = name
