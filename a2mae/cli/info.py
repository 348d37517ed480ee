"""Informational verbs: ``params``, ``sensors`` and ``doctor``."""

from __future__ import annotations

import json

import typer
import yaml

from a2mae.cli.app import ParamsOpt, SetOpt, app, resolve_params


@app.command("params")
def params_cmd(params: ParamsOpt = None, set_: SetOpt = None) -> None:
    """Print the resolved parameters (defaults, --params file and --set overrides) as YAML."""
    p = resolve_params(params, set_)
    typer.echo(yaml.safe_dump(p.model_dump(mode="json"), sort_keys=False).rstrip())


@app.command("sensors")
def sensors_cmd(
    params: ParamsOpt = None,
    set_: SetOpt = None,
    as_json: bool = typer.Option(False, "--json", help="Print the registry as JSON."),
) -> None:
    """List the registered sensors, their products, bands and token groups."""
    from a2mae.sensors import load_registry

    p = resolve_params(params, set_)
    reg = load_registry(p.data.sensor_files)
    if as_json:
        typer.echo(json.dumps(reg.to_dict(), indent=2))
        return
    for s in reg:
        typer.echo(f"{s.id:5s} {s.name}  products: {', '.join(s.products)}")
        for group, bands in s.token_groups.items():
            gsd = sorted({s.bands[b].gsd_m for b in bands})
            typer.echo(
                f"      {group:8s} {', '.join(bands):24s} native GSD {', '.join(f'{g:g}' for g in gsd)} m"
            )


@app.command("doctor")
def doctor_cmd() -> None:
    """Check that the runtime stack imports (torch, timm, rasterio, ...) and print versions."""
    import importlib.metadata as md

    from a2mae import _tvshim

    rows = []
    for pkg in ("torch", "torchvision", "timm", "rasterio", "s3fs", "mlflow", "ray", "prefect", "dvc"):
        try:
            rows.append((pkg, md.version(pkg)))
        except md.PackageNotFoundError:
            rows.append((pkg, "missing"))
    for name, version in rows:
        typer.echo(f"{name:12s} {version}")
    import timm  # noqa: F401  (fails loudly if the torchvision shim does not work)

    typer.echo(f"torchvision shim: {'applied' if _tvshim._APPLIED else 'not needed'}; import timm: ok")
