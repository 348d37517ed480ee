"""``a2mae`` command line: one verb per pipeline stage, all thin wrappers over the library.

Every verb takes ``--params FILE`` (a parameter file holding only the keys it changes) and
``--set section.key=value`` overrides. Errors caused by the input (see :class:`a2mae.errors.A2maeError`)
are printed as one line on stderr with a non-zero exit code, never as a traceback.
"""

from __future__ import annotations

import importlib
import signal
import sys
import threading
from collections.abc import Callable

# Verb modules register themselves on `app` when imported. Add a line here for a new verb.
from a2mae.cli import benchmark as _benchmark  # noqa: F401
from a2mae.cli import catalog as _catalog  # noqa: F401
from a2mae.cli import collect as _collect  # noqa: F401
from a2mae.cli import evaluate as _evaluate  # noqa: F401
from a2mae.cli import finetune as _finetune  # noqa: F401
from a2mae.cli import info as _info  # noqa: F401
from a2mae.cli import ingest as _ingest  # noqa: F401
from a2mae.cli import models as _models  # noqa: F401
from a2mae.cli import predict as _predict  # noqa: F401
from a2mae.cli import pretrain as _pretrain  # noqa: F401
from a2mae.cli import promote as _promote  # noqa: F401
from a2mae.cli import services as _services  # noqa: F401
from a2mae.cli import tile as _tile  # noqa: F401
from a2mae.cli.app import app
from a2mae.errors import A2maeError, os_error_line, safe_line


class Stopped(BaseException):
    """SIGINT or SIGTERM, raised in the main thread so that every ``finally`` (clean-up, locks) runs.

    A ``BaseException``: no ``except Exception`` on the way swallows it, and typer does not turn it into
    an exit code of its own.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum: int, frame: object) -> None:
    raise Stopped(signum)


def _on_unraisable(
    hook: Callable[[sys.UnraisableHookArgs], object],
) -> Callable[[sys.UnraisableHookArgs], None]:
    """A ``sys.unraisablehook`` that raises a swallowed :class:`Stopped` again.

    A signal can arrive while the main thread runs code whose exceptions Python only prints and
    ignores (``logging``'s after-fork lock hook, a finaliser, a weakref callback); the stop would be
    lost and the command would run to its end. The same signal is sent again a moment later, to be
    raised at the next ordinary line.
    """

    def unraisable(info: sys.UnraisableHookArgs) -> None:
        exc = getattr(info, "exc_value", None)
        if isinstance(exc, Stopped):  # sent from a thread: raised once this hook has returned
            import os

            threading.Timer(0.02, os.kill, (os.getpid(), exc.signum)).start()
            return
        hook(info)

    return unraisable


def _usage_errors() -> tuple[type[Exception], ...]:
    """``ClickException`` of click and of the copy of click that typer bundles (usage errors)."""
    found: list[type[Exception]] = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(importlib.import_module(name).ClickException)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _usage_error(err: Exception) -> int:
    """One line for a usage error (unknown option, missing argument, bad value); exit code 2."""
    if type(err).__name__ == "NoArgsIsHelpError":  # a bare group: its help is the answer
        err.show()  # type: ignore[attr-defined]
        return 2
    ctx = getattr(err, "ctx", None)
    command = ctx.command_path if ctx is not None else "a2mae"
    message = " ".join(err.format_message().split()).rstrip(".")  # type: ignore[attr-defined]
    print(f"{command}: error: {safe_line(message)}; see '{command} --help'", file=sys.stderr)
    return int(getattr(err, "exit_code", 2))


def _stopped(signum: int) -> int:
    word = "interrupted" if signum == signal.SIGINT else "terminated"
    print(f"a2mae: {word}; nothing written", file=sys.stderr)
    return 128 + signum


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``a2mae`` console script.

    Exit codes: 0 done; 1 an operating-system error (full disk, read-only or forbidden path: one line
    naming the path); 2 a usage error or an error in the user's input (one line on stderr, no
    traceback); 130 interrupted (Ctrl-C, SIGINT); 143 terminated (SIGTERM). A stopped verb runs its
    clean-up (temporary folders, locks) before it exits.
    """
    import os

    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # no model is ever unpickled
    usage_errors = _usage_errors()
    handlers = {}
    unraisable = sys.unraisablehook
    if threading.current_thread() is threading.main_thread():
        sys.unraisablehook = _on_unraisable(unraisable)
        for signum in (signal.SIGINT, signal.SIGTERM):
            handlers[signum] = signal.signal(signum, _on_signal)
    try:
        rv = app(args=argv, prog_name="a2mae", standalone_mode=False)
    except A2maeError as err:
        print(f"a2mae: error: {safe_line(str(err))}", file=sys.stderr)
        return err.exit_code
    except usage_errors as err:
        return _usage_error(err)
    except Stopped as stop:
        return _stopped(stop.signum)
    except KeyboardInterrupt:
        return _stopped(signal.SIGINT)
    except OSError as err:  # a full disk, a read-only folder, permissions: the path and what to do
        print(f"a2mae: error: {safe_line(os_error_line(err))}", file=sys.stderr)
        return 1
    except SystemExit as err:  # typer/click exits (e.g. --help)
        return int(err.code or 0)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        sys.unraisablehook = unraisable
    if rv == 130:  # typer turns a KeyboardInterrupt it catches itself into this return value
        return _stopped(signal.SIGINT)
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
