"""Paths given to the services' deployments stay under their data roots (issue 21): the forms of the
Prefect UI can be filled by anyone who reaches the API, so a local path outside the workspace and
``infra.data_roots`` is refused in one line, links and ``..`` resolved first. Runs without the services
are not limited. The real services: tests/e2e/test_operator_services.py."""

from __future__ import annotations

import os

import pytest

from a2mae.config import DATA_ROOTS_ENV, ConfigError, load_params
from flows.params import IngestParams, PredictParams, TileParams


@pytest.fixture
def roots(tmp_path, monkeypatch):
    ws, extra, outside = tmp_path / "ws", tmp_path / "extra", tmp_path / "outside"
    for d in (ws, extra, outside):
        d.mkdir()
    monkeypatch.setenv(DATA_ROOTS_ENV, os.pathsep.join([str(ws), str(extra)]))
    return ws, extra, outside


def _refused(call) -> str:
    with pytest.raises(ConfigError) as err:
        call()
    msg = str(err.value)
    assert "\n" not in msg and "outside the services' data roots" in msg and "infra.data_roots" in msg
    return msg


def test_local_paths_outside_the_roots_are_refused(roots):
    ws, extra, outside = roots
    form = IngestParams(project_dir=str(ws), sources=["scenes"], catalog=str(outside / "catalog.parquet"))
    assert _refused(form.resolve).startswith(f"path {outside / 'catalog.parquet'}:")
    ok = IngestParams(project_dir=str(ws), sources=["scenes", str(extra / "more")], catalog="data/c.parquet")
    assert ok.resolve().data.catalog == str(ws / "data" / "c.parquet")
    assert ok.path(str(extra / "more")) == str(extra / "more") and ok.path("s3://b/x") == "s3://b/x"
    _refused(lambda: ok.path(str(outside)))
    _refused(lambda: ok.path("../outside/x"))  # `..` out of the workspace
    _refused(lambda: ok.path("/etc/passwd"))
    (ws / "link").symlink_to(outside)
    _refused(lambda: ok.path("link/catalog.parquet"))  # a link out of the workspace
    _refused(IngestParams(project_dir=str(outside), sources=["scenes"]).resolve)  # another workspace
    tile = TileParams.from_params(load_params(), project_dir=str(ws), snapshot=str(outside / "snap"))
    _refused(tile.resolve)
    predict = PredictParams(project_dir=str(ws), sources=["a.tif"], new_scene=str(outside / "b.tif"))
    _refused(lambda: predict.path(predict.new_scene))


def test_runs_without_the_services_are_not_limited(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ROOTS_ENV, raising=False)
    form = IngestParams(project_dir=str(tmp_path / "ws"), sources=["s"], catalog=str(tmp_path / "c.parquet"))
    assert form.resolve().data.catalog == str(tmp_path / "c.parquet")


def test_the_stack_gives_its_deployments_the_workspace_and_the_configured_roots(tmp_path):
    from a2mae.services.stack import Stack

    params = load_params(None, [f"infra.home={tmp_path / 'home'}", "infra.data_roots=[imagery, /srv/scenes]"])
    stack = Stack(params, tmp_path)
    env = stack.flows.environment()
    assert env[DATA_ROOTS_ENV].split(os.pathsep) == [
        str(tmp_path / "home" / "workspace"),
        str(tmp_path / "imagery"),
        "/srv/scenes",
    ]
