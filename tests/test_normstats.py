"""Normalisation statistics: one object, every stored form, every consumer's units."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from a2mae.checkpoint import save_checkpoint
from a2mae.normstats import NormStats, NormStatsError, load_stats, stats_for
from a2mae.testing.models import tiny_encoder

DOC = {
    "version": 2,
    "units": "reflectance",
    "stored": {"dtype": "int16", "scale": 10000, "nodata": -32768},
    "sensors": {
        "S2": {
            "B02": {"count": 10, "mean": 0.12, "std": 0.03, "min": 0.0, "max": 0.5, "computed_on": "train"},
            "B04": {"count": 10, "mean": 0.2, "std": 0.05, "min": 0.0, "max": 0.6, "computed_on": "train"},
        },
        "L8": {"B5": {"count": 3, "mean": 0.3, "std": 0.1, "min": 0.1, "max": 0.4, "computed_on": "all"}},
    },
}
BARE = {"S2": {"B02": {"mean": 0.12, "std": 0.03}, "B04": {"mean": 0.2, "std": 0.05}}}


def test_the_whole_document_and_the_bare_per_sensor_form_read_the_same():
    whole, bare = NormStats.from_doc(DOC), NormStats.from_doc(BARE)
    assert (
        whole.mean_std("S2", ["B04", "B02"])
        == bare.mean_std("S2", ["B04", "B02"])
        == ((0.2, 0.12), (0.05, 0.03))
    )
    assert whole.to_doc() == DOC  # the written document round-trips exactly (tile writes it)
    assert NormStats.from_doc(whole.to_doc()) == whole
    assert not NormStats.from_doc({}) and not NormStats.from_doc(None) and whole


def test_units_and_offset_convert_to_pixel_units():
    s = NormStats.from_doc(DOC)
    mean, std = s.mean_std("S2", ["B02"], unit=1e-4)
    assert mean == pytest.approx((1200.0,)) and std == pytest.approx((300.0,))
    mean, std = s.mean_std("S2", ["B02"], unit=2e-4, offset=-0.1)  # reflectance = 2e-4 x DN - 0.1
    assert mean == pytest.approx(((0.12 + 0.1) / 2e-4,)) and std == pytest.approx((150.0,))


@settings(max_examples=40, deadline=None)
@given(
    mean=st.floats(-1, 2, allow_nan=False),
    std=st.floats(1e-4, 1, allow_nan=False),
    unit=st.sampled_from([1.0, 1e-4, 1e-3, 2.75e-5, 1 / 255]),
    offset=st.sampled_from([0.0, -0.1, -0.2]),
)
def test_pixel_statistics_map_back_to_the_reflectance_statistics(mean, std, unit, offset):
    s = NormStats.from_doc({"X": {"b": {"mean": mean, "std": std}}})
    (m,), (sd,) = s.mean_std("X", ["b"], unit=unit, offset=offset)
    assert m * unit + offset == pytest.approx(mean, abs=1e-9) and sd * unit == pytest.approx(std)


def test_missing_bands_are_named_with_the_sensors_it_has():
    s = NormStats.from_doc(DOC)
    assert s.missing("S2", ["B02", "B08"]) == ["B08"] and s.known_bands("S2", ["B08", "B04"]) == ("B04",)
    with pytest.raises(NormStatsError, match=r"no normalisation statistics for S2 bands \['B08'\].*L8, S2"):
        s.mean_std("S2", ["B02", "B08"])
    with pytest.raises(NormStatsError, match=r"GF1 bands"):
        s.mean_std("GF1", ["B1"])


@pytest.mark.parametrize(
    "doc, match",
    [
        ({"S2": {"B02": {"mean": "x", "std": 1}}}, "no numeric mean"),
        ({"S2": {"B02": {"mean": 0.1, "std": -1}}}, "unusable"),
        ({"S2": ["B02"]}, "must map band ids"),
        ({**DOC, "version": 9}, "newer than this a2mae reads"),
    ],
)
def test_bad_documents_are_one_line_errors(doc, match):
    with pytest.raises(NormStatsError, match=match):
        NormStats.from_doc(doc, "x.json")


@pytest.mark.parametrize("stored", [DOC, BARE, NormStats.from_doc(DOC)])
def test_stats_for_reads_checkpoints_of_every_stored_form(tmp_path, stored):
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "enc", tiny_encoder(), norm_stats=stored)
    mean, std = stats_for(ckpt, "S2", ["B02", "B04"], unit=1e-4)
    assert mean == pytest.approx((1200.0, 2000.0)) and std == pytest.approx((300.0, 500.0))
    assert load_stats(ckpt) == NormStats.from_doc(stored)


def test_stats_for_reads_a_snapshot_folder_and_metadata(tmp_path):
    (tmp_path / "stats.json").write_text(json.dumps(DOC))
    assert stats_for(tmp_path, "L8", ["B5"]) == ((0.3,), (0.1,))
    assert stats_for({"norm_stats": BARE}, "S2", ["B02"]) == ((0.12,), (0.03,))
    (tmp_path / "bad" / "stats.json").parent.mkdir()
    (tmp_path / "bad" / "stats.json").write_text("{")
    with pytest.raises(NormStatsError, match="unreadable statistics"):
        load_stats(tmp_path / "bad")
