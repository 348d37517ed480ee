"""Real processes for fault tests: run an ``a2mae`` verb, watch its descendants, signal it mid-run.

Linux only (``/proc``), like the fault tests that use it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, their children, ...), from ``/proc``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if fields[0] not in ("Z", "X"):
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier and p not in found}
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] not in ("Z", "X")


def wait_gone(pids: set[int], timeout: float = 30.0) -> set[int]:
    """Wait until every pid has exited; returns those still running after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    left = {p for p in pids if alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = {p for p in left if alive(p)}
    return left


@dataclass
class Run:
    """An ``a2mae`` verb run in its own process, signalled after ``delay`` seconds."""

    returncode: int
    stdout: str
    stderr: str
    signalled: bool
    workers: set[int] = field(default_factory=set)  # descendants seen while it ran


def run_verb(
    args: Sequence[str], *, sig: int | None = None, delay: float = 0.0, cwd: str | Path | None = None
) -> Run:
    """Run ``python -m a2mae ARGS``; send ``sig`` after ``delay`` seconds if it still runs.

    Its descendants are sampled every few milliseconds, so the caller can check that none outlives it.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "a2mae", *args], stdout=out, stderr=err, text=True, cwd=cwd, env=env
        )
        workers: set[int] = set()
        signalled = False
        start = time.monotonic()
        while proc.poll() is None:
            workers |= descendants(proc.pid)
            if sig is not None and not signalled and time.monotonic() - start >= delay:
                workers |= descendants(proc.pid)
                proc.send_signal(sig)
                signalled = True
            time.sleep(0.01)
        out.seek(0)
        err.seek(0)
        return Run(proc.returncode, out.read(), err.read(), signalled, workers)


SIGNAL_EXIT: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}


def signal_outcome(run: Any, sig: int, written: str, leftovers: list[Any]) -> str:
    """Check how a verb sent ``sig`` at a random moment ended, and name the outcome (fault tests).

    Args:
        run: The finished process (``returncode``, ``stderr``).
        sig: The signal sent.
        written: Which output is in place ("old ..." or "new ...").
        leftovers: Temporaries and locks left beside the output (must be none after a clean stop).
    """
    if run.returncode == 0:
        return "finished"
    if sig == signal.SIGKILL:
        assert run.returncode == -signal.SIGKILL
        return f"killed, {written}"
    if run.returncode == -sig:  # Python's default handler: while importing a2mae, or after main() returned
        return f"outside the CLI (importing, or exiting), {written}"
    assert run.returncode == SIGNAL_EXIT[sig], (run.returncode, run.stderr)
    word = "interrupted" if sig == signal.SIGINT else "terminated"
    assert run.stderr.strip().splitlines() == [f"a2mae: {word}; nothing written"], run.stderr
    assert leftovers == []  # clean-up ran: no temporary, no lock
    return f"{word} ({run.returncode}), {written}"
