"""What a command shows: its own lines and one progress bar per long step, nothing from the libraries.

A command picks an :class:`Output` once (:func:`use`); the library's long steps (ingest, tile,
pre-training, fine-tuning, predict) then open their bar with :func:`progress`, which asks the current
output whether and how to show it. Three modes:

========== ====================================================================================
``normal`` a rich progress bar per long step on stderr (count, throughput, elapsed time and ETA)
           while it runs on a terminal; the command's lines on stdout
``quiet``  nothing but errors (scripts that only need the exit code)
``json``   no bars and no lines; the command prints one JSON document on stdout (:meth:`Output.json`)
========== ====================================================================================

Without an output chosen by a command (the library called from Python, a Prefect worker), bars show on
a terminal only and :meth:`Output.line` is silent. Where stderr is no terminal (the demo's output piped
to a file, CI), an output made with ``final_lines=True`` prints each bar once, in its final state, when
its step ends: one line per long step. Other commands' outputs print a plain progress line at most
every :data:`PROGRESS_LINE_S` seconds as a step advances (``tile: 1200/38000 sets (3%), 0:00:15
elapsed, eta 0:07:40``), and a last one when a step longer than that ends: a short step prints
nothing, a long one is not silent in a log file.

Library messages are kept out of both by :mod:`a2mae.logs`; this module only writes.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

Mode = Literal["normal", "quiet", "json"]

#: Off a terminal, seconds between two progress lines of a running step (see the module docstring).
PROGRESS_LINE_S = 5.0


class Bar:
    """One step's progress: ``update(completed=..., total=..., **fields)`` or ``advance(n)``.

    The no-op bar (quiet, json, or no terminal) accepts the same calls and shows nothing.
    """

    def __init__(self, progress: Any = None, task: Any = None) -> None:
        self._progress, self._task = progress, task

    def update(self, completed: float | None = None, *, total: float | None = None, **fields: Any) -> None:
        """Set the completed count, the total (known late, e.g. pre-training) or shown fields (``loss``)."""
        if self._progress is None:
            return
        kw: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
        if completed is not None:
            kw["completed"] = completed
        if total is not None:
            kw["total"] = total
        self._progress.update(self._task, **kw)

    def advance(self, n: float = 1) -> None:
        """Add ``n`` to the completed count."""
        if self._progress is not None:
            self._progress.advance(self._task, n)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class _LineBar(Bar):
    """A step's progress as a plain line at most every ``every`` seconds (a stream that is no terminal).

    Lines are printed as the step advances (no thread: a thread here would make the local pool spawn
    its workers instead of forking them); nothing is printed for a step shorter than ``every``.
    """

    def __init__(self, label: str, total: float | None, unit: str, stream: TextIO, every: float) -> None:
        super().__init__()
        self._label, self._total, self._unit, self._stream = label, total, unit, stream
        self._done = 0.0
        self._extra = ""
        self._t0 = time.monotonic()
        self._next = self._t0 + every
        self._every = every
        self._printed = False
        self._lock = threading.Lock()

    def update(self, completed: float | None = None, *, total: float | None = None, **fields: Any) -> None:
        """See :meth:`Bar.update`."""
        with self._lock:
            self._done = self._done if completed is None else completed
            self._total = self._total if total is None else total
            extra = fields.get("extra")
            self._extra = self._extra if extra is None else str(extra)
        self._due()

    def advance(self, n: float = 1) -> None:
        """See :meth:`Bar.advance`."""
        with self._lock:
            self._done += n
        self._due()

    def _due(self) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self._every
            self._print(final=False)

    def _print(self, *, final: bool) -> None:
        with self._lock:
            elapsed = time.monotonic() - self._t0
            done, total = self._done, self._total
            count = f"{done:g}/{total:g} {self._unit}" if total else f"{done:g} {self._unit}"
            if total:
                count += f" ({100 * done / total:.0f}%)"
            when = f"in {_clock(elapsed)}" if final else f"{_clock(elapsed)} elapsed"
            if not final and total and done:
                when += f", eta {_clock(elapsed * (total - done) / done)}"
            text = f"{self._label}: {count}, {when}" + (f", {self._extra}" if self._extra else "")
            try:
                self._stream.write(text + "\n")
                self._stream.flush()
            except (OSError, ValueError):  # a closed pipe or stream: progress is not worth failing for
                return
            self._printed = True

    def close(self) -> None:
        """The last line, when the step printed any (or lasted longer than ``every``)."""
        if self._printed or time.monotonic() - self._t0 >= self._every:
            self._print(final=True)


def _rate(task: Any) -> float | None:
    """Units per second: rich's estimate while running, the average once finished."""
    speed: float | None = task.finished_speed or task.speed
    if speed is None and task.elapsed and task.completed:
        speed = task.completed / task.elapsed
    return speed


def _columns(unit: str) -> tuple[Any, ...]:
    """Label, bar, ``n/total unit``, throughput, elapsed time and ETA (or the time it took), fields."""
    from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = _rate(task)
            if not speed:
                return Text("", style="progress.data.speed")
            u = task.fields.get("unit", unit)
            shown = f"{speed:.1f} {u}/s" if speed >= 0.1 else f"{1 / speed:.1f} s/{u.rstrip('s')}"
            return Text(shown, style="progress.data.speed")

    class Time(ProgressColumn):
        def render(self, task: Any) -> Text:
            def clock(seconds: float) -> str:
                s = int(seconds)
                return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"

            if task.finished:
                return Text(f"in {clock(task.finished_time or task.elapsed or 0)}", style="progress.elapsed")
            left = task.time_remaining
            shown = f"eta {clock(left)}" if left is not None else f"{clock(task.elapsed or 0)} elapsed"
            return Text(shown, style="progress.remaining")

    return (
        TextColumn("[bold]{task.description:<10}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        Rate(),
        Time(),
        TextColumn("{task.fields[extra]}"),
    )


@dataclass
class Output:
    """Where a command's own output goes, and how.

    Args:
        mode: ``normal``, ``quiet`` or ``json`` (see the module docstring).
        out: Stream of the command's lines and JSON (default: ``sys.stdout`` when made).
        err: Stream of the progress bars (default: ``sys.stderr`` when made).
        final_lines: Off a terminal, print each bar once in its final state (the demo).
        line_every_s: Off a terminal (without ``final_lines``), seconds between progress lines of a
            running step; 0: none.
    """

    mode: Mode = "normal"
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    final_lines: bool = False
    line_every_s: float = field(default_factory=lambda: PROGRESS_LINE_S)
    _live: Any = field(default=None, init=False, repr=False)
    _open: int = field(default=0, init=False, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)

    def bars_shown(self) -> bool:
        """Whether progress bars appear: normal mode, and a terminal (or ``final_lines``)."""
        if self.mode != "normal":
            return False
        return self.final_lines or _isatty(self.err)

    def line(self, text: str = "") -> None:
        """A line of the command's output (normal mode only)."""
        if self.mode != "normal":
            return
        with self._lock:
            if self._live is not None and _isatty(self.err):
                self._live.console.print(text, markup=False, highlight=False, soft_wrap=True)
            else:
                self.out.write(text + "\n")
                self.out.flush()

    def json(self, doc: Any) -> None:
        """The command's result as one JSON document on stdout (json mode only)."""
        if self.mode == "json":
            self.out.write(json.dumps(doc, default=str, sort_keys=True) + "\n")
            self.out.flush()

    @contextlib.contextmanager
    def bar(self, label: str, total: float | None, unit: str) -> Iterator[Bar]:
        """A progress bar for one step; bars opened while another is open share its display."""
        if not self.bars_shown():
            if self.mode != "normal" or self.line_every_s <= 0:
                yield Bar()
                return
            lines = _LineBar(label, total, unit, self.err, self.line_every_s)
            try:
                yield lines
            finally:
                lines.close()
            return
        with self._lock:
            if self._live is None:
                self._live = self._start(unit)
            live = self._live
            task = live.add_task(label, total=total, unit=unit, extra="")
            self._open += 1
        try:
            yield Bar(live, task)
        finally:
            with self._lock:
                self._open -= 1
                if self._open == 0:
                    self._live = None
                    live.stop()

    def _start(self, unit: str) -> Any:
        from rich.console import Console
        from rich.progress import Progress

        console = Console(file=self.err, highlight=False, soft_wrap=False)
        live = Progress(*_columns(unit), console=console, redirect_stdout=False, redirect_stderr=False)
        live.start()
        return live


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


_current: Output | None = None
_current_lock = threading.Lock()


def current() -> Output | None:
    """The output chosen by the running command, or None (library use: bars on a terminal only)."""
    return _current


@contextlib.contextmanager
def use(output: Output) -> Iterator[Output]:
    """Make ``output`` the current one (process-wide: Prefect runs tasks in other threads) while inside."""
    global _current
    with _current_lock:
        before, _current = _current, output
    try:
        yield output
    finally:
        with _current_lock:
            _current = before


def progress(
    label: str, total: float | None, unit: str, *, enabled: bool = True
) -> contextlib.AbstractContextManager[Bar]:
    """A progress bar of a long step (a no-op bar when not ``enabled`` or nothing is to be shown).

    Args:
        label: Short name of the step (``ingest``, ``tile``, ``pretrain``, ...).
        total: Units of work (None until known: :meth:`Bar.update` takes ``total=``).
        unit: Plural name of a unit (``scenes``, ``sets``, ``steps``, ``windows``).
        enabled: The caller's ``progress`` flag.
    """
    if not enabled:
        return contextlib.nullcontext(Bar())
    out = _current if _current is not None else Output(line_every_s=0)  # library use: a terminal only
    return out.bar(label, total, unit)


def line(text: str = "") -> None:
    """A line of the current command's output (silent without one: library use, Prefect workers)."""
    if _current is not None:
        _current.line(text)
