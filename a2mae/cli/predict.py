"""``a2mae predict SRC... --model URI --out DIR``: apply a registered model to scenes (docs/predict.md)."""

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


@app.command("predict")
def predict_cmd(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="Scenes (file, per-band folder, s3:// prefix) or catalogs (.parquet); change detection: "
            "before/after pairs in order."
        ),
    ],
    out: Annotated[str, typer.Option("--out", help="Output folder or s3:// prefix (must not exist).")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="models:/a2mae-<task>@champion, models:/NAME/VERSION, or the encoder for embeddings "
            "(default: predict.model).",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Worker processes (predict.workers).")
    ] = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
    progress: ProgressOpt = True,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Apply a model to scenes: class/change maps (COG), chip labels or embeddings (GeoParquet)."""
    from a2mae.predict.run import predict

    sets = list(set_ or [])
    if workers is not None:
        sets.append(f"predict.workers={workers}")
    p = resolve_params(params, sets)
    with command_output(p, quiet, as_json, verbose) as shown:
        r = predict(sources, out, p, model_uri=model, overwrite=overwrite, progress=progress)
    m = r.model
    rate = r.pixels / r.seconds / 1e6 if r.seconds else 0.0
    shown.json(
        {
            "out": out,
            "task": r.task,
            "model": m,
            "outputs": r.outputs,
            "windows": r.windows,
            "pixels": r.pixels,
            "seconds": round(r.seconds, 2),
        }
    )
    shown.line(
        f"{out}: {r.task} of {m['model_name']} v{m['model_version']} (run {m['run_id'] or '-'}) on "
        f"{len(r.outputs)} scene(s), {r.windows} windows in {r.seconds:.1f} s ({rate:.2f} Mpx/s)"
    )
    for o in r.outputs:
        shown.line(f"  {o['key']}: " + ", ".join(Path(f).name for f in o["files"]))
