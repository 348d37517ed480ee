"""Detached service processes: start in their own session, find again by pid file, stop by group.

:class:`~a2mae.services.base.Service` owns a child for the lifetime of one Python object (tests,
``with SeaweedFS(...)``). ``a2mae services up`` must outlive its own process and ``a2mae services down``
must find what an earlier command started, so this module launches a service's command in a new
session (process group = its pid, immune to the terminal's hang-up), records ``pid`` and the process's
start time in the service's pid file (a recycled pid is never mistaken for the service), and stops the
whole process group with SIGTERM, then SIGKILL. Only processes started here are ever signalled.

Every process started here carries :data:`MARKER` (``A2MAE_SERVICE_STATE=<state folder>``) in its
environment, and so do its children (a Ray head's raylet, a flow run of the deployments' server). A
process whose pid file was lost (two ``services up`` at once, a crash between start and pid file) is
still found by :func:`marked_processes` and stopped by :func:`stop_marked`: what a stack's home
started, and nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

from a2mae.services.base import Service, ServiceError

#: Environment variable naming the state folder of the service a process belongs to.
MARKER = "A2MAE_SERVICE_STATE"
#: Children started by this Python process, kept so that they can be reaped (no zombies in tests).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux ``/proc``), None when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[19])


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()[0]


def _reap(pid: int) -> None:
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        _CHILDREN.pop(pid, None)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (zombies count as dead)."""
    _reap(pid)
    if Path("/proc").is_dir():
        state = _state(pid)
        return state is not None and state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (Linux; elsewhere the leader only)."""
    if not Path("/proc").is_dir():
        return [pgid] if pid_alive(pgid) else []
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


# ---------------------------------------------------------------------------------------- pid files
def write_pid_file(path: Path, pid: int, command: list[str]) -> None:
    """Record ``pid``, its start time and its command line (atomically)."""
    doc = {
        "pid": pid,
        "start_ticks": _start_ticks(pid),
        "command": command,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    tmp = path.with_suffix(".pid.tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def read_pid_file(path: Path) -> int | None:
    """The pid recorded in ``path`` when that process is still the one that was started, else None."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    try:
        doc = json.loads(text)
        pid = int(doc["pid"]) if isinstance(doc, dict) else int(doc)
        ticks = doc.get("start_ticks") if isinstance(doc, dict) else None
    except (ValueError, KeyError, TypeError):
        return None
    if not pid_alive(pid):
        return None
    if ticks is not None and _start_ticks(pid) not in (None, ticks):
        return None  # the pid was recycled by an unrelated process
    return pid


# -------------------------------------------------------------------------------------- lifecycle
def running_pid(svc: Service) -> int | None:
    """Pid of ``svc``'s detached process, if it is alive."""
    return read_pid_file(svc.pid_path)


def launch(
    svc: Service,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    cwd: str | os.PathLike[str] | None = None,
) -> int:
    """Start ``svc`` detached and wait until it is healthy.

    Args:
        svc: The service (its ``prepare``, ``command``, ``process_env`` and ``is_healthy`` are used).
        env: Variables added on top of the service's own :meth:`~Service.process_env`.
        timeout: Seconds to wait for health.
        cwd: Working directory (default: the service's state folder).

    Returns:
        The pid (also the process group id).

    Raises:
        ServiceError: The process exited while starting or was not healthy in time (it is stopped
            again; the message quotes the end of its log).
    """
    svc.state_dir.mkdir(parents=True, exist_ok=True)
    svc.prepare()
    cmd = svc.command()
    full_env = {**svc.process_env(dict(env or {})), MARKER: str(svc.state_dir)}
    with open(svc.log_path, "ab") as log:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"\n=== {stamp} start: {' '.join(cmd)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(cwd) if cwd is not None else svc.state_dir,
                env=full_env,
                start_new_session=True,
            )
        except OSError as err:
            raise ServiceError(f"{svc.name}: cannot run {cmd[0]} ({err.strerror})") from None
    _CHILDREN[proc.pid] = proc
    write_pid_file(svc.pid_path, proc.pid, cmd)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            svc.pid_path.unlink(missing_ok=True)
            raise ServiceError(
                f"{svc.name}: exited with code {proc.returncode} while starting; see {svc.log_path}: "
                f"{_last_line(svc)}"
            )
        if svc.is_healthy():
            return proc.pid
        if time.monotonic() > deadline:
            terminate(svc)
            raise ServiceError(
                f"{svc.name}: not healthy after {timeout:g} s; see {svc.log_path}: {_last_line(svc)}"
            )
        time.sleep(0.25)


def _last_line(svc: Service) -> str:
    lines = [ln for ln in svc.log_tail(40).splitlines() if ln.strip() and not ln.startswith("===")]
    return " ".join(lines[-1].split())[:300] if lines else "(empty log)"


def terminate(svc: Service, timeout: float = 20.0) -> bool:
    """Stop ``svc``'s detached process group: SIGTERM, then SIGKILL after ``timeout``.

    Returns:
        Whether a running process was found (and stopped).
    """
    pid = running_pid(svc)
    svc.pid_path.unlink(missing_ok=True)
    if pid is None:
        return False
    stop_group(pid, timeout)
    return True


def stop_group(pgid: int, timeout: float = 20.0) -> None:
    """SIGTERM every process of group ``pgid`` (one we started), then SIGKILL the stragglers."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            _reap(pgid)
            return
        except PermissionError:  # pragma: no cover - not our process
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pgid)
            if not group_members(pgid):
                proc = _CHILDREN.pop(pgid, None)
                if proc is not None:
                    proc.wait(1)
                return
            time.sleep(0.1)


def _marker_of(pid: int) -> str | None:
    """The :data:`MARKER` value in the environment of ``pid`` (None: none, gone or not ours)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    key = MARKER.encode() + b"="
    for item in raw.split(b"\0"):
        if item.startswith(key):
            return item[len(key) :].decode(errors="replace")
    return None


def _ancestors() -> set[int]:
    """This process and its parents (never signalled, whatever their environment says)."""
    out, pid = set(), os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat[stat.rfind(")") + 2 :].split()[1])
    return out


def marked_processes(state_root: str | os.PathLike[str]) -> dict[int, str]:
    """Live processes started for a service whose state folder is ``state_root`` or below it.

    Args:
        state_root: A service's state folder, or a stack's home (all of its services).

    Returns:
        ``{pid: state folder}`` (empty where ``/proc`` is missing).
    """
    root = str(Path(state_root).absolute())
    if not Path("/proc").is_dir():
        return {}
    mine = _ancestors()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        pid = int(entry.name)
        mark = _marker_of(pid)
        if mark is not None and (mark == root or mark.startswith(root + os.sep)) and pid_alive(pid):
            found[pid] = mark
    return found


def stop_marked(state_root: str | os.PathLike[str], timeout: float = 20.0) -> dict[int, str]:
    """Stop every process of :func:`marked_processes` (SIGTERM, then SIGKILL after ``timeout``).

    Returns:
        The processes found (``{pid: state folder}``).
    """
    found = marked_processes(state_root)
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        alive = [pid for pid in found if pid_alive(pid)]
        for pid in alive:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                continue
        deadline = time.monotonic() + wait
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in alive if pid_alive(pid)]
            time.sleep(0.1)
        if not alive:
            break
    for pid in found:
        proc = _CHILDREN.pop(pid, None)
        if proc is not None:
            proc.poll()
    return found


class DetachedService(Service):
    """A :class:`Service` whose process outlives this Python object (started by :func:`launch`).

    ``start`` adopts a healthy process recorded in the pid file instead of starting a second one, and
    ``stop`` works from any process (it reads the pid file).
    """

    @property
    def pid(self) -> int | None:
        """Pid of the running service process, None when not running."""
        return running_pid(self)

    def start(self, timeout: float = 60.0) -> Self:
        """Start detached and wait until healthy (a no-op when it already runs and is healthy).

        Raises:
            ServiceError: It did not start; the message names the log file.
        """
        if running_pid(self) is not None:
            if self.is_healthy():
                return self
            terminate(self)  # alive but not answering: restart it
        launch(self, None, timeout)
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the process group (SIGTERM, then SIGKILL) and remove the pid file."""
        terminate(self, timeout)
