#!/usr/bin/env bash
# Stop the local services started by infra/up.sh (reverse order). Data, databases and logs stay in
# params.infra.home (.a2mae/); delete that folder to start from scratch. Extra arguments go to
# `a2mae services down` (use the same --set items as for up).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
exec .venv/bin/a2mae services down "$@"
