"""Opening rasters from local paths and ``s3://`` URIs with rasterio (GDAL ``/vsis3/``).

GDAL does not use s3fs: it reads S3 objects itself and takes its endpoint and credentials from GDAL
configuration options (``AWS_S3_ENDPOINT=host:port``, ``AWS_HTTPS``, ``AWS_VIRTUAL_HOSTING=FALSE``,
``AWS_REGION``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` or ``AWS_NO_SIGN_REQUEST``).
:func:`raster_env` sets them from :class:`~a2mae.io.storage.S3Settings` in a scoped ``rasterio.Env``
(rasterio refuses AWS keys as plain ``Env`` options, so they go through a small session object). GDAL
configuration is thread-local in rasterio: enter :func:`raster_env` in every worker thread.

Usage::

    settings = S3Settings.from_params(params)
    with raster_env(settings), open_raster("s3://bucket/scene/B04.tif") as ds:
        print(ds.profile)
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import rasterio
from rasterio.session import Session

from a2mae.errors import A2maeError
from a2mae.io.storage import S3Settings, is_s3

#: GDAL options for every raster read: no directory listing on open (a listing per file is slow on
#: S3 and useless for COGs), short HTTP timeouts and a few retries.
GDAL_DEFAULTS: dict[str, Any] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_CONNECTTIMEOUT": "5",
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_HTTP_MAX_RETRY": "2",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.jp2,.JP2,.vrt",
}


class RasterError(A2maeError):
    """A raster cannot be opened or read; the message names the file."""


class _GDALS3Session(Session):
    """Hands fixed GDAL AWS options to ``rasterio.Env`` (which refuses AWS keys as plain options)."""

    def __init__(self, options: dict[str, str]) -> None:
        self._options = options

    @classmethod
    def hascreds(cls, config: dict[str, Any]) -> bool:
        return "AWS_ACCESS_KEY_ID" in config or "AWS_NO_SIGN_REQUEST" in config

    @property
    def credentials(self) -> dict[str, str]:
        return {}

    def get_credential_options(self) -> dict[str, str]:
        return dict(self._options)


def gdal_s3_options(settings: S3Settings) -> dict[str, str]:
    """GDAL configuration options for ``settings`` (endpoint, scheme, addressing, region, credentials)."""
    opts: dict[str, str] = {"AWS_REGION": settings.region}
    if settings.endpoint_url:
        parsed = urlparse(
            settings.endpoint_url if "://" in settings.endpoint_url else f"//{settings.endpoint_url}"
        )
        opts["AWS_S3_ENDPOINT"] = parsed.netloc or settings.endpoint_url
        opts["AWS_HTTPS"] = "NO" if parsed.scheme == "http" else "YES"
        opts["AWS_VIRTUAL_HOSTING"] = "FALSE"
    if settings.anonymous:
        opts["AWS_NO_SIGN_REQUEST"] = "YES"
    elif settings.key and settings.secret:
        opts["AWS_ACCESS_KEY_ID"] = settings.key
        opts["AWS_SECRET_ACCESS_KEY"] = settings.secret
        if settings.token:
            opts["AWS_SESSION_TOKEN"] = settings.token
    return opts


@contextlib.contextmanager
def raster_env(settings: S3Settings | None = None, **options: Any) -> Iterator[rasterio.Env]:
    """A ``rasterio.Env`` that can read ``s3://`` rasters with ``settings`` (thread-local).

    Args:
        settings: S3 settings; None resolves them from the environment.
        **options: Extra GDAL options (override :data:`GDAL_DEFAULTS`).

    Yields:
        The active environment.
    """
    settings = settings or S3Settings.from_params()
    session = _GDALS3Session(gdal_s3_options(settings))
    outer = getattr(_ACTIVE, "settings", None)
    with rasterio.Env(session=session, **{**GDAL_DEFAULTS, **options}) as env:
        _ACTIVE.settings = settings
        try:
            yield env
        finally:
            _ACTIVE.settings = outer


#: The S3 settings of this thread's innermost :func:`raster_env` (rasterio's environment is per thread).
_ACTIVE = threading.local()


def to_gdal_path(uri: str | os.PathLike[str]) -> str:
    """``s3://bucket/key`` -> ``/vsis3/bucket/key``; local paths unchanged."""
    text = str(uri)
    return "/vsis3/" + text[len("s3://") :] if is_s3(text) else text


@contextlib.contextmanager
def open_raster(uri: str | os.PathLike[str], settings: S3Settings | None = None) -> Iterator[Any]:
    """Open a raster for reading (local path or ``s3://`` URI).

    Inside an active :func:`raster_env` of the same ``settings`` (or of any, when ``settings`` is
    None) the environment is reused; otherwise one is entered for ``settings`` (or the
    environment's S3 settings) just for this file (entering one costs about as much CPU as opening a
    small GeoTIFF).

    Args:
        uri: Local path or ``s3://`` URI.
        settings: S3 settings when no :func:`raster_env` is active.

    Yields:
        The open ``rasterio`` dataset.

    Raises:
        RasterError: The file is missing, unreadable or not a raster GDAL knows.
    """
    text = str(uri)
    reuse = rasterio.env.hasenv() and (settings is None or getattr(_ACTIVE, "settings", None) == settings)
    env = contextlib.nullcontext() if reuse else raster_env(settings)
    with env, warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        try:
            ds = rasterio.open(to_gdal_path(text))
        except rasterio.errors.RasterioIOError as err:
            raise RasterError(f"{text}: {describe_open_error(err)}") from None
        with ds:
            yield ds


def describe_open_error(err: BaseException) -> str:
    """One-line reason for a failed open, with what to do."""
    msg = " ".join(str(err).split())
    low = msg.lower()
    if "not recognized as" in low or "not a tiff" in low or "not a supported file format" in low:
        return "not a raster GDAL can read (corrupt file, or not a GeoTIFF/JPEG2000); replace the file"
    if "no such file" in low or "does not exist" in low:
        return "no such file"
    if "403" in low or "access denied" in low or "forbidden" in low:
        return "access denied (403); check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    if "curl" in low or "connect" in low or "http" in low:
        return f"cannot reach the S3 endpoint ({msg[:200]}); check AWS_ENDPOINT_URL"
    if "truncat" in low or "read error" in low or "cannot read" in low or "ioerror" in low:
        return f"truncated or corrupt file ({msg[:200]}); download it again"
    return f"cannot open as a raster ({msg[:200]})"
