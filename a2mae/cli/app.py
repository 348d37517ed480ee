"""The typer application and the options shared by every verb."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from a2mae.config import Params, load_params

app = typer.Typer(
    name="a2mae",
    help="A²-MAE: ingest GeoTIFFs, tile STSSD image sets, pre-train, fine-tune, evaluate and promote.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ParamsOpt = Annotated[
    Path | None,
    typer.Option("--params", help="Parameter file with the keys to change (defaults: params.yaml)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one parameter: section.key=value (repeatable)."),
]


def resolve_params(params: Path | None, overrides: list[str] | None) -> Params:
    """Load the parameters for a verb (defaults, user file, then overrides), checked against the model.

    Raises:
        ConfigError: A bad file or value; ModelConfigError: model options that do not fit (one line).
    """
    from a2mae.models.variants import check_chip_size

    p = load_params(params, overrides or ())
    check_chip_size(p.model, p.tile.chip_size, **p.pretrain.model_overrides)
    return p
