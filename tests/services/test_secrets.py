"""Credentials of the stack: created once, mode 0600 in 0700 folders, stable, narrowed when too open."""

from __future__ import annotations

import os
import stat

import pytest

from a2mae.services.base import ServiceError
from a2mae.services.secrets import ensure_tls, private_dir, read_or_create, write_private


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_secret_is_made_once_private_and_kept(tmp_path):
    path = tmp_path / "a" / "b" / "token"
    first = read_or_create(path)
    assert len(first) == 64 and int(first, 16) >= 0
    assert _mode(path) == 0o600 and _mode(tmp_path / "a") == 0o700 and _mode(tmp_path / "a" / "b") == 0o700
    assert read_or_create(path) == first  # kept across restarts
    os.chmod(path, 0o644)  # e.g. restored from a backup with the wrong mode
    assert read_or_create(path) == first and _mode(path) == 0o600
    assert read_or_create(tmp_path / "other", 8, prefix="x-").startswith("x-")


def test_write_private_replaces_atomically_and_never_widens(tmp_path):
    path = tmp_path / "f"
    write_private(path, "one")
    write_private(path, b"two")
    assert path.read_text() == "two" and _mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f"]  # no temporary left
    assert _mode(private_dir(tmp_path / "x" / "y")) == 0o700


def test_unwritable_folder_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who may write anywhere")
        with pytest.raises(ServiceError, match=r"ro/secret: cannot write a credentials file"):
            write_private(ro / "secret", "x")
    finally:
        os.chmod(ro, 0o700)


def test_tls_files_form_a_chain_for_both_ends(tmp_path):
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    files = ensure_tls(tmp_path / "tls", ("127.0.0.1",))
    assert all(_mode(p) == 0o600 for p in (files.ca, files.cert, files.key))
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage and ExtendedKeyUsageOID.CLIENT_AUTH in usage
    assert not list(tmp_path.joinpath("tls").glob("ca.key"))  # nothing else can ever be signed
    again = ensure_tls(tmp_path / "tls")
    assert again.cert.read_bytes() == files.cert.read_bytes()  # made once
