"""Errors a user can cause and fix. The CLI prints their message as one line and exits non-zero."""

from __future__ import annotations

import os
import re


class A2maeError(Exception):
    """Base class of errors caused by the user's input (files, parameters, endpoints).

    The message must name the file, URI or key involved and say what to do; it is shown without a
    traceback. Programming errors are never wrapped in this class.
    """

    exit_code: int = 2


_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^/@\s:]*)(?P<password>:[^/@\s]*)?@")
_SECRET_ARG = re.compile(
    r"(?i)(?P<key>(?:secret|password|passwd|token|signature|credential|sig)[\w-]*)=(?P<value>[^&\s;,'\"]+)"
)
_SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "PREFECT_API_AUTH_STRING",
    "PREFECT_API_KEY",
    "RAY_AUTH_TOKEN",
)


def _redact_userinfo(m: re.Match[str]) -> str:
    return f"{m['scheme']}{m['user']}:***@" if m["password"] else m.group(0)


def safe_line(text: str, env: dict[str, str] | None = None) -> str:
    r"""``text`` made safe to print as one line: no secrets, no control characters.

    * ``scheme://user:password@host`` keeps the user and drops the password (``scheme://user:***@host``);
    * ``secret=...``, ``password=...``, ``token=...``, ``X-Amz-Signature=...`` values become ``***``;
    * the values of secret environment variables (S3 secret key, MLflow password, Prefect auth string,
      Ray token) are replaced wherever they appear;
    * control characters (newlines, escapes, NUL; e.g. in a file name) are shown escaped (``\n``,
      ``\x1b``), so one error is one line and cannot rewrite the terminal;
    * a word (a path, a URI) longer than :data:`LONG_WORD` characters keeps its start and end around
      ``...(N characters)...``, so a 100,000-character path gives a readable line.
    """
    env = dict(os.environ) if env is None else env
    out = _USERINFO.sub(_redact_userinfo, text)
    out = _SECRET_ARG.sub(lambda m: f"{m['key']}=***", out)
    for name in _SECRET_ENV:
        value = env.get(name, "")
        if len(value) >= 4:
            out = out.replace(value, "***")
    out = "".join(
        c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in out
    )
    return _LONG_RUN.sub(_shorten, out)


#: Words (paths, URIs) longer than this are shortened in printed lines (see :func:`safe_line`).
LONG_WORD = 240
_KEEP = 100
_LONG_RUN = re.compile(r"[^ ]{" + str(LONG_WORD + 1) + ",}")


def _shorten(m: re.Match[str]) -> str:
    word = m.group(0)
    return f"{word[:_KEEP]}...({len(word) - 2 * _KEEP:,} characters left out)...{word[-_KEEP:]}"


#: What to do about an operating-system error, by errno name.
_OS_FIX = {
    "ENOSPC": "no space left on the device; free some space or write elsewhere",
    "EDQUOT": "disk quota exceeded; free some space or write elsewhere",
    "EROFS": "read-only file system; write elsewhere",
    "EACCES": "permission denied; fix the permissions or use another path",
    "EPERM": "operation not permitted; fix the permissions or use another path",
    "ELOOP": "a symbolic link loop; fix or remove the link",
    "ENOENT": "no such file or directory; check the path",
    "ENOTDIR": "a part of the path is not a folder; check the path",
    "EISDIR": "a folder where a file was expected; check the path",
    "EMFILE": "too many open files; raise the limit (ulimit -n) or lower the workers",
    "ENAMETOOLONG": "the file name is too long; use a shorter path",
}


def os_error_line(err: OSError) -> str:
    """One line for an operating-system error: the path, what happened and what to do.

    Args:
        err: The error (``errno``, ``strerror`` and ``filename`` when the OS gave them).

    Returns:
        E.g. ``/data/out: no space left on the device; free some space or write elsewhere``.
    """
    import errno as errno_mod

    name = errno_mod.errorcode.get(err.errno or -1, "")
    what = _OS_FIX.get(name) or (err.strerror or str(err) or type(err).__name__)
    path = err.filename if err.filename is not None else None
    if getattr(err, "filename2", None):
        path = f"{err.filename} -> {err.filename2}"
    return f"{path}: {what}" if path else what
