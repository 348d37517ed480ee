"""Growth / non-growth period rule (hemisphere_months), property-tested."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a2mae.config import load_params
from a2mae.ingest.period import growth_period, southern_month

GROWTH = (4, 5, 6, 7, 8, 9)
TROPICS = 23.44

months = st.integers(1, 12)
lats = st.floats(-90, 90, allow_nan=False)
days = st.integers(1, 28)


def _dt(month: int, day: int = 15) -> datetime:
    return datetime(2021, month, day, 10, 30, tzinfo=UTC)


def test_defaults_come_from_params_yaml():
    cfg = load_params().data.growth_period
    assert cfg.rule == "hemisphere_months"
    assert tuple(cfg.growth_months) == GROWTH
    assert cfg.tropics_lat == pytest.approx(TROPICS)


@pytest.mark.parametrize(
    ("month", "lat", "expected"),
    [
        (7, 45.0, "g"),  # northern summer
        (1, 45.0, "ng"),  # northern winter
        (1, -35.0, "g"),  # southern summer (January ~ July)
        (7, -35.0, "ng"),  # southern winter
        (7, 10.0, "na"),  # tropics
        (7, -23.0, "na"),
        (4, 23.44, "g"),  # exactly on the tropic counts as outside
        (3, 60.0, "ng"),
        (10, -60.0, "g"),  # October in the south ~ April
    ],
)
def test_examples(month, lat, expected):
    assert growth_period(_dt(month), lat, GROWTH, TROPICS) == expected


def test_unknown_date_is_na():
    assert growth_period(None, 45.0, GROWTH, TROPICS) == "na"


@settings(max_examples=200, deadline=None)
@given(month=months, day=days, lat=lats)
def test_label_is_one_of_three_and_tropics_are_na(month, day, lat):
    label = growth_period(_dt(month, day), lat, GROWTH, TROPICS)
    assert label in ("g", "ng", "na")
    assert (label == "na") == (abs(lat) < TROPICS)


@settings(max_examples=200, deadline=None)
@given(month=months, lat=st.floats(TROPICS, 90, allow_nan=False))
def test_hemispheres_are_six_months_apart(month, lat):
    north = growth_period(_dt(month), lat, GROWTH, TROPICS)
    south = growth_period(_dt(southern_month(month)), -lat, GROWTH, TROPICS)
    assert north == south
    # and opposite seasons in the same month when the growth months are half the year
    assert {
        growth_period(_dt(month), lat, GROWTH, TROPICS),
        growth_period(_dt(month), -lat, GROWTH, TROPICS),
    } == {
        "g",
        "ng",
    }


@settings(max_examples=100, deadline=None)
@given(month=months, growth=st.sets(months), lat=st.floats(TROPICS, 90, allow_nan=False))
def test_northern_rule_is_membership(month, growth, lat):
    assert (growth_period(_dt(month), lat, growth, TROPICS) == "g") == (month in growth)


@given(month=months)
def test_southern_shift_is_an_involution(month):
    assert 1 <= southern_month(month) <= 12
    assert southern_month(southern_month(month)) == month
    assert southern_month(month) != month
