#!/usr/bin/env bash
# The test command of the README and of CI: lint (ruff, mypy --strict), then the default suite, then the slow suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PYTHONDONTWRITEBYTECODE=1
.venv/bin/ruff check .
.venv/bin/python -m mypy  # [tool.mypy] in pyproject.toml: strict over a2mae/ and flows/
.venv/bin/python -m pytest -m "not slow" -q "$@"
if [ "${A2MAE_SKIP_SLOW:-0}" != "1" ]; then
  rc=0; .venv/bin/python -m pytest -m slow -q "$@" || rc=$?
  # exit 5: no test collected under the marker; that is fine
  [ "$rc" = 0 ] || [ "$rc" = 5 ] || exit "$rc"
fi
