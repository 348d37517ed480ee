"""The `a2mae` entry point: usage errors, Ctrl-C and SIGTERM end in one line and a known exit code."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from a2mae.cli import main


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["tile", "--bogus"], "a2mae tile: error: No such option: --bogus"),
        (["ingest"], "a2mae ingest: error: Missing argument 'sources'"),
        (["evaluate", "a2mae-classification", "v1", "--batch-size", "x"], "a2mae evaluate: error:"),
        (["nosuchverb"], "a2mae: error: No such command 'nosuchverb'"),
        (["tile", "--set"], "requires an argument"),
    ],
)
def test_usage_errors_exit_2_with_one_line(capsys, argv, expected):
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert expected in err
    assert err.count("\n") == 0 and "Traceback" not in captured.err + captured.out


def test_usage_error_from_the_console_script_has_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "a2mae", "tile", "--chip-size", "12"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def big_catalog(tmp_path_factory) -> Path:
    """Synthetic scenes large enough that tiling takes a few seconds."""
    from a2mae.ingest.catalog import write_catalog
    from a2mae.testing.scenes import default_specs, make_scenes

    root = tmp_path_factory.mktemp("sig")
    write_catalog(make_scenes(root / "scenes", default_specs(4.0)), root / "catalog.parquet")
    return root / "catalog.parquet"


STOPS = [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code", "word"), STOPS)
def test_a_stopped_tile_exits_with_its_code_and_leaves_nothing(tmp_path, big_catalog, signum, code, word):
    out = tmp_path / "stssd"
    cmd = ["tile", "--catalog", str(big_catalog), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "a2mae", *cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".stssd.tmp-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # tiling has started once its temporary folder exists
    assert proc.poll() is None, "tiling ended before it could be stopped"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code
    assert err.strip() == f"a2mae: {word}; nothing written"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no snapshot, no temporary folder


def test_a_stop_swallowed_by_python_is_sent_again():
    """A signal raised where Python ignores exceptions (logging's after-fork hook) is not lost."""
    from types import SimpleNamespace

    from a2mae.cli import Stopped, _on_unraisable

    seen, passed_on = [], []
    before = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    try:
        hook = _on_unraisable(passed_on.append)
        hook(SimpleNamespace(exc_value=Stopped(signal.SIGUSR1)))
        other = SimpleNamespace(exc_value=ValueError("x"))
        hook(other)
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        signal.signal(signal.SIGUSR1, before)
    assert seen == [signal.SIGUSR1]
    assert passed_on == [other]
