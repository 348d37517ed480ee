"""Clients fail fast: one line naming the service, its address, why it did not answer and how to start it.

Clients of MLflow, Prefect, S3 and Ray call these checks before their first request. A stopped service
(connection refused) fails in milliseconds, a hung one after ``timeout`` seconds, instead of the
minutes of retries each client library does by default. The variables of :data:`CLIENT_TIMEOUTS` give the
libraries themselves short timeouts for the requests after that (``a2mae services env`` writes them).
"""

from __future__ import annotations

from urllib.parse import urlparse

from a2mae.services.base import ServiceError
from a2mae.services.http import fetch, tcp_reason

#: How to start the local services (the last part of every "unreachable" line).
START_HINT = "start the services with `a2mae services up` (infra/up.sh)"

#: Client-side timeouts and retry counts of the libraries (connection refused: fail in about a second,
#: no answer: fail after the request timeout instead of retrying for minutes).
CLIENT_TIMEOUTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    "PREFECT_CLIENT_MAX_RETRIES": "2",
    "PREFECT_API_REQUEST_TIMEOUT": "30",
}


class ServiceUnreachable(ServiceError):
    """A service a client needs does not answer, or refuses the client's credentials."""


def unreachable(service: str, address: str, reason: str, setting: str) -> ServiceUnreachable:
    """The one-line error of a service that does not answer.

    Args:
        service: What it is (``MLflow tracking server``, ``Prefect API``, ``Ray cluster``, ``S3 store``).
        address: Where the client looked.
        reason: Why it did not answer (``connection refused``, ``no answer within 5 s``).
        setting: The variable or parameter that holds the address.
    """
    return ServiceUnreachable(
        f"{service} at {address} is unreachable ({reason}); {START_HINT}, or point {setting} at a running one"
    )


def require_http(service: str, url: str, setting: str, timeout: float = 5.0, auth: str | None = None) -> int:
    """Fail with one line unless ``GET url`` gets an HTTP answer within ``timeout``.

    Returns:
        The status (any answer counts: 401 means running but locked; the caller decides).

    Raises:
        ServiceUnreachable: Nothing answered.
    """
    got = fetch(url, timeout, auth)
    if isinstance(got, str):
        return _raise(service, _base(url), got, setting)
    return got[0]


def require_tcp(service: str, address: str, setting: str, timeout: float = 3.0) -> None:
    """Fail with one line unless ``host:port`` accepts a TCP connection within ``timeout``.

    Raises:
        ServiceUnreachable: Nothing accepts connections there.
    """
    host, port = split_host_port(address)
    reason = tcp_reason(host, port, timeout)
    if reason is not None:
        _raise(service, address, reason, setting)


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` (optionally ``scheme://host:port/...``) -> ``(host, port)``.

    Raises:
        ServiceError: No port.
    """
    netloc = urlparse(address).netloc if "://" in address else address
    host, _, port = netloc.rpartition(":")
    if not host or not port.isdigit():
        raise ServiceError(f"{address}: expected host:port")
    return host.strip("[]"), int(port)


def _base(url: str) -> str:
    u = urlparse(url)
    return f"{u.scheme}://{u.netloc}" if u.netloc else url


def _raise(service: str, address: str, reason: str, setting: str) -> int:
    raise unreachable(service, address, reason, setting)


def check_prefect_api(api_url: str, auth: str | None = None, timeout: float = 5.0) -> None:
    """Fail with one line unless the Prefect API at ``api_url`` answers and accepts ``auth``.

    Args:
        api_url: ``PREFECT_API_URL`` (``http://host:port/api``).
        auth: ``PREFECT_API_AUTH_STRING`` (None: none sent).
        timeout: Seconds for each request.

    Raises:
        ServiceUnreachable: Nothing answers, or the server refuses the auth string.
    """
    api = api_url.rstrip("/")
    service, setting = "Prefect API", "PREFECT_API_URL"
    require_http(service, f"{api}/health", setting, timeout)
    status = require_http(service, f"{api}/admin/version", setting, timeout, auth=auth)
    if status in (401, 403):
        raise ServiceUnreachable(
            f"{service} at {api} refused the client ({status}: {'wrong' if auth else 'no'} auth string); "
            "set PREFECT_API_AUTH_STRING (for the local services: set -a; . .a2mae/env; set +a)"
        )
