"""Error lines are safe to print: no secrets, no control characters, one line."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from a2mae.cli import main
from a2mae.errors import safe_line


@pytest.mark.parametrize(
    ("text", "shown", "hidden"),
    [
        ("endpoint http://dev:s3cr3t@127.0.0.1:8333 refused", "http://dev:***@127.0.0.1:8333", "s3cr3t"),
        ("https://user:p%40ss@host/path", "https://user:***@host/path", "p%40ss"),
        (
            "s3://b/k.tif?X-Amz-Signature=deadbeef&X-Amz-Date=1",
            "X-Amz-Signature=***&X-Amz-Date=1",
            "deadbeef",
        ),
        ("postgres://a:b@h/db?password=hunter2", "password=***", "hunter2"),
        ("http://plain@host/ stays", "http://plain@host/ stays", None),
    ],
)
def test_secrets_are_masked(text, shown, hidden):
    out = safe_line(text, env={})
    assert shown in out
    assert hidden is None or hidden not in out


def test_secret_environment_values_are_masked_anywhere():
    env = {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI", "MLFLOW_TRACKING_PASSWORD": "pw-1234"}
    out = safe_line("key wJalrXUtnFEMI and pw-1234 in a message", env=env)
    assert "wJalrXUtnFEMI" not in out and "pw-1234" not in out and out.count("***") == 2


@given(st.text())
def test_any_text_becomes_one_printable_line(text):
    out = safe_line(text, env={})
    assert "\n" not in out and "\r" not in out and "\x1b" not in out
    assert all(c.isprintable() or c == " " for c in out)


def test_the_cli_prints_a_file_name_with_control_characters_escaped(tmp_path, capsys):
    evil = tmp_path / "a\nb\x1b[2Jc.yaml"
    assert main(["params", "--params", str(evil)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err and "a\\nb\\x1b[2Jc.yaml" in err


def test_the_cli_never_echoes_an_endpoint_password(capsys, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    url = "http://admin:topsecret@127.0.0.1:1"
    main(
        [
            "ingest",
            "s3://no-such-bucket/x",
            "--catalog",
            "/nonexistent/c.parquet",
            "--set",
            f"data.s3.endpoint_url={url}",
        ]
    )
    out = capsys.readouterr()
    assert "topsecret" not in out.err + out.out
