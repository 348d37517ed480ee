"""``a2mae benchmark DATA --encoder URI --out DIR``: encoders against baselines on labelled data."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from a2mae.benchmark.result import BenchmarkResult

from a2mae.cli.app import (
    JsonOpt,
    ParamsOpt,
    QuietOpt,
    SetOpt,
    VerboseOpt,
    app,
    command_output,
    resolve_params,
)


def _csv(v: str | None) -> list[str] | None:
    return None if v is None else [x.strip() for x in v.split(",") if x.strip()]


def _overrides(set_: list[str] | None, **values: object) -> list[str]:
    """``--set`` items plus ``benchmark.<key>=<value>`` for the options given (validated with params)."""
    import json

    out = list(set_ or [])
    out += [f"benchmark.{k}={json.dumps(v)}" for k, v in values.items() if v is not None]
    return out


@app.command("benchmark")
def benchmark_cmd(
    data: Annotated[
        Path, typer.Argument(help="Labelled data: a folder in one of the layouts of docs/benchmark.md.")
    ],
    encoder: Annotated[
        list[str] | None,
        typer.Option(
            "--encoder",
            help="Encoder under test: models:/NAME@ALIAS, models:/NAME/N, a .safetensors checkpoint, or "
            "@champion (repeatable; default benchmark.encoders).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default benchmark.output/<data name>).")
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format", help="auto | eurosat | bigearthnet | oscd | change-pair | vector | finetune."
        ),
    ] = None,
    baselines: Annotated[
        str | None, typer.Option("--baselines", help="Comma-separated: scratch,rcf,mae (empty: none).")
    ] = None,
    protocols: Annotated[str | None, typer.Option("--protocols", help="Comma-separated: knn,linear.")] = None,
    fractions: Annotated[
        str | None, typer.Option("--fractions", help="Label fractions, e.g. 0.01,0.1,1.0.")
    ] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", help="Seeds (default benchmark.seeds).")] = None,
    dense_labels: Annotated[
        str | None,
        typer.Option("--dense-labels", help="pixel (every labelled pixel) | token (majority per token)."),
    ] = None,
    mae_steps: Annotated[
        int | None, typer.Option("--mae-steps", help="Pre-training steps of the plain-MAE arm.")
    ] = None,
    track: Annotated[bool, typer.Option("--track/--no-track", help="Log an MLflow run.")] = True,
    params: ParamsOpt = None,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Benchmark encoders against baselines (scratch, RCF, plain MAE) with kNN and linear probes."""
    from a2mae.benchmark.run import run_benchmark
    from a2mae.benchmark.stage import BenchmarkStage
    from a2mae.finetune.stage import FinetuneStage
    from a2mae.pretrain.run import PretrainStage

    fr = _csv(fractions)
    over = _overrides(
        set_,
        format=fmt,
        baselines=_csv(baselines),
        protocols=_csv(protocols),
        fractions=None if fr is None else [float(x) if _is_float(x) else x for x in fr],
        seeds=seeds,
        dense_labels=dense_labels,
        mae_steps=mae_steps,
    )
    p = resolve_params(params, over)
    target = out or Path(p.benchmark.output) / data.name
    with command_output(p, quiet, as_json, verbose) as o:
        stage = BenchmarkStage(p.benchmark, FinetuneStage.of(p), PretrainStage.of(p))
        res = run_benchmark(stage, data, target, encoders=encoder, track=track, show=True)
    o.json(_json_doc(res))
    o.line(res.files["report"].read_text().split("\n## Arms")[0].rstrip())
    o.line(
        f"\nwritten: {', '.join(str(v) for v in res.files.values())}"
        + (f" (MLflow run {res.run_id})" if res.run_id else "")
    )


def _is_float(x: str) -> bool:
    try:
        float(x)
    except ValueError:
        return False
    return True


def _json_doc(res: BenchmarkResult) -> dict[str, object]:
    """The ``--json`` document of a run."""
    return {
        "out": str(res.out),
        "files": {k: str(v) for k, v in res.files.items()},
        "run_id": res.run_id,
        "layout": res.data.layout,
        "kind": res.data.kind,
        "chips": len(res.data.chips),
        "data_hash": res.data.data_hash(),
        "resolution": res.resolution,
        "seconds": round(res.seconds, 2),
        "rows": res.rows,
        "differences": res.diffs,
    }
