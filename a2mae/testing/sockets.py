"""Who listens where: the kernel's socket table (``/proc/net/tcp{,6}``) per process tree (Linux).

Used by the security tests: every listener of the processes the project starts must be on loopback.
A socket belongs to the processes holding its inode among their open files; ``[::ffff:127.0.0.1]``
(IPv4-mapped loopback) counts as loopback.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

_LISTEN = "0A"


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket: address, port and the process holding it."""

    address: str
    port: int
    pid: int
    command: str

    @property
    def loopback(self) -> bool:
        """Whether only this machine can connect (``127.0.0.0/8``, ``::1``, IPv4-mapped loopback)."""
        ip = ipaddress.ip_address(self.address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback

    def __str__(self) -> str:
        return f"{self.address}:{self.port} (pid {self.pid} {self.command})"


def _decode(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def listening_inodes() -> dict[int, tuple[str, int]]:
    """Inode -> (address, port) of every listening TCP socket of this network namespace."""
    out: dict[int, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            addr, port = fields[1].split(":")
            out[int(fields[9])] = (_decode(addr), int(port, 16))
    return out


def children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process."""
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def process_tree(*roots: int) -> set[int]:
    """``roots`` and all their descendants."""
    kids = children_map()
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(kids.get(pid, []))
    return seen


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(raw.decode(errors="replace").split("\0")).strip()[:120]


def listeners(pids: set[int] | list[int]) -> list[Listener]:
    """Every listening TCP socket held by one of ``pids``."""
    table = listening_inodes()
    found: dict[tuple[int, int], Listener] = {}
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            fds = list(fd_dir.iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in table and (inode, pid) not in found:
                    addr, port = table[inode]
                    found[(inode, pid)] = Listener(addr, port, pid, _command(pid))
    return sorted(found.values(), key=lambda x: (x.pid, x.port))


def exposed(pids: set[int] | list[int]) -> list[Listener]:
    """The listeners of ``pids`` that other machines could reach (not loopback)."""
    return [x for x in listeners(pids) if not x.loopback]


def own_listeners_json() -> list[dict[str, object]]:
    """This process's listeners as plain data (for a Ray worker to report)."""
    return [{"address": x.address, "port": x.port, "loopback": x.loopback} for x in listeners([os.getpid()])]


def listeners_task(item: object) -> list[dict[str, object]]:
    """An executor task (importable on every worker): the listeners of the process it runs in."""
    return own_listeners_json()


def report_listeners_loop(config: dict[str, object]) -> None:
    """A Ray Train loop: set up DDP on a tiny model, then write this worker's listeners to a JSON file.

    Args:
        config: ``{"out": folder}``; rank ``r`` writes ``<folder>/rank<r>.json``.
    """
    import json

    import ray.train
    import torch
    from ray.train.torch import prepare_model

    model = prepare_model(torch.nn.Linear(4, 1))
    model(torch.randn(2, 4)).sum().backward()
    rank = ray.train.get_context().get_world_rank()
    path = Path(str(config["out"])) / f"rank{rank}.json"
    path.write_text(json.dumps(own_listeners_json()))
    ray.train.report({"rank": rank})
