"""The report of ``make evidence`` (``docs/evidence.md``): tables, budget, CPU time and a plain reading.

Everything in it is computed from the benchmark results of one run (:mod:`flows.evidence`): the rows
``arm, protocol, fraction, seed, metric, value, ci_low, ci_high`` of ``a2mae benchmark`` and its paired
differences (encoder minus each baseline). Nothing is typed by hand; the reading's verdicts follow the
rule of ``EVALUATION.md``: "A beats B" only where the paired 95 % interval excludes 0, otherwise "no
difference measurable at this size".
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from a2mae.io.atomic import atomic_path

#: The metric each kind of task is read by (issue 19; ``a2mae.benchmark.metrics.primary_metric``).
PRIMARY = {
    "single-label": "accuracy",
    "multi-label": "micro_map",
    "segmentation": "miou",
    "change": "f1_changed",
}
#: Baseline names as the reading calls them.
BASELINE_WORDS = {"scratch": "random init", "mae": "the plain MAE", "rcf": "RCF"}


def primary_of(kind: str) -> str:
    """The primary metric of a task kind (``accuracy`` when unknown)."""
    return PRIMARY.get(kind, "accuracy")


def summarise(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per arm, protocol, fraction and metric: mean and std over seeds and the mean per-seed interval."""
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["arm"], r["protocol"], r["fraction"], r["metric"]), []).append(r)
    out = []
    for (arm, proto, frac, metric), rs in groups.items():
        vals = [float(r["value"]) for r in rs]
        out.append(
            {
                "arm": arm,
                "protocol": proto,
                "fraction": frac,
                "metric": metric,
                "mean": statistics.fmean(vals),
                "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                "ci_low": statistics.fmean(float(r["ci_low"]) for r in rs),
                "ci_high": statistics.fmean(float(r["ci_high"]) for r in rs),
                "n_test": rs[0].get("n_test"),
                "seeds": len(rs),
            }
        )
    return out


def table(summary: Sequence[Mapping[str, Any]], metric: str) -> list[str]:
    """Markdown rows: arm x protocol, ``mean ± std [interval]`` of ``metric``."""
    protos = list(dict.fromkeys(s["protocol"] for s in summary if s["metric"] == metric))
    arms = list(dict.fromkeys(s["arm"] for s in summary if s["metric"] == metric))
    lines = [f"| arm | {' | '.join(protos)} |", "|---|" + "---|" * len(protos)]
    for arm in arms:
        cells = []
        for p in protos:
            s = next((x for x in summary if (x["arm"], x["protocol"], x["metric"]) == (arm, p, metric)), None)
            cells.append(
                ""
                if s is None
                else f"{s['mean']:.3f} ± {s['std']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"
            )
        lines.append(f"| {arm} | {' | '.join(cells)} |")
    return lines


def verdicts(diffs: Sequence[Mapping[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Encoder minus each baseline on ``metric``: ``better``, ``worse`` or ``not resolved`` per protocol."""
    out = []
    for d in diffs:
        if d["metric"] != metric:
            continue
        word = ("better" if d["low"] > 0 else "worse") if d["low"] > 0 or d["high"] < 0 else "not resolved"
        out.append({**d, "verdict": word})
    return out


def _baseline_word(name: str) -> str:
    return next((w for k, w in BASELINE_WORDS.items() if name == k or name.startswith(k + "-")), name)


def reading(results: Mapping[str, Any]) -> list[str]:
    """The plain reading: per baseline, on which sets and probes the encoder beats it, loses, or ties."""
    by_base: dict[str, dict[str, list[str]]] = {}
    for name, res in results.items():
        metric = primary_of(res.data.kind)
        for v in verdicts(res.diffs, metric):
            words = by_base.setdefault(v["baseline"], {"better": [], "worse": [], "not resolved": []})
            words[v["verdict"]].append(
                f"{name} ({v['protocol']}, {v['mean']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}])"
            )
    lines = []
    for base, words in by_base.items():
        who = f"**{_baseline_word(base)}** (`{base}`)"
        parts = []
        if words["better"]:
            parts.append("A²-MAE is better on " + "; ".join(words["better"]))
        if words["worse"]:
            parts.append("it is worse on " + "; ".join(words["worse"]))
        if words["not resolved"]:
            parts.append("no difference is measurable at this size on " + "; ".join(words["not resolved"]))
        lines.append(f"- Against {who}: " + ("; ".join(parts) if parts else "no comparison ran") + ".")
    return lines


def _family(protocol: str) -> str:
    """``knn5`` and ``knn20`` are both kNN; other protocols are themselves."""
    return "knn" if protocol.startswith("knn") else protocol


def goal_line(results: Mapping[str, Any]) -> str:
    """Whether the goal of issue 20 is met: the encoder beats random init on kNN and linear on >= 2 sets."""
    wins = []
    for name, res in results.items():
        v = verdicts(res.diffs, primary_of(res.data.kind))
        ok = {_family(x["protocol"]) for x in v if x["baseline"] == "scratch" and x["verdict"] == "better"}
        if {"knn", "linear"} <= ok:
            wins.append(name)
    met = "met" if len(wins) >= 2 else "not met"
    sets = ", ".join(wins) or "none"
    return (
        f"Goal (A²-MAE beats random init on kNN and on the linear probe on at least two real sets, "
        f"intervals not overlapping): **{met}** (sets where it does: {sets})."
    )


def write_report(
    report: Path, figure_path: Path, budget: Any, results: Mapping[str, Any], info: Mapping[str, Any]
) -> None:
    """Write the evidence report (markdown) and its figure, atomically."""
    lines = _head(budget, info)
    for name, res in results.items():
        metric = primary_of(res.data.kind)
        summ = summarise(res.rows)
        d = res.data
        lines += [
            "",
            f"### {name}: {d.kind}, {metric}",
            "",
            f"`{d.root}` ({d.layout}): {len(d.chips)} chips, {d.sensor} {', '.join(d.bands)}, classes "
            f"{', '.join(d.classes)}. Cells: mean ± std over {budget.seeds} seeds [95 % bootstrap interval].",
            "",
            *table(summ, metric),
        ]
    lines += ["", "## Reading", "", goal_line(results), "", *reading(results), "", *_outlook()]
    if figure_path is not None:
        figure(results, figure_path)
        lines += ["", f"![scores per arm]({figure_path.name})"]
    with atomic_path(report) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def _head(budget: Any, info: Mapping[str, Any]) -> list[str]:
    pipe = info.get("pipeline") or {}
    tile = pipe.get("tile") or {}
    snap = pipe.get("snapshot") or {}
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        "# Evidence: what pre-training on real multi-date sets buys",
        "",
        f"Written by `{info['command']}` on {when} (git commit `{info['git_commit']}`); "
        "do not edit: run it again. Protocols and statistics: `a2mae benchmark` (docs/benchmark.md).",
        "",
        "| | |",
        "|---|---|",
        f"| command | `{info['command']}` |",
        f"| machine | {info['cores']} CPU cores |",
        f"| encoder | `{info['encoder']}` (registered by the pipeline's pre-training) |",
        f"| pre-training budget | {budget.steps} steps, A²-MAE and the plain MAE alike |",
        f"| snapshot | DVC `{snap.get('md5')}`, {tile.get('sets', '?')} image sets |",
        f"| pipeline (ingest, tile, DVC, Ray pre-training, MLflow) | {info['pretrain_seconds']:.0f} s wall, "
        f"{info['pretrain_cpu_seconds']:.0f} s CPU |",
        f"| whole run | {info['seconds']:.0f} s wall, {info['cpu_seconds']:.0f} s CPU |",
        f"| arms | encoder, {', '.join(budget.baselines)}; protocols {', '.join(budget.protocols)}; "
        f"{budget.seeds} seeds |",
        "",
        "## Results",
    ]


def _outlook() -> list[str]:
    return [
        "What would change with more data or a GPU: these sets are small (tens of chips, a few thousand",
        "labelled pixels), so intervals are wide and small differences cannot be resolved; and the",
        "pre-training budget above is a few minutes of two CPU cores on a corpus of a few hundred sets.",
        "`params/gpu.yaml` and `benchmarks/gpu_evidence.sh` run the same evidence with the base variant,",
        "bf16 and a far larger budget on one GPU; its figures go here once it has run (not yet).",
    ]


def figure(results: Mapping[str, Any], path: Path) -> None:
    """One panel per set: the primary metric per arm and protocol, mean over seeds with the interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(4.2 * max(len(names), 1), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        res = results[name]
        metric = primary_of(res.data.kind)
        summ = [s for s in summarise(res.rows) if s["metric"] == metric]
        protos = list(dict.fromkeys(s["protocol"] for s in summ))
        arms = list(dict.fromkeys(s["arm"] for s in summ))
        width = 0.8 / max(len(protos), 1)
        for j, p in enumerate(protos):
            xs, ys, lo, hi = [], [], [], []
            for i, a in enumerate(arms):
                s = next((x for x in summ if (x["arm"], x["protocol"]) == (a, p)), None)
                if s is not None:
                    xs.append(i + j * width)
                    ys.append(s["mean"])
                    lo.append(s["mean"] - s["ci_low"])
                    hi.append(s["ci_high"] - s["mean"])
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=p)
        ax.set_xticks(
            [i + width * (len(protos) - 1) / 2 for i in range(len(arms))], arms, rotation=30, fontsize=7
        )
        ax.set_title(f"{name} ({metric})", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
