"""Library messages go to the log file (a2mae.logs): logging, warnings, prints, and with fds C code too."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings

from a2mae import logs


def _chatty_library_logger(name: str) -> logging.Logger:
    """A logger set up the way Ray, MLflow or uvicorn do: its own console handler, no propagation."""
    lg = logging.getLogger(name)
    lg.handlers = [logging.StreamHandler(sys.stderr)]
    lg.propagate = False
    lg.setLevel(logging.INFO)
    return lg


def test_logs_warnings_and_prints_go_to_the_file_not_the_terminal(tmp_path, capsys):
    lib = _chatty_library_logger("a2mae_test_lib")
    root_before = logging.getLogger().handlers[:]
    log = tmp_path / "logs" / "a2mae.log"
    with logs.to_file(log) as term:
        lib.info("Failed to query Ray Train Controller actor state")
        logging.getLogger("mlflow.fake").warning("a library warning")
        warnings.warn("a UserWarning from a library", UserWarning, stacklevel=1)
        print("Successfully registered model 'x'.")  # what MLflow prints
        sys.stderr.write("(RayTrainWorker pid=1) relayed line\n")
        term.out.write("the command's own line\n")
        term.err.write("the command's progress\n")
    got = capsys.readouterr()
    assert got.out == "the command's own line\n" and got.err == "the command's progress\n"
    text = log.read_text()
    for expected in (
        "Failed to query Ray Train Controller",
        "WARNING mlflow.fake: a library warning",
        "UserWarning: a UserWarning from a library",
        "Successfully registered model",
        "relayed line",
    ):
        assert expected in text
    assert "\x1b[" not in text  # no colour codes
    assert logging.getLogger().handlers == root_before  # restored
    assert lib.handlers and not lib.propagate
    lib.info("after the block: on its own handler again")
    assert "after the block" in capsys.readouterr().err


def test_verbose_shows_library_warnings_on_the_terminal_and_keeps_them_in_the_file(tmp_path, capsys):
    lib = _chatty_library_logger("a2mae_test_lib2")
    log = tmp_path / "a2mae.log"
    with logs.to_file(log, verbose=1):
        lib.info("an info message")
        lib.warning("a warning worth seeing")
        warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert "a warning worth seeing" in err and "an info message" not in err
    assert "deprecated thing" in err
    text = log.read_text()
    assert "an info message" in text and "a warning worth seeing" in text
    with logs.to_file(log, verbose=2):
        lib.info("info shown with -vv")
    assert "info shown with -vv" in capsys.readouterr().err


def test_capture_fds_takes_c_level_and_child_process_output(tmp_path, capfd):
    log = tmp_path / "demo.log"
    with logs.to_file(log, capture_fds=True) as term:
        os.write(2, b"written by C code to fd 2\n")
        subprocess.run([sys.executable, "-c", "print('a child process line')"], check=True)
        term.out.write("stage line\n")
        term.out.flush()
    os.write(2, b"after: fd 2 is back\n")
    got = capfd.readouterr()
    assert "stage line" in got.out and "a child process line" not in got.out
    assert "written by C code" not in got.err and "after: fd 2 is back" in got.err
    text = log.read_text()
    assert "written by C code to fd 2" in text and "a child process line" in text


def test_an_unwritable_log_folder_falls_back_to_a_temporary_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with logs.to_file(blocker / "sub" / "a2mae.log") as term:
        logging.getLogger("x").warning("kept somewhere")
    assert term.log_file.is_file() and "kept somewhere" in term.log_file.read_text()
    term.log_file.unlink()
