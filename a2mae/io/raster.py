"""Opening rasters from local paths and ``s3://`` URIs with rasterio (GDAL ``/vsis3/``).

GDAL does not use s3fs: it reads S3 objects itself and takes its endpoint and credentials from GDAL
configuration options (``AWS_S3_ENDPOINT=host:port``, ``AWS_HTTPS``, ``AWS_VIRTUAL_HOSTING=FALSE``,
``AWS_REGION``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` or ``AWS_NO_SIGN_REQUEST``).
:func:`raster_env` sets them from :class:`~a2mae.io.storage.S3Settings` in a scoped ``rasterio.Env``
(rasterio refuses AWS keys as plain ``Env`` options, so they go through a small session object). GDAL
configuration is thread-local in rasterio: enter :func:`raster_env` in every worker thread.

Remote rasters (the COG hrefs of a STAC catalog, :mod:`a2mae.collect`) are read in place, only the
windows asked for: ``s3://bucket/key`` through ``/vsis3/`` (signed with the S3 settings, or unsigned
with ``AWS_NO_SIGN_REQUEST``), ``http(s)://`` URLs through ``/vsicurl/`` (an URL on the configured S3
endpoint goes through ``/vsis3/``, so it is signed). :data:`GDAL_DEFAULTS` sets how: no directory
listing or sidecar probes on open (a COG's header is one 16 KiB range request), HTTP retries with
exponential backoff on 429/5xx and connection errors, GDAL's HTTP range cache, and its default
multi-range reads (parallel single-range requests: a window over several tiles costs one request per
run of adjacent tiles; SeaweedFS, like some servers, answers a true multi-range request with the whole
object, so ``GDAL_HTTP_MULTIRANGE=SINGLE_GET`` is never set). A remote file that cannot be opened or
read raises :class:`RemoteReadError`: one line naming the URL and what to do.

Usage::

    settings = params.data.s3.settings()
    with raster_env(settings), open_raster("s3://bucket/scene/B04.tif") as ds:
        print(ds.profile)
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import rasterio
from rasterio.session import Session

from a2mae.errors import A2maeError
from a2mae.io.storage import S3Settings, is_s3

#: GDAL options for every raster read: no directory listing on open (a listing per file is slow on
#: S3 and useless for COGs), no HTTP probes of other extensions (sidecars), short HTTP timeouts,
#: retries of 429/5xx and failed connections with exponential backoff (0.5 s, ~1 s, ~2 s), and a
#: 64 MB cache of fetched HTTP ranges per process (a COG header or tile read once per task).
GDAL_DEFAULTS: dict[str, Any] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_CONNECTTIMEOUT": "5",
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.jp2,.JP2,.vrt",
    "CPL_VSIL_CURL_CACHE_SIZE": str(64 << 20),
}


#: The only GDAL drivers a raster is read with: those of the formats the sensors ship (GeoTIFF and COG:
#: ``GTiff``; Sentinel-2's JPEG 2000: ``JP2OpenJPEG``). GDAL recognises files by their content, so
#: without this a ``.tif`` holding a VRT (XML that reads other files or URLs), an HDF or a PNG would be
#: opened by the driver of that format. The driver of the file's extension is tried first (some
#: archives name GeoTIFFs ``.jp2``).
DRIVERS = ("GTiff", "JP2OpenJPEG")

#: First bytes of formats a disguised raster may have, and how to name them.
_MAGIC = (
    (b"<VRTDataset", "a GDAL VRT (XML that reads other files or URLs)"),
    (b"II*\x00", "a TIFF GDAL cannot read (corrupt)"),
    (b"MM\x00*", "a TIFF GDAL cannot read (corrupt)"),
    (b"II+\x00", "a BigTIFF GDAL cannot read (corrupt)"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 file"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89HDF", "an HDF5/NetCDF-4 file"),
    (b"CDF", "a NetCDF file"),
    (b"<", "an XML or HTML file"),
    (b"{", "a JSON file"),
)


def drivers_for(uri: str | os.PathLike[str]) -> tuple[str, ...]:
    """The allowed GDAL drivers (:data:`DRIVERS`), the one of ``uri``'s extension first."""
    return tuple(reversed(DRIVERS)) if str(uri).lower().endswith(".jp2") else DRIVERS


def _open_allowed(path: str, drivers: tuple[str, ...]) -> Any:
    """``rasterio.open`` with each allowed driver in turn (an unrecognised format tries the next).

    Raises:
        rasterio.errors.RasterioIOError: No allowed driver reads the file (the last error).
    """
    for k, driver in enumerate(drivers):
        try:
            return rasterio.open(path, driver=driver)
        except rasterio.errors.RasterioIOError as err:
            if k == len(drivers) - 1 or "not recognized" not in str(err):
                raise
    raise AssertionError("unreachable")


def sniff(uri: str | os.PathLike[str]) -> str | None:
    """What a local file's first bytes say it is (None: unknown, or not local)."""
    if is_s3(uri):
        return None
    try:
        with open(uri, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    if not head:
        return "an empty file"
    text = all(32 <= b < 127 or b in b"\t\r\n" for b in head)  # XML and JSON start as ASCII text
    return next(
        (what for magic, what in _MAGIC if head.startswith(magic) and (text or magic[:1] not in b"<{")), None
    )


def quiet_undecodable_gdal_messages() -> None:
    """Keep rasterio's GDAL message callback from printing errors for undecodable messages.

    rasterio decodes every GDAL message as UTF-8 in a C callback; a corrupt file can make GDAL quote
    raw bytes (a damaged TIFF tag), the decode fails inside the callback, and Python prints the error
    twice on stderr (``sys.excepthook`` with no traceback, then ``sys.unraisablehook``) although nothing
    failed: the open goes on and reports its own error. Exactly those two prints are dropped; any other
    exception is printed as before. Called before every open (others, e.g. typer, replace the hooks).
    """
    if not getattr(sys.unraisablehook, "_a2mae_quiet_gdal", False):
        unraisable_hook = sys.unraisablehook

        def on_unraisable(unraisable: Any) -> None:
            if issubclass(unraisable.exc_type, UnicodeDecodeError) and "rasterio._env" in repr(
                unraisable.object
            ):
                return
            unraisable_hook(unraisable)

        on_unraisable._a2mae_quiet_gdal = True  # type: ignore[attr-defined]
        sys.unraisablehook = on_unraisable
    if not getattr(sys.excepthook, "_a2mae_quiet_gdal", False):
        except_hook = sys.excepthook

        def on_exception(exc_type: type, value: BaseException, tb: Any) -> None:
            if tb is None and issubclass(exc_type, UnicodeDecodeError):  # printed from C, with no frame
                return
            except_hook(exc_type, value, tb)

        on_exception._a2mae_quiet_gdal = True  # type: ignore[attr-defined]
        sys.excepthook = on_exception


class RasterError(A2maeError):
    """A raster cannot be opened or read; the message names the file."""


class RemoteReadError(RasterError, rasterio.errors.RasterioIOError):
    """A remote raster (``s3://``, ``http(s)://``) cannot be opened or read after GDAL's retries.

    Also a ``RasterioIOError``, so code that handles rasterio's read errors handles it too; uncaught,
    the command line prints its one-line message.
    """


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
    settings = settings or S3Settings.from_env()
    session = _GDALS3Session(gdal_s3_options(settings))
    token = _ACTIVE.set(settings)
    try:
        with rasterio.Env(session=session, **{**GDAL_DEFAULTS, **options}) as env:
            yield env
    finally:
        _ACTIVE.reset(token)


#: The S3 settings of the innermost :func:`raster_env` of this thread (for :func:`to_gdal_path`).
_ACTIVE: contextvars.ContextVar[S3Settings | None] = contextvars.ContextVar("a2mae_raster_s3", default=None)


def is_remote(uri: str | os.PathLike[str]) -> bool:
    """Whether ``uri`` is read over the network (``s3://``, ``http://``, ``https://``)."""
    return str(uri).startswith(("s3://", "http://", "https://"))


def to_gdal_path(uri: str | os.PathLike[str], settings: S3Settings | None = None) -> str:
    """The GDAL path of a raster: ``/vsis3/`` for S3, ``/vsicurl/`` for HTTP(S), local paths unchanged.

    Args:
        uri: ``s3://bucket/key``, an ``http(s)://`` URL, or a local path.
        settings: S3 settings; an URL on their endpoint (``http://host:port/bucket/key``) is read as
            ``/vsis3/bucket/key``, so it is signed like the store's other objects.
    """
    text = str(uri)
    if is_s3(text):
        return "/vsis3/" + text[len("s3://") :]
    if text.startswith(("http://", "https://")):
        endpoint = settings.endpoint_url if settings is not None else None
        if endpoint and "://" in endpoint and text.startswith(endpoint.rstrip("/") + "/"):
            return "/vsis3/" + text[len(endpoint.rstrip("/")) + 1 :]
        return "/vsicurl/" + text
    return text


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
    quiet_undecodable_gdal_messages()
    reuse = rasterio.env.hasenv() and (settings is None or _ACTIVE.get() == settings)
    env = contextlib.nullcontext() if reuse else raster_env(settings)
    remote = is_remote(text)
    with env, warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        try:
            ds = _open_allowed(to_gdal_path(text, settings or _ACTIVE.get()), drivers_for(text))
        except rasterio.errors.RasterioIOError as err:
            if remote:
                raise RemoteReadError(f"{text}: {describe_open_error(err, remote=True)}") from None
            raise RasterError(f"{text}: {describe_open_error(err, text)}") from None
        with ds:
            yield _RemoteDataset(ds, text) if remote else ds


class _RemoteDataset:
    """A remote dataset whose failed reads raise :class:`RemoteReadError` naming the URL.

    Everything else is the rasterio dataset's own (attributes are looked up on it).
    """

    def __init__(self, ds: Any, uri: str) -> None:
        self._ds = ds
        self._uri = uri

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ds, name)

    def read(self, *args: Any, **kwargs: Any) -> Any:
        """``DatasetReader.read``; a failure after GDAL's retries becomes one line naming the URL."""
        try:
            return self._ds.read(*args, **kwargs)
        except rasterio.errors.RasterioIOError as err:
            detail = " ".join(str(err).split())[:200]
            raise RemoteReadError(
                f"{self._uri}: cannot read its pixels over the network after retries ({detail}); {REMOTE_FIX}"
            ) from err


#: What to do about a remote raster that cannot be read (appended to its error line).
REMOTE_FIX = "check the store or URL and retry, or pass --skip-bad to go on without the scene"


def describe_open_error(err: BaseException, uri: str | None = None, remote: bool = False) -> str:
    """One-line reason for a failed open, with what to do.

    Args:
        err: The error of the open.
        uri: The file (a local file's first bytes name a disguised format).
        remote: The raster is read over the network (messages name HTTP statuses and --skip-bad).
    """
    msg = " ".join(str(err).split())
    low = msg.lower()
    if remote:
        return f"{_remote_reason(low, msg)}; {REMOTE_FIX}"
    if "not recognized as" in low or "not a tiff" in low or "not a supported file format" in low:
        what = sniff(uri) if uri is not None else None
        if what is not None and "corrupt" not in what and "JPEG 2000" not in what:
            return (
                f"not a GeoTIFF or JPEG 2000 raster: the file is {what}; only those two formats are read "
                "(by content, whatever the extension); replace it with the original raster"
            )
        return "not a raster GDAL can read (corrupt file, or not a GeoTIFF/JPEG2000); replace the file"
    if "no such file" in low or "does not exist" in low:
        return "no such file"
    if "403" in low or "access denied" in low or "forbidden" in low:
        return "access denied (403); check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    if "curl" in low or "connect" in low or "http" in low:
        return f"cannot reach the S3 endpoint ({msg[:200]}); check AWS_ENDPOINT_URL"
    if "truncat" in low or "read error" in low or "cannot read" in low or "ioerror" in low:
        return f"truncated or corrupt file ({msg[:200]}); download it again"
    return f"cannot open as a raster ({msg[:200]}); replace it with the original file"


def _remote_reason(low: str, msg: str) -> str:
    """Why a remote raster cannot be opened, from GDAL's message."""
    if "404" in low or "does not exist" in low or "no such file" in low or "not found" in low:
        return "not found (HTTP 404): the asset is gone or the catalog's href is stale"
    if "403" in low or "access denied" in low or "forbidden" in low:
        return (
            "access denied (403); check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or "
            "data.s3.anonymous for a public bucket"
        )
    if "not recognized as" in low or "not a tiff" in low or "not a supported file format" in low:
        return "not a raster GDAL can read (not a GeoTIFF/COG, or corrupt)"
    if "timeout" in low or "timed out" in low or "connect" in low or "resolve" in low or "curl" in low:
        return f"cannot reach the server after retries ({msg[:160]})"
    return f"cannot open it over the network ({msg[:160]})"
