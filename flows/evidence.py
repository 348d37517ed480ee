"""``make evidence``: the evidence of what pre-training buys, produced by the product itself.

``python -m flows.evidence [--quick] [--out evidence-output] [--params FILE] [--set section.key=value]``

1. **Pre-training through the pipeline**: a git + DVC workspace under ``<out>/workspace`` holding the
   corpus (``evidence.corpus``: the bundled real scenes and the OSCD pairs), then the ``retrain`` Prefect
   flow against Prefect's ephemeral API: ingest, tile, a DVC snapshot, pre-training on Ray with MLflow
   (``evidence.pretrain_steps`` steps), a short fine-tuning and evaluation.
2. **The benchmark** (:func:`a2mae.benchmark.run.run_benchmark`, as ``a2mae benchmark``) of the registered
   encoder on every real labelled set (``evidence.sets``), with the arms encoder, scratch (same
   architecture at random init), RCF (torchgeo, Gaussian and data-drawn filters) and the plain MAE
   pre-trained on the same snapshot with the same budget; kNN and linear probes; ``evidence.seeds`` seeds.
3. **The report**: ``evidence.report`` (``docs/evidence.md``) with the table, the command, the git
   commit, the budget, the CPU time and a plain reading generated from the intervals; the figure beside
   it. ``--quick`` (``make evidence QUICK=1``) runs the same with ``evidence.quick_*`` and writes its
   report into ``<out>`` only.

No number in the report is typed by hand: every one comes from this run's results.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from a2mae import console, logs

REPO = Path(__file__).resolve().parents[1]
#: ``benchmark.normalization`` of every evidence benchmark (``--set`` may change it).
NORMALIZATION = "dataset"


@dataclass
class Budget:
    """What one evidence run does."""

    quick: bool
    params_file: str | None
    steps: int
    seeds: int
    sets: dict[str, str]
    baselines: list[str]
    protocols: list[str]
    overrides: list[str] = field(default_factory=list)
    set_overrides: dict[str, list[str]] = field(default_factory=dict)


def budget_of(params: Any, quick: bool, overrides: list[str], params_file: str | None = None) -> Budget:
    """The run's budget from the ``evidence`` section (``quick``: its ``quick_*`` keys)."""
    ev = params.evidence
    sets = {k: v for k, v in ev.sets.items() if not quick or k in ev.quick_sets}
    steps = ev.quick_steps if quick else ev.pretrain_steps
    seeds = ev.quick_seeds if quick else ev.seeds
    return Budget(
        quick,
        params_file,
        steps,
        seeds,
        sets,
        list(ev.baselines),
        list(ev.protocols),
        overrides,
        {k: list(v) for k, v in ev.set_overrides.items()},
    )


def pipeline_overrides(b: Budget) -> list[str]:
    """Settings of the pipeline run: the pre-training budget, a minimal fine-tuning, no figures."""
    return [
        f"pretrain.max_steps={b.steps}",
        "pretrain.num_workers=1",
        "pretrain.ray_dashboard=false",
        "pretrain.log_images_every_steps=0",
        "finetune.max_steps=5",
        *b.overrides,
    ]


def pretrain_through_pipeline(out: Path, params: Any, b: Budget) -> dict[str, Any]:
    """Run the ``retrain`` flow on the corpus (ingest, tile, DVC, Ray pre-training, MLflow); its result."""
    from flows.demo import make_workspace, run_environment

    run_environment(out)  # before Prefect is imported: it reads its settings (startup timeout) on import
    from flows.params import RetrainIngest, RetrainParams, RetrainVersion
    from flows.retrain import retrain

    ws = make_workspace(out / "workspace", list(params.evidence.corpus), who="evidence")
    rp = RetrainParams(
        project_dir=str(ws),
        ingest=RetrainIngest(sources=list(params.evidence.corpus)),
        version=RetrainVersion(dvc_remote="local", git_commit=True),
        overrides=pipeline_overrides(b),
        force=True,
    )
    return dict(retrain(rp))


def benchmark_all(out: Path, params: Any, b: Budget, encoder: str, snapshot: Path) -> dict[str, Any]:
    """``a2mae benchmark`` of ``encoder`` on every set of the budget; ``{set name: BenchmarkResult}``."""
    import importlib

    # imported by name: the harness (issue 19) lands separately; require_harness() checked it is here
    run_benchmark = importlib.import_module("a2mae.benchmark.run").run_benchmark
    BenchmarkStage = importlib.import_module("a2mae.benchmark.stage").BenchmarkStage

    from a2mae.config import load_params
    from a2mae.finetune.stage import FinetuneStage
    from a2mae.pretrain.run import PretrainStage

    results: dict[str, Any] = {}
    for name, folder in b.sets.items():
        bp = load_params(
            b.params_file,
            [
                # every arm reads a set with the set's per-band statistics: the pre-training snapshot keeps
                # 10 of S2's 13 bands (no B01, B09, B10), so the encoder has no statistics of its own for
                # the 13-band sets; one normalisation for all arms keeps the comparison paired
                f"benchmark.normalization={NORMALIZATION}",
                *b.set_overrides.get(name, []),
                *b.overrides,
                f"benchmark.baselines={b.baselines}",
                f"benchmark.protocols={b.protocols}",
                f"benchmark.seeds={b.seeds}",
                f"benchmark.mae_steps={b.steps}",
                f"benchmark.mae_snapshot={snapshot}",
                f"benchmark.cache={out / 'cache'}",
                # the plain MAE's checkpoints in this run's folder: under the default (runs/ray, relative
                # to the working directory) a checkpoint of an earlier run with the same settings is
                # reused, whatever snapshot it was trained on
                f"pretrain.storage_path={out / 'ray'}",
            ],
        )
        console.line(f"  benchmark {name}: {folder}")
        results[name] = run_benchmark(
            BenchmarkStage(bp.benchmark, FinetuneStage.of(bp), PretrainStage.of(bp)),
            REPO / folder,
            out / "benchmark" / name,
            encoders=[encoder],
            track=True,
        )
    return results


def require_harness() -> None:
    """Fail before any work when ``a2mae benchmark`` (issue 19's harness) is not in this checkout.

    Raises:
        A2maeError: The harness is missing (one line).
    """
    import importlib.util

    from a2mae.errors import A2maeError

    if (
        importlib.util.find_spec("a2mae.benchmark") is None
        or importlib.util.find_spec("a2mae.benchmark.run") is None
    ):
        raise A2maeError(
            "a2mae benchmark (a2mae/benchmark/run.py) is not in this checkout; make evidence needs it: "
            "update the repository"
        )


def cpu_seconds() -> float:
    """CPU time of this process and its waited-for children (user + system)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def git_commit() -> str:
    """The repository's commit (``+dirty`` when the work tree differs)."""
    rev = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return (rev or "unknown") + ("+dirty" if dirty else "")


def run_evidence(out: Path, quick: bool, params_file: str | None, sets: list[str]) -> dict[str, Any]:
    """The whole evidence run; returns what the report needs."""
    from a2mae.config import load_params
    from a2mae.evidence import write_report

    params = load_params(params_file, sets)
    b = budget_of(params, quick, sets, params_file)
    require_harness()
    t0, c0 = time.perf_counter(), cpu_seconds()
    pipe = pretrain_through_pipeline(out, params, b)
    pre = pipe["pretrain"]
    encoder = f"models:/{params.registry.encoder_model}/{pre['version']}"
    snapshot = out / "workspace" / params.tile.snapshot
    t_pre, c_pre = time.perf_counter() - t0, cpu_seconds() - c0
    results = benchmark_all(out, params, b, encoder, snapshot)
    info = {
        "command": "make evidence QUICK=1" if quick else "make evidence",
        "git_commit": git_commit(),
        "encoder": encoder,
        "pipeline": pipe,
        "pretrain_seconds": t_pre,
        "pretrain_cpu_seconds": c_pre,
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": cpu_seconds() - c0,
        "cores": os.cpu_count(),
        "normalization": next(
            (o.split("=", 1)[1] for o in reversed(b.overrides) if o.startswith("benchmark.normalization=")),
            NORMALIZATION,
        ),
    }
    report = Path(params.evidence.report) if not quick else out / "evidence.md"
    figure = Path(params.evidence.figure) if not quick else out / "evidence.png"
    if not report.is_absolute():
        report = REPO / report
    if not figure.is_absolute():
        figure = REPO / figure
    write_report(report, figure, b, results, info)
    return {"report": report, "figure": figure, "results": results, **info}


def main(argv: list[str] | None = None) -> int:
    """Command line of ``make evidence``."""
    ap = argparse.ArgumentParser(prog="python -m flows.evidence", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="The same in at most 5 minutes (evidence.quick_*).")
    ap.add_argument("--out", default=None, help="Output folder (default: evidence-output[-quick]).")
    ap.add_argument("--params", default=None, help="Parameter overlay, e.g. params/gpu.yaml.")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="section.key=value (repeatable).")
    args = ap.parse_args(argv)
    out = Path(args.out or ("evidence-output-quick" if args.quick else "evidence-output")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    from flows.demo import run_environment

    run_environment(out)  # Prefect's home and its 180 s server start-up, before anything imports Prefect
    with logs.to_file(out / "evidence.log", verbose=0, capture_fds=True) as term:
        shown = console.Output("normal", term.out, term.err, final_lines=True)
        with console.use(shown):
            return _run(out, args, shown, term.log_file)


def _run(out: Path, args: argparse.Namespace, shown: console.Output, log_file: Path) -> int:
    import logging

    from a2mae.errors import A2maeError, safe_line
    from flows.demo import _stop_prefect_server

    shown.line(
        f"a2mae evidence{' (quick)' if args.quick else ''}: pre-train through the pipeline, then benchmark"
    )
    shown.line(f"  (library messages: {log_file})")
    try:
        res = run_evidence(out, args.quick, args.params, args.sets)
    except A2maeError as err:
        shown.err.write(f"a2mae evidence: error: {safe_line(str(err))}\n")
        return 2
    except Exception as err:
        logging.getLogger("a2mae.evidence").exception("the evidence run failed")
        shown.err.write(f"a2mae evidence: failed: {type(err).__name__}: {safe_line(str(err))[:300]} "
                        f"(traceback in {log_file})\n")  # fmt: skip
        return 1
    finally:
        _stop_prefect_server()
    shown.line(
        f"a2mae evidence: {res['report']} written ({res['seconds']:.0f} s wall, "
        f"{res['cpu_seconds']:.0f} s CPU on {res['cores']} cores; "
        f"pre-training {res['pretrain_seconds']:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
