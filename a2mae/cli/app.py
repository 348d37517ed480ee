"""The typer application and the options shared by every verb."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:  # typer may run its own copy of click: only the types are taken from click
    import click

from a2mae.config import Params, load_params


class HelpGroup(TyperGroup):
    """A verb group whose help lists each verb with its whole first sentence, wrapped.

    Click would cut the sentence to fit one line ("..."); the plain help of the verbs themselves
    (``rich_markup_mode=None``) wraps at word boundaries, where Rich's option tables cut long words
    at 80 columns.
    """

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The ``Commands`` section: name and first sentence of every visible verb."""
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=1000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(
    cls=HelpGroup,
    name="a2mae",
    help="A²-MAE: ingest GeoTIFFs, tile STSSD image sets, pre-train, fine-tune, evaluate and promote.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help (see HelpGroup)
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
