"""What a benchmark run produced (shared by the run, its report and its MLflow run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from a2mae.benchmark.arms.base import Arm
from a2mae.benchmark.data import BenchData

#: Results columns, one row per score (issue 19 + 24).
COLUMNS = (
    "arm",
    "protocol",
    "fraction",
    "seed",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "n_test",
    "n_blocks",
)


@dataclass
class BenchmarkResult:
    """What a benchmark run produced."""

    data: BenchData
    arms: list[Arm]
    rows: list[dict[str, Any]]
    diffs: list[dict[str, Any]]
    resolution: dict[str, float]
    out: Path
    files: dict[str, Path] = field(default_factory=dict)
    run_id: str | None = None
    seconds: float = 0.0
    cached: dict[str, bool] = field(default_factory=dict)
