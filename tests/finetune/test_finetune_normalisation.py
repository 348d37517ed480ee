"""The statistics a fine-tuned model normalises with: by default the encoder's own, scratch the data's."""

from __future__ import annotations

from pathlib import Path

import pytest

from a2mae.finetune import engine
from a2mae.finetune.chips import DatasetError
from a2mae.finetune.datasets import open_dataset
from a2mae.finetune.encoder import SCRATCH, EncoderHandle
from a2mae.finetune.normalise import input_norm, normalization_used
from a2mae.normstats import NormStats
from a2mae.testing.models import tiny_encoder

SEG = Path(__file__).resolve().parents[2] / "data" / "samples" / "segmentation"
BANDS = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"]


@pytest.fixture(scope="module")
def train():
    return open_dataset("segmentation", SEG, "train", sensor="S2")


def _handle(stats: dict, source: str = "enc.safetensors") -> EncoderHandle:
    return EncoderHandle(tiny_encoder(), source, NormStats.from_doc(stats))


STATS = {"S2": {b: {"mean": 0.1 + 0.01 * i, "std": 0.02 + 0.001 * i} for i, b in enumerate(BANDS)}}


@pytest.mark.parametrize(
    "mode, stats, source, used",
    [
        ("auto", STATS, "enc.safetensors", "encoder"),
        ("auto", STATS, SCRATCH, "dataset"),
        ("auto", {}, "enc.safetensors", "dataset"),  # an old encoder without statistics
        ("dataset", STATS, "enc.safetensors", "dataset"),
        ("encoder", STATS, SCRATCH, "dataset"),
    ],
)
def test_default_uses_a_pretrained_encoders_own_statistics(
    train, downstream_params, mode, stats, source, used
):
    p = downstream_params(f"finetune.normalization={mode}")
    h = _handle(stats, source)
    assert normalization_used(p.finetune.normalization, h, train.info) == used
    mean, std = input_norm(p.finetune.normalization, h, train.info, train)
    if used == "dataset":
        assert (mean, std) == engine.norm_stats(train)
    else:  # the chips are S2 DNs (reflectance x 10000): the encoder's statistics in those units
        want = NormStats.from_doc(stats).mean_std("S2", BANDS, unit=1e-4)
        assert mean == pytest.approx(list(want[0])) and std == pytest.approx(list(want[1]))


def test_explicit_encoder_statistics_missing_bands_is_one_line(train, downstream_params):
    p = downstream_params("finetune.normalization=encoder")
    h = _handle({"S2": {"B02": {"mean": 0.1, "std": 0.02}}})
    with pytest.raises(
        DatasetError, match=r"no normalisation statistics for S2 bands \['B03'.*normalization=dataset"
    ):
        input_norm(p.finetune.normalization, h, train.info, train)


def test_dns_are_read_with_the_product_scale_closest_to_the_encoders_statistics(train, downstream_params):
    """S2 has products at x 10000 (L1C, L2A) and x 1000 (ARCSI): the chips' means decide."""
    p = downstream_params("finetune.normalization=encoder")
    data_mean, _ = engine.norm_stats(train)
    as_reflectance = {
        "S2": {b: {"mean": m * 1e-4, "std": 0.05} for b, m in zip(BANDS, data_mean, strict=True)}
    }
    mean, _ = input_norm(p.finetune.normalization, _handle(as_reflectance), train.info, train)
    assert mean == pytest.approx(data_mean)  # 1e-4 chosen: the DNs map onto the encoder's means
    tenfold = {"S2": {b: {"mean": m * 1e-3, "std": 0.05} for b, m in zip(BANDS, data_mean, strict=True)}}
    mean, _ = input_norm(p.finetune.normalization, _handle(tenfold), train.info, train)
    assert mean == pytest.approx(data_mean)  # 1e-3 (ARCSI) chosen this time
