"""Lineage: the tags that tie an MLflow run to its code, parameters and data (git commit, DVC hash)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


def git_commit(path: str | os.PathLike[str] | None = None) -> tuple[str | None, bool]:
    """``(commit, dirty)`` of the git work tree holding ``path`` (default: the a2mae sources)."""
    where = Path(path) if path is not None else Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None, False
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return head.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, False


def _dvc_out_hash(out: Mapping[str, Any]) -> str | None:
    for key in ("md5", "etag", "checksum"):
        if out.get(key):
            return str(out[key])
    return None


def dvc_hash(snapshot: str | os.PathLike[str]) -> str | None:
    """The DVC hash of a local snapshot folder, or None when DVC does not track it.

    Looks for ``<snapshot>.dvc`` (``dvc add``), then for an output of a stage in the ``dvc.lock`` of an
    enclosing DVC project (``dvc repro``).
    """
    s = str(snapshot)
    if "://" in s:
        return None
    snap = Path(s).resolve()
    dvc_file = snap.with_name(snap.name + ".dvc")
    try:
        if dvc_file.is_file():
            doc = yaml.safe_load(dvc_file.read_text()) or {}
            for out in doc.get("outs", []):
                if (dvc_file.parent / out.get("path", "")).resolve() == snap:
                    return _dvc_out_hash(out)
        for parent in snap.parents:
            lock = parent / "dvc.lock"
            if lock.is_file():
                doc = yaml.safe_load(lock.read_text()) or {}
                for stage in (doc.get("stages") or {}).values():
                    wdir = parent / stage.get("wdir", ".")
                    for out in stage.get("outs", []):
                        if (wdir / out.get("path", "")).resolve() == snap:
                            return _dvc_out_hash(out)
            if (parent / ".dvc").is_dir():
                break
    except (OSError, yaml.YAMLError, AttributeError, TypeError):
        return None
    return None


def snapshot_tags(snapshot: str, snapshot_id: str | None) -> dict[str, str]:
    """Tags that tie a run to its code and data."""
    commit, dirty = git_commit()
    tags = {
        "a2mae.snapshot": snapshot,
        "a2mae.snapshot_id": snapshot_id or "unknown",
        "a2mae.snapshot_dvc_hash": dvc_hash(snapshot) or "none",
        "a2mae.git_commit": commit or "unknown",
        "a2mae.git_dirty": str(dirty).lower(),
    }
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def params_hash(flat: Mapping[str, Any]) -> str:
    """sha256 (first 16 hex) of the resolved parameters, flattened (:func:`a2mae.config.params_to_flat`)."""
    blob = json.dumps(dict(flat), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def lineage_tags(flat: Mapping[str, Any], **extra: Any) -> dict[str, str]:
    """Tags tying a run to its code and parameters; ``extra`` keys are added as ``a2mae.<key>``.

    Args:
        flat: The resolved parameters, flattened (:func:`a2mae.config.params_to_flat`).
        **extra: Further tags.
    """
    from a2mae import __version__

    commit, dirty = git_commit()
    tags = {
        "a2mae.version": __version__,
        "a2mae.params_hash": params_hash(flat),
        "a2mae.git_commit": commit or "unknown",
        "a2mae.git_dirty": str(dirty).lower(),
    }
    if commit:
        tags["mlflow.source.git.commit"] = commit
    lock = Path("dvc.lock")
    if lock.is_file():
        tags["a2mae.dvc_lock_md5"] = hashlib.md5(lock.read_bytes()).hexdigest()
    tags.update({f"a2mae.{k}": str(v) for k, v in extra.items() if v is not None})
    return tags
