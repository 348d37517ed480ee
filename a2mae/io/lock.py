"""Writer locks: one writer at a time per catalog or snapshot folder, recorded and recovered.

A writer (``a2mae ingest`` merging into a catalog, ``a2mae catalog rm``, ``a2mae tile`` writing one
``--out``) holds an exclusive ``flock`` on a hidden sibling of its target, ``.<name>.lock``, for as long
as it writes. The file records the owner as one JSON line: host, pid, start time (UTC) and command, so
a second writer can say who holds it. The kernel drops the lock when the owner dies however it dies
(SIGKILL included), so a dead owner never blocks anyone: the next writer takes the lock and overwrites
the record. A second writer waits up to ``timeout_s`` seconds (polling), then refuses with one line
naming the owner; ``timeout_s = 0`` refuses at once.

The lock file is removed when its owner lets go. Unlinking a locked file races with a writer that
opened it just before: after taking the lock, a writer checks that the path still names the file it
locked, and starts again otherwise.

Local and NFS file systems honour ``flock`` (Linux emulates it with POSIX locks on NFS). Forked
children share their parent's lock; a2mae's local workers die with their parent
(:func:`a2mae.executor.die_with_parent`), so a killed run's lock is released with its workers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from a2mae.errors import A2maeError

#: Seconds between two tries of a waiting writer.
POLL_S = 0.2


class LockBusy(A2maeError):
    """Another writer holds the target for longer than the timeout; the message names it."""


class LockError(A2maeError):
    """The lock file cannot be created (read-only folder, permissions); the message names it.

    An operating-system error: exit code 1 (``README.md``, "exit code 1 for an operating-system error").
    """

    exit_code = 1


def lock_path(target: str | os.PathLike[str]) -> Path:
    """The lock file of ``target``: ``.<name>.lock`` next to it."""
    target = Path(target)
    return target.parent / f".{target.name}.lock"


def owner_record(command: str | None = None) -> dict[str, object]:
    """This process as a lock owner: host, pid, start time (UTC, ISO) and command line."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command if command is not None else " ".join(sys.argv)[:300],
    }


def read_owner(path: str | os.PathLike[str]) -> dict[str, object] | None:
    """The owner recorded in a lock file (None when absent, empty or unreadable)."""
    try:
        doc = json.loads(Path(path).read_text() or "null")
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def describe_owner(owner: dict[str, object] | None) -> str:
    """``pid 123 on host h since 2024-01-01T10:00:00+00:00 (a2mae ingest ...)``, or a generic phrase."""
    if not owner:
        return "another writer"
    cmd = str(owner.get("command") or "").strip()
    return f"pid {owner.get('pid')} on {owner.get('host')} since {owner.get('started')}" + (
        f" ({cmd[:120]})" if cmd else ""
    )


def _open_locked(path: Path) -> int | None:
    """Open ``path`` and take its lock without blocking; the fd, or None when someone holds it.

    Raises:
        LockError: The file cannot be created.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise LockError(
            f"{path}: cannot create the writer lock ({err.strerror}); make the folder writable"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError as err:
        os.close(fd)
        raise LockError(
            f"{path}: cannot lock ({err.strerror}); this file system may not support locks"
        ) from None
    try:
        same = os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        same = False
    if not same:  # the previous owner removed the file between our open and our lock
        os.close(fd)
        return _open_locked(path)
    return fd


@contextlib.contextmanager
def writer_lock(
    target: str | os.PathLike[str],
    timeout_s: float,
    *,
    setting: str,
    command: str | None = None,
) -> Iterator[Path]:
    """Hold the writer lock of ``target`` for the ``with`` block.

    Args:
        target: The catalog file or snapshot folder written.
        timeout_s: How long to wait for another writer, seconds (0: refuse at once).
        setting: The parameter that sets ``timeout_s`` (named in the refusal).
        command: Recorded as the owner's command (default: this process's command line).

    Yields:
        The lock file's path.

    Raises:
        LockBusy: Another writer kept it for more than ``timeout_s``.
        LockError: The lock file cannot be created.
    """
    path = lock_path(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LockError(
            f"{path.parent}: cannot create the folder ({err.strerror}); give another path"
        ) from None
    deadline = time.monotonic() + max(0.0, timeout_s)
    told = False
    while (fd := _open_locked(path)) is None:
        if time.monotonic() >= deadline:
            raise LockBusy(
                f"{target}: in use by {describe_owner(read_owner(path))}; waited {timeout_s:g} s "
                f"(set {setting}); try again when it has finished"
            )
        if not told and sys.stderr.isatty():
            print(f"{target}: waiting for {describe_owner(read_owner(path))}", file=sys.stderr)
            told = True
        time.sleep(POLL_S)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(owner_record(command), sort_keys=True) + "\n").encode(), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
