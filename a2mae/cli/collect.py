"""``a2mae collect``: gather co-located scenes from a STAC API into the scene catalog (docs/collect.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from a2mae.cli.app import ParamsOpt, ProgressOpt, SetOpt, app, resolve_params
from a2mae.cli.ingest import format_rows


@app.command("collect")
def collect_cmd(
    stac: Annotated[
        str | None, typer.Option("--stac", help="STAC API root URL (default: collect.stac_url).")
    ] = None,
    locations: Annotated[
        Path | None,
        typer.Option(
            "--locations",
            help="GeoJSON or GeoParquet of points or polygons (default: collect.locations; none: generated).",
        ),
    ] = None,
    catalog: Annotated[
        Path | None, typer.Option("--catalog", help="Scene catalog to merge into (default: data.catalog).")
    ] = None,
    progress: ProgressOpt = True,
    params: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """Search a STAC API at each location, per sensor and growth period; keep the best scenes.

    The scenes go into the scene catalog with their remote COG hrefs; `a2mae tile` then reads only
    the chip windows around the locations.
    """
    from a2mae.collect.run import collect

    p = resolve_params(params, set_)
    report = collect(p, stac_url=stac, locations=locations, catalog=catalog, progress=progress)
    rows = (
        [("added", r) for r in report.added]
        + [("updated", r) for r in report.updated]
        + [("present", r) for r in report.present]
    )
    for line in format_rows(rows):
        typer.echo(line)
    for line in report.failed:
        typer.echo(f"unusable item: {line}", err=True)
    if report.empty:
        shown = ", ".join(report.empty[:10]) + (" ..." if len(report.empty) > 10 else "")
        typer.echo(f"no scene at {len(report.empty)} location(s): {shown}", err=True)
    typer.echo(f"collect: {report.summary()}; catalog {report.catalog}")
