"""Outputs of a benchmark: ``benchmark.md``, ``results.parquet``, ``differences.parquet`` and the figure.

``benchmark.md``: one row per arm x protocol x fraction, one column per metric, each cell
``mean ± std [low, high]`` over the seeds, where ``[low, high]`` is the 95 % bootstrap interval (the wider
of the per-sample and the spatial-block bootstrap) averaged over the seeds. Below it, the paired
intervals of each encoder minus each baseline (first seed) and the line "at this size, differences
below X are not resolvable"; "better" appears only where a paired interval excludes 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from a2mae.benchmark.metrics import primary_metric
from a2mae.benchmark.result import COLUMNS
from a2mae.benchmark.stats import mean_std
from a2mae.config import BenchmarkConfig
from a2mae.io.atomic import atomic_path

if TYPE_CHECKING:
    import pandas as pd

    from a2mae.benchmark.result import BenchmarkResult


def _frame(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame([{c: r[c] for c in columns} for r in rows], columns=list(columns))


def summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per arm, protocol, fraction and metric: mean, std over seeds, mean interval, n_test, n_blocks."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["arm"], r["protocol"], r["fraction"], r["metric"]), []).append(r)
    out = []
    for (arm, proto, frac, metric), rs in groups.items():
        m, s = mean_std([r["value"] for r in rs])
        out.append(
            {
                "arm": arm,
                "protocol": proto,
                "fraction": frac,
                "metric": metric,
                "mean": m,
                "std": s,
                "ci_low": float(np.nanmean([r["ci_low"] for r in rs])),
                "ci_high": float(np.nanmean([r["ci_high"] for r in rs])),
                "n_test": rs[0]["n_test"],
                "n_blocks": rs[0]["n_blocks"],
                "seeds": len(rs),
                "method": rs[0].get("method", ""),
            }
        )
    return out


def _table(summ: list[dict[str, Any]], metrics: list[str]) -> list[str]:
    lines = [
        "| arm | protocol | fraction | " + " | ".join(metrics) + " | n_test | n_blocks |",
        "|" + "---|" * (len(metrics) + 5),
    ]
    keys = list(dict.fromkeys((s["arm"], s["protocol"], s["fraction"]) for s in summ))
    for arm, proto, frac in keys:
        cells = []
        for m in metrics:
            s = next(
                (
                    x
                    for x in summ
                    if (x["arm"], x["protocol"], x["fraction"], x["metric"]) == (arm, proto, frac, m)
                ),
                None,
            )
            cells.append(
                ""
                if s is None
                else f"{s['mean']:.3f} ± {s['std']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"
            )
        first = next(x for x in summ if (x["arm"], x["protocol"], x["fraction"]) == (arm, proto, frac))
        lines.append(
            f"| {arm} | {proto} | {frac:g} | "
            + " | ".join(cells)
            + f" | {first['n_test']} | {first['n_blocks']} |"
        )
    return lines


def _diff_lines(res: BenchmarkResult, metrics: list[str]) -> list[str]:
    if not res.diffs:
        return ["No baseline to compare with."]
    lines = [
        "| encoder − baseline | protocol | fraction | metric | difference [95 % paired interval] | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for d in res.diffs:
        if d["metric"] not in metrics:
            continue
        verdict = ("better" if d["low"] > 0 else "worse") if d["resolved"] else "not resolved"
        lines.append(
            f"| {d['arm']} − {d['baseline']} | {d['protocol']} | {d['fraction']:g} | {d['metric']} | "
            f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] | {verdict} |"
        )
    return lines


def markdown(res: BenchmarkResult, cfg: BenchmarkConfig) -> str:
    """The text of ``benchmark.md``."""
    data = res.data
    summ = summary(res.rows)
    metrics = list(dict.fromkeys(s["metric"] for s in summ))
    prim = primary_metric(data.kind)
    res_line = "; ".join(f"{res.resolution[m]:.3f} ({m})" for m in metrics if m in res.resolution)
    head = [
        f"# Benchmark: {data.root.name} ({data.layout}, {data.kind})",
        "",
        f"{len(data.chips)} chips of {data.size[0]}x{data.size[1]} px, {data.sensor} "
        f"{', '.join(data.bands)}; "
        f"classes {', '.join(data.classes)}; data hash `{data.data_hash()}`. Seeds: {cfg.seeds}; "
        f"dense labels: {cfg.dense_labels if data.dense else 'n/a'}; spatial blocks of {cfg.block_m:g} m; "
        f"primary metric {prim}.",
        "",
        "Cells: mean ± std over seeds [95 % bootstrap interval, the wider of per-sample and block "
        "bootstrap, averaged over seeds].",
        "",
    ]
    lines = head + _table(summ, metrics)
    if res_line:
        lines += ["", f"At this size, differences below {res_line} are not resolvable."]
    lines += ["", "## Encoder minus baselines (paired bootstrap, seed 0)", "", *_diff_lines(res, metrics)]
    lines += [
        "",
        "## Arms",
        "",
        *[f"- **{a.name}**: " + ", ".join(f"{k} `{v}`" for k, v in a.lineage.items()) for a in res.arms],
    ]
    return "\n".join(lines) + "\n"


def figure(res: BenchmarkResult, path: Path) -> None:
    """Primary metric against label fraction, one line per arm, intervals shaded; one panel per protocol."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prim = primary_metric(res.data.kind)
    summ = [s for s in summary(res.rows) if s["metric"] == prim]
    protos = list(dict.fromkeys(s["protocol"] for s in summ))
    fig, axes = plt.subplots(1, max(len(protos), 1), figsize=(4 * max(len(protos), 1), 3.2), squeeze=False)
    for ax, proto in zip(axes[0], protos, strict=False):
        for arm in dict.fromkeys(s["arm"] for s in summ):
            pts = sorted(
                (s["fraction"], s["mean"], s["ci_low"], s["ci_high"])
                for s in summ
                if s["arm"] == arm and s["protocol"] == proto
            )
            if not pts:
                continue
            f, m, lo, hi = (np.array(v) for v in zip(*pts, strict=True))
            ax.plot(f, m, marker="o", label=arm)
            ax.fill_between(f, lo, hi, alpha=0.2)
        ax.set_xscale("log")
        ax.set_title(proto)
        ax.set_xlabel("label fraction")
        ax.set_ylabel(prim)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_outputs(res: BenchmarkResult, cfg: BenchmarkConfig) -> None:
    """Write every output into ``res.out`` (each file atomically) and record the paths in ``res.files``."""
    res.out.mkdir(parents=True, exist_ok=True)
    files = {
        "report": res.out / "benchmark.md",
        "results": res.out / "results.parquet",
        "differences": res.out / "differences.parquet",
        "figure": res.out / "score_vs_fraction.png",
    }
    with atomic_path(files["report"]) as tmp:
        tmp.write_text(markdown(res, cfg))
    with atomic_path(files["results"]) as tmp:
        _frame(res.rows, COLUMNS).to_parquet(tmp, index=False)
    dcols = (
        "arm",
        "baseline",
        "protocol",
        "fraction",
        "metric",
        "mean",
        "low",
        "high",
        "resolved",
        "n_test",
        "n_blocks",
    )
    with atomic_path(files["differences"]) as tmp:
        _frame(res.diffs, dcols).to_parquet(tmp, index=False)
    figure(res, files["figure"])
    res.files = files
