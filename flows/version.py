"""Versioning tasks of the retrain flow: the DVC snapshot, and lineage tags on the MLflow runs.

The snapshot task writes the data/tile parameters the outputs were made with into the workspace's
``params.yaml``, records deps, params and outputs in ``dvc.lock`` (``dvc commit``), pushes the
snapshot's files to the DVC remote (retried: it is network I/O) and, when asked, git-commits
``dvc.lock`` and ``params.yaml`` so that a fresh clone can ``dvc pull`` exactly this version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.params import PATH_KEYS

#: Run and version tag holding the snapshot's DVC hash (same key as a2mae.tracking.lineage.snapshot_tags).
DVC_TAG = "a2mae.snapshot_dvc_hash"


def _flat(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@task(name="dvc-snapshot", retries=2, retry_delay_seconds=[5, 15], cache_policy=NO_CACHE)
def version_snapshot(
    project_dir: str, doc: dict[str, Any], snapshot: str, remote: str, git_commit: bool
) -> dict[str, Any]:
    """DVC-commit and push the snapshot (and git-commit ``dvc.lock``); returns its DVC hash.

    A snapshot outside the workspace's ``dvc.yaml`` outputs is reported as untracked, not an error.
    """
    import yaml

    from a2mae.dvc import DvcError, DvcWorkspace

    ws = DvcWorkspace(project_dir)
    if not ws.is_project():
        return {"tracked": False, "reason": f"{ws.root} has no dvc.yaml"}
    try:
        rel = str(Path(snapshot).resolve().relative_to(ws.root))
    except ValueError:
        return {"tracked": False, "reason": f"{snapshot} is outside the DVC workspace {ws.root}"}
    if rel not in ws.stage_outs():
        return {"tracked": False, "reason": f"{rel} is not an output of {ws.root}/dvc.yaml"}
    if git_commit and not ws.is_git():  # before anything is written: all or nothing
        raise DvcError(
            f"{ws.root} is not a git work tree, so the snapshot version cannot be committed; run `git init` "
            "there, or set git_commit to false (a clone could then not `dvc pull` this version)"
        )
    on_disk = yaml.safe_load((ws.root / "params.yaml").read_text()) or {}
    current = _flat({k: on_disk.get(k, {}) for k in ("data", "tile")})
    wanted = _flat({k: doc[k] for k in ("data", "tile")})
    updates = {k: v for k, v in wanted.items() if k not in PATH_KEYS and current.get(k) != v}
    changed = ws.set_params(updates)
    ws.commit()
    md5 = ws.out_hash(rel)
    ws.push(remote)
    sha = None
    if git_commit:
        sha = ws.git_commit(["dvc.lock", "params.yaml"], f"data: STSSD snapshot {rel} {str(md5)[:12]}")
    return {
        "tracked": True,
        "path": rel,
        "md5": md5,
        "remote": remote,
        "git_commit": sha,
        "params_changed": changed,
    }


@task(name="tag-lineage", retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE)
def tag_lineage(
    doc: dict[str, Any], tags: dict[str, str], runs: list[str], versions: list[tuple[str, str]]
) -> None:
    """Set ``tags`` (snapshot DVC hash, git commit) on MLflow runs and registered model versions."""
    from a2mae.config import validate_params
    from a2mae.tracking.client import client

    c = client(validate_params(doc).registry)
    for run_id in runs:
        for k, v in tags.items():
            c.set_tag(run_id, k, v)
    for name, version in versions:
        for k, v in tags.items():
            c.set_model_version_tag(name, str(version), k, v)


@task(name="champion-snapshot", retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE)
def champion_snapshot(doc: dict[str, Any]) -> str | None:
    """The snapshot DVC hash recorded on the current ``@champion`` encoder version (None: no champion)."""
    from mlflow.exceptions import MlflowException

    from a2mae.config import validate_params
    from a2mae.registry import aliases
    from a2mae.registry.errors import RegistryError
    from a2mae.tracking.client import client

    p = validate_params(doc)
    try:
        mv = aliases.current(client(p.registry), p.registry.encoder_model, p.registry.champion_alias)
    except (MlflowException, RegistryError):
        return None
    return None if mv is None else mv.tags.get(DVC_TAG)
