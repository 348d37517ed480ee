"""``python infra/prefect_server.py server start ...``: the Prefect CLI with one compatibility fix.

Prefect 3.8.8's scheduler inserts scheduled flow runs with an ORM bulk INSERT whose rows carry the
``FlowRun.state`` hybrid property. SQLAlchemy 2.0 ignored such keys; SQLAlchemy 2.1 (2.1.9 is in our
lock) raises "Can't evaluate bulk DML statement; please supply a bulk_dml decorated function", so no
cron or interval schedule ever produces a run. The scheduler inserts the states itself right after,
so the fix gives the hybrid a bulk-DML hook that does nothing, which is SQLAlchemy 2.0's behaviour.
It applies only when the hook is missing (a fixed Prefect or SQLAlchemy 2.0 is left alone). Remove
this file once the lock pins SQLAlchemy below 2.1 or Prefect ships the hook.

It also keeps foreign web pages out of the API. Prefect's only setting for this is CORS, which stops a
page from *reading* answers but not from *sending* a simple POST (Prefect parses a body without a
Content-Type as JSON), so any web page open in a browser on this machine could create or run flows.
:class:`OriginGuard` answers 403 to every request (HTTP or websocket) whose ``Origin`` is not one of
``PREFECT_SERVER_CORS_ALLOWED_ORIGINS`` and, when ``A2MAE_PREFECT_ALLOWED_HOSTS`` is set, whose ``Host`` is
not one of those (DNS rebinding). ``a2mae services`` sets both to the server's own addresses.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _ignore_state(cls: Any, mapping: dict[str, Any], value: Any) -> None:
    """Bulk INSERT of flow runs: the state rows are written separately by the caller."""


def patch_scheduler() -> bool:
    """Give ``FlowRun.state`` a no-op bulk-DML hook when SQLAlchemy wants one; True when patched."""
    from prefect.server.database import orm_models

    hybrid = orm_models.FlowRun.__dict__.get("state")
    if hybrid is None or getattr(hybrid, "bulk_dml_setter", "n/a") is not None:
        return False
    hybrid.bulk_dml_setter = _ignore_state
    return True


#: Host of the Prefect server's in-process API client (``prefect.server.api.clients``).
IN_MEMORY = "prefect-in-memory"


class OriginGuard:
    """ASGI middleware: 403 for a foreign ``Origin`` (and, if configured, an unknown ``Host``).

    Args:
        app: The Prefect server application.
        origins: Allowed ``Origin`` values (``*``: any).
        hosts: Allowed ``Host`` values (empty: any).
    """

    def __init__(self, app: Any, origins: list[str], hosts: list[str]) -> None:
        self.app = app
        self.origins = {o.rstrip("/").lower() for o in origins}
        self.hosts = {h.lower() for h in hosts}

    def refused(self, scope: Scope) -> str | None:
        """Why the request is refused, or None.

        The server's own in-process client (automation actions such as "run deployment", which reach
        the API through an ASGI transport, never a socket) addresses it as ``prefect-in-memory``: those
        requests pass. A request over a socket has the socket's address as its ``server``.
        """
        server = scope.get("server") or (None, None)
        if server[0] == IN_MEMORY and server[1] is None:
            return None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "").lower()
        if self.hosts and host not in self.hosts:
            return f"host {host!r} not allowed"
        origin = headers.get("origin")
        if origin is not None and "*" not in self.origins and origin.rstrip("/").lower() not in self.origins:
            return "cross-origin request refused"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or refuse it (403; a websocket is closed before it is accepted)."""
        why = self.refused(scope) if scope["type"] in ("http", "websocket") else None
        if why is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": why})
        else:
            body = json.dumps({"detail": why}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 403, "headers": headers})
            await send({"type": "http.response.body", "body": body})


def _split(name: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, "").split(",") if v.strip()]


def guard_origins() -> bool:
    """Wrap the app ``prefect server start`` builds with :class:`OriginGuard`; True when installed."""
    origins, hosts = _split("PREFECT_SERVER_CORS_ALLOWED_ORIGINS"), _split("A2MAE_PREFECT_ALLOWED_HOSTS")
    if (not origins or "*" in origins) and not hosts:
        return False
    from prefect.server.api import server

    create_app = server.create_app

    def guarded_app(*args: Any, **kwargs: Any) -> Any:
        return OriginGuard(create_app(*args, **kwargs), origins or ["*"], hosts)

    server.create_app = guarded_app
    return True


def main() -> None:
    """Patch, then hand the command line to the Prefect CLI."""
    patch_scheduler()
    guard_origins()
    from prefect.cli import app

    sys.argv = ["prefect", *sys.argv[1:]]
    app()


if __name__ == "__main__":
    main()
