"""Tiny HTTP helpers for health checks (standard library only, no proxies, short timeouts)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes] | None:
    """``GET url``; returns ``(status, body)``, or None when nothing answers."""
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read() if err.fp is not None else b""
    except (OSError, ValueError):
        return None


def http_json(url: str, timeout: float = 2.0) -> Any:
    """``GET url`` parsed as JSON; None when it fails, is not 2xx or not JSON."""
    got = http_get(url, timeout)
    if got is None or not 200 <= got[0] < 300:
        return None
    try:
        return json.loads(got[1])
    except ValueError:
        return None


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
