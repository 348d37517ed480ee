"""``a2mae tile``: scene catalog -> STSSD snapshot (co-located image sets, shards, manifest, stats)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from a2mae.cli.app import ParamsOpt, SetOpt, app, resolve_params


@app.command("tile")
def tile_cmd(
    catalog: Annotated[
        Path | None,
        typer.Option("--catalog", help="Scene catalog from `a2mae ingest` (default: data.catalog)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Snapshot folder to write (default: tile.snapshot).")
    ] = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when up to date.")] = False,
    skip_bad: Annotated[
        bool,
        typer.Option(
            "--skip-bad",
            help="Leave out scenes whose files cannot be read (e.g. a remote asset gone) and go on.",
        ),
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress bar on a terminal.")
    ] = True,
) -> None:
    """Group co-located scenes into image sets and write an STSSD snapshot (atomic, deterministic)."""
    from a2mae.stssd.run import tile

    p = resolve_params(params, set_)
    catalog = catalog or Path(p.data.catalog)
    out = out or Path(p.tile.snapshot)
    s = tile(catalog, out, p, progress=progress, force=force, skip_bad=skip_bad)
    for line in s.skipped:
        typer.echo(f"skipped unreadable scene {line}", err=True)
    c = s.counts
    if s.up_to_date:
        typer.echo(f"{out}: up to date (snapshot {s.snapshot_id}, {c.get('sets', 0)} sets); nothing to do")
        return
    if s.note:
        typer.echo(f"{out}: {s.note}: rebuilt")
    mb = c["bytes"] / 1e6
    rate = f", {s.input_bytes / 1e6 / s.seconds:.1f} MB/s of input" if s.input_bytes and s.seconds else ""
    typer.echo(f"{out}: snapshot {s.snapshot_id} written in {s.seconds:.1f} s{rate}")
    typer.echo(f"  sets        {c['sets']} of {c['sets_planned']} planned  " + _kv(c["sets_per_kind"]))
    typer.echo(f"  images      {c['images']}  " + _kv(c["images_per_sensor"]))
    typer.echo(f"  chips       {c['chips']} stored of {c['chips_read']} read")
    typer.echo(
        f"  dropped     chips: {_kv(c['chips_dropped']) or 'none'}; sets: {_kv(c['sets_dropped']) or 'none'}"
    )
    typer.echo(f"  shards      {c['shards']}, {mb:.1f} MB")
    typer.echo(f"  split       {_kv(c['sets_per_split'])}")


def _kv(d: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in d.items())
