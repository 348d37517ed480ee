"""Storage helpers for local paths and ``s3://`` URIs: list, info, read, content MD5, atomic put.

S3 access goes through s3fs. The endpoint and credentials come from the environment first
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_NO_SIGN_REQUEST``) and then from ``params.data.s3``
(:meth:`S3Settings.from_env`, which :meth:`a2mae.config.S3Config.settings` calls). Rasters on S3 are
read by GDAL, see :mod:`a2mae.io.raster`, with the same settings.

Every S3 failure a user can cause (endpoint unreachable, wrong credentials, missing bucket or key)
raises :class:`StorageError` with one line naming the URI and endpoint and saying what to do.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import shutil
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from a2mae.errors import A2maeError, os_error_line
from a2mae.io.atomic import atomic_path

if TYPE_CHECKING:
    from s3fs import S3FileSystem


_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_CHUNK = 4 << 20


class StorageError(A2maeError):
    """A file or S3 object cannot be listed, read or written; the message names the URI."""


class StorageOSError(StorageError):
    """The operating system refused a local path (permission denied, name too long): exit code 1."""

    exit_code = 1

    @classmethod
    def of(cls, err: OSError, path: str | os.PathLike[str] | None = None) -> StorageOSError:
        """The one-line error of ``err`` (:func:`~a2mae.errors.os_error_line`), naming ``path``."""
        if path is not None and err.filename is None:
            err = OSError(err.errno, err.strerror, str(path))
        return cls(os_error_line(err))


@dataclass(frozen=True)
class BadEntry:
    """An entry of a listed folder that is left out: a broken link, a named pipe, an unreadable folder.

    Attributes:
        path: The entry.
        why: What is wrong and what to do.
        os_error: The operating system refused it (permissions): exit code 1 unless skipped.
        folder: The entry is a folder (its files were not listed).
    """

    path: str
    why: str
    os_error: bool = False
    folder: bool = False


# ------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class S3Settings:
    """Where S3 lives and how to sign requests (secrets are never printed by ``repr``)."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    anonymous: bool = False
    key: str | None = None
    secret: str | None = None
    token: str | None = None

    def __repr__(self) -> str:
        return (
            f"S3Settings(endpoint_url={self.endpoint_url!r}, region={self.region!r}, "
            f"anonymous={self.anonymous}, key={'***' if self.key else None})"
        )

    @classmethod
    def from_env(
        cls,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        anonymous: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> S3Settings:
        """Resolve settings: environment variables win over the given values.

        The ``data.s3`` section of the parameters resolves through this
        (:meth:`a2mae.config.S3Config.settings`); without arguments, the environment alone decides.

        Args:
            endpoint_url: Endpoint unless ``AWS_ENDPOINT_URL`` is set.
            region: Region unless ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` is set.
            anonymous: Unsigned requests (also when ``AWS_NO_SIGN_REQUEST`` is yes/true/1).
            environ: Environment to read (default ``os.environ``).

        Returns:
            The resolved settings.
        """
        env = os.environ if environ is None else environ
        no_sign = env.get("AWS_NO_SIGN_REQUEST", "").upper() in ("YES", "TRUE", "1")
        return cls(
            endpoint_url=env.get("AWS_ENDPOINT_URL") or endpoint_url or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or region,
            anonymous=bool(no_sign or anonymous),
            key=env.get("AWS_ACCESS_KEY_ID") or None,
            secret=env.get("AWS_SECRET_ACCESS_KEY") or None,
            token=env.get("AWS_SESSION_TOKEN") or None,
        )

    @property
    def endpoint_label(self) -> str:
        """The endpoint for messages (``AWS default`` when none is set)."""
        return self.endpoint_url or "the AWS default endpoint"


def is_s3(uri: str | os.PathLike[str]) -> bool:
    """Whether ``uri`` is an ``s3://`` URI."""
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key/part`` -> ``("bucket", "key/part")``.

    Raises:
        StorageError: Not an s3:// URI or no bucket.
    """
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StorageError(f"{uri}: not an s3://bucket/key URI")
    return parsed.netloc, parsed.path.lstrip("/")


def s3_filesystem(settings: S3Settings | None = None) -> S3FileSystem:
    """An s3fs filesystem for ``settings`` (one per settings per process; no listing cache; short retries).

    Cached per process id: a forked process (a DataLoader or tiling worker) opens its own, as s3fs's
    event loop is not fork-safe, and leaves the inherited one alone (releasing it would close
    connections the parent still uses).

    Args:
        settings: Endpoint and credentials; None resolves them from the environment.

    Returns:
        ``s3fs.S3FileSystem``.
    """
    return _filesystem(settings or S3Settings.from_env(), os.getpid())


@functools.lru_cache(maxsize=8)
def _filesystem(settings: S3Settings, pid: int) -> S3FileSystem:  # pid: the cache key only
    import s3fs

    fs = s3fs.S3FileSystem(
        anon=settings.anonymous,
        key=None if settings.anonymous else settings.key,
        secret=None if settings.anonymous else settings.secret,
        token=None if settings.anonymous else settings.token,
        endpoint_url=settings.endpoint_url,
        client_kwargs={"region_name": settings.region},
        config_kwargs={
            "connect_timeout": 5,
            "read_timeout": 60,
            "retries": {"max_attempts": 2, "mode": "standard"},
        },
        skip_instance_cache=True,
        use_listings_cache=False,
    )
    fs.retries = 2  # s3fs's own retry loop on transient errors (default 5, with long backoff)
    return fs


def s3_error(err: BaseException, uri: str, settings: S3Settings) -> StorageError:
    """Translate an s3fs/botocore exception into a one-line :class:`StorageError`."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    where = settings.endpoint_label
    if isinstance(err, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
        reason = {ConnectTimeoutError: "connect timed out", ReadTimeoutError: "no answer"}.get(
            type(err), "nothing accepts connections"
        )
        return StorageError(
            f"{uri}: cannot reach the S3 endpoint {where} ({reason}); is the store running? "
            "(local services: `a2mae services up`) Check AWS_ENDPOINT_URL or data.s3.endpoint_url"
        )
    if isinstance(err, NoCredentialsError):
        return StorageError(
            f"{uri}: no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or data.s3.anonymous=true for a public bucket)"
        )
    if isinstance(err, PermissionError) or (
        isinstance(err, ClientError)
        and err.response.get("Error", {}).get("Code") in ("403", "AccessDenied", "InvalidAccessKeyId")
    ):
        return StorageError(
            f"{uri}: access denied (403) by {where}; check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
            "and the bucket policy"
        )
    if isinstance(err, FileNotFoundError):
        return StorageError(f"{uri}: no such bucket or key at {where}; check the URI")
    if isinstance(err, OSError | ClientError):
        return StorageError(f"{uri}: S3 request to {where} failed ({_one_line(err)})")
    return StorageError(f"{uri}: S3 request to {where} failed ({type(err).__name__}: {_one_line(err)})")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]


# ---------------------------------------------------------------------------------------- listings
@dataclass(frozen=True)
class FileInfo:
    """One file or object: its URI, size and a change marker (mtime for local files, ETag for S3)."""

    uri: str
    size: int
    mtime_ns: int | None = None
    etag: str | None = None

    @property
    def name(self) -> str:
        """Base name (last path component)."""
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> str:
        """Parent folder URI (no trailing slash)."""
        return self.uri.rstrip("/").rsplit("/", 1)[0]

    @property
    def marker(self) -> str:
        """What changes when the content may have changed (size plus ETag or mtime)."""
        return f"{self.size}:{self.etag or self.mtime_ns}"


def _local_info(path: Path) -> FileInfo:
    st = path.stat()
    return FileInfo(uri=str(path), size=st.st_size, mtime_ns=st.st_mtime_ns)


def _s3_info(name: str, entry: Mapping[str, Any]) -> FileInfo:
    etag = str(entry.get("ETag") or entry.get("etag") or "").strip('"') or None
    return FileInfo(uri=f"s3://{name}", size=int(entry.get("size") or 0), etag=etag)


def _not_regular(path: Path) -> str | None:
    """Why a local path is not a readable regular file (a broken or looping link, a FIFO, ...), or None."""
    try:
        mode = path.stat().st_mode
    except OSError as err:
        if path.is_symlink():
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            kind = "a symbolic link loop" if err.errno == errno.ELOOP else "a broken symbolic link"
            return f"{kind} (to {target}); fix or remove the link"
        if err.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise  # forbidden, name too long: an operating-system error (exit code 1)
        return f"cannot be read ({err.strerror})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kinds = {stat.S_ISFIFO: "a named pipe", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a character device"}
    kind = next((k for test, k in kinds.items() if test(mode)), "a device")
    return f"not a regular file ({kind}); give GeoTIFF files or folders of them"


def list_files(
    uri: str | os.PathLike[str],
    settings: S3Settings | None = None,
    *,
    bad: list[BadEntry] | None = None,
) -> list[FileInfo]:
    """All regular files under ``uri`` (recursively), or ``uri`` itself when it is a file, sorted by URI.

    Hidden files and folders (names starting with ``.``) are skipped. Local entries that are not
    regular files (named pipes, sockets, devices, broken or looping symbolic links) are never listed:
    reading one could block forever or fail later.

    Args:
        uri: Local file or folder, or ``s3://bucket/prefix``.
        settings: S3 settings (default: from the environment).
        bad: Receives such entries inside a folder, and the files and sub-folders the operating
            system refuses to read (:class:`BadEntry`); without it the first one raises.

    Returns:
        The files found.

    Raises:
        StorageError: The path does not exist, is not a regular file or folder, holds such an entry
            (without ``bad``), or S3 cannot be listed.
        StorageOSError: The path given, or (without ``bad``) a file or folder under it, cannot be read
            (permission denied) or its name is too long.
    """
    text = str(uri)
    if not is_s3(text):
        return _list_local(text, bad)

    settings = settings or S3Settings.from_env()
    bucket, key = split_s3(text)
    fs = s3_filesystem(settings)
    try:
        found = fs.find(f"{bucket}/{key}".rstrip("/"), detail=True)
    except Exception as err:
        raise s3_error(err, text, settings) from None
    out = [
        _s3_info(name, entry)
        for name, entry in found.items()
        if entry.get("type", "file") != "directory"
        and not any(part.startswith(".") for part in name[len(bucket) :].split("/"))
    ]
    if not out:
        # distinguish "no bucket" (find swallows it) from an empty prefix
        try:
            exists = fs.exists(bucket)
        except Exception as err:
            raise s3_error(err, text, settings) from None
        if not exists:
            raise StorageError(f"{text}: no such bucket at {settings.endpoint_label}; check the URI")
    return sorted(out, key=lambda f: f.uri)


def _list_local(text: str, bad: list[BadEntry] | None) -> list[FileInfo]:
    """:func:`list_files` of a local file or folder (see there)."""
    path = Path(text).expanduser().absolute()
    try:
        problem = _not_regular(path)
        if problem is not None:
            if not path.is_symlink() and not path.exists():
                problem = "no such file or folder"
            raise StorageError(f"{text}: {problem}")
        if path.is_file():
            os.close(os.open(path, os.O_RDONLY))  # a forbidden file: an OS error here, not "cannot open"
            return [_local_info(path)]
        if not path.is_dir():
            raise StorageError(f"{text}: no such file or folder")
        os.close(os.open(path, os.O_RDONLY))  # a forbidden folder: not "no raster files"
    except OSError as err:
        raise StorageOSError.of(err, text) from None

    def refused(err: OSError) -> None:  # a sub-folder os.walk cannot list
        if err.filename is None or Path(err.filename) == path:
            raise StorageOSError.of(err, text)
        if bad is None:
            raise StorageOSError.of(err)
        bad.append(
            BadEntry(
                str(err.filename), f"cannot list the folder: {_os_reason(err)}", os_error=True, folder=True
            )
        )

    out = []
    for root, dirs, files in os.walk(path, onerror=refused):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith("."):
                continue
            p = Path(root) / name
            try:
                problem = _not_regular(p)
            except OSError as err:
                if bad is None:
                    raise StorageOSError.of(err, p) from None
                bad.append(BadEntry(str(p), _os_reason(err), os_error=True))
                continue
            if problem is None and not os.access(p, os.R_OK):  # forbidden: an OS error, not "cannot open"
                denied = OSError(errno.EACCES, os.strerror(errno.EACCES), str(p))
                if bad is None:
                    raise StorageOSError.of(denied)
                bad.append(BadEntry(str(p), _os_reason(denied), os_error=True))
                continue
            if problem is not None:
                if bad is None:
                    raise StorageError(f"{p}: {problem}")
                bad.append(BadEntry(str(p), problem))
                continue
            out.append(_local_info(p))
    return sorted(out, key=lambda f: f.uri)


def _os_reason(err: OSError) -> str:
    """What :func:`~a2mae.errors.os_error_line` says about ``err``, without the path."""
    return os_error_line(OSError(err.errno, err.strerror))


def file_info(uri: str, settings: S3Settings | None = None) -> FileInfo:
    """Size and change marker of one file or object.

    Raises:
        StorageError: It does not exist or cannot be reached.
    """
    if not is_s3(uri):
        path = Path(uri)
        if not path.is_file():
            raise StorageError(f"{uri}: no such file")
        return _local_info(path)
    settings = settings or S3Settings.from_env()
    fs = s3_filesystem(settings)
    try:
        entry = fs.info(uri[len("s3://") :])
    except Exception as err:
        raise s3_error(err, uri, settings) from None
    return _s3_info(uri[len("s3://") :], entry)


def read_bytes(uri: str, settings: S3Settings | None = None, max_bytes: int | None = None) -> bytes:
    """Read a whole (small) file or object.

    Raises:
        StorageError: Missing, unreachable, or larger than ``max_bytes``.
    """
    if not is_s3(uri):
        try:
            size = os.path.getsize(uri)
            if max_bytes is not None and size > max_bytes:
                raise StorageError(f"{uri}: {size} bytes is larger than the {max_bytes} expected")
            return Path(uri).read_bytes()
        except OSError as err:
            raise StorageError(f"{uri}: cannot read ({err.strerror})") from None
    settings = settings or S3Settings.from_env()
    fs = s3_filesystem(settings)
    try:
        with fs.open(uri[len("s3://") :], "rb") as f:
            data: bytes = f.read() if max_bytes is None else f.read(max_bytes + 1)
    except Exception as err:
        raise s3_error(err, uri, settings) from None
    if max_bytes is not None and len(data) > max_bytes:
        raise StorageError(f"{uri}: larger than the {max_bytes} bytes expected")
    return data


@contextlib.contextmanager
def open_binary(uri: str, settings: S3Settings | None = None) -> Iterator[Any]:
    """Open a file or object for streaming binary reads.

    Raises:
        StorageError: Missing or unreachable.
    """
    if not is_s3(uri):
        try:
            f = open(uri, "rb")  # noqa: SIM115 (closed below)
        except OSError as err:
            raise StorageError(f"{uri}: cannot read ({err.strerror})") from None
        with f:
            yield f
        return
    settings = settings or S3Settings.from_env()
    fs = s3_filesystem(settings)
    try:
        f = fs.open(uri[len("s3://") :], "rb")
    except Exception as err:
        raise s3_error(err, uri, settings) from None
    with f:
        yield f


def content_md5(info: FileInfo, settings: S3Settings | None = None) -> str:
    """MD5 (hex) of a file's bytes: an S3 single-part ETag when it is one, else computed by streaming.

    Args:
        info: The file (from :func:`list_files` or :func:`file_info`).
        settings: S3 settings for objects.

    Returns:
        32 hex digits.
    """
    if info.etag and _MD5_RE.match(info.etag.lower()):
        return info.etag.lower()
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with open_binary(info.uri, settings) as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except StorageError:
        raise
    except Exception as err:
        if is_s3(info.uri):
            raise s3_error(err, info.uri, settings or S3Settings.from_env()) from None
        raise StorageError(f"{info.uri}: cannot read ({_one_line(err)})") from None
    return digest.hexdigest()


def put_file(local: str | os.PathLike[str], uri: str, settings: S3Settings | None = None) -> None:
    """Copy a local file to a local path or S3 key atomically (readers see the old or the new bytes).

    Local targets are written to a temporary sibling and renamed; an S3 PUT is atomic by itself.

    Raises:
        StorageError: The target cannot be written.
    """
    if not is_s3(uri):
        with atomic_path(uri) as tmp:
            shutil.copyfile(local, tmp)
        return
    settings = settings or S3Settings.from_env()
    fs = s3_filesystem(settings)
    try:
        fs.put_file(str(local), uri[len("s3://") :])
    except Exception as err:
        raise s3_error(err, uri, settings) from None


def put_tree(local_dir: str | os.PathLike[str], uri: str, settings: S3Settings | None = None) -> list[str]:
    """Upload every file under ``local_dir`` to the prefix ``uri`` (keeps relative paths).

    Returns:
        The URIs written.
    """
    base = Path(local_dir)
    pairs = [
        (path, f"{uri.rstrip('/')}/{path.relative_to(base).as_posix()}")
        for path in sorted(p for p in base.rglob("*") if p.is_file())
    ]
    if not is_s3(uri):
        for path, target in pairs:
            put_file(path, target)
        return [t for _, t in pairs]
    settings = settings or S3Settings.from_env()
    fs = s3_filesystem(settings)
    try:
        fs.put([str(p) for p, _ in pairs], [t[len("s3://") :] for _, t in pairs])
    except Exception as err:
        raise s3_error(err, uri, settings) from None
    return [t for _, t in pairs]
