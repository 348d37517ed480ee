"""``a2mae promote MODEL VERSION --reason``, ``a2mae rollback MODEL`` and ``a2mae history MODEL``."""

from __future__ import annotations

from typing import Annotated

import typer

from a2mae.cli.app import ParamsOpt, SetOpt, app, resolve_params

ModelArg = Annotated[str, typer.Argument(help="Registered model, e.g. a2mae-segmentation.")]


@app.command("promote")
def promote_cmd(
    model: ModelArg,
    version: Annotated[int, typer.Argument(help="Version to make @champion.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the alias history).")] = "",
    params: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """Manually move @champion to VERSION (recorded with the reason in the alias history)."""
    from a2mae.registry import aliases
    from a2mae.tracking.client import client

    p = resolve_params(params, set_)
    alias = p.registry.champion_alias
    e = aliases.promote(client(p.registry), model, version, alias, reason)
    typer.echo(f"{model}: @{alias} -> v{e.version} (was {'v' + e.previous if e.previous else 'unset'})")


@app.command("rollback")
def rollback_cmd(
    model: ModelArg,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the alias history).")] = "",
    params: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """Move @champion back to the previous champion of the alias history."""
    from a2mae.registry import aliases
    from a2mae.tracking.client import client

    p = resolve_params(params, set_)
    alias = p.registry.champion_alias
    e = aliases.rollback(client(p.registry), model, alias, reason)
    typer.echo(f"{model}: @{alias} -> v{e.version} (rolled back from v{e.previous})")


@app.command("history")
def history_cmd(
    model: ModelArg,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Check the history's integrity (numbers, chain of previous versions, digests, the alias, "
            "committed moves); exit 1 naming the first break.",
        ),
    ] = False,
    params: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """Print every move of @champion in order: when, what, the previous version, who and why."""
    from a2mae.registry import aliases
    from a2mae.tracking.client import client

    p = resolve_params(params, set_)
    c = client(p.registry)
    alias = p.registry.champion_alias
    cur = aliases.current(c, model, alias)
    typer.echo(f"{model}: @{alias} = {'v' + str(cur.version) if cur else 'unset'}")
    for i, e in enumerate(aliases.history(c, model), start=1):
        prev = f"v{e.previous}" if e.previous else "unset"
        seq = e.seq if e.seq is not None else i
        who = e.by or "unknown"
        typer.echo(f"  #{seq:<4} {e.at}  {e.action:8s} v{e.version} (was {prev})  by {who}  {e.reason}")
    if verify:
        typer.echo(aliases.verify(c, model, alias))
