"""Tiny HTTP helpers for health checks (standard library only, no proxies, short timeouts)."""

from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.request
from typing import Any

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def basic_auth_header(auth: str) -> dict[str, str]:
    """``Authorization: Basic ...`` for a ``user:password`` string (what Prefect's auth string is)."""
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}


def http_get(url: str, timeout: float = 2.0, auth: str | None = None) -> tuple[int, bytes] | None:
    """``GET url``; returns ``(status, body)``, or None when nothing answers.

    Args:
        url: The address.
        timeout: Seconds for connecting and for each read.
        auth: ``user:password`` sent as HTTP basic authentication (None: no header).
    """
    got = fetch(url, timeout, auth)
    return got if isinstance(got, tuple) else None


def fetch(url: str, timeout: float = 2.0, auth: str | None = None) -> tuple[int, bytes] | str:
    """``GET url``; returns ``(status, body)``, or a short reason why nothing answered.

    The reason is one of ``connection refused``, ``no answer within N s``, ``cannot resolve HOST`` or the
    operating system's message.
    """
    req = urllib.request.Request(url, headers=basic_auth_header(auth) if auth else {})
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read() if err.fp is not None else b""
    except (OSError, ValueError) as err:
        return failure_reason(err, timeout)


def failure_reason(err: BaseException, timeout: float | None = None) -> str:
    """A few words on why a connection failed (refused, timed out, unknown host, ...)."""
    inner = getattr(err, "reason", err)
    if isinstance(inner, ConnectionRefusedError):
        return "connection refused"
    if isinstance(inner, TimeoutError | socket.timeout):
        return f"no answer within {timeout:g} s" if timeout else "timed out"
    if isinstance(inner, socket.gaierror):
        return "cannot resolve the host name"
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror.lower()
    return " ".join(str(inner).split())[:120] or type(inner).__name__


def http_json(url: str, timeout: float = 2.0, auth: str | None = None) -> Any:
    """``GET url`` parsed as JSON; None when it fails, is not 2xx or not JSON."""
    got = http_get(url, timeout, auth)
    if got is None or not 200 <= got[0] < 300:
        return None
    try:
        return json.loads(got[1])
    except ValueError:
        return None


def http_post_json(
    url: str, body: Any, timeout: float = 10.0, auth: str | None = None, method: str = "POST"
) -> Any:
    """``POST url`` (or ``method``) with a JSON body.

    Returns:
        The JSON answer, or None when nothing answers or the answer is not 2xx JSON.
    """
    headers = {"Content-Type": "application/json", **(basic_auth_header(auth) if auth else {})}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method=method)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            raw = resp.read()
    except (OSError, ValueError):  # HTTPError is an OSError: a refusal counts as no answer
        return None
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return None


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    return tcp_reason(host, port, timeout) is None


def tcp_reason(host: str, port: int, timeout: float = 1.0) -> str | None:
    """None when ``host:port`` accepts a TCP connection, else why not (see :func:`failure_reason`)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as err:
        return failure_reason(err, timeout)
