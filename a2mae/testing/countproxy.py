"""A counting reverse proxy for tests and benchmarks: the bytes an HTTP/S3 client really fetched.

It relays every request to one upstream (the S3 store) and adds up the response-body bytes it sends
back, per request. Point GDAL at it (``AWS_S3_ENDPOINT``/``data.s3.endpoint_url`` for ``/vsis3/``, or
``http://127.0.0.1:<port>/bucket/key`` URLs for ``/vsicurl/``) and read :meth:`CountingProxy.stats`.

* It runs in a process of its own: GDAL, called through rasterio, can wait on the network while
  holding the GIL, so a proxy thread in the reading process would never run.
* The ``Host`` header goes upstream unchanged, so SigV4 signatures made for the proxy stay valid.
* Bodies are relayed in 64 KiB pieces, each counted before it is written: a client that hangs up
  early is charged only what was pushed to it.
* ``/__fail__?n=K`` makes the next ``K`` requests fail with 503 (retry tests); ``/__reset__`` zeroes
  the counters; ``/__stats__`` returns them.

Usage::

    with CountingProxy(store.endpoint_url) as proxy:
        ... read through proxy.url ...
        print(proxy.stats()["bytes"])
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class _Handler(BaseHTTPRequestHandler):
    """Relays one request upstream and counts the body bytes sent back (settings: :func:`serve`)."""

    protocol_version = "HTTP/1.1"
    upstream: tuple[str, int] = ("127.0.0.1", 0)
    state: ClassVar[dict[str, Any]] = {}
    lock = threading.Lock()

    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, obj: Any) -> None:
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _control(self) -> bool:
        state, lock = self.state, self.lock
        if self.path == "/__stats__":
            with lock:
                self._json(state)
        elif self.path == "/__reset__":
            with lock:
                state["bytes"], state["requests"] = 0, []
            self._json({"ok": True})
        elif self.path.startswith("/__fail__"):
            with lock:
                state["fail_next"] = int(self.path.split("n=")[1])
            self._json({"ok": True})
        else:
            return False
        return True

    def _fail(self) -> bool:
        with self.lock:
            fail: bool = self.state["fail_next"] > 0
            self.state["fail_next"] -= int(fail)
            if fail:
                self.state["requests"].append([self.command, self.path.split("?")[0], None, 503, 0])
        if fail:
            body = b"<Error><Code>SlowDown</Code></Error>"
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        return fail

    def _relay(self) -> None:
        if self._control() or self._fail():
            return
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        conn = http.client.HTTPConnection(*self.upstream, timeout=120)
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        chunked = resp.getheader("Content-Length") is None and self.command != "HEAD"
        buffered = resp.read() if chunked else None  # a chunked reply is sent on with a length
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP and not (buffered is not None and k.lower() == "content-length"):
                self.send_header(k, v)
        if buffered is not None:
            self.send_header("Content-Length", str(len(buffered)))
        self.end_headers()
        sent = 0
        try:
            while self.command != "HEAD":
                chunk = buffered[sent : sent + 65536] if buffered is not None else resp.read(65536)
                if not chunk:
                    break
                with self.lock:
                    self.state["bytes"] += len(chunk)
                self.wfile.write(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            conn.close()
            with self.lock:
                self.state["requests"].append(
                    [self.command, self.path.split("?")[0], self.headers.get("Range"), resp.status, sent]
                )

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _relay


def serve(upstream: str, port: int = 0) -> None:
    """Run the proxy in the foreground (prints its port as the first line of stdout)."""
    host, up_port = upstream.split("://")[-1].rstrip("/").rsplit(":", 1)
    handler = type(
        "Handler",
        (_Handler,),
        {
            "upstream": (host, int(up_port)),
            "state": {"bytes": 0, "requests": [], "fail_next": 0},
            "lock": threading.Lock(),
        },
    )
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


class CountingProxy:
    """The proxy in a child process (started by :meth:`start`, stopped by :meth:`stop`).

    Args:
        upstream: ``http://host:port`` of the server to relay to.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self._proc: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        """Start the child and wait for its port."""
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "a2mae.testing.countproxy", self.upstream],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        self.port = int(self._proc.stdout.readline())
        return self

    def _get(self, path: str) -> Any:
        with _NO_PROXY.open(f"{self.url}{path}", timeout=10) as f:
            return json.load(f)

    def stats(self) -> dict[str, Any]:
        """``{"bytes": total body bytes relayed, "requests": [[method, path, range, status, bytes]...]}``."""
        stats: dict[str, Any] = self._get("/__stats__")
        return stats

    def reset(self) -> None:
        """Zero the counters."""
        self._get("/__reset__")

    def fail_next(self, n: int) -> None:
        """Answer the next ``n`` requests with 503 (without relaying them)."""
        self._get(f"/__fail__?n={n}")

    def stop(self) -> None:
        """Stop the child."""
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
