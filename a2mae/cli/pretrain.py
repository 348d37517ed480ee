"""``a2mae pretrain``: Ray-distributed A²-MAE pre-training with MLflow tracking."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from a2mae.cli.app import ParamsOpt, SetOpt, app, resolve_params


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
) -> None:
    """Pre-train A²-MAE on a snapshot (Ray Train; MLflow run and registered encoder at the end).

    Starting again with the same --name continues the run from its last checkpoint.

    Workers, storage, Ray cluster and tracking server: pretrain.* and registry.* (docs/pretrain.md).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from a2mae.pretrain.run import preflight, run_pretrain

    p = resolve_params(params, set_)
    preflight(p, snapshot)  # one-line errors before the progress display appears
    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]pretrain[/bold] {task.fields[run]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("steps", total=None, run=name or p.pretrain.run_name, loss="-")

        def on_progress(info: dict[str, Any]) -> None:
            loss = info.get("loss")
            bar.update(
                task,
                completed=info.get("step", 0),
                total=info.get("total"),
                loss=f"{loss:.4f}" if isinstance(loss, float) else "-",
            )

        result = run_pretrain(p, snapshot, name=name, progress=on_progress, register=not no_register)
        bar.update(task, completed=result.global_step, total=result.total_steps)
    starts = len(result.attempts)
    resumed = f" (resumed; {starts} starts)" if result.resumed or starts > 1 else ""
    typer.echo(f"run {result.run_name}: {result.global_step}/{result.total_steps} steps{resumed}")
    typer.echo(f"checkpoint: {result.checkpoint}")
    typer.echo(f"mlflow run id: {result.run_id}")
    if result.registered_version is not None:
        typer.echo(f"registered: {p.registry.encoder_model} version {result.registered_version}")
    else:
        typer.echo("registered: none (--no-register)" if no_register else "registered: none")
