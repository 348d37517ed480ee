"""``a2mae ingest SRC... --catalog PATH``: scene metadata from files, folders or s3:// prefixes."""

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
from a2mae.errors import A2maeError, safe_line
from a2mae.ingest.catalog import SceneRecord


class IngestFailed(A2maeError):
    """Every source of a ``--skip-bad`` run failed."""


def _fmt_gsds(record: SceneRecord) -> str:
    gsds = sorted({b.gsd_m for b in record.band_files})
    return "/".join(f"{g:g}" for g in gsds)


def format_rows(rows: list[tuple[str, SceneRecord]]) -> list[str]:
    """Plain-text table lines: status, scene id, sensor, product, datetime, bands, GSDs, cloud."""
    header = ("", "scene_id", "sensor", "product", "datetime (UTC)", "bands", "GSD m", "cloud")
    body = [
        (
            status,
            r.scene_id,
            r.sensor,
            r.product,
            r.datetime.strftime("%Y-%m-%d %H:%M") if r.datetime else f"- ({r.datetime_source})",
            ",".join(r.bands),
            _fmt_gsds(r),
            f"{r.cloud_fraction:.3f}" if r.cloud_fraction is not None else "-",
        )
        for status, r in rows
    ]
    widths = [max(len(str(row[i])) for row in (header, *body)) for i in range(len(header))]
    return [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *body)
    ]


@app.command("ingest")
def ingest_cmd(
    sources: Annotated[
        list[str], typer.Argument(help="GeoTIFF files, folders of per-band files or s3:// prefixes.")
    ],
    catalog: Annotated[
        Path | None,
        typer.Option(
            "--catalog",
            help="Scene catalog (Parquet); default: params data.catalog.",
            readable=False,  # a forbidden catalog is an OS error (exit 1), not a usage error
        ),
    ] = None,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Go on past bad scenes and list them at the end.")
    ] = False,
    progress: ProgressOpt = True,
    params: ParamsOpt = None,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Read scene metadata (sensor, bands, GSDs, date, corners, cloud) into the scene catalog.

    Metadata only; unchanged inputs are skipped; new scenes are appended; atomic writes.
    """
    from a2mae.ingest.run import ingest

    p = resolve_params(params, set_)
    target = catalog if catalog is not None else Path(p.data.catalog)
    with command_output(p, quiet, as_json, verbose) as out:
        report = ingest(sources, target, p, skip_bad=skip_bad, progress=progress)
    rows = (
        [("added", r) for r in report.added]
        + [("replaced", new) for _, new in report.replaced]
        + [("present", r) for r in report.skipped]
    )
    out.json(
        {
            "catalog": str(target),
            "added": [r.scene_id for r in report.added],
            "present": [r.scene_id for r in report.skipped],
            "replaced": [{"old": o.scene_id, "new": n.scene_id} for o, n in report.replaced],
            "failed": [{"source": f.source, "message": f.message} for f in report.failed],
            "ignored": len(report.ignored),
        }
    )
    if rows:
        for line in format_rows(rows):
            out.line(line)
    if out.mode != "json":  # bad inputs and warnings are worth a line even with --quiet
        for failure in report.failed:
            typer.echo(safe_line(f"skipped bad input: {failure.message}"), err=True)
        for note in report.warnings:
            typer.echo(safe_line(f"warning: {note}"), err=True)
        for old, new in report.replaced:
            typer.echo(
                safe_line(
                    f"replaced scene {old.scene_id} by {new.scene_id}: the files of {new.source} changed "
                    "since they were ingested (snapshots tiled before hold the old pixels)"
                ),
                err=True,
            )
    if report.ignored and out.mode == "normal":
        typer.echo(f"ignored {len(report.ignored)} auxiliary file(s) without a band name", err=True)
    out.line(f"ingest: {report.summary()}")
    if report.failed and not report.added and not report.skipped:
        raise IngestFailed(f"no scene ingested: all {len(report.failed)} input(s) failed (see above)")
