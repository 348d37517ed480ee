"""The report of ``make evidence``: every number comes from the results it is given."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from a2mae.evidence import goal_line, reading, summarise, verdicts, write_report


def _rows(arm: str, values: list[float], proto: str = "knn", metric: str = "miou") -> list[dict]:
    return [
        {"arm": arm, "protocol": proto, "fraction": 1.0, "seed": s, "metric": metric, "value": v,
         "ci_low": v - 0.05, "ci_high": v + 0.05, "n_test": 100}
        for s, v in enumerate(values)
    ]  # fmt: skip


def _diff(base: str, proto: str, mean: float, low: float, high: float, metric: str = "miou") -> dict:
    return {"arm": "encoder", "baseline": base, "protocol": proto, "fraction": 1.0, "metric": metric,
            "mean": mean, "low": low, "high": high}  # fmt: skip


def _result(kind: str, rows: list[dict], diffs: list[dict]) -> SimpleNamespace:
    data = SimpleNamespace(kind=kind, root=Path("data/x"), layout="finetune", chips=[0] * 45, sensor="S2",
                           bands=("B02", "B03"), classes=("a", "b"))  # fmt: skip
    return SimpleNamespace(data=data, rows=rows, diffs=diffs)


def test_summary_is_mean_and_sample_std_over_seeds():
    (s,) = summarise(_rows("encoder", [0.5, 0.6, 0.7]))
    assert s["mean"] == pytest.approx(0.6) and s["std"] == pytest.approx(0.1) and s["seeds"] == 3
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((0.55, 0.65))


def test_verdicts_follow_the_paired_interval():
    diffs = [
        _diff("scratch", "knn", 0.1, 0.02, 0.2),
        _diff("rcf", "knn", -0.1, -0.2, -0.01),
        _diff("mae", "knn", 0.01, -0.03, 0.05),
        _diff("mae", "knn", 0.3, 0.1, 0.5, metric="accuracy"),
    ]
    got = [(v["baseline"], v["verdict"]) for v in verdicts(diffs, "miou")]
    assert got == [("scratch", "better"), ("rcf", "worse"), ("mae", "not resolved")]


def test_goal_needs_knn_and_linear_wins_over_random_init_on_two_sets():
    win = [_diff("scratch", "knn20", 0.1, 0.05, 0.15), _diff("scratch", "linear", 0.1, 0.01, 0.2)]
    half = [_diff("scratch", "knn", 0.1, 0.05, 0.15), _diff("scratch", "linear", 0.1, -0.01, 0.2)]
    one = {"a": _result("segmentation", [], win), "b": _result("segmentation", [], half)}
    assert "**not met** (sets where it does: a)" in goal_line(one)
    two = {
        "a": _result("segmentation", [], win),
        "c": _result("change", [], [{**d, "metric": "f1_changed"} for d in win]),
    }
    assert "**met** (sets where it does: a, c)" in goal_line(two)


def test_report_holds_the_table_budget_reading_and_figure(tmp_path):
    rows = (
        _rows("encoder", [0.61, 0.63])
        + _rows("scratch", [0.41, 0.45])
        + _rows("encoder", [0.7, 0.72], "linear")
    )
    res = {"landcover": _result("segmentation", rows, [_diff("scratch", "knn", 0.19, 0.1, 0.3)])}
    budget = SimpleNamespace(
        steps=300, seeds=2, baselines=["scratch", "rcf", "mae"], protocols=["knn", "linear"]
    )
    info = {
        "command": "make evidence",
        "git_commit": "abc123",
        "encoder": "models:/a2mae-encoder/1",
        "cores": 2,
        "pipeline": {"tile": {"sets": 700}, "snapshot": {"md5": "d41d8"}},
        "pretrain_seconds": 600.0,
        "pretrain_cpu_seconds": 1100.0,
        "seconds": 1500.0,
        "cpu_seconds": 2900.0,
    }
    write_report(tmp_path / "evidence.md", tmp_path / "evidence.png", budget, res, info)
    text = (tmp_path / "evidence.md").read_text()
    assert "| encoder | 0.620 ± 0.014 [0.570, 0.670] | 0.710 ± 0.014 [0.660, 0.760] |" in text
    assert "| scratch | 0.430 ± 0.028 [0.380, 0.480] |  |" in text
    assert "300 steps" in text and "`abc123`" in text and "2900 s CPU" in text and "1100 s CPU" in text
    assert "A²-MAE is better on landcover (knn, +0.190 [+0.100, +0.300])" in text
    assert (tmp_path / "evidence.png").read_bytes()[
        :4
    ] == b"\x89PNG" and "![scores per arm](evidence.png)" in text
    assert reading(res)[0].startswith("- Against **random init** (`scratch`)")
