"""Writer locks: one writer at a time, a named owner, a dead owner never blocks (trust issue item 4)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from a2mae.io.atomic import atomic_path, remove_stale_temporaries
from a2mae.io.lock import LockBusy, LockError, lock_path, read_owner, writer_lock

HOLD = textwrap.dedent(
    """
    import sys, time
    from a2mae.io.lock import writer_lock
    with writer_lock(sys.argv[1], 0, setting="x", command="holder"):
        print("held", flush=True)
        time.sleep(600)
    """
)


def _holder(target) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_the_owner_is_recorded_and_the_file_removed_on_release(tmp_path):
    target = tmp_path / "catalog.parquet"
    with writer_lock(target, 0, setting="data.lock_timeout_s", command="a2mae ingest x") as path:
        assert path == lock_path(target) == tmp_path / ".catalog.parquet.lock"
        owner = read_owner(path)
        assert owner is not None
        assert owner["pid"] == os.getpid() and owner["command"] == "a2mae ingest x"
        assert {"host", "started"} <= set(owner)
    assert not path.exists()


def test_a_second_writer_refuses_with_one_line_naming_the_owner(tmp_path):
    target = tmp_path / "catalog.parquet"
    proc = _holder(target)
    try:
        with pytest.raises(LockBusy) as err, writer_lock(target, 0.3, setting="data.lock_timeout_s"):
            pass
        line = str(err.value)
        assert "\n" not in line
        assert f"pid {proc.pid}" in line and "(holder)" in line and "data.lock_timeout_s" in line
        assert str(target) in line
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_owner_never_blocks_the_next_writer(tmp_path):
    target = tmp_path / "stssd"
    proc = _holder(target)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads(lock_path(target).read_text())["pid"] == proc.pid  # its record is still there
    with writer_lock(target, 0, setting="tile.lock_timeout_s") as path:  # taken at once: no wait
        assert read_owner(path)["pid"] == os.getpid()


def test_a_waiting_writer_gets_the_lock_when_the_first_lets_go(tmp_path):
    target = tmp_path / "catalog.parquet"
    order: list[str] = []
    first_in = threading.Event()
    release = threading.Event()

    def first() -> None:
        with writer_lock(target, 0, setting="x"):
            order.append("first")
            first_in.set()
            release.wait(10)
            order.append("first done")

    t = threading.Thread(target=first)
    t.start()
    first_in.wait(10)
    threading.Timer(0.3, release.set).start()
    with writer_lock(target, 30, setting="x"):
        order.append("second")
    t.join()
    assert order == ["first", "first done", "second"]


def test_a_lock_that_cannot_be_created_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    inside_a_file = tmp_path / "file" / "sub" / "catalog.parquet"
    with pytest.raises(LockError, match="cannot create") as err, writer_lock(inside_a_file, 0, setting="x"):
        pass
    assert "\n" not in str(err.value)
    (tmp_path / ".taken.lock").mkdir()  # the lock's path is a folder
    with (
        pytest.raises(LockError, match="cannot create the writer lock"),
        writer_lock(tmp_path / "taken", 0, setting="x"),
    ):
        pass


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path):
    target = tmp_path / "catalog.parquet"
    target.write_bytes(b"old")
    (tmp_path / ".catalog.parquet.abc123.tmp").write_bytes(b"half")  # left by a SIGKILL in atomic_path
    (tmp_path / ".other.parquet.abc123.tmp").write_bytes(b"x")  # another target's: kept
    with writer_lock(target, 0, setting="x"):
        removed = remove_stale_temporaries(target)
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"new")
    assert [p.name for p in removed] == [".catalog.parquet.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.parquet.abc123.tmp", "catalog.parquet"]
    assert target.read_bytes() == b"new"
