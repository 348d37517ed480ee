"""``a2mae services up|down|status|env``: the local stack of ``infra/`` (docs/services.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from a2mae.cli.app import HelpGroup, ParamsOpt, SetOpt, app, resolve_params

services_app = typer.Typer(
    cls=HelpGroup,
    rich_markup_mode=None,
    help="Start, stop and inspect the local services: S3 store, MLflow, Prefect, Ray, deployments.",
    no_args_is_help=True,
)
app.add_typer(services_app, name="services")

if TYPE_CHECKING:
    from a2mae.services.stack import Stack

ProjectOpt = Annotated[
    Path,
    typer.Option(
        "--project-dir",
        help="The checkout the services' workspace (<infra.home>/workspace) is cloned from; state goes to "
        "its infra.home.",
    ),
]
OnlyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--only", help="Start only this service (repeatable): s3, mlflow, prefect, ray, flows, model, stac."
    ),
]


def _stack(
    params: Path | None, set_: list[str] | None, project_dir: Path, serve_model: str | None = None
) -> Stack:
    from a2mae.services.stack import Stack

    p = resolve_params(params, set_)
    return Stack(p, project_dir, overrides=set_ or (), serve_model=serve_model)


@services_app.command("up")
def up_cmd(
    params: ParamsOpt = None,
    set_: SetOpt = None,
    project_dir: ProjectOpt = Path("."),
    only: OnlyOpt = None,
    serve_model: Annotated[
        str | None,
        typer.Option(
            "--serve-model",
            help="Also serve this model over HTTP (MLflow scoring server on predict.serve_port), e.g. "
            "models:/a2mae-segmentation@champion.",
        ),
    ] = None,
) -> None:
    """Start the services that are not running (idempotent), wait for their health checks."""
    stack = _stack(params, set_, project_dir, serve_model)
    rows = stack.up(only or (), echo=typer.echo)
    # `ok`, as `status` counts: a service started on request (the model server) may be stopped
    bad = [r for r in rows if (not only or r.name in only) and not r.ok]
    if bad:
        logs = ", ".join(f"{r.name} (log {r.log})" for r in bad)
        typer.echo(f"a2mae: error: not healthy: {logs}", err=True)
        raise SystemExit(1)
    typer.echo(f"client settings: {stack.env_path}  (set -a; . {stack.env_path}; set +a)")
    typer.echo(f"Prefect UI: {stack.prefect.url}   MLflow UI: {stack.mlflow.url}")
    if serve_model:
        typer.echo(f"{serve_model} served at {stack.model.url}/invocations")


@services_app.command("down")
def down_cmd(params: ParamsOpt = None, set_: SetOpt = None, project_dir: ProjectOpt = Path(".")) -> None:
    """Stop every running service (reverse order); data and logs stay under infra.home."""
    stack = _stack(params, set_, project_dir)
    if not stack.down(echo=typer.echo):
        typer.echo("nothing was running")


@services_app.command("status")
def status_cmd(
    params: ParamsOpt = None,
    set_: SetOpt = None,
    project_dir: ProjectOpt = Path("."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show each service: running, healthy, pid, address and log file; exit code 1 unless all are healthy.

    The model server counts only while it runs (it is started on request).
    """
    from dataclasses import asdict

    rows = _stack(params, set_, project_dir).status()
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        for r in rows:
            state = "healthy" if r.healthy else ("running, NOT healthy" if r.running else "stopped")
            typer.echo(f"{r.name:8s} {state:22s} pid {r.pid or '-':>7}  {r.url}  log {r.log}")
    if not all(r.ok for r in rows):
        raise SystemExit(1)


@services_app.command("env")
def env_cmd(params: ParamsOpt = None, set_: SetOpt = None, project_dir: ProjectOpt = Path(".")) -> None:
    """Print ``export`` lines for the clients (use: eval "$(a2mae services env)").

    Secrets are not printed: their lines read the value from the stack's env file (mode 0600) when
    evaluated.
    """
    import shlex

    from a2mae.services.stack import SECRET_VARS

    stack = _stack(params, set_, project_dir)
    env_file = shlex.quote(str(stack.env_path))
    for key, value in sorted(stack.client_env().items()):
        if key in SECRET_VARS:
            typer.echo(f"export {key}=\"$(sed -n 's/^{key}=//p' {env_file})\"")
        else:
            typer.echo(f"export {key}={shlex.quote(value)}")
    if not stack.env_path.is_file():
        typer.echo(f"# {stack.env_path} does not exist yet: `a2mae services up` writes it", err=True)
