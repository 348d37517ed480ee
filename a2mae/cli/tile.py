"""``a2mae tile``: scene catalog -> STSSD snapshot (co-located image sets, shards, manifest, stats)."""

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
from a2mae.errors import safe_line


@app.command("tile")
def tile_cmd(
    catalog: Annotated[
        Path | None,
        typer.Option(
            "--catalog",
            help="Scene catalog from `a2mae ingest` (default: data.catalog).",
            readable=False,  # a forbidden catalog is an OS error (exit 1), not a usage error
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Snapshot folder to write (default: tile.snapshot).", readable=False),
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
    verify_sources: Annotated[
        bool,
        typer.Option(
            "--verify-sources",
            help="Hash every scene file whole against the catalog (default: size, time and first 64 KiB).",
        ),
    ] = False,
    progress: ProgressOpt = True,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Group co-located scenes into image sets and write an STSSD snapshot (atomic, deterministic)."""
    from a2mae.stssd.run import tile

    p = resolve_params(params, set_)
    catalog = catalog or Path(p.data.catalog)
    out = out or Path(p.tile.snapshot)
    with command_output(p, quiet, as_json, verbose) as shown:
        s = tile(
            catalog, out, p, progress=progress, force=force, skip_bad=skip_bad, verify_sources=verify_sources
        )
    if shown.mode != "json":
        for line in s.skipped:
            typer.echo(safe_line(f"skipped unreadable scene {line}"), err=True)
        for line in s.notes:
            typer.echo(safe_line(f"note: {line}"), err=True)
    c = s.counts
    shown.json(
        {
            "snapshot": str(out),
            "snapshot_id": s.snapshot_id,
            "up_to_date": s.up_to_date,
            "seconds": round(s.seconds, 2) if s.seconds else None,
            "counts": c,
        }
    )
    if s.up_to_date:
        shown.line(f"{out}: up to date (snapshot {s.snapshot_id}, {c.get('sets', 0)} sets); nothing to do")
        return
    if s.note:
        shown.line(f"{out}: {s.note}: rebuilt")
    mb = c["bytes"] / 1e6
    rate = f", {s.input_bytes / 1e6 / s.seconds:.1f} MB/s of input" if s.input_bytes and s.seconds else ""
    shown.line(f"{out}: snapshot {s.snapshot_id} written in {s.seconds:.1f} s{rate}")
    shown.line(f"  sets        {c['sets']} of {c['sets_planned']} planned  " + _kv(c["sets_per_kind"]))
    shown.line(f"  images      {c['images']}  " + _kv(c["images_per_sensor"]))
    shown.line(f"  chips       {c['chips']} stored of {c['chips_read']} read")
    shown.line(
        f"  dropped     chips: {_kv(c['chips_dropped']) or 'none'}; sets: {_kv(c['sets_dropped']) or 'none'}"
    )
    shown.line(f"  shards      {c['shards']}, {mb:.1f} MB")
    shown.line(f"  split       {_kv(c['sets_per_split'])}")


def _kv(d: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in d.items())
