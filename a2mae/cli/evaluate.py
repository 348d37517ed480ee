"""``a2mae evaluate MODEL VERSION``: challenger vs ``@champion`` on the frozen split, gated promotion."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from a2mae.cli.app import ParamsOpt, SetOpt, app, resolve_params


def _score(v: float | None) -> str:
    return "none" if v is None else f"{v:.4f}"


@app.command("evaluate")
def evaluate_cmd(
    model: Annotated[str, typer.Argument(help="Registered model, e.g. a2mae-segmentation.")],
    version: Annotated[int, typer.Argument(help="Challenger version.")],
    data: Annotated[
        Path | None, typer.Option("--data", help="Dataset folder (default: the version's a2mae.data tag).")
    ] = None,
    promote: Annotated[
        bool, typer.Option("--promote/--no-promote", help="Move @champion when the gate passes.")
    ] = True,
    params: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """Score VERSION and the current @champion on the same frozen split; promote only past the margin."""
    from a2mae.evaluate.run import evaluate_version

    p = resolve_params(params, set_)
    e = evaluate_version(p, model, version, data=data, promote=promote)
    typer.echo(f"{e.name}: {e.metric} on {e.split} (split {e.split_hash[:12]})")
    typer.echo(f"  challenger v{e.challenger}: {_score(e.challenger_score)}")
    typer.echo(f"  champion   {'v' + e.champion if e.champion else '(none)'}: {_score(e.champion_score)}")
    typer.echo(f"  margin {e.margin}: {e.decision}")
    alias = p.registry.champion_alias
    if e.promoted and promote:
        typer.echo(f"  @{alias} -> v{e.challenger} (was {'v' + e.champion if e.champion else 'unset'})")
    else:
        typer.echo(f"  @{alias} unchanged" + (f" (v{e.champion})" if e.champion else ""))
    typer.echo(f"  evidence: a2mae.eval.* tags on v{e.challenger}; MLflow run {e.run_id}")
