"""``a2mae catalog list|rm``: see the scenes of a catalog and remove bad ones."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from a2mae.cli.app import ParamsOpt, SetOpt, app, resolve_params

catalog_app = typer.Typer(
    help="List the scenes of a scene catalog, or remove some (one bad scene never blocks a catalog).",
    no_args_is_help=True,
)
app.add_typer(catalog_app, name="catalog")

CatalogOpt = Annotated[
    Path | None, typer.Option("--catalog", help="Scene catalog (Parquet); default: params data.catalog.")
]


@catalog_app.command("list", short_help="List the scenes of the catalog.")
def list_cmd(catalog: CatalogOpt = None, params: ParamsOpt = None, set_: SetOpt = None) -> None:
    """List every scene: id, sensor, product, date, bands, cloud, source (unreadable rows say why)."""
    from a2mae.ingest.manage import list_scenes

    p = resolve_params(params, set_)
    path = catalog if catalog is not None else Path(p.data.catalog)
    rows = list_scenes(path)
    table = [("scene_id", "sensor", "product", "datetime (UTC)", "bands", "cloud", "source")]
    for row in rows:
        r = row.record
        if r is None:
            table.append((row.scene_id, "-", "-", "-", "-", "-", f"UNREADABLE: {row.problem}"))
            continue
        table.append(
            (
                r.scene_id,
                r.sensor,
                r.product,
                r.datetime.strftime("%Y-%m-%d %H:%M") if r.datetime else "-",
                str(len(r.bands)),
                f"{r.cloud_fraction:.3f}" if r.cloud_fraction is not None else "-",
                r.source,
            )
        )
    widths = [max(len(t[i]) for t in table) for i in range(len(table[0]) - 1)]
    for t in table:
        typer.echo("  ".join([*(c.ljust(w) for c, w in zip(t, widths, strict=False)), t[-1]]).rstrip())
    bad = sum(r.record is None for r in rows)
    typer.echo(f"catalog: {len(rows)} scene(s), {bad} unreadable -> {path}")


@catalog_app.command("rm", short_help="Remove scenes by id (atomic).")
def rm_cmd(
    scene_ids: Annotated[list[str], typer.Argument(help="Scene ids to remove (`a2mae catalog list`).")],
    catalog: CatalogOpt = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """Remove scenes from the catalog (atomic; an unknown id removes nothing)."""
    from a2mae.ingest.manage import remove_scenes

    p = resolve_params(params, set_)
    path = catalog if catalog is not None else Path(p.data.catalog)
    removed = remove_scenes(path, scene_ids, p.data.lock_timeout_s)
    for sid in removed:
        typer.echo(f"removed {sid}")
    typer.echo(f"catalog: {len(removed)} scene(s) removed -> {path}")
