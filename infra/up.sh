#!/usr/bin/env bash
# Start the local services (S3 store, MLflow, Prefect server, Ray head, the deployments' server) on
# 127.0.0.1, each waited on with its health check; state and logs under params.infra.home (.a2mae/).
# Idempotent: what already runs healthy is left alone. Extra arguments go to `a2mae services up`
# (e.g. --set infra.prefect_port=4300, --only prefect). See docs/services.md.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh
exec .venv/bin/a2mae services up "$@"
