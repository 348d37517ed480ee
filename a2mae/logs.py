"""Library messages go to a log file, not to the terminal: Ray, Prefect, MLflow, torch, GDAL.

A command enters :func:`to_file` around its work and writes its own output to the streams it gets
back (:class:`Terminal`). While inside:

* **logging**: the root logger writes plain lines (time, level, logger, message; no colours) to the log
  file. The handlers libraries attach to print on the console (Prefect's on the root logger, Ray's,
  MLflow's, uvicorn's) are taken off, and their loggers propagate to the root instead. Prefect's API
  handler stays, so flow-run logs still reach the Prefect UI.
* **warnings** (``UserWarning``, ``DeprecationWarning``, ...) are logged (``logging.captureWarnings``).
* what libraries **print** to ``sys.stdout`` / ``sys.stderr`` (the lines Ray relays from its workers,
  MLflow's registry messages) goes to the file: both point at it.
* with ``capture_fds`` also file descriptors 1 and 2, so what C code (GDAL, torch) and child processes
  write lands in the file. Only for whole programs (the demo): a test's captured streams are left alone.
* ``RAY_COLOR_PREFIX=0``: Ray's relayed lines carry no colour codes.

``verbose=1`` (``-v``) also shows the libraries' warnings and errors on the terminal (stderr);
``verbose=2`` (``-vv``) their info messages too. Everything is restored on exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

#: The log line format of the file (no colours, one record per line).
FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
#: The format of library messages shown on the terminal with ``-v``.
TERMINAL_FORMAT = "%(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class Terminal:
    """The command's own streams, and the log file the rest goes to.

    Attributes:
        out: The terminal's stdout (the command's lines and JSON).
        err: The terminal's stderr (progress bars, the one-line error).
        log_file: The log file.
    """

    out: TextIO
    err: TextIO
    log_file: Path


def _is_console(handler: logging.Handler) -> bool:
    """A handler that prints on the console (a stream handler that is not a file handler)."""
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


def _open_log(log_file: Path) -> tuple[TextIO, Path]:
    """Open the log for appending (a file in the temporary folder when the folder is not writable)."""
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        return open(log_file, "a", encoding="utf-8", errors="replace", buffering=1), log_file
    except OSError:
        fd, name = tempfile.mkstemp(prefix="a2mae-", suffix=".log")
        return os.fdopen(fd, "a", encoding="utf-8", errors="replace", buffering=1), Path(name)


def _dup_stream(stream: TextIO) -> TextIO | None:
    """A new text stream on a duplicate of ``stream``'s descriptor (None when it has none)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    enc = getattr(stream, "encoding", None) or "utf-8"
    return os.fdopen(os.dup(fd), "w", encoding=enc, errors="replace", buffering=1)


class _Routing:
    """Saves and restores what :func:`to_file` changes (streams, descriptors, handlers, warnings)."""

    def __init__(self) -> None:
        self.stack = contextlib.ExitStack()

    def streams(self, log: TextIO, capture_fds: bool) -> tuple[TextIO, TextIO]:
        """Point ``sys.stdout`` / ``sys.stderr`` (and with ``capture_fds`` fds 1 and 2) at the log."""
        for s in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                s.flush()
        out, err = sys.stdout, sys.stderr
        if capture_fds:
            dup_out, dup_err = _dup_stream(out), _dup_stream(err)
            if dup_out is not None and dup_err is not None:
                self._capture_fds(log)
                self.stack.callback(dup_out.close)
                self.stack.callback(dup_err.close)
                out, err = dup_out, dup_err
            else:
                for d in (dup_out, dup_err):
                    if d is not None:
                        d.close()
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = log
        self.stack.callback(self._restore_sys, saved)
        return out, err

    def _capture_fds(self, log: TextIO) -> None:
        saved = {fd: os.dup(fd) for fd in (1, 2)}
        for fd in saved:
            os.dup2(log.fileno(), fd)

        def restore() -> None:
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)

        self.stack.callback(restore)

    @staticmethod
    def _restore_sys(saved: tuple[TextIO, TextIO]) -> None:
        for s in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                s.flush()
        sys.stdout, sys.stderr = saved

    def loggers(self, log: TextIO, terminal_err: TextIO, verbose: int) -> None:
        """The root logger writes to the log (and with ``verbose`` to the terminal); no console handlers."""
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        to_file = logging.StreamHandler(log)
        to_file.setFormatter(logging.Formatter(FILE_FORMAT))
        new = [h for h in handlers if not _is_console(h)] + [to_file]
        if verbose:
            shown = logging.StreamHandler(terminal_err)
            shown.setLevel(logging.WARNING if verbose == 1 else logging.INFO)
            shown.setFormatter(logging.Formatter(TERMINAL_FORMAT))
            new.append(shown)
        root.handlers = new
        root.setLevel(logging.INFO if verbose < 3 else logging.DEBUG)
        self.stack.callback(self._restore_logger, root, handlers, level, root.propagate)
        for obj in list(logging.root.manager.loggerDict.values()):
            if isinstance(obj, logging.Logger) and any(_is_console(h) for h in obj.handlers):
                self.stack.callback(self._restore_logger, obj, obj.handlers[:], obj.level, obj.propagate)
                obj.handlers = [h for h in obj.handlers if not _is_console(h)]
                obj.propagate = True

    @staticmethod
    def _restore_logger(
        logger: logging.Logger, handlers: list[logging.Handler], level: int, prop: bool
    ) -> None:
        logger.handlers, logger.propagate = handlers, prop
        logger.setLevel(level)

    def warnings_logged(self) -> None:
        """Warnings become log records (``py.warnings``); restored on exit."""
        before = warnings.showwarning
        logging.captureWarnings(True)

        def restore() -> None:
            logging.captureWarnings(False)
            warnings.showwarning = before

        self.stack.callback(restore)

    def environ(self, **values: str) -> None:
        """Set environment variables (for child processes too) unless the user set them."""
        for key, value in values.items():
            if key not in os.environ:
                os.environ[key] = value
                self.stack.callback(os.environ.pop, key, None)


@contextlib.contextmanager
def to_file(
    log_file: str | os.PathLike[str], *, verbose: int = 0, capture_fds: bool = False
) -> Iterator[Terminal]:
    """Route library messages to ``log_file`` while inside; yields the command's own streams.

    Args:
        log_file: The log (appended to; its folder is created). When it cannot be written, a file in
            the temporary folder is used instead (:attr:`Terminal.log_file` says which).
        verbose: 0: nothing from the libraries on the terminal; 1: their warnings and errors; 2: info too.
        capture_fds: Also redirect file descriptors 1 and 2 (C libraries, child processes).

    Yields:
        The terminal's streams (stdout, stderr) as they were on entry, and the log file's path.
    """
    log, path = _open_log(Path(log_file))
    log.write(f"---- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv[:1] + sys.argv[1:])}\n")
    routing = _Routing()
    with routing.stack:
        routing.stack.callback(log.close)
        routing.environ(RAY_COLOR_PREFIX="0")
        out, err = routing.streams(log, capture_fds)
        routing.loggers(log, err, verbose)
        routing.warnings_logged()
        yield Terminal(out, err, path)
