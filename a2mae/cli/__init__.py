"""``a2mae`` command line: one verb per pipeline stage, all thin wrappers over the library.

Every verb takes ``--params FILE`` (a parameter file holding only the keys it changes) and
``--set section.key=value`` overrides. Errors caused by the input (see :class:`a2mae.errors.A2maeError`)
are printed as one line on stderr with a non-zero exit code, never as a traceback.
"""

from __future__ import annotations

import sys

# Verb modules register themselves on `app` when imported. Add a line here for a new verb.
from a2mae.cli import evaluate as _evaluate  # noqa: F401
from a2mae.cli import finetune as _finetune  # noqa: F401
from a2mae.cli import info as _info  # noqa: F401
from a2mae.cli import ingest as _ingest  # noqa: F401
from a2mae.cli import models as _models  # noqa: F401
from a2mae.cli import pretrain as _pretrain  # noqa: F401
from a2mae.cli import promote as _promote  # noqa: F401
from a2mae.cli import services as _services  # noqa: F401
from a2mae.cli import tile as _tile  # noqa: F401
from a2mae.cli.app import app
from a2mae.errors import A2maeError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``a2mae`` console script."""
    try:
        app(args=argv, prog_name="a2mae", standalone_mode=False)
    except A2maeError as err:
        print(f"a2mae: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("a2mae: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    except SystemExit as err:  # typer/click exits (e.g. --help)
        return int(err.code or 0)
    except Exception as err:
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            return err.exit_code
        if isinstance(err, click.exceptions.Abort):
            return 1
        raise
    return 0
