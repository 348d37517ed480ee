"""``a2mae finetune`` (one arm, or pre-trained vs scratch) and ``a2mae ablate`` (pre-training variants)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from a2mae.cli.app import (
    JsonOpt,
    ParamsOpt,
    ProgressOpt,
    QuietOpt,
    SetOpt,
    VerboseOpt,
    app,
    command_output,
    resolve_params,
)

TaskOpt = Annotated[
    str | None,
    typer.Option(
        "--task",
        help="A registered downstream task (a2mae.tasks; default: finetune.task); an unknown one lists them.",
    ),
]
DataOpt = Annotated[
    Path | None, typer.Option("--data", help="Dataset folder (default: finetune.datasets.<task>).")
]


def _overrides(set_: list[str] | None, **values: str | None) -> list[str]:
    """``--set`` items plus ``finetune.<key>=<value>`` for the options given (validated with params)."""
    out = list(set_ or [])
    out += [f"finetune.{k}={v}" for k, v in values.items() if v is not None]
    return out


def _metrics(d: dict[str, float] | None) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in (d or {}).items())


@app.command("finetune")
def finetune_cmd(
    task: TaskOpt = None,
    data: DataOpt = None,
    encoder: Annotated[
        str | None,
        typer.Option(
            "--encoder", help="models:/NAME@ALIAS, models:/NAME/VERSION, a .safetensors file, or scratch."
        ),
    ] = None,
    protocol: Annotated[
        str | None, typer.Option("--protocol", help="linear_probe | full (default: finetune.protocol).")
    ] = None,
    compare_scratch: Annotated[
        bool,
        typer.Option(
            "--compare-scratch",
            help="Also fine-tune a randomly initialised encoder (same budget and seed) for every protocol "
            "of finetune.compare_protocols, and write report.md.",
        ),
    ] = False,
    register: Annotated[
        bool, typer.Option("--register/--no-register", help="Register the model as a new version.")
    ] = True,
    params: ParamsOpt = None,
    set_: SetOpt = None,
    progress: ProgressOpt = True,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Fine-tune a task on a dataset, log it to MLflow and register it as a challenger of a2mae-<task>."""
    from a2mae.finetune.run import compare_scratch as run_compare
    from a2mae.finetune.run import finetune

    p = resolve_params(params, _overrides(set_, task=task, protocol=protocol, encoder=encoder))
    if compare_scratch:
        with command_output(p, quiet, as_json, verbose) as out:
            res = run_compare(p, data=data, register=register, progress=None if progress else False)
        reg = [o.version for o in res.outcomes if o.version is not None]
        out.json(
            {
                "report": str(res.report_path),
                "run_id": res.run_id,
                "registered": [{"model": v.name, "version": v.version} for v in reg],
            }
        )
        out.line(res.report.split("\n## Setup")[0].rstrip())
        out.line(f"\nreport: {res.report_path}" + (f" (MLflow run {res.run_id})" if res.run_id else ""))
        for v in reg:
            out.line(f"registered {v.name} version {v.version} (@{p.evaluate.challenger_alias})")
        return
    with command_output(p, quiet, as_json, verbose) as out:
        o = finetune(p, data=data, register=register, progress=None if progress else False)
    out.json(
        {
            "task": o.task,
            "protocol": o.protocol,
            "encoder": o.encoder,
            "steps": o.steps,
            "seconds": round(o.seconds, 2),
            "split": o.split,
            "split_hash": o.split_hash,
            "metrics": o.metrics,
            "val_metrics": o.val_metrics,
            "run_id": o.run_id,
            "model": o.version.name if o.version else None,
            "version": o.version.version if o.version else None,
        }
    )
    out.line(f"{o.task} / {o.protocol} / encoder {o.encoder}: {o.steps} steps in {o.seconds:.1f} s")
    out.line(f"  {o.split} (split {o.split_hash[:12]}): {_metrics(o.metrics)}")
    if o.val_metrics:
        out.line(f"  val: {_metrics(o.val_metrics)}")
    out.line(f"  MLflow run {o.run_id}")
    if o.version is not None:
        out.line(
            f"  registered {o.version.name} version {o.version.version} (@{p.evaluate.challenger_alias}); "
            f"next: a2mae evaluate {o.version.name} {o.version.version}"
        )


@app.command("ablate")
def ablate_cmd(
    task: TaskOpt = None,
    data: DataOpt = None,
    snapshot: Annotated[
        str | None, typer.Option("--snapshot", help="STSSD snapshot to pre-train on (default tile.snapshot).")
    ] = None,
    variant: Annotated[
        list[str] | None,
        typer.Option("--variant", help="Run only this variant of finetune.ablation.variants (repeatable)."),
    ] = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Pre-train each ablation variant (masking, geo encoding) briefly, fine-tune each, tabulate."""
    from a2mae.finetune.ablation import ablate

    p = resolve_params(params, _overrides(set_, task=task))
    res = ablate(p, snapshot=snapshot, data=data, only=variant, progress=None if progress else False)
    typer.echo(res.report.split("\n## Setup")[0].rstrip())
    typer.echo(f"\nreport: {res.report_path}" + (f" (MLflow run {res.run_id})" if res.run_id else ""))
