#!/usr/bin/env bash
# Install what the local STAC API server needs (idempotent; a few seconds when everything is there):
#   * PostgreSQL with PostGIS, from Debian's packages (apt-get): postgresql-<major>-postgis-3 for the
#     PostgreSQL already installed, or postgresql-15 with it when there is none;
#   * the server's own venv .venv-stac (git-ignored) from the pinned infra/stac/requirements.txt
#     (stac-fastapi-pgstac + pypgstac; they cannot share .venv, see that file).
# Called by the STAC tests (tests/collect) when something is missing, by `a2mae services up` when
# infra.stac is on, and safe to run by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
export DEBIAN_FRONTEND=noninteractive

pg_major() {  # the newest PostgreSQL server installed (Debian layout), or nothing
  ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sed -E 's#.*/postgresql/([0-9]+)/bin/initdb#\1#' \
    | sort -n | tail -1
}

major="$(pg_major)"
want=()
if [ -z "$major" ]; then
  major=15
  want=(postgresql-15 postgresql-15-postgis-3)
elif [ ! -f "/usr/share/postgresql/$major/extension/postgis.control" ]; then
  want=("postgresql-$major-postgis-3")
fi
if [ "${#want[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "[bootstrap-stac] ${want[*]} missing and this user cannot run apt-get; install them (Debian packages)" >&2
    exit 1
  fi
  echo "[bootstrap-stac] installing ${want[*]} (apt-get)" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
  # Debian's package starts a system cluster on 5432; the project runs its own cluster and needs none.
fi

stamp_src=$(cat infra/stac/requirements.txt scripts/bootstrap-stac.sh | sha256sum | cut -c1-16)
if [ ! -f .venv-stac/.a2mae-stamp ] || [ "$(cat .venv-stac/.a2mae-stamp)" != "$stamp_src" ]; then
  echo "[bootstrap-stac] creating .venv-stac (STAC API server) with $("$PY" --version)" >&2
  [ -x .venv-stac/bin/python ] || "$PY" -m venv .venv-stac
  PIP_DISABLE_PIP_VERSION_CHECK=1 .venv-stac/bin/pip install -q --no-deps -r infra/stac/requirements.txt \
    2> >(grep -v "^WARNING: Location" >&2)
  .venv-stac/bin/pip check >/dev/null
  echo "$stamp_src" > .venv-stac/.a2mae-stamp
fi
echo "[bootstrap-stac] ready: PostgreSQL $major + PostGIS, $(.venv-stac/bin/python -c \
  'import importlib.metadata as m; print("stac-fastapi-pgstac", m.version("stac-fastapi-pgstac"))')" >&2
