"""Moved to :mod:`a2mae.tasks.metrics` (the tasks pick their metrics); kept for existing imports."""

from __future__ import annotations

from a2mae.tasks.metrics import (
    METRIC_NAMES,
    TaskMetrics,
    confusion_png,
    label_confusion_png,
    pr_curves_png,
)

__all__ = ["METRIC_NAMES", "TaskMetrics", "confusion_png", "label_confusion_png", "pr_curves_png"]
