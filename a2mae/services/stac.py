"""A local STAC API: stac-fastapi-pgstac on a private PostgreSQL + PostGIS cluster (loopback only).

Two processes: a PostgreSQL cluster of its own (``initdb`` once under ``<state_dir>/pg``, started with
``pg_ctl`` on a free loopback port, no system service involved) and the API (``uvicorn
stac_fastapi.pgstac.app:create_app``) from the server's own venv, ``.venv-stac``, which
``scripts/bootstrap-stac.sh`` builds from ``infra/stac/requirements.txt`` (the server's fastapi and
cachetools pins cannot live in the project's venv) and where it installs Debian's PostGIS package.

PostgreSQL refuses to run as root: as root, the cluster's files belong to the ``postgres`` user (made by
the Debian package) and its commands run through ``runuser``. The cluster's password is random, kept
in ``<state_dir>/pg.json`` (mode 0600). ``eo:cloud_cover`` is registered as a numeric queryable, so
``query``/``filter`` and ``sortby`` compare numbers, not text.

Example::

    with StacServer("/tmp/stac", port=0) as stac:
        stac.add_collection(doc); stac.add_items("sentinel-2-l2a", items)
        print(stac.url)
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from a2mae.services.base import ServiceError, free_port_pair
from a2mae.services.daemon import DetachedService, terminate
from a2mae.services.http import http_get, tcp_open

#: Where ``scripts/bootstrap-stac.sh`` puts the server's venv, relative to the project folder.
DEFAULT_VENV = ".venv-stac"
_DB = "stac"
_USER = "stac"
_FIX = "run scripts/bootstrap-stac.sh (installs PostgreSQL/PostGIS with apt and builds .venv-stac)"


def postgres_bin() -> Path:
    """The ``bin`` folder of the newest PostgreSQL server with PostGIS (Debian layout).

    Raises:
        ServiceError: No PostgreSQL server, or none with PostGIS.
    """
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    for initdb in reversed(found):
        major = initdb.parts[-3]
        if Path(f"/usr/share/postgresql/{major}/extension/postgis.control").is_file():
            return initdb.parent
    what = "PostGIS is missing" if found else "PostgreSQL is not installed"
    raise ServiceError(f"stac: {what}; {_FIX}")


def _as_postgres(cmd: list[str]) -> list[str]:
    """``cmd`` run as the ``postgres`` user when this process is root (PostgreSQL refuses root)."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class StacServer(DetachedService):
    """stac-fastapi-pgstac with transactions on ``host:port``, its PostgreSQL on a free port.

    Args:
        state_dir: Folder of the cluster (``pg/``), logs, pid file and ``pg.json``. As root, the
            ``postgres`` user must be able to reach it (no private parent folder).
        host: Interface both processes bind (loopback).
        port: API port (0: a free one, chosen at start).
        venv: The server's venv (default :data:`DEFAULT_VENV` in the working directory).
    """

    name = "stac"

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = 8082,
        venv: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(state_dir, host)
        self.port = port
        self.venv = Path(venv or DEFAULT_VENV).absolute()
        self._pg_port: int | None = None

    # ------------------------------------------------------------------------------------ paths
    @property
    def url(self) -> str:
        """Root of the STAC API."""
        return f"http://{self.host}:{self.port}"

    @property
    def pg_dir(self) -> Path:
        """The cluster's folder (data, socket, log)."""
        return self.state_dir / "pg"

    def _secret(self) -> str:
        path = self.state_dir / "pg.json"
        try:
            return str(json.loads(path.read_text())["password"])
        except (OSError, ValueError, KeyError):
            pass
        password = secrets.token_hex(16)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"user": _USER, "password": password, "database": _DB}, f)
        return password

    def _running_pg_port(self) -> int | None:
        """Port of this cluster's postmaster when it runs (from its ``postmaster.pid``)."""
        from a2mae.services.daemon import pid_alive

        try:
            lines = (self.pg_dir / "data" / "postmaster.pid").read_text().splitlines()
            return int(lines[3]) if pid_alive(int(lines[0])) else None
        except (OSError, ValueError, IndexError):
            return None

    def pg_port(self) -> int:
        """The cluster's port: the running one's, else a free one picked now (kept)."""
        if self._pg_port is None:
            self._pg_port = self._running_pg_port() or free_port_pair(0, self.host, 20000, 30000)
        return self._pg_port

    def pg_env(self) -> dict[str, str]:
        """Libpq variables reaching the cluster's database."""
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.pg_port()),
            "PGUSER": _USER,
            "PGPASSWORD": self._secret(),
            "PGDATABASE": _DB,
        }

    # -------------------------------------------------------------------------------- lifecycle
    def environment(self) -> dict[str, str]:
        """The API's settings: the database, transactions on, a small connection pool."""
        return {
            **self.pg_env(),
            "ENABLE_TRANSACTIONS_EXTENSIONS": "true",
            "DB_MIN_CONN_SIZE": "1",
            "DB_MAX_CONN_SIZE": "4",
            "STAC_FASTAPI_TITLE": "a2mae local STAC API",
            "STAC_FASTAPI_DESCRIPTION": "Local STAC API of a2mae (stac-fastapi-pgstac)",
            "STAC_FASTAPI_LANDING_ID": "a2mae-stac",
        }

    def prepare(self) -> None:
        """Pick the port (0: a free one), check it and the install, create, start and migrate the cluster."""
        if self.port == 0:
            self.port = free_port_pair(0, self.host, 20000, 30000)
        if not (self.venv / "bin" / "python").is_file():
            raise ServiceError(f"stac: the server venv {self.venv} is missing; {_FIX}")
        if tcp_open(self.host, self.port):
            raise ServiceError(
                f"stac: port {self.port} on {self.host} is in use by another process; stop it or set "
                "infra.stac_port"
            )
        pg_bin = postgres_bin()
        self._init_cluster(pg_bin)
        self._start_cluster(pg_bin)
        self._migrate(pg_bin)

    def _run(self, cmd: list[str], what: str, env: Mapping[str, str] | None = None) -> str:
        try:
            out = subprocess.run(
                cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise ServiceError(f"stac: {what} failed ({err}); see {self.log_path}") from None
        with open(self.log_path, "a") as log:
            log.write(out.stdout + out.stderr)
        if out.returncode != 0:
            last = (out.stderr.strip() or out.stdout.strip() or "no output").splitlines()[-1]
            raise ServiceError(f"stac: {what} failed: {last[:300]}; see {self.log_path}")
        return out.stdout

    def _init_cluster(self, pg_bin: Path) -> None:
        """``initdb`` once (as ``postgres`` when root), scram-sha-256 password auth."""
        data = self.pg_dir / "data"
        if (data / "PG_VERSION").is_file():
            return
        shutil.rmtree(data, ignore_errors=True)  # a half-made cluster of an interrupted start
        (self.pg_dir / "run").mkdir(parents=True, exist_ok=True)
        pwfile = self.pg_dir / "pwfile"
        pwfile.write_text(self._secret() + "\n")
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "postgres:postgres", str(self.pg_dir)], check=True)
            probe = subprocess.run(_as_postgres(["test", "-w", str(self.pg_dir)]), check=False)
            if probe.returncode != 0:
                raise ServiceError(
                    f"stac: the 'postgres' user cannot reach {self.pg_dir} (PostgreSQL refuses to run as "
                    "root); put infra.home (or the state folder) where every user can enter the "
                    "folders above it"
                )
        try:
            self._run(
                _as_postgres(
                    [
                        str(pg_bin / "initdb"),
                        "-D",
                        str(data),
                        "-U",
                        _USER,
                        f"--pwfile={pwfile}",
                        "-A",
                        "scram-sha-256",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                    ]
                ),
                "initdb",
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _start_cluster(self, pg_bin: Path) -> None:
        if self._running_pg_port() is not None:
            return
        opts = (
            f"-c listen_addresses={self.host} -p {self.pg_port()} -k {self.pg_dir / 'run'} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        data, log = str(self.pg_dir / "data"), str(self.pg_dir / "server.log")
        cmd = [str(pg_bin / "pg_ctl"), "-D", data, "-l", log, "-w", "-t", "60", "-o", opts, "start"]
        self._run(_as_postgres(cmd), "starting PostgreSQL")

    def _migrate(self, pg_bin: Path) -> None:
        """Create the database, install or upgrade the pgstac schema, register the numeric queryables."""
        env = self.pg_env()
        psql = [str(pg_bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        exists = self._run(
            [*psql, "-d", "postgres", "-Atc", f"select 1 from pg_database where datname = '{_DB}'"],
            "checking the database",
            env,
        )
        if not exists.strip():
            self._run([*psql, "-d", "postgres", "-c", f"create database {_DB}"], "creating the database", env)
        self._run([str(self.venv / "bin" / "pypgstac"), "migrate"], "pypgstac migrate", env)
        sql = (
            "INSERT INTO queryables (name, definition, property_wrapper, property_index_type) "
            'SELECT \'eo:cloud_cover\', \'{"type": "number", "minimum": 0, "maximum": 100}\', '
            "'to_float', 'BTREE' WHERE NOT EXISTS (SELECT 1 FROM queryables WHERE name = 'eo:cloud_cover')"
        )
        self._run(
            [*psql, "-c", sql], "registering queryables", {**env, "PGOPTIONS": "-c search_path=pgstac,public"}
        )

    def command(self) -> list[str]:
        """Uvicorn on ``host:port`` (never the package's own entry point: it binds 0.0.0.0)."""
        return [
            str(self.venv / "bin" / "python"),
            "-m",
            "uvicorn",
            "stac_fastapi.pgstac.app:create_app",
            "--factory",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]

    def is_healthy(self) -> bool:
        """``/_mgmt/ping`` answers 200."""
        got = http_get(f"{self.url}/_mgmt/ping", timeout=2.0)
        return got is not None and got[0] == 200

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the API, then the cluster (fast shutdown); data stays."""
        terminate(self, timeout)
        if self._running_pg_port() is None:
            return
        try:
            pg_bin = postgres_bin()
        except ServiceError:
            return
        subprocess.run(
            _as_postgres(
                [str(pg_bin / "pg_ctl"), "-D", str(self.pg_dir / "data"), "-m", "fast", "-w", "stop"]
            ),
            capture_output=True,
            timeout=60,
            check=False,
        )

    # --------------------------------------------------------------------------------- content
    def add_collection(self, collection: Mapping[str, Any]) -> None:
        """Create or replace a collection (Transactions extension).

        Raises:
            ServiceError: The API refused it.
        """
        import requests

        r = requests.post(f"{self.url}/collections", json=dict(collection), timeout=30)
        if r.status_code == 409:
            r = requests.put(f"{self.url}/collections/{collection['id']}", json=dict(collection), timeout=30)
        if r.status_code >= 300:
            raise ServiceError(
                f"stac: collection {collection.get('id')!r} refused ({r.status_code}): {r.text[:200]}"
            )

    def add_items(self, collection: str, items: Iterable[Mapping[str, Any]]) -> int:
        """Upsert items into a collection (bulk transaction); returns how many were stored.

        Raises:
            ServiceError: The API refused them.
        """
        import requests

        batch = {str(it["id"]): {**it, "collection": collection} for it in items}
        if not batch:
            return 0
        r = requests.post(
            f"{self.url}/collections/{collection}/bulk_items",
            json={"items": batch, "method": "upsert"},
            timeout=120,
        )
        if r.status_code >= 300:
            raise ServiceError(f"stac: items of {collection!r} refused ({r.status_code}): {r.text[:200]}")
        return len(batch)
