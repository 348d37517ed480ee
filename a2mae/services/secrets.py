"""Credentials of the local stack: generated once, kept under the state folder with mode 0600, never printed.

Every secret the services need (the Ray token, SeaweedFS's JWT signing keys and its gRPC certificates,
MLflow's admin password and Flask key, Prefect's auth string) is created here the first time a service
starts and read back afterwards, so a restart keeps working with the clients' ``.a2mae/env``. Files are
written atomically, created with mode 0600 (never world-readable, not even for an instant), and a file
found with wider permissions is narrowed back to 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from a2mae.services.base import ServiceError


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and its missing parents with mode 0700 (an existing folder is left as it is)."""
    path = Path(path)
    if not path.is_dir():
        private_dir(path.parent)
        path.mkdir(mode=0o700, exist_ok=True)
    return path


def write_private(path: str | os.PathLike[str], text: str | bytes) -> Path:
    """Write ``text`` to ``path`` atomically with mode 0600 (the folder is created, mode 0700).

    Returns:
        The path.

    Raises:
        ServiceError: The file cannot be written (one line naming it).
    """
    path = Path(path)
    data = text.encode() if isinstance(text, str) else text
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        private_dir(path.parent)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o600)  # an existing temporary may have had wider permissions
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ServiceError(f"{path}: cannot write a credentials file ({err.strerror})") from None
    return path


def _narrow(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, 0o600)


def read_or_create(path: str | os.PathLike[str], nbytes: int = 32, prefix: str = "") -> str:
    """The secret stored in ``path``; a new random one (``prefix`` + hex of ``nbytes``) the first time.

    Raises:
        ServiceError: The file cannot be read or written.
    """
    path = Path(path)
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        value = ""
    except OSError as err:
        raise ServiceError(f"{path}: cannot read a credentials file ({err.strerror})") from None
    if value:
        _narrow(path)
        return value
    value = prefix + secrets.token_hex(nbytes)
    write_private(path, value + "\n")
    return value


@dataclass(frozen=True)
class TlsFiles:
    """A private certificate authority and one certificate/key pair signed by it (PEM files, 0600)."""

    ca: Path
    cert: Path
    key: Path


def ensure_tls(folder: str | os.PathLike[str], hosts: tuple[str, ...] = ("127.0.0.1",)) -> TlsFiles:
    """A CA and a certificate for mutual TLS between the processes of one service (made once, then kept).

    The certificate is valid for both ends of a connection (server and client authentication) on
    ``hosts`` and ``localhost``; the CA's key is not kept (nothing else is ever signed).

    Args:
        folder: Where ``ca.crt``, ``service.crt`` and ``service.key`` live.
        hosts: Addresses written in the certificate.

    Returns:
        The three files.
    """
    folder = Path(folder)
    files = TlsFiles(folder / "ca.crt", folder / "service.crt", folder / "service.key")
    if all(p.is_file() for p in (files.ca, files.cert, files.key)):
        for p in (files.ca, files.cert, files.key):
            _narrow(p)
        return files
    ca_pem, cert_pem, key_pem = _make_tls(hosts)
    write_private(files.ca, ca_pem)
    write_private(files.key, key_pem)
    write_private(files.cert, cert_pem)
    return files


def _make_tls(hosts: tuple[str, ...]) -> tuple[bytes, bytes, bytes]:
    """``(CA certificate, certificate, key)`` in PEM: ECDSA P-256, ten years."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=3650)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a2mae local CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for h in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a2mae service")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem), cert.public_bytes(pem), key_pem
