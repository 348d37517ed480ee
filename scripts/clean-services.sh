#!/usr/bin/env bash
# Delete the state of the local services (`make clean-services`): infra.home (default .a2mae/) holds the
# S3 store's objects (DVC remote, MLflow artifacts, uploaded scenes), the MLflow and Prefect databases,
# the logs, and the services' git + DVC workspace with its snapshot commits. Stops the services first,
# shows what would go, and asks; without a terminal it deletes only with YES=1. `make clean` keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."

home=".a2mae"
if [ -x .venv/bin/python ]; then
  home="$(.venv/bin/python -c 'from a2mae.config import load_params; print(load_params().infra.home)')"
fi
if [ ! -e "$home" ]; then
  echo "clean-services: $home does not exist; nothing to delete"
  exit 0
fi
if [ -x .venv/bin/a2mae ]; then
  .venv/bin/a2mae services down
fi
echo "clean-services: $home holds every service's data:"
du -sh "$home"/* 2>/dev/null | sed 's/^/  /' || true
if [ -d "$home/workspace/.git" ]; then
  echo "  its workspace's snapshot commits not in this checkout yet: git fetch $home/workspace && git log ..FETCH_HEAD"
fi
if [ "${YES:-}" = 1 ]; then
  answer=y
elif [ -t 0 ]; then
  read -r -p "Delete $home and all of it? [y/N] " answer
else
  echo "clean-services: not a terminal; run with YES=1 to delete $home" >&2
  exit 1
fi
case "$answer" in
  y | Y | yes) rm -rf -- "$home" && echo "clean-services: deleted $home" ;;
  *) echo "clean-services: kept $home" ;;
esac
