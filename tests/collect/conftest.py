"""The local STAC API (stac-fastapi-pgstac on a private PostgreSQL), built and started by the project."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def stac_api():
    """A running :class:`~a2mae.services.stac.StacServer` on free loopback ports, for the session.

    ``scripts/bootstrap-stac.sh`` first installs what it needs when something is missing (Debian's
    PostGIS through apt, the server venv ``.venv-stac``; a few seconds when all is there). Its state
    lives in a folder under /tmp that the ``postgres`` user can enter (PostgreSQL refuses to run as
    root; pytest's own temporary folders are private).
    """
    from a2mae.services.stac import StacServer

    subprocess.run(["bash", str(REPO / "scripts" / "bootstrap-stac.sh")], check=True, timeout=900)
    root = Path(tempfile.mkdtemp(prefix="a2mae-stac-"))
    root.chmod(0o755)
    server = StacServer(root / "stac", port=0, venv=REPO / ".venv-stac")
    try:
        server.start(timeout=120)
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
