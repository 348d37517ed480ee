"""Operating-system errors (trust item 7): a full disk, a read-only file system, a forbidden path end
with one line naming the path and what to do, exit code 1, and nothing half-written.

The faults are injected where the writers call the OS (the tests run as root in CI, where permissions
cannot be taken away, and no test fills a real disk).
"""

from __future__ import annotations

import errno
import os
import shutil

import pytest

from a2mae.cli import main
from a2mae.errors import os_error_line


def _oserror(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


@pytest.mark.parametrize(
    ("code", "needle"),
    [
        (errno.ENOSPC, "no space left on the device"),
        (errno.EROFS, "read-only file system"),
        (errno.EACCES, "permission denied"),
        (errno.ELOOP, "symbolic link loop"),
        (errno.ENOENT, "no such file or directory"),
    ],
)
def test_os_error_line_names_the_path_and_what_to_do(code, needle):
    line = os_error_line(_oserror(code, "/data/out/x.bin"))
    assert line.startswith("/data/out/x.bin: ") and needle in line and "\n" not in line


def test_an_unknown_os_error_keeps_the_system_message():
    assert os_error_line(OSError(errno.EIO, "Input/output error", "/d")) == "/d: Input/output error"
    assert os_error_line(OSError("bare")) == "bare"


def test_a_full_disk_while_tiling_leaves_the_old_snapshot(tmp_path, capsys, monkeypatch, synthetic_scenes):
    import a2mae.stssd.run as run

    catalog = synthetic_scenes[2]
    out = tmp_path / "stssd"
    args = ["tile", "--catalog", str(catalog), "--out", str(out), "--set", "tile.workers=1"]
    assert main(args) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()

    def full(tmp, *a, **k):
        (tmp / "shards").mkdir(exist_ok=True)
        (tmp / "shards" / "part.bin").write_bytes(b"x" * 100)  # half a shard, then the disk is full
        raise _oserror(errno.ENOSPC, str(tmp / "shards" / "part.bin"))

    monkeypatch.setattr(run, "_write_snapshot", full)
    code = main([*args, "--force"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and "no space left on the device" in err[0] and "part.bin" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stssd"]  # no temporary folder left
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_a_read_only_catalog_folder_writes_nothing(tmp_path, capsys, monkeypatch, synthetic_scenes):
    import a2mae.ingest.run as run

    scenes = tmp_path / "scenes"
    shutil.copytree(synthetic_scenes[0], scenes)
    catalog = tmp_path / "ro" / "catalog.parquet"

    def read_only(records, path, *a, **k):
        raise _oserror(errno.EROFS, str(path))

    monkeypatch.setattr(run, "write_catalog", read_only)
    code = main(["ingest", str(scenes), "--catalog", str(catalog)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and "read-only file system; write elsewhere" in err[0]
    assert "catalog.parquet" in err[0]
    assert not catalog.exists()
