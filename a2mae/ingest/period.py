"""Growth ("g") / non-growth ("ng") period of a scene: the ``hemisphere_months`` rule (pure).

Rule (``params.data.growth_period``, documented in ``docs/ingest.md``):

* no acquisition date, or ``|lat| < tropics_lat``: ``"na"`` (no marked growing season);
* northern hemisphere (lat >= 0): ``"g"`` when the month is in ``growth_months``, else ``"ng"``;
* southern hemisphere: the same with the month shifted by six (January counts as July).

``lat`` is the latitude of the scene centre.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Literal

Period = Literal["g", "ng", "na"]


def southern_month(month: int) -> int:
    """The northern-hemisphere month equivalent to ``month`` in the south (shifted by 6, 1..12)."""
    return (month + 5) % 12 + 1


def growth_period(
    when: datetime | None,
    lat: float,
    growth_months: Collection[int],
    tropics_lat: float,
) -> Period:
    """Label a scene's period.

    Args:
        when: Acquisition time (None when unknown).
        lat: Latitude of the scene centre, degrees.
        growth_months: Growth-season months (1..12) in the northern hemisphere.
        tropics_lat: Scenes with ``|lat|`` below this get ``"na"``.

    Returns:
        ``"g"``, ``"ng"`` or ``"na"``.
    """
    if when is None or abs(lat) < tropics_lat:
        return "na"
    month = when.month if lat >= 0 else southern_month(when.month)
    return "g" if month in growth_months else "ng"
