"""Markdown reports: pre-trained vs scratch (``--compare-scratch``) and the pre-training ablation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from a2mae.finetune.metrics import METRIC_NAMES


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _delta(a: float | None, b: float | None) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return "n/a"
    return f"{a - b:+.4f}"


def comparison_markdown(outcomes: Sequence[Any], context: dict[str, Any]) -> str:
    """Pre-trained vs scratch, side by side, per protocol and metric.

    Args:
        outcomes: :class:`~a2mae.finetune.run.FinetuneOutcome` of every arm.
        context: Shown above the table: task, data, split, split hash, encoder, budget, seed, ...

    Returns:
        The report.
    """
    kind = outcomes[0].kind
    names = METRIC_NAMES[kind]
    by = {(o.protocol, o.pretrained): o for o in outcomes}
    protocols = list(dict.fromkeys(o.protocol for o in outcomes))
    lines = [
        f"# Pre-trained vs scratch: {context.get('task', outcomes[0].task)}",
        "",
        "Same task, data, budget and seed; only the encoder's initial weights differ. Scores on the "
        f"frozen `{context.get('split', outcomes[0].split)}` split (primary metric: `{outcomes[0].metric}`).",
        "",
        "| protocol | metric | pre-trained | scratch | difference |",
        "|---|---|---|---|---|",
    ]
    for p in protocols:
        pre, scr = by.get((p, True)), by.get((p, False))
        for n in names:
            a = pre.metrics.get(n) if pre else None
            b = scr.metrics.get(n) if scr else None
            label = f"**{n}**" if n == outcomes[0].metric else n
            lines.append(f"| {p} | {label} | {_fmt(a)} | {_fmt(b)} | {_delta(a, b)} |")
    lines += ["", "| arm | steps | final train loss | seconds | MLflow run |", "|---|---|---|---|---|"]
    for o in outcomes:
        arm = f"{o.protocol} / {'pre-trained' if o.pretrained else 'scratch'}"
        lines.append(f"| {arm} | {o.steps} | {_fmt(o.final_loss)} | {o.seconds:.1f} | {o.run_id or '-'} |")
    lines += ["", "## Setup", ""]
    lines += [f"- **{k}**: {v}" for k, v in context.items()]
    return "\n".join(lines) + "\n"


def ablation_markdown(rows: Sequence[dict[str, Any]], context: dict[str, Any]) -> str:
    """The ablation table: one row per pre-training variant, one column per protocol.

    Args:
        rows: ``{"variant", "masking", "geo_encoding", "pretrain_loss", "<protocol>": score, ...}``.
        context: Shown below the table.

    Returns:
        The report.
    """
    protocols = context.get("protocols", [])
    metric = context.get("metric", "score")
    head = ["variant", "masking", "geo encoding", "pre-train loss", *[f"{p} {metric}" for p in protocols]]
    lines = [
        f"# Pre-training ablation: {context.get('task', '')}",
        "",
        "Each variant is pre-trained with the same budget and seed, then fine-tuned identically.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        cells = [
            r["variant"],
            r["masking"],
            "on" if r["geo_encoding"] else "off",
            _fmt(r.get("pretrain_loss")),
        ]
        cells += [_fmt(r.get(p)) for p in protocols]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "## Setup", ""]
    lines += [f"- **{k}**: {v}" for k, v in context.items() if k != "protocols"]
    return "\n".join(lines) + "\n"
