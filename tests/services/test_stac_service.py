"""The local STAC API as a service of the stack (the server itself runs in tests/collect)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from a2mae.config import load_params
from a2mae.services.base import ServiceError
from a2mae.services.stac import StacServer
from a2mae.services.stack import OPTIONAL, SERVICES, Stack

REPO = Path(__file__).resolve().parents[2]


def test_a_missing_server_venv_is_one_line_saying_how_to_build_it(tmp_path):
    server = StacServer(tmp_path / "stac", port=0, venv=tmp_path / "no-venv")
    with pytest.raises(ServiceError) as err:
        server.start(timeout=5)
    assert "scripts/bootstrap-stac.sh" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "stac" / "pg" / "data").exists()


def test_the_stack_lists_the_stac_api_only_when_enabled(tmp_path):
    off = Stack(load_params(overrides=[f"infra.home={tmp_path}"]), tmp_path)
    assert off.names() == SERVICES and off.service("stac").url.endswith(":8082")
    on = Stack(
        load_params(overrides=[f"infra.home={tmp_path}", "infra.stac=true", "infra.stac_port=18099"]),
        tmp_path,
    )
    assert on.names() == SERVICES + OPTIONAL and on.service("stac").url == "http://127.0.0.1:18099"
    assert on.stac.venv == tmp_path / ".venv-stac"


@pytest.mark.slow
def test_services_up_only_stac_and_down(tmp_path):
    """`services up --only stac` installs what is missing, starts PostgreSQL and the API; down stops both."""
    from a2mae.services.base import free_port_pair
    from a2mae.services.http import http_json

    subprocess.run(["bash", str(REPO / "scripts" / "bootstrap-stac.sh")], check=True, timeout=900)
    home = Path(tempfile.mkdtemp(prefix="a2mae-stack-"))  # the postgres user must reach it (root runs)
    home.chmod(0o755)
    try:
        port = free_port_pair(0, low=20000, high=30000)
        sets = [f"infra.home={home}", f"infra.stac_port={port}", f"infra.stac_venv={REPO / '.venv-stac'}"]
        stack = Stack(load_params(overrides=sets), REPO)
        lines: list[str] = []
        rows = stack.up(only=("stac",), echo=lines.append)
        stac = next(r for r in rows if r.name == "stac")
        assert stac.healthy and stac.url == f"http://127.0.0.1:{port}"
        landing = http_json(f"{stac.url}/")
        assert landing["id"] == "a2mae-stac" and any("filter" in c for c in landing["conformsTo"])
        assert stack.down(echo=lines.append) == ["stac"]
        assert stack.stac._running_pg_port() is None and http_json(f"{stac.url}/") is None
    finally:
        shutil.rmtree(home, ignore_errors=True)
