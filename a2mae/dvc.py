"""Versioning STSSD snapshots with DVC (and git): the CLI, called from the flows and the tests.

``dvc.api`` is read-only, so writes go through the ``dvc`` command (``repro``, ``commit``, ``push``,
``pull``) run in the workspace (the folder holding ``dvc.yaml``). Every failure becomes a one-line
:class:`DvcError` naming the command and DVC's own error line. Credentials for an ``s3`` remote come
from the environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``); its endpoint, when
``AWS_ENDPOINT_URL`` is set, is written to the git-ignored ``.dvc/config.local``, never to the
committed ``.dvc/config``.

Typical use (what the retrain flow does)::

    ws = DvcWorkspace("path/to/project")
    ws.set_params({"tile.chip_size": 64})   # params.yaml says what the outputs were made with
    ws.commit()                             # dvc.lock records deps, params and outs hashes
    ws.push("s3")                           # the snapshot's files go to the remote
    md5 = ws.out_hash("data/stssd")         # recorded on the MLflow runs that use it
    ws.git_commit(["dvc.lock", "params.yaml"], "snapshot data/stssd " + md5[:8])

The services of ``infra/`` work in a repository of their own, cloned from the checkout by
:func:`services_workspace`, so background runs never touch the user's work tree and each snapshot
version is a commit there.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from a2mae.errors import A2maeError


class DvcError(A2maeError):
    """A DVC or git command failed in the workspace; the message names the command."""


def _tool_env() -> dict[str, str]:
    """This environment, the venv's ``bin`` first (its ``dvc`` and ``a2mae``), DVC analytics off."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "")])
    env["DVC_NO_ANALYTICS"] = "1"
    env.setdefault("GIT_TERMINAL_PROMPT", "0")
    return env


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR") or "error" in ln.lower()]
    return " ".join((errors or lines or ["(no output)"])[-1].split())[:400]


class DvcWorkspace:
    """A DVC project folder (``dvc.yaml`` and ``.dvc/``), usually also a git work tree.

    Args:
        root: The workspace folder.
        timeout: Seconds any one command may take.
    """

    def __init__(self, root: str | os.PathLike[str], timeout: float = 1800.0) -> None:
        self.root = Path(root).expanduser().resolve()
        self.timeout = timeout

    # ------------------------------------------------------------------------------------- running
    def run(self, *args: str, tool: str = "dvc", check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``tool args...`` in the workspace.

        Raises:
            DvcError: Non-zero exit (with ``check``), or the tool is missing or timed out.
        """
        cmd = [tool, *args]
        try:
            proc = subprocess.run(
                cmd, cwd=self.root, env=_tool_env(), capture_output=True, text=True, timeout=self.timeout
            )
        except FileNotFoundError:
            raise DvcError(f"`{tool}` is not installed; run scripts/bootstrap.sh") from None
        except subprocess.TimeoutExpired:
            raise DvcError(f"`{' '.join(cmd)}` in {self.root}: no answer after {self.timeout:g} s") from None
        if check and proc.returncode != 0:
            raise DvcError(
                f"`{' '.join(cmd)}` failed in {self.root}: {_last_error(proc.stderr + proc.stdout)}"
            )
        return proc

    # ---------------------------------------------------------------------------------------- state
    def is_project(self) -> bool:
        """Whether the folder is a DVC project with a ``dvc.yaml``."""
        return (self.root / ".dvc").is_dir() and (self.root / "dvc.yaml").is_file()

    def is_git(self) -> bool:
        """Whether the folder is inside a git work tree."""
        return self.run("rev-parse", "--is-inside-work-tree", tool="git", check=False).returncode == 0

    def stage_outs(self) -> dict[str, str]:
        """``{out path: stage name}`` of every stage in ``dvc.yaml``."""
        doc = yaml.safe_load((self.root / "dvc.yaml").read_text()) or {}
        outs = {}
        for name, stage in (doc.get("stages") or {}).items():
            for out in stage.get("outs", []):
                path = next(iter(out)) if isinstance(out, dict) else str(out)
                outs[str(Path(path))] = name
        return outs

    def out_hash(self, path: str) -> str | None:
        """The hash ``dvc.lock`` records for the stage output ``path`` (relative to the root), or None."""
        lock = self.root / "dvc.lock"
        if not lock.is_file():
            return None
        doc = yaml.safe_load(lock.read_text()) or {}
        want = Path(path)
        for stage in (doc.get("stages") or {}).values():
            for out in stage.get("outs", []):
                if Path(out.get("path", "")) == want:
                    found: str | None = out.get("md5") or out.get("etag") or out.get("checksum")
                    return found
        return None

    def status_clean(self) -> bool:
        """Whether ``dvc status`` finds the workspace in sync with ``dvc.lock``."""
        proc = self.run("status", "--json")
        text = proc.stdout.strip()
        return text in ("", "{}")

    # ------------------------------------------------------------------------------------- writing
    def set_params(self, updates: Mapping[str, Any]) -> list[str]:
        """Write ``{"section.key": value}`` into the workspace's ``params.yaml``, keeping its comments.

        Returns:
            The keys whose value changed.
        """
        from ruamel.yaml import YAML

        path = self.root / "params.yaml"
        rt = YAML()
        rt.preserve_quotes = True
        rt.width = 4096
        doc = rt.load(path.read_text())
        changed = []
        for key, value in updates.items():
            *parents, leaf = key.split(".")
            node = doc
            for part in parents:
                node = node[part]
            if node.get(leaf) != value:
                node[leaf] = value
                changed.append(key)
        if changed:
            tmp = path.with_name(f".{path.name}.tmp")
            with open(tmp, "w") as f:
                rt.dump(doc, f)
            os.replace(tmp, path)
        return changed

    def repro(self, *targets: str, force: bool = False) -> str:
        """``dvc repro [--force] [targets]``; returns DVC's output."""
        args = ["repro", *(["--force"] if force else []), *targets]
        return self.run(*args).stdout

    def commit(self, *targets: str) -> None:
        """``dvc commit --force``: record the current deps, params and outs in ``dvc.lock`` and the cache."""
        self.run("commit", "--force", *targets)

    def remotes(self) -> dict[str, str]:
        """``{name: url}`` of the configured DVC remotes (all config levels)."""
        out = {}
        for line in self.run("config", "--list").stdout.splitlines():
            key, _, value = line.partition("=")
            parts = key.split(".")
            if len(parts) == 3 and parts[0] == "remote" and parts[2] == "url":
                out[parts[1]] = value.strip()
        return out

    def configure_remote(self, remote: str) -> None:
        """Point an ``s3://`` remote at ``AWS_ENDPOINT_URL`` (in ``.dvc/config.local``) when that is set.

        Raises:
            DvcError: No remote of that name.
        """
        urls = self.remotes()
        if remote not in urls:
            raise DvcError(
                f"DVC remote {remote!r} is not configured in {self.root}/.dvc/config (known: "
                f"{', '.join(sorted(urls)) or 'none'}); add it with `dvc remote add`"
            )
        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        if urls[remote].startswith("s3://") and endpoint:
            self.run("remote", "modify", "--local", remote, "endpointurl", endpoint)

    def push(self, remote: str | None = None, *targets: str) -> None:
        """``dvc push [-r remote] [targets]``."""
        if remote:
            self.configure_remote(remote)
        self.run("push", *(["-r", remote] if remote else []), *targets)

    def pull(self, remote: str | None = None, *targets: str) -> None:
        """``dvc pull [-r remote] [targets]``."""
        if remote:
            self.configure_remote(remote)
        self.run("pull", *(["-r", remote] if remote else []), *targets)

    def git_commit(self, paths: Sequence[str], message: str) -> str | None:
        """Commit ``paths`` (only those) when they changed; returns the new commit, or None.

        Raises:
            DvcError: Not a git work tree, or git failed (e.g. no author configured).
        """
        if not self.is_git():
            raise DvcError(f"{self.root} is not a git work tree; cannot commit {', '.join(paths)}")
        changed = self.run("status", "--porcelain", "--", *paths, tool="git").stdout.strip()
        if not changed:
            return None
        self.run("add", "--", *paths, tool="git")
        ident = []
        if self.run("config", "user.email", tool="git", check=False).returncode != 0:
            ident = ["-c", "user.name=a2mae pipeline", "-c", "user.email=a2mae-pipeline@localhost"]
        self.run(*ident, "commit", "-q", "-m", message, "--", *paths, tool="git")
        return self.run("rev-parse", "HEAD", tool="git").stdout.strip()


#: Files of the checkout that define the pipeline: copied into the services' workspace at each start.
PIPELINE_FILES = ("params.yaml", "dvc.yaml", ".dvcignore")
#: What the services' workspace checks out of the clone: the pipeline's files and data, not the code.
WORKSPACE_PATHS = ("/params.yaml", "/dvc.yaml", "/dvc.lock", "/.dvc/", "/.dvcignore", "/.gitignore", "/data/")


def services_workspace(
    source: str | os.PathLike[str], dest: str | os.PathLike[str], remote: str, endpoint: str | None = None
) -> DvcWorkspace:
    """The git + DVC repository the deployments work in: cloned from ``source`` once, then kept in step.

    Steps (each commit only when something changed, so a restart adds nothing):

    1. ``git clone`` the checkout ``source`` into ``dest`` (sparse: the pipeline files and ``data/``,
       not the code) when ``dest`` is not a workspace yet.
    2. Copy :data:`PIPELINE_FILES` from ``source``'s work tree (the user's current ``params.yaml``),
       then commit them.
    3. Make ``remote`` the DVC default remote; an ``s3`` remote gets ``endpoint`` (this repository
       belongs to that store; credentials stay in the environment), then commit ``.dvc/config``.

    So ``git clone <dest>`` followed by ``dvc pull`` restores the latest snapshot version, and the user
    takes the versions into the checkout with ``git pull <dest>`` (a commit they approve).

    Args:
        source: The user's checkout (a git work tree with ``dvc.yaml``).
        dest: The workspace folder (usually ``<infra.home>/workspace``).
        remote: The DVC remote the snapshots are pushed to (``infra.dvc_remote``).
        endpoint: URL of the S3 store, for an ``s3`` remote.

    Returns:
        The workspace.

    Raises:
        DvcError: ``source`` is not a git work tree with a ``dvc.yaml``, or git or DVC failed.
    """
    src, ws = DvcWorkspace(source), DvcWorkspace(dest)
    if not ws.is_project() or not ws.is_git():
        if not src.is_project() or not src.is_git():
            raise DvcError(
                f"{src.root} is not a git work tree with dvc.yaml and .dvc/: the services' workspace is "
                "cloned from it; run the services from a clone of the a2mae repository"
            )
        _sparse_clone(src, ws.root)
    copied = []
    for name in PIPELINE_FILES:
        mine, theirs = src.root / name, ws.root / name
        if mine.is_file() and not (theirs.is_file() and filecmp.cmp(mine, theirs, shallow=False)):
            shutil.copyfile(mine, theirs)
            copied.append(name)
    if copied:
        ws.git_commit(copied, f"workspace: {', '.join(copied)} from {src.root}")
    ws.run("remote", "default", remote)
    if remote == "s3" and endpoint:
        ws.run("remote", "modify", remote, "endpointurl", endpoint)
    ws.git_commit([".dvc/config"], f"workspace: snapshots go to DVC remote {remote} {endpoint or ''}".strip())
    return ws


def _sparse_clone(src: DvcWorkspace, dest: Path) -> None:
    if dest.exists() and any(dest.iterdir()):
        raise DvcError(f"{dest} exists but is not a git + DVC workspace; move it away and start again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    src.run("clone", "-q", "--no-checkout", str(src.root), str(dest), tool="git")
    ws = DvcWorkspace(dest)
    ws.run("sparse-checkout", "set", "--no-cone", *WORKSPACE_PATHS, tool="git")
    ws.run("checkout", "-q", tool="git")
