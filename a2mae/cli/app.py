"""The typer application and the options shared by every verb."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:  # typer runs its own copy of click (typer._click): the types are taken from that copy
    from typer import _click as click

from a2mae.config import Params, load_params
from a2mae.console import Mode, Output
from a2mae.errors import A2maeError


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
    """Load the parameters for a verb (defaults, user file, then overrides), checked across sections.

    The layers that own a check across sections (the model variants, the tasks) register it when
    imported (:func:`a2mae.config.register_check`); :func:`load_params` runs them.

    Raises:
        ConfigError: A bad file or value; ModelConfigError: model options that do not fit (one line).
    """
    import a2mae.models.variants
    import a2mae.tasks  # noqa: F401  (registers: finetune.task names a task)

    return load_params(params, overrides or ())


#: The one progress option of the verbs that show progress bars (tile, ingest, collect, predict, finetune,
#: ablate): shown on a terminal only, whatever the option says.
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar on a terminal.")]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print nothing but errors (scripts: the exit code tells).")
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the result as one JSON document on stdout, and nothing else.")
]
VerboseOpt = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        help="Also show the libraries' warnings (-vv: their info messages); all of them are always in the "
        "log file, <infra.home>/logs/a2mae.log.",
    ),
]


class OutputOptionError(A2maeError):
    """Options that ask for two kinds of output at once."""


def log_file(params: Params) -> Path:
    """The log file of the command line: ``<infra.home>/logs/a2mae.log``."""
    return Path(params.infra.home) / "logs" / "a2mae.log"


@contextlib.contextmanager
def command_output(params: Params, quiet: bool, as_json: bool, verbose: int) -> Iterator[Output]:
    """The output of a long verb while its work runs: its bars on the terminal, library messages in the log.

    Yields the :class:`~a2mae.console.Output` the verb prints its result with; it keeps writing to the
    terminal after the block (the result is printed after the work).

    Raises:
        OutputOptionError: ``--quiet`` together with ``--json``.
    """
    from a2mae import console, logs

    if quiet and as_json:
        raise OutputOptionError("--quiet and --json exclude each other; choose one")
    mode: Mode = "json" if as_json else "quiet" if quiet else "normal"
    with logs.to_file(log_file(params), verbose=verbose) as term:
        out = Output(mode, term.out, term.err)
        with console.use(out):
            yield out
