"""``a2mae models``: list the registered A²-MAE variants."""

from __future__ import annotations

import json
from typing import Any

import typer

from a2mae.cli.app import ParamsOpt, SetOpt, app, resolve_params


@app.command("models")
def models_cmd(
    params: ParamsOpt = None,
    set_: SetOpt = None,
    as_json: bool = typer.Option(False, "--json", help="Print the variants as JSON."),
) -> None:
    """List the model variants: parameters, patch and tile size, encoder and decoder dimensions."""
    import torch

    from a2mae.models import create_model, list_models
    from a2mae.sensors import load_registry

    p = resolve_params(params, set_)
    registry = load_registry(p.data.sensor_files)
    rows: list[dict[str, Any]] = []
    for name in list_models():
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            model = create_model(name, p.model, registry)
        c = model.config
        enc = sum(v.numel() for k, v in model.named_parameters() if not k.startswith(("decoder", "heads")))
        total = sum(v.numel() for v in model.parameters())
        rows.append(
            {
                "name": name,
                "params_m": round(total / 1e6, 2),
                "encoder_params_m": round(enc / 1e6, 2),
                "patch": c.patch_size,
                "tile": c.tile_size,
                "encoder": f"{c.embed_dim}d x {_n(c.depth, 'block')}, {_n(c.num_heads, 'head')}",
                "decoder": f"{c.decoder_embed_dim}d x {_n(c.decoder_depth, 'block')}, "
                f"{_n(c.decoder_num_heads, 'head')}",
                "default": name == p.model.name,
            }
        )
    rows.sort(key=lambda r: r["params_m"])
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(
        f"{'variant':28s} {'params':>8s} {'encoder':>8s} {'patch':>5s} {'tile':>4s}  encoder / decoder"
    )
    for r in rows:
        mark = " *" if r["default"] else ""
        typer.echo(
            f"{r['name']:28s} {r['params_m']:>7.1f}M {r['encoder_params_m']:>7.1f}M {r['patch']:>5d} "
            f"{r['tile']:>4d}  {r['encoder']} / {r['decoder']}{mark}"
        )
    typer.echo(f"(* = params.yaml model.name; sensors: {', '.join(registry.ids)})")


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"
