"""``a2mae pretrain``: Ray-distributed A²-MAE pre-training with MLflow tracking."""

from __future__ import annotations

from typing import Annotated

import typer

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


@app.command("pretrain")
def pretrain_cmd(
    snapshot: Annotated[
        str, typer.Option("--snapshot", help="STSSD snapshot folder or s3:// prefix (from `a2mae tile`).")
    ],
    name: Annotated[
        str | None,
        typer.Option("--name", help="Run name (default pretrain.run_name); the same name resumes the run."),
    ] = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
    no_register: Annotated[
        bool, typer.Option("--no-register", help="Do not log and register the encoder at the end.")
    ] = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Pre-train A²-MAE on a snapshot (Ray Train; MLflow run and registered encoder at the end).

    Starting again with the same --name continues the run from its last checkpoint.

    Workers, storage, Ray cluster and tracking server: pretrain.* and registry.* (docs/pretrain.md).
    """
    from a2mae.pretrain.run import preflight, progress_bar, run_pretrain

    p = resolve_params(params, set_)
    preflight(snapshot, p.pretrain, p.data, p.registry)  # one-line errors before the progress display appears
    with command_output(p, quiet, as_json, verbose) as out, progress_bar() as on_progress:
        result = run_pretrain(p, snapshot, name=name, progress=on_progress, register=not no_register)
    out.json(
        {
            "run_name": result.run_name,
            "run_id": result.run_id,
            "steps": result.global_step,
            "total_steps": result.total_steps,
            "resumed": result.resumed,
            "starts": len(result.attempts),
            "checkpoint": result.checkpoint,
            "model_uri": result.model_uri,
            "registered_model": p.registry.encoder_model if result.registered_version is not None else None,
            "registered_version": result.registered_version,
            "seconds": round(result.seconds, 1),
        }
    )
    starts = len(result.attempts)
    resumed = f" (resumed; {starts} starts)" if result.resumed or starts > 1 else ""
    out.line(f"run {result.run_name}: {result.global_step}/{result.total_steps} steps{resumed}")
    out.line(f"checkpoint: {result.checkpoint}")
    out.line(f"mlflow run id: {result.run_id}")
    if result.registered_version is not None:
        out.line(f"registered: {p.registry.encoder_model} version {result.registered_version}")
    else:
        out.line("registered: none (--no-register)" if no_register else "registered: none")
