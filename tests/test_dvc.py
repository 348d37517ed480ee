"""DVC: the repository's dvc.yaml reproduces the snapshot from the real samples, bit for bit; the
workspace helper commits, pushes and restores it in a fresh clone; failures are one line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from a2mae.dvc import DvcError, DvcWorkspace, services_workspace
from flows.demo import make_workspace

REPO = Path(__file__).resolve().parents[1]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_repo_dvc_config_and_stages():
    config = (REPO / ".dvc" / "config").read_text()
    assert "analytics = false" in config and "remote = local" in config
    assert "s3://a2mae-dvc/store" in config and "endpointurl = http://127.0.0.1:8333" in config
    assert (
        "secret" not in config.lower() and "access_key" not in config.lower()
    )  # credentials never committed
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert (
        stages["ingest"]["cmd"].startswith("a2mae ingest ")
        and "--params params.yaml" in stages["ingest"]["cmd"]
    )
    assert stages["tile"]["cmd"].startswith("a2mae tile ") and stages["tile"]["outs"] == ["data/stssd"]
    assert stages["tile"]["params"][0] == "tile" and stages["ingest"]["params"] == ["data"]


@pytest.mark.slow
def test_repro_commit_push_and_pull_in_a_fresh_clone(tmp_path):
    ws = DvcWorkspace(make_workspace(tmp_path / "ws"))
    assert ws.is_project() and ws.is_git()
    assert ws.set_params({"tile.grid_m": 20000.0, "tile.workers": 1}) == ["tile.grid_m", "tile.workers"]
    text = (ws.root / "params.yaml").read_text()
    assert "grid_m: 20000.0" in text and "# spacing of candidate set centres" in text  # comments kept
    assert ws.set_params({"tile.grid_m": 20000.0}) == []

    ws.repro()
    md5 = ws.out_hash("data/stssd")
    assert md5 and md5.endswith(".dir") and ws.status_clean()
    first = _tree(ws.root / "data" / "stssd")
    ws.repro("tile", force=True)  # deterministic: the same bytes again
    assert ws.out_hash("data/stssd") == md5 and _tree(ws.root / "data" / "stssd") == first

    ws.push("local")
    sha = ws.git_commit(["dvc.lock", "params.yaml"], "data: snapshot")
    assert sha and ws.git_commit(["dvc.lock", "params.yaml"], "again") is None  # nothing changed

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ws.root), str(clone)], check=True)
    fresh = DvcWorkspace(clone)
    # the local remote's relative URL points inside each clone; aim this clone at the original one
    fresh.run("remote", "modify", "--local", "local", "url", str(ws.root / ".a2mae" / "dvc-remote"))
    fresh.pull("local")
    assert _tree(clone / "data" / "stssd") == first and fresh.status_clean()


def test_failures_are_one_line(tmp_path):
    ws = DvcWorkspace(make_workspace(tmp_path / "ws"))
    with pytest.raises(DvcError) as err:
        ws.push("nowhere")
    assert "\n" not in str(err.value) and "DVC remote 'nowhere' is not configured" in str(err.value)
    with pytest.raises(DvcError, match=r"`dvc pull -r local` failed in .*: "):
        ws.pull("local")  # nothing was pushed yet
    plain = DvcWorkspace(tmp_path)
    assert not plain.is_project()
    with pytest.raises(DvcError, match="is not a git work tree"):
        plain.git_commit(["x"], "m")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def test_services_workspace_is_a_clone_that_leaves_the_checkout_alone(tmp_path):
    checkout = DvcWorkspace(make_workspace(tmp_path / "checkout"))
    (checkout.root / "flows").mkdir()
    (checkout.root / "flows" / "code.py").write_text("x = 1\n")
    _git(checkout.root, "add", "flows")
    _git(checkout.root, "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-q", "-m", "code")
    dest = tmp_path / "home" / "workspace"

    ws = services_workspace(checkout.root, dest, "s3", "http://127.0.0.1:12345")
    assert ws.is_project() and ws.is_git() and ws.root == dest
    assert (dest / "data" / "samples").is_dir() and not (dest / "flows").exists()  # data, not the code
    config = (dest / ".dvc" / "config").read_text()
    assert "remote = s3" in config and "endpointurl = http://127.0.0.1:12345" in config
    assert "secret" not in config.lower()
    assert _git(dest, "log", "-1", "--format=%s").startswith("workspace: snapshots go to DVC remote s3")
    assert _git(dest, "status", "--porcelain") == ""
    head = _git(dest, "rev-parse", "HEAD")
    services_workspace(checkout.root, dest, "s3", "http://127.0.0.1:12345")  # a restart: nothing to commit
    assert _git(dest, "rev-parse", "HEAD") == head

    checkout.set_params({"tile.grid_m": 480.0})  # the user edits params.yaml; the next start takes it
    services_workspace(checkout.root, dest, "s3", "http://127.0.0.1:12345")
    assert (dest / "params.yaml").read_text() == (checkout.root / "params.yaml").read_text()
    assert _git(dest, "log", "-1", "--format=%s").startswith("workspace: params.yaml from ")
    assert _git(checkout.root, "status", "--porcelain") == "M params.yaml"  # only the user's own edit

    with pytest.raises(DvcError, match=r"is not a git work tree with dvc\.yaml") as err:
        services_workspace(tmp_path / "plain", tmp_path / "other", "s3")
    assert "\n" not in str(err.value)
